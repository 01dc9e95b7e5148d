"""Backprop cases, kernel/bias gradients and small-kernel gradients (derive/backprop.py,
derive/gradients.py, derive/small_kernels.py): every derivation verifies, the lecture's
worked tables come out to the printed digits, the example data is right in the kernel
API's shapes, and a deliberately wrong formula is rejected by the same checks."""

import itertools

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from derive import backprop, core, small_kernels
from derive.convolution import xcorr2d
from derive.layers import pad, up_mean

IDS = [
    "backprop.case1_mean",
    "backprop.case1_max",
    "backprop.case2",
    "grad.kernel",
    "grad.bias",
    "grad.update",
    "grad.small_kernels",
]


@pytest.mark.parametrize("id", IDS)
def test_derivation_verifies(id):
    d = core.get(id)
    results = d.verify()
    assert results and all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert all(r.method in ("symbolic", "exhaustive") for r in results)


def _as_printed(rows):
    """A table typed as the lecture prints it (decimal strings) -> exact Rationals."""
    return sp.Matrix([[sp.Rational(v) for v in row.split()] for row in rows])


# --- the lecture's worked tables, typed here independently of derive/ ------------------


def test_mean_pooling_tables_to_printed_digits():
    delta = sp.Matrix([[1, 3], [2, 4]])
    assert sp.kronecker_product(delta, sp.ones(2, 2)) == _as_printed(
        ["1 1 3 3", "1 1 3 3", "2 2 4 4", "2 2 4 4"]
    )
    assert up_mean(delta, 2) == _as_printed(
        ["0.25 0.25 0.75 0.75", "0.25 0.25 0.75 0.75", "0.5 0.5 1 1", "0.5 0.5 1 1"]
    )


def test_max_pooling_table_to_printed_digits():
    ex = core.get("backprop.case1_max").data["example"]
    x = np.array(ex["inputs"]["x"], dtype=np.int64)[0, 0]
    # Independent argmax: first maximum of each 2x2 window in row-major order.
    argmax = np.array(ex["inputs"]["argmax"])[0, 0].ravel()
    for (i, j), flat in zip(itertools.product(range(2), range(2)), argmax, strict=True):
        window = x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        r, c = divmod(int(np.argmax(window)), 2)
        assert flat == (2 * i + r) * 4 + (2 * j + c)
    routed = np.zeros((4, 4), dtype=np.int64)
    dy = np.array(ex["inputs"]["dy"])[0, 0]
    for (i, j), flat in np.ndenumerate(np.array(ex["inputs"]["argmax"])[0, 0]):
        routed.flat[flat] += dy[i, j]
    expected = ["0 0 0 3", "0 1 0 0", "0 0 0 0", "0 2 0 4"]
    assert routed.tolist() == [[int(v) for v in row.split()] for row in expected]
    assert np.array(ex["expected"]["dx"], dtype=np.int64)[0, 0].tolist() == routed.tolist()


def test_case2_tables_to_printed_digits():
    d1, d2 = sp.Matrix([[1, 3], [2, 2]]), sp.Matrix([[2, 1], [1, 1]])
    k1, k2 = _as_printed(["0.1 0.2", "0.2 0.4"]), _as_printed(["-0.3 0.1", "0.1 0.2"])
    assert pad(d1, 1) == _as_printed(["0 0 0 0", "0 1 3 0", "0 2 2 0", "0 0 0 0"])
    assert sp.kronecker_product(d1, k1) == _as_printed(
        ["0.1 0.2 0.3 0.6", "0.2 0.4 0.6 1.2", "0.2 0.4 0.2 0.4", "0.4 0.8 0.4 0.8"]
    )
    assert sp.kronecker_product(d2, k2) == _as_printed(
        ["-0.6 0.2 -0.3 0.1", "0.2 0.4 0.1 0.2", "-0.3 0.1 -0.3 0.1", "0.1 0.2 0.1 0.2"]
    )
    # The orientation that reproduces the printed 3x3 tables: padded delta
    # cross-correlated with the kernel rotated by 180 degrees (a true convolution).
    full1 = xcorr2d(pad(d1, 1), sp.Matrix(k1[::-1]).reshape(2, 2))
    full2 = xcorr2d(pad(d2, 1), sp.Matrix(k2[::-1]).reshape(2, 2))
    assert full1 == _as_printed(["0.1 0.5 0.6", "0.4 1.6 1.6", "0.4 1.2 0.8"])
    assert full2 == _as_printed(["-0.6 -0.1 0.1", "-0.1 0.3 0.3", "0.1 0.3 0.2"])
    # The lecture prints the first two rows of the sum; the third is derived.
    assert (full1 + full2)[:2, :] == _as_printed(["-0.5 0.4 0.7", "0.3 1.9 1.9"])
    assert (full1 + full2)[2, :] == _as_printed(["0.5 1.5 1.0"])
    # The unrotated kernel does NOT reproduce the printed table.
    assert xcorr2d(pad(d1, 1), k1) != full1


