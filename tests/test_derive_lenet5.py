"""The LeNet-5 spec (derive/lenet5.py): constants, counts computed from the layer table,
the lecture's S2 slip, the C3 table, RBF codes, and the derivations' status."""

import dataclasses
import itertools

import pytest
import sympy as sp

from derive import core, lenet5
from derive.convolution import output_size

# The C3 table as listed in the kernel API contract (api.md), typed independently.
API_C3 = {
    0: {0, 1, 2}, 1: {1, 2, 3}, 2: {2, 3, 4}, 3: {3, 4, 5}, 4: {4, 5, 0}, 5: {5, 0, 1},
    6: {0, 1, 2, 3}, 7: {1, 2, 3, 4}, 8: {2, 3, 4, 5}, 9: {3, 4, 5, 0}, 10: {4, 5, 0, 1},
    11: {5, 0, 1, 2}, 12: {0, 1, 3, 4}, 13: {1, 2, 4, 5}, 14: {0, 2, 3, 5}, 15: set(range(6)),
}  # fmt: skip

PAPER = {  # (trainable parameters, connections)
    "C1": (156, 122_304),
    "S2": (12, 5_880),
    "C3": (1_516, 151_600),
    "S4": (32, 2_000),
    "C5": (48_120, 48_120),
    "F6": (10_164, 10_164),
}


def test_constants():
    assert (lenet5.INPUT_SIZE, lenet5.MNIST_SIZE, lenet5.PAD) == (32, 28, 2)
    assert lenet5.WHITE == sp.Rational(-1, 10) and lenet5.BLACK == sp.Rational(47, 40)
    assert lenet5.SQUASH_A == sp.Rational("1.7159") and lenet5.SQUASH_S == sp.Rational(2, 3)
    assert lenet5.INIT_NUMERATOR == sp.Rational("2.4")
    assert lenet5.SDLM_MU == sp.Rational("0.02") and lenet5.HESSIAN_SAMPLES == 500
    assert lenet5.MAP_J > 0
    assert lenet5.SCHEDULE == ((2, 0.0005), (3, 0.0002), (3, 0.0001), (4, 0.00005), (8, 0.00001))
    assert sum(p for p, _ in lenet5.SCHEDULE) == 20


def test_constants_are_plain_data_for_codegen():
    """Everything codegen emits is int/float/str/tuple/Rational (no SymPy expressions)."""

    def plain(v):
        if isinstance(v, tuple):
            return all(plain(e) for e in v)
        if dataclasses.is_dataclass(v):
            return all(plain(getattr(v, f.name)) for f in dataclasses.fields(v))
        return v is None or isinstance(v, int | float | str | sp.Rational)

    for name in ("C3_TABLE", "RBF_BITMAPS", "LAYERS", "SCHEDULE", "WHITE", "BLACK", "MAP_J"):
        assert plain(getattr(lenet5, name)), name


def test_c3_table_matches_the_api_contract():
    assert {k: set(v) for k, v in enumerate(lenet5.C3_TABLE)} == API_C3
    assert all(len(set(row)) == len(row) for row in lenet5.C3_TABLE)


def test_rbf_bitmaps_and_centers():
    assert len(lenet5.RBF_BITMAPS) == 10
    for bitmap in lenet5.RBF_BITMAPS:
        assert len(bitmap) == 12 and all(len(r) == 7 and set(r) <= {"#", "."} for r in bitmap)
    centers = lenet5.rbf_centers()
    assert len(centers) == 10 and all(len(c) == 84 and set(c) <= {-1, 1} for c in centers)
    assert len(set(centers)) == 10
    # Well separated: at least 10 differing pixels between any two codes.
    assert min(sum(a != b for a, b in zip(c, d, strict=True))
               for c, d in itertools.combinations(centers, 2)) >= 10  # fmt: skip


def test_layer_sizes_follow_from_the_output_size_formula():
    names = [x.name for x in lenet5.LAYERS]
    assert names == ["C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT"]
    for layer in lenet5.LAYERS:
        stride = layer.kernel if layer.kind == "subsample" else 1
        assert output_size(layer.in_size, layer.kernel, 0, stride) == layer.out_size
    assert lenet5.LAYERS[2].table == lenet5.C3_TABLE


@pytest.mark.parametrize("name", sorted(PAPER))
def test_counts_from_the_spec_equal_the_paper(name):
    layer = next(x for x in lenet5.LAYERS if x.name == name)
    assert (lenet5.layer_params(layer), lenet5.layer_connections(layer)) == PAPER[name]


def test_total_trainable_parameters_is_60000_and_s2_is_12_not_30():
    assert sum(lenet5.layer_params(x) for x in lenet5.LAYERS) == 60_000
    s2 = lenet5.LAYERS[1]
    assert lenet5.layer_params(s2) == 12 != (2 * 2 + 1) * 6
    text = " ".join(s.why for s in core.get("lenet5.params").steps)
    assert r"$(2 \cdot 2+1) \cdot 6 = 30$" in text and "12" in text


def test_count_step_rejects_a_wrong_spec():
    c3 = lenet5.LAYERS[2]
    assert lenet5._count_step(c3).verify().ok
    fully_connected = dataclasses.replace(c3, table=None)  # 16 x (6*25 + 1) = 2416
    assert lenet5.layer_params(fully_connected) == 2416
    assert not lenet5._count_step(fully_connected).verify().ok


def test_c3_structure_check_rejects_a_wrong_table(monkeypatch):
    assert all(lenet5._c3_group_ok(k) for k in range(16))
    swapped = list(lenet5.C3_TABLE)
    swapped[12] = (0, 1, 2, 3)  # contiguous: not a row of the paper's third group
    monkeypatch.setattr(lenet5, "C3_TABLE", tuple(swapped))
    assert not lenet5._c3_group_ok(12)


def test_layer_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        lenet5.Layer("X", "pool", 1, 1, 2, 1, 2)


@pytest.mark.parametrize(
    "id", ["lenet5.layers", "lenet5.params", "lenet5.c3_table", "lenet5.rbf", "lenet5.squash"]
)
def test_lenet5_derivations_verify(id):
    results = core.get(id).verify()
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]


def test_input_derivation_marks_the_mnist_claim_unverified():
    d = core.get("lenet5.input")
    results = d.verify()
    unverified = [r for r in results if r.method == "unverified"]
    assert len(unverified) == 1 and not unverified[0].ok
    assert all(r.ok for r in results if r.method != "unverified")
    # The checked facts: mean 0 at 4/51 ink, variance there 47/400, never above 2601/6400.
    assert d.steps[1].lhs.point == (sp.Rational(4, 51),) and d.steps[1].rhs == 0
    assert [s.rhs for s in d.steps[2:4]] == [sp.Rational(47, 400), sp.Rational(2601, 6400)]


def test_squash_value_at_one():
    value = sp.N(lenet5.SQUASH_A * sp.tanh(lenet5.SQUASH_S), 30)
    assert 0 < 1 - value < 3e-6
