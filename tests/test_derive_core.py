"""The derivation core: false steps fail, unverified steps are reported, the registry."""

import pytest
import sympy as sp

from derive import core, render
from derive.core import EXHAUSTIVE, UNVERIFIED, Derivation, Step

x = sp.Symbol("x")


def test_true_symbolic_step_verifies():
    res = Step(sp.sin(x) ** 2 + sp.cos(x) ** 2, sp.Integer(1), "pythagoras").verify()
    assert res.ok and res.method == "symbolic"


def test_false_symbolic_step_fails():
    res = Step((x + 1) ** 2, x**2 + 1, "forgot the cross term").verify()
    assert not res.ok
    assert render.step_status(res).startswith("FAILED")


def test_false_matrix_step_fails_on_one_entry():
    res = Step(sp.Matrix([x, 2 * x]), sp.Matrix([x, 3 * x]), "one entry wrong").verify()
    assert not res.ok


def test_custom_symbolic_check_returning_false_fails():
    assert not Step(x, x, "custom", check=lambda: False).verify().ok


def test_false_exhaustive_step_names_the_failing_cases():
    res = Step(
        x**2, 2 * x, "only at 0 and 2", method=EXHAUSTIVE, check=lambda n: n**2 == 2 * n,
        cases=range(4),
    ).verify()  # fmt: skip
    assert not res.ok
    assert "[1, 3]" in res.detail


def test_exhaustive_step_counts_its_cases():
    res = Step(x, x, "id", method=EXHAUSTIVE, check=lambda n: n == n, cases=range(7)).verify()
    assert res.ok and "7 cases" in res.detail


def test_exhaustive_with_no_cases_fails():
    res = Step(x, x, "vacuous", method=EXHAUSTIVE, check=lambda n: True, cases=()).verify()
    assert not res.ok and "no cases" in res.detail


def test_exhaustive_cases_from_a_generator_survive_two_verifications():
    st = Step(x, x, "gen", method=EXHAUSTIVE, check=lambda n: True, cases=(n for n in range(3)))
    assert st.verify().ok and st.verify().ok


def test_a_crashing_check_is_a_failed_step_with_the_reason():
    res = Step(x, x, "crash", method=EXHAUSTIVE, check=lambda n: 1 / 0, cases=[1]).verify()
    assert not res.ok and "ZeroDivisionError" in res.detail


def test_unverified_step_is_reported_never_accepted():
    st = Step(x, x, "cannot prove", method=UNVERIFIED, note="no decision procedure")
    res = st.verify()
    assert not res.ok
    assert render.step_status(res) == "UNVERIFIED: no decision procedure"
    d = Derivation("t.u", "T", "here", [Step(x, x, "ok"), st])
    assert render.derivation_status(d.verify()) == "unverified"


def test_failed_step_makes_the_derivation_failed():
    d = Derivation("t.f", "T", "here", [Step(x, x + 1, "wrong")])
    assert render.derivation_status(d.verify()) == "FAILED"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"method": "guess"}, "unknown method"),
        ({"method": EXHAUSTIVE}, "needs a check"),
        ({"method": UNVERIFIED}, "must say why"),
    ],
)
def test_malformed_steps_are_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Step(x, x, "bad", **kwargs)


def test_derivation_without_steps_is_rejected():
    with pytest.raises(ValueError, match="no steps"):
        Derivation("t.e", "T", "here", [])


def test_registry_lists_sorted_ids_including_the_convolution_ones():
    ids = core.ids()
    assert ids == sorted(ids)
    for id_ in ("conv.continuous", "conv.output_size", "params.pooling_features"):
        assert id_ in ids
    assert core.module_of("conv.output_size") == "derive.convolution"
    assert core.title("params.small_example") == "Parameters of the 5x5 image with 9 features"


def test_get_builds_once():
    assert core.get("conv.discrete_1d") is core.get("conv.discrete_1d")