def test_case2_example_data_is_the_adjoint_of_the_forward_conv():
    """dx of the example, recomputed from the forward definition: dx = sum dy * dy/dx."""
    ex = core.get("backprop.case2").data["example"]
    dy = ex["inputs"]["dy"][0]  # (K=2, 2, 2)
    w = ex["inputs"]["w"]  # (K=2, C=1, 2, 2)
    h, wd = ex["inputs"]["input_hw"]
    dx = sp.zeros(h, wd)
    for i, j in itertools.product(range(h), range(wd)):
        basis = sp.zeros(h, wd)
        basis[i, j] = 1
        for k in range(2):
            out = xcorr2d(basis, sp.Matrix(w[k][0]))  # forward: cross-correlation
            dx[i, j] += sum(out.multiply_elementwise(sp.Matrix(dy[k])))
    assert dx == sp.Matrix(ex["expected"]["dx"][0][0])
    assert [sp.Matrix(m) for m in ex["expected"]["per_kernel"]] == [
        backprop.FULL_A,
        backprop.FULL_B,
    ]


def test_mean_example_data_shapes():
    ex = core.get("backprop.case1_mean").data["example"]
    assert np.array(ex["inputs"]["dy"]).shape == (1, 1, 2, 2)
    assert np.array(ex["expected"]["dx"], dtype=float).shape == (1, 1, 4, 4)
    assert float(np.array(ex["expected"]["dx"], dtype=float).sum()) == 10.0  # sum conserved


@given(st.lists(st.integers(-50, 50), min_size=4, max_size=4), st.sampled_from([1, 2, 3]))
def test_up_mean_conserves_the_sum_of_delta(values, n):
    d = sp.Matrix(2, 2, values)
    assert sum(up_mean(d, n)) == sum(d)


# --- a wrong formula is rejected by the same checks -------------------------------------


def test_case2_check_rejects_the_unrotated_kernel(monkeypatch):
    case = (2, 2, 4, 2)
    assert backprop._case2_chain_ok(case)
    monkeypatch.setattr(backprop, "conv2d", lambda d, k: xcorr2d(pad(d, k.rows - 1), k))
    assert not backprop._case2_chain_ok(case)


def test_mean_check_rejects_up_without_division(monkeypatch):
    assert backprop._mean_chain_ok((4, 4, 2))
    monkeypatch.setattr(backprop, "up_mean", lambda d, n: sp.kronecker_product(d, sp.ones(n, n)))
    assert not backprop._mean_chain_ok((4, 4, 2))


def test_max_check_rejects_routing_to_the_wrong_position(monkeypatch):
    case = backprop._MAX_CHAIN_CASES[2]
    assert backprop._max_chain_ok(case)
    route = backprop.route_max

    def other_row(d, argmax, shape):  # route each delta to the other row of its window
        return route(d, {key: (r ^ 1, c) for key, (r, c) in argmax.items()}, shape)

    monkeypatch.setattr(backprop, "route_max", other_row)
    assert not backprop._max_chain_ok(case)


def test_small_kernel_checks_reject_ignoring_the_stride(monkeypatch):
    case = (2, 2, 5, 5, 3, 3, 2, 1)
    assert small_kernels.check_kernel_grad(case) and small_kernels.check_input_grad(case)
    monkeypatch.setattr(small_kernels, "dilate", lambda a, s: a)
    assert not small_kernels.check_kernel_grad(case)
    assert not small_kernels.check_input_grad(case)


