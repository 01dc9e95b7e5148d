"""Layer forward formulas, activations and losses (derive/layers.py, derive/activations.py):
derivations verify, helpers compute the right numbers (checked against independent numpy
code), bad input is refused with clear messages, and wrong formulas are rejected."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from derive import activations, core, layers
from derive.convolution import rot180

IDS = [
    "layer.conv_forward",
    "layer.pool_forward",
    "act.sigmoid",
    "act.scaled_tanh",
    "act.relu",
    "loss.squared_error",
    "loss.map",
    "loss.softmax_xent",
]


@pytest.mark.parametrize("id", IDS)
def test_derivation_verifies(id):
    results = core.get(id).verify()
    assert results and all(r.ok for r in results), [r.detail for r in results if not r.ok]


def _flat(arr):
    return list(sp.flatten(arr.tolist()))


def _numpy_conv(x, w, b, s, p, table=None):
    """The kernel API's forward definition, written directly in numpy."""
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    n_out, _, kh, kw = w.shape
    ho, wo = (xp.shape[1] - kh) // s + 1, (xp.shape[2] - kw) // s + 1
    y = np.zeros((n_out, ho, wo), dtype=np.int64)
    for k, i, j in np.ndindex(y.shape):
        chans = range(x.shape[0]) if table is None else table[k]
        y[k, i, j] = b[k] + sum(
            (xp[c, i * s : i * s + kh, j * s : j * s + kw] * w[k, c]).sum() for c in chans
        )
    return y


@given(
    st.integers(1, 2),
    st.integers(1, 2),
    st.integers(2, 5),
    st.integers(2, 5),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 1),
    st.integers(0, 2**16),
)
def test_conv2d_explicit_matches_numpy(n_in, n_out, h, w, kh, kw, s, p, seed):
    if (h + 2 * p - kh) < 0 or (w + 2 * p - kw) < 0:
        return
    x, wt, b, out = layers.conv2d_explicit(n_in, n_out, h, w, kh, kw, s, p)
    rng = np.random.default_rng(seed)
    xv, wv, bv = (rng.integers(-4, 5, a.shape) for a in (x, wt, b))
    subs = {
        sym: int(v)
        for arr, vals in ((x, xv), (wt, wv), (b, bv))
        for sym, v in zip(_flat(arr), vals.ravel(), strict=True)
    }
    got = np.array(out.subs(subs).tolist(), dtype=np.int64)
    assert (got == _numpy_conv(xv, wv, bv, s, p)).all()


def test_conv2d_explicit_respects_the_connection_table():
    x, wt, b, out = layers.conv2d_explicit(3, 2, 3, 3, 2, 2, table=((0, 2), (1,)))
    assert not any(str(sym).startswith("w_{0,1,") for sym in out[0, 0, 0].free_symbols)
    channels = {str(sym)[:4] for sym in out[1, 0, 0].free_symbols if str(sym)[0] == "x"}
    assert channels == {"x_{1"}  # output 1 reads input channel 1 only


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(n_in=1, n_out=1, h=3, w=3, kh=2, kw=2, stride=0), ValueError, "stride"),
        (dict(n_in=1, n_out=1, h=3, w=3, kh=2, kw=2, padding=-1), ValueError, "padding"),
        (dict(n_in=1, n_out=1, h="3", w=3, kh=2, kw=2), TypeError, "h must"),
        (dict(n_in=2, n_out=1, h=3, w=3, kh=2, kw=2, table=((2,),)), ValueError, "table"),
        (dict(n_in=2, n_out=1, h=3, w=3, kh=2, kw=2, table=((),)), ValueError, "table"),
    ],
)
def test_conv2d_explicit_rejects_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        layers.conv2d_explicit(**kwargs)


def test_pooling_helpers():
    a = sp.Matrix([[1, 2, 5, 9], [3, 8, 4, 2], [6, 1, 0, 3], [5, 7, 2, 8]])
    assert layers.down_mean(a, 2) == sp.Matrix(
        [[sp.Rational(7, 2), 5], [sp.Rational(19, 4), 13 / sp.Integer(4)]]
    )
    pooled, argmax = layers.down_max(a, 2)
    assert pooled == sp.Matrix([[8, 9], [7, 8]])
    assert argmax == {(0, 0): (1, 1), (0, 1): (0, 3), (1, 0): (3, 1), (1, 1): (3, 3)}
    # ties go to the first maximum in row-major order (the kernel API's rule)
    assert layers.down_max(sp.Matrix([[2, 2], [2, 2]]), 2)[1] == {(0, 0): (0, 0)}
    assert layers.route_max(sp.Matrix([[7]]), {(0, 0): (1, 0)}, (2, 2)) == sp.Matrix(
        [[0, 0], [7, 0]]
    )
    assert layers.dilate(sp.Matrix([[1, 2], [3, 4]]), 2) == sp.Matrix(
        [[1, 0, 2], [0, 0, 0], [3, 0, 4]]
    )
    assert layers.pad(sp.Matrix([[5]]), 2).shape == (5, 5)


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: layers.down_mean(sp.ones(3, 4), 2), ValueError, "divisible"),
        (lambda: layers.up_mean(sp.ones(2, 2), 0), ValueError, "n must"),
        (lambda: layers.pad([[1]], 1), TypeError, "a must"),
        (lambda: layers.dilate(sp.ones(2, 2), 1.5), TypeError, "s must"),
    ],
)
def test_helpers_reject_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


