"""Convolution and parameter-count derivations: every step verifies, and the
lecture's numbers come out exactly."""

import dataclasses

import numpy as np
import pytest
import sympy as sp

from derive import convolution as cv
from derive import core, params
from derive.render import derivation_status

OWN = [i for i in core.ids() if i.startswith(("conv.", "params."))]


def test_all_owned_derivations_are_registered():
    assert set(OWN) == {
        "conv.continuous",
        "conv.discrete_1d",
        "conv.discrete_2d",
        "conv.xcorr_rewrite",
        "conv.output_size",
        "conv.edge_kernels",
        "params.fully_vs_local",
        "params.weight_sharing",
        "params.small_example",
        "params.pooling_features",
    }


@pytest.mark.parametrize("id_", OWN)
def test_every_step_is_proven(id_):
    d = core.get(id_)
    results = d.verify()
    failed = [(n, r.detail) for n, r in enumerate(results, 1) if not r.ok]
    assert not failed, f"{id_}: {failed}"
    assert derivation_status(results) == "verified"
    assert all(s.method in ("symbolic", "exhaustive") for s in d.steps)


def _step_with(id_, fragment):
    (step,) = [s for s in core.get(id_).steps if fragment in s.why]
    return step


def _fails_when(step, **changes):
    return not dataclasses.replace(step, **changes).verify().ok


# --- compound interest -------------------------------------------------------


def test_compound_interest_table_is_the_lectures():
    table = cv.compound_table()
    assert table[0, 0] == 100  # "+100", the principal
    assert table[0, 5] == 100 * sp.Rational(21, 20) ** 5  # 100 x 1.05^5
    assert table[1, 5] == 100 * sp.Rational(21, 20) ** 4
    assert table[5, 5] == 100 and table[5, 0] == 0
    assert table[0, 1] == sp.Rational(105)  # 100 x 1.05, exactly
    assert table[0, 2] == sp.Rational(441, 4)  # 110.25


def test_compound_interest_totals_and_integral():
    d = core.get("conv.continuous")
    total5 = sum(cv.compound_table()[:, 5])
    assert total5 == sp.Rational("680.19128125")  # 2000 (1.05^6 - 1), exact
    t = sp.Symbol("t", integer=True, nonnegative=True)
    assert d.data["closed_form"].subs(t, 5) == total5
    value = d.data["integral"].subs(sp.Symbol("t", positive=True), 1)
    assert value == 5 / sp.log(sp.Rational(21, 20))  # 100 (1.05 - 1) / ln 1.05
    assert abs(float(value) - 102.4796) < 1e-4  # printed to 4 places (exact value above)


def test_compound_table_check_catches_a_wrong_entry(monkeypatch):
    rows = [list(r) for r in cv.COMPOUND_TABLE_EXPONENTS]
    rows[2][4] = 3  # one cell of the table mis-transcribed
    monkeypatch.setattr(cv, "COMPOUND_TABLE_EXPONENTS", tuple(map(tuple, rows)))
    step = _step_with("conv.continuous", "reproduces every entry")
    assert not step.verify().ok


def test_continuous_commutativity_check_can_fail():
    step = _step_with("conv.continuous", "concrete function families")
    x, t = sp.Symbol("x", real=True), sp.Symbol("t", positive=True)

    def without_substitution(fw):  # int f(x) w(t-x) dx against int f(x) w(x) dx: wrong
        f, w = fw
        lhs = sp.integrate(f * w.subs(x, t - x), (x, 0, t))
        return sp.simplify(lhs - sp.integrate(f * w, (x, 0, t))) == 0

    assert step.verify().ok
    assert _fails_when(step, check=without_substitution)


# --- discrete convolution ------------------------------------------------------


def test_conv1d_matches_numpy():
    rng = np.random.default_rng(0)
    for nf, nw in [(1, 1), (3, 2), (5, 4)]:
        f, w = rng.integers(-5, 6, nf), rng.integers(-5, 6, nw)
        assert [int(v) for v in cv.conv1d(f.tolist(), w.tolist())] == np.convolve(f, w).tolist()


def test_conv2d_is_a_sum_of_shifted_kernels():
    img = sp.Matrix([[1, 2], [3, 4]])
    ker = sp.Matrix([[5, 6, 7]])
    expected = sp.zeros(2, 4)
    for m in range(2):
        for n in range(2):
            expected[m, n : n + 3] += img[m, n] * ker
    assert cv.conv2d(img, ker) == expected


def test_xcorr_is_convolution_with_rotated_kernel_on_a_numeric_case():
    img = sp.Matrix(4, 5, lambda r, c: sp.Rational(r * 5 + c, 3))
    ker = sp.Matrix([[1, -2], [sp.Rational(1, 2), 3], [0, 7]])
    full = cv.conv2d(img, cv.rot180(ker))
    assert cv.xcorr2d(img, ker) == full[2:4, 1:5]
    assert cv.xcorr2d(img, ker) != cv.conv2d(img, ker)[2:4, 1:5]  # rotation matters here


def test_rewrite_check_fails_without_the_rotation():
    step = _step_with("conv.xcorr_rewrite", "shifted by")

    def unrotated(case):
        h, w, kh, kw = case
        img, ker = cv.symbol_matrix("I", h, w), cv.symbol_matrix("K", kh, kw)
        return cv.same(cv.xcorr2d(img, ker), cv.conv2d(img, ker)[kh - 1 : h, kw - 1 : w])

    assert _fails_when(step, check=unrotated)


# --- output size and the lecture's examples -------------------------------------