def test_small_kernel_input_check_rejects_the_unrotated_kernel(monkeypatch):
    case = (2, 2, 4, 4, 3, 3, 1, 1)
    monkeypatch.setattr(small_kernels, "conv2d", lambda d, k: xcorr2d(pad(d, k.rows - 1), k))
    assert not small_kernels.check_input_grad(case)


def test_failed_step_reports_not_ok():
    step = core.get("backprop.case2").steps[0]
    wrong = core.Step(
        step.lhs, step.rhs, step.why, method="exhaustive", check=lambda c: False, cases=(1,)
    )
    assert not wrong.verify().ok


# --- the explicit expressions are reachable from code ----------------------------------


def test_gradients_api_shapes_and_values():
    gr = small_kernels.gradients(2, 2, 5, 4, 3, 2, 2, 1)
    assert gr.x.shape == (2, 5, 4) and gr.w.shape == (2, 2, 3, 2) and gr.b.shape == (2,)
    assert gr.S.shape == gr.g.shape == (2, 3, 3)
    assert gr.dx.shape == gr.x.shape and gr.dw.shape == gr.w.shape and gr.db.shape == (2,)
    assert small_kernels.gradients(2, 2, 5, 4, 3, 2, 2, 1) is gr  # cached
    # dJ/dw entry is linear in g and x; dJ/dx entry linear in g and w.
    assert sp.Poly(gr.dw[0, 1, 2, 1], *_flat(gr.g), *_flat(gr.x)).total_degree() == 2
    assert gr.dx[1, 0, 0].free_symbols <= set(_flat(gr.g)) | set(_flat(gr.w))


def _flat(arr):
    return list(sp.flatten(arr.tolist()))


def test_gradients_match_numbers():
    """Evaluate sympy.diff results at random integers against a direct numpy loop."""
    rng = np.random.default_rng(0)
    gr = small_kernels.gradients(2, 2, 5, 5, 3, 3, 2, 1)
    xv = rng.integers(-5, 6, gr.x.shape)
    wv = rng.integers(-5, 6, gr.w.shape)
    gv = rng.integers(-5, 6, gr.g.shape)
    subs = {
        sym: int(v)
        for arr, values in ((gr.x, xv), (gr.w, wv), (gr.g, gv))
        for sym, v in zip(_flat(arr), values.ravel(), strict=True)
    }
    xp = np.pad(xv, ((0, 0), (1, 1), (1, 1)))
    dw = np.zeros(wv.shape, dtype=np.int64)
    dxp = np.zeros(xp.shape, dtype=np.int64)
    for k, i, j in np.ndindex(gv.shape):
        dw[k] += gv[k, i, j] * xp[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
        dxp[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += gv[k, i, j] * wv[k]
    got_dw = np.array(gr.dw.subs(subs).tolist(), dtype=np.int64)
    got_dx = np.array(gr.dx.subs(subs).tolist(), dtype=np.int64)
    assert np.abs(dw).sum() > 0 and np.abs(got_dx).sum() > 0  # not vacuous
    assert (got_dw == dw).all()
    assert (got_dx == dxp[:, 1:-1, 1:-1]).all()


@pytest.mark.parametrize(
    "args, exc, word",
    [
        ((0, 1, 3, 3, 2, 2), ValueError, "n_in"),
        ((1, 1, 3, 3, 2, 2, 0), ValueError, "stride"),
        ((1, 1, 3, 3, 2, 2, 1, -1), ValueError, "padding"),
        ((1, 1, 3, 3, 2.0, 2), TypeError, "kh"),
        ((1, 1, 2, 2, 3, 3), ValueError, "output"),
    ],
)
def test_gradients_reject_bad_arguments(args, exc, word):
    with pytest.raises(exc, match=word):
        small_kernels.gradients(*args)


@pytest.mark.slow
def test_small_kernel_sweep():
    bad = [
        c
        for c in small_kernels.SWEEP_CASES
        if not (
            small_kernels.check_kernel_grad(c)
            and small_kernels.check_input_grad(c)
            and small_kernels.check_bias_grad(c)
        )
    ]
    assert len(small_kernels.SWEEP_CASES) == 144 and not bad