@given(
    st.lists(st.integers(-9, 9), min_size=16, max_size=16),
    st.lists(st.integers(-9, 9), min_size=4, max_size=4),
)
def test_up_is_the_adjoint_of_mean_down(a_vals, d_vals):
    a, d = sp.Matrix(4, 4, a_vals), sp.Matrix(2, 2, d_vals)
    lhs = sum(layers.down_mean(a, 2).multiply_elementwise(d))
    rhs = sum(a.multiply_elementwise(layers.up_mean(d, 2)))
    assert lhs == rhs


def test_forward_check_rejects_a_rotated_kernel(monkeypatch):
    case = layers._FORWARD_CASES[1]
    assert layers._forward_matches(case)
    xcorr = layers.xcorr2d
    monkeypatch.setattr(
        layers, "xcorr2d", lambda img, k, s=1, p=0, d=1: xcorr(img, rot180(k), s, p, d)
    )
    assert not layers._forward_matches(case)


def test_mean_pool_check_rejects_a_wrong_up(monkeypatch):
    assert layers._mean_pool_cases_ok((4, 4, 2))
    monkeypatch.setattr(layers, "up_mean", lambda d, n: sp.kronecker_product(d, sp.ones(n, n)))
    assert not layers._mean_pool_cases_ok((4, 4, 2))


def test_activation_steps_reject_wrong_derivatives():
    x, beta = activations.x, activations.beta
    f = activations.sigmoid(x)
    assert not core.Step(sp.diff(f, x), f * (1 - f), "beta forgotten").verify().ok
    g = activations.scaled_tanh(x)
    assert (
        not core.Step(sp.diff(g, x), activations.amp * (1 - sp.tanh(x) ** 2), "S forgotten")
        .verify()
        .ok
    )
    assert core.Step(sp.diff(f, x), beta * f * (1 - f), "right").verify().ok


def test_loss_gradient_checks_reject_wrong_formulas(monkeypatch):
    assert activations._map_grad_ok((3, 1)) and activations._softmax_grad_ok((3, 1))
    # MAP without the rubbish class: the check (which keeps e^{-j}) must fail.
    monkeypatch.setattr(
        activations,
        "map_criterion",
        lambda y, label, j: y[label] + sp.log(sum(sp.exp(-v) for v in y)),
    )
    assert not activations._map_grad_ok((3, 1))
    monkeypatch.setattr(activations, "softmax_xent", lambda z, label: -z[label])
    assert not activations._softmax_grad_ok((3, 1))


def test_map_criterion_values():
    e = activations.map_criterion((sp.Integer(0), sp.Integer(5)), 0, 1)
    assert e == sp.log(sp.exp(-1) + 1 + sp.exp(-5))


# Formulas of these derivations that SymPy's LaTeX parser supports (it reads
# "\beta \left(...\right)" as a function call, so products like beta*(1 - f) are left out).
ROUND_TRIP = [
    ("act.sigmoid", 0, "lhs"),  # d/dx (1 + e^{-beta x})^{-1}
    ("loss.squared_error", 0, "lhs"),  # 1/2 sum (t_k - y_k)^2
    ("loss.squared_error", 0, "rhs"),
    ("loss.map", 0, "lhs"),  # y_D + log(e^{-j} + sum e^{-y_i})
    ("loss.map", 0, "rhs"),  # -log(posterior)
    ("loss.map", 2, "rhs"),  # e^{-j} / (e^{-j} + sum e^{-y_i})
    ("loss.softmax_xent", 0, "lhs"),
    ("lenet5.rbf", 0, "lhs"),  # sum_j (x_j - w_ij)^2
    ("lenet5.rbf", 5, "rhs"),  # MAP gradient of a wrong class
]


def _by_name(expr):
    """The parser makes plain symbols named like 'y_{0}' and reads e^x as a power of e."""
    expr = expr.doit()
    names = {s: sp.Symbol(s.name.replace("{", "").replace("}", "")) for s in expr.free_symbols}
    return expr.xreplace(names).subs(sp.Symbol("e"), sp.E)


@pytest.mark.parametrize("id_, index, side", ROUND_TRIP)
def test_formula_round_trips_through_the_latex_parser(id_, index, side):
    pytest.importorskip("antlr4", reason="antlr4-python3-runtime is in the test extra")
    from sympy.parsing.latex import parse_latex

    expr = getattr(core.get(id_).steps[index], side)
    parsed = parse_latex(sp.latex(expr))
    assert sp.simplify(_by_name(parsed) - _by_name(expr)) == 0, (sp.latex(expr), parsed)
    # and the comparison can fail: a different formula does not match
    assert sp.simplify(_by_name(parsed) - _by_name(expr + 1)) != 0