@pytest.mark.parametrize(
    "i, k, p, expected", [(4, 3, 0, 2), (5, 4, 2, 6), (5, 3, 1, 5), (5, 3, 2, 7)]
)
def test_padding_figures(i, k, p, expected):
    assert cv.output_size(i, k, padding=p) == expected
    assert cv.count_positions(i, k, p, 1) == expected
    img = cv.symbol_matrix("I", i, i)
    assert cv.xcorr2d(img, sp.ones(k, k), padding=p).shape == (expected, expected)


def test_output_size_with_stride():
    assert cv.output_size(7, 3, stride=2) == 3 == cv.count_positions(7, 3, 0, 2)
    assert cv.output_size(8, 3, padding=1, stride=3) == 3 == cv.count_positions(8, 3, 1, 3)
    assert cv.xcorr2d(sp.ones(8, 8), sp.ones(3, 3), stride=3, padding=1).shape == (3, 3)


def test_half_and_full_padding_symbolically():
    i, r = sp.symbols("i r", integer=True, positive=True)
    assert cv.output_size(i, 2 * r + 1, padding=r) == i
    assert cv.output_size(i, 2 * r + 1, padding=2 * r) == i + 2 * r


def test_convolved_feature_example():
    got = cv.xcorr2d(cv.FEATURE_IMAGE, cv.FEATURE_KERNEL)
    assert got == sp.Matrix([[4, 3, 4], [2, 4, 3], [2, 3, 4]])
    assert got[0, 0] == 4
    assert cv.conv2d(cv.FEATURE_IMAGE, cv.FEATURE_KERNEL)[2:5, 2:5] == got  # symmetric kernel


def test_output_size_formula_check_catches_an_off_by_one():
    step = _step_with("conv.output_size", "direct count")

    def off_by_one(case):
        i, k, p, s = case
        return sp.floor(sp.Rational(i + 2 * p - k, s)) + 2 == cv.count_positions(*case)

    assert _fails_when(step, check=off_by_one)


# --- edge kernels ---------------------------------------------------------------


def test_edge_response_on_a_step_image():
    img = cv.step_image(7, 6, 4, 2, 9)  # rows 0..3 grey 2, rows 4..6 grey 9
    resp = cv.xcorr2d(img, cv.EDGE_HORIZONTAL)
    nonzero_rows = sorted({r for r in range(resp.rows) for c in range(resp.cols) if resp[r, c]})
    assert nonzero_rows == [2, 3]  # windows with rows 2..4 and 3..5 straddle the edge
    assert set(resp[2:4, :]) == {4 * (2 - 9)}
    assert cv.xcorr2d(img, sp.Matrix(cv.EDGE_HORIZONTAL).T) == sp.zeros(5, 4)
    vertical = cv.xcorr2d(img.T, sp.Matrix(cv.EDGE_HORIZONTAL).T)
    assert vertical == resp.T


def test_edge_kernels_are_transposes_and_zero_sum():
    kh = sp.Matrix(cv.EDGE_HORIZONTAL)
    assert sum(kh) == 0
    assert core.get("conv.edge_kernels").steps[0].lhs == kh.T


# --- parameter counts -----------------------------------------------------------


def _value(step):
    return step.lhs.doit() if isinstance(step.lhs, sp.Subs) else step.lhs


def test_fully_vs_local_counts():
    d = core.get("params.fully_vs_local")
    values = [_value(s) for s in d.steps if isinstance(s.lhs, sp.Subs)]
    assert values == [10**12, 10**8, 921_600]


def test_weight_sharing_counts():
    d = core.get("params.weight_sharing")
    values = [_value(s) for s in d.steps if isinstance(s.lhs, sp.Subs)]
    assert values == [10**2, 10**4, 10**4, 4 * 10**4, 32]


def test_small_example_counts_from_explicit_layers():
    assert len(params.layer_weights(params.full_layer(5, 5, units=9))) == 225
    assert len(params.layer_weights(params.local_layer(5, 3))) == 81
    assert len(params.layer_weights(params.shared_layer(5, 3, kernels=1))) == 9
    d = core.get("params.small_example")
    assert [_value(s) for s in d.steps if isinstance(s.lhs, sp.Subs)] == [225, 81, 9]


def test_pooling_feature_count():
    d = core.get("params.pooling_features")
    assert _value(d.steps[-1]) == 3_168_400 == (96 - 8 + 1) ** 2 * 400


def test_second_convolution_weights_counted():
    # 2 kernels of 2x2 over 4 input maps: 32 distinct weights in the explicit layer
    assert len(params.layer_weights(params.shared_layer(4, 2, kernels=2, channels=4))) == 32


def test_parameter_count_check_catches_a_wrong_formula(monkeypatch):
    step = _step_with("params.fully_vs_local", "Locally connected")
    monkeypatch.setattr(params, "P_LOCAL", params.K * params.N + 1)
    assert not step.verify().ok


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        (lambda: cv.conv1d([], [1]), ValueError, "f must be"),
        (lambda: cv.conv1d([1], "ab"), ValueError, "w must be"),
        (lambda: cv.xcorr2d([[1]], [[1]], stride=0), ValueError, "stride"),
        (lambda: cv.xcorr2d([[1]], [[1]], padding=-1), ValueError, "padding"),
        (lambda: cv.xcorr2d([[1]], [[1, 1]]), ValueError, "larger than padded image"),
        (lambda: cv.conv2d([], [[1]]), ValueError, "image must be non-empty"),
        (lambda: cv.rot180([[1, 2], [3]]), TypeError, "kernel must be a 2-D array"),
        (lambda: params.full_layer(2, 2, units=0), ValueError, "units"),
        (lambda: params.local_layer(2, 3), ValueError, "kernel size"),
    ],
)
def test_bad_input_names_the_argument(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()