def test_unknown_id_raises_with_suggestions():
    with pytest.raises(core.UnknownDerivation) as info:
        core.get("conv.outputsize")
    assert "conv.output_size" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_suggest_prefers_close_ids_then_same_prefix():
    hint = core.suggest("conv.edge")
    assert hint[0] == "conv.edge_kernels"
    assert all(h.startswith("conv.") for h in hint)
    assert core.suggest("zzz.nothing_like_it") == []


@pytest.fixture
def scratch_registry():
    """Register throw-away ids and remove them afterwards (the registry is global)."""
    added = []

    def register(id_, title, builder):
        core.derivation(id_, title)(builder)
        added.append(id_)

    yield register
    for id_ in added:
        core._REGISTRY.pop(id_, None)
        core._CACHE.pop(id_, None)


def test_duplicate_registration_is_rejected(scratch_registry):
    scratch_registry("zz.dup", "Dup", lambda: Derivation("zz.dup", "Dup", "", [Step(x, x, "")]))
    with pytest.raises(ValueError, match="registered twice"):
        core.derivation("zz.dup", "Dup")(lambda: None)


def test_builder_returning_another_id_is_rejected(scratch_registry):
    scratch_registry("zz.a", "A", lambda: Derivation("zz.b", "A", "", [Step(x, x, "")]))
    with pytest.raises(ValueError, match="builder returned id='zz.b'"):
        core.get("zz.a")


# --- display: terminal text, notebooks -----------------------------------------------


def test_text_is_unicode_mathematics_not_reprs():
    m, n = sp.symbols("m n", integer=True)
    f = sp.Function("f")
    st = Step(sp.Sum(f(m), (m, -sp.oo, sp.oo)), sp.Matrix([[1, 2]]), "show")
    text = st.to_text()
    assert "∞" in text and "⎡" not in text and "[1  2]" in text
    for repr_word in ("Sum(", "Matrix(", "oo", "Derivative("):
        assert repr_word not in text


def test_show_text_of_a_derivation_uses_the_pretty_printer():
    text = str(core.get("act.relu"))
    assert text.startswith("act.relu: ReLU and its derivative [verified]")
    assert "Derivative(" not in text
    assert "d/dx max(0, x) = [x > 0]" in text  # a LaTeX-only step, as Unicode text
    assert "│x│" in text  # |x| from the pretty printer


def test_book_latex_writes_infinite_sums_as_the_lecture():
    m, n, i = sp.symbols("m n i", integer=True)
    f = sp.Function("f")
    assert core.latex(sp.Sum(f(m, n), (m, -sp.oo, sp.oo), (n, -sp.oo, sp.oo))) == (
        r"\sum_{m,n} f{\left(m,n \right)}"
    )
    assert core.latex(sp.Sum(f(m), (m, 0, i))) == r"\sum_{m=0}^{i} f{\left(m \right)}"


def test_held_arithmetic_shows_its_computation_and_is_still_checked():
    held = sp.Add(sp.Mul(60, 25, evaluate=False), 16, evaluate=False)
    assert Step(held, sp.Integer(1516), "c3").to_latex() == r"60 \cdot 25 + 16 = 1516"
    assert Step(held, sp.Integer(1516), "c3").verify().ok
    assert not Step(held, sp.Integer(1517), "off by one").verify().ok


def test_notebook_display_of_a_derivation():
    from derive import show

    d = show("conv.discrete_1d")
    assert d is core.get("conv.discrete_1d")
    latex = d._repr_latex_()
    assert latex.startswith("$$\\begin{array}{l}") and latex.endswith("\\end{array}$$")
    assert latex.count("\\displaystyle") == len(d.steps)
    md = d._repr_markdown_()
    assert md.startswith('<a id="conv.discrete_1d"></a>') and md.count("$$") == 2 * len(d.steps)
    with pytest.raises(core.UnknownDerivation):
        show("conv.nope")
