"""C == NumPy on the exact LeNet-5 layer shapes (batch 1 and 7), forward and backward.

These shapes are the ones the C backend specializes (constant bounds, the C3
connection table compiled in), so they take code paths the small drawn shapes
of the other tests do not. Tolerances are the same rounding-error bounds
(``kernel_support``): both backends are within ``gamma_n * sum|terms|`` of the
exact value, ``sum|terms|`` computed by the NumPy kernel on ``|inputs|``.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_support import (
    DTYPES,
    UNIT_ROUNDOFF,
    ConvCase,
    assert_within,
    both_backends,
    check_output,
    conv_c_equals_numpy,
    gamma,
)

from generated import lenet5_spec as spec

BATCHES = (1, 7)


def c3_mask() -> tuple:
    """The C3 connection table as (16, 6) rows of 0/1, from the generated LeNet-5 spec."""
    return tuple(tuple(int(c in maps) for c in range(6)) for maps in spec.C3_TABLE)


def test_c3_mask_is_the_papers_table():
    """Table I: maps 0-5 read 3 contiguous S2 maps, 6-11 four, 12-14 four, 15 all six."""
    mask = np.array(c3_mask())
    assert mask.shape == (16, 6)
    assert mask.sum(axis=1).tolist() == [3] * 6 + [4] * 9 + [6]
    assert mask.sum() == 60  # 60 of the 96 possible connections (the paper)
    assert mask[12].tolist() == [1, 1, 0, 1, 1, 0]  # {0, 1, 3, 4}: non-contiguous


def _flipped(mask: tuple, k: int, c: int) -> tuple:
    rows = [list(r) for r in mask]
    rows[k][c] = 1 - rows[k][c]
    return tuple(tuple(r) for r in rows)


ALL = None  # table=None: every map connected
# name -> (in maps, out maps, input side, kernel side, table). Besides the layers as
# LeNet-5 runs them, the same sizes with other tables: the C backend must take its
# specialization only when the table is exactly the compiled-in one.
CONV_LAYERS = {
    "C1": (1, 6, 32, 5, ALL),
    "C1 with a table": (1, 6, 32, 5, ((1,), (0,), (1,), (1,), (0,), (1,))),
    "C3": (6, 16, 14, 5, c3_mask()),
    "C3 sizes, no table": (6, 16, 14, 5, ALL),
    "C3 sizes, one connection flipped": (6, 16, 14, 5, _flipped(c3_mask(), 12, 2)),
    "C5": (16, 120, 5, 5, ALL),
}


#: Batch 28 and up: C3 forward's per-sample loop (9,600 updates a sample) reaches the
#: OpenMP threshold (codegen.ir.PARALLEL_WORK), so its threads and their local copies run.
CONV_BATCHES = (*BATCHES, 32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", CONV_BATCHES)
@pytest.mark.parametrize("layer", CONV_LAYERS)
def test_conv_layers_c_equals_numpy(layer, batch, dtype):
    c, k, side, ks, table = CONV_LAYERS[layer]
    tdtype = "bool" if batch == 1 else "uint8"  # both table dtypes reach the dispatch
    case = ConvCase(batch, c, k, side, side, ks, ks, 1, 0, table, tdtype, dtype, seed=batch)
    conv_c_equals_numpy(*both_backends(), case)


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _pair(call, *args):
    """Run ``call(module, *args)`` on NumPy and C; results as tuples."""
    npk, ck = both_backends()
    a, c = call(npk, *args), call(ck, *args)
    return (a, c) if isinstance(a, tuple) else ((a,), (c,))


def _same(a, c, tol, what):
    for i, (ai, ci) in enumerate(zip(a, c, strict=True)):
        check_output(ci, ai.dtype, ai.shape, f"{what}[{i}]")
        t = tol[i] if isinstance(tol, tuple) else tol
        assert_within(ci, ai.astype(np.float64), t, t, f"{what}[{i}] C vs NumPy")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer, maps, side", [("S2", 6, 28), ("S4", 16, 10)])
def test_subsampling_layers_c_equals_numpy(layer, maps, side, batch, dtype):
    rng = np.random.default_rng(side)
    x = _rand(rng, (batch, maps, side, side), dtype)
    coef, bias = _rand(rng, maps, dtype), _rand(rng, maps, dtype)
    dz = _rand(rng, (batch, maps, side // 2, side // 2), dtype)
    npk, _ = both_backends()
    ax, ac, adz = (np.abs(a).astype(np.float64) for a in (x, coef, dz))
    # forward: 4 terms, a product and the bias (gamma_6 of |coef| sum|x| + |bias|)
    bound = npk.subsample_forward(ax, ac, np.abs(bias).astype(np.float64))
    a, c = _pair(lambda m: m.subsample_forward(x, coef, bias))
    _same(a, c, 4 * gamma(6, dtype) * bound, f"{layer} forward")
    # backward: dx one product; dcoef/dbias sums over batch*(side/2)^2 (times 4 for dcoef)
    n = batch * (side // 2) ** 2
    bdx, bdc, bdb = npk.subsample_backward(adz, ax, ac)
    tols = (4 * gamma(2, dtype) * bdx, 4 * gamma(4 * n + 1, dtype) * bdc, 4 * gamma(n, dtype) * bdb)
    a, c = _pair(lambda m: m.subsample_backward(dz, x, coef))
    _same(a, c, tols, f"{layer} backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "shape", [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,)]
)
def test_squashing_c_equals_numpy(shape, batch, dtype):
    """A tanh(S a) forward and backward at every squashed layer's shape.

    Each backend is within ~16u relative (+ u*A absolute) of the exact value (see
    test_kernels_definition); the derivative A S (1 - tanh^2) multiplies dy, one
    more u. The sum of two such bounds is below the 40u used here.
    """
    rng = np.random.default_rng(len(shape))
    z = (2 * rng.standard_normal((batch, *shape))).astype(dtype)
    dy = rng.standard_normal(z.shape).astype(dtype)
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    a, c = _pair(lambda m: m.scaled_tanh_forward(z, A=spec.SQUASH_A, S=spec.SQUASH_S))
    _same(a, c, 40 * u * (np.abs(a[0]) + spec.SQUASH_A), "squash forward")
    a, c = _pair(lambda m: m.scaled_tanh_backward(dy, z, A=spec.SQUASH_A, S=spec.SQUASH_S))
    scale = np.abs(dy) * spec.SQUASH_A * spec.SQUASH_S
    _same(a, c, 40 * u * scale, "squash backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_f6_and_rbf_output_c_equals_numpy(batch, dtype):
    """F6 (dense 120 -> 84) and the output RBF (84 -> 10 with the fixed +-1 centers)."""
    rng = np.random.default_rng(batch)
    npk, _ = both_backends()
    x, w, b = _rand(rng, (batch, 120), dtype), _rand(rng, (84, 120), dtype), _rand(rng, 84, dtype)
    dy = _rand(rng, (batch, 84), dtype)
    ax, aw, ab, ady = (np.abs(a).astype(np.float64) for a in (x, w, b, dy))
    a, c = _pair(lambda m: m.dense_forward(x, w, b))
    _same(a, c, 4 * gamma(121, dtype) * npk.dense_forward(ax, aw, ab), "F6 forward")
    bdx, bdw, bdb = npk.dense_backward(ady, ax, aw)
    tols = (
        4 * gamma(84, dtype) * bdx,
        4 * gamma(batch, dtype) * bdw,
        4 * gamma(batch, dtype) * bdb,
    )
    a, c = _pair(lambda m: m.dense_backward(dy, x, w))
    _same(a, c, tols, "F6 backward")

    centers = np.array(spec.RBF_CENTERS, dtype=dtype)
    h = (1.7 * rng.standard_normal((batch, 84))).astype(dtype)
    g = _rand(rng, (batch, 10), dtype)
    a, c = _pair(lambda m: m.rbf_forward(h, centers))
    _same(a, c, 4 * gamma(87, dtype) * a[0].astype(np.float64), "RBF forward")  # terms >= 0
    # dx[n,i] = 2 sum_o dy[n,o] (x[n,i] - c[o,i]);  dcenters[o,i] = -2 sum_n dy[n,o] (x - c)
    # sum|terms|: 2 sum |dy| (|x| + |c|), over o (10 terms) or over n (batch terms)
    ah, ag, acn = (np.abs(a).astype(np.float64) for a in (h, g, centers))
    bdx = 2 * (ag.sum(axis=1)[:, None] * ah + ag @ acn)
    bdc = 2 * (ag.T @ ah + ag.sum(axis=0)[:, None] * acn)
    tols = (4 * gamma(12, dtype) * bdx, 4 * gamma(batch + 2, dtype) * bdc)
    a, c = _pair(lambda m: m.rbf_backward(g, h, centers))
    _same(a, c, tols, "RBF backward")

    labels = rng.integers(0, 10, size=batch).astype(np.int64)
    y = npk.rbf_forward(h, centers)
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    # logsumexp-type loss: ~u (row size + max|y|) absolute each (test_kernels_definition)
    loss_scale = 16 * u * 12 * (1 + np.abs(y.astype(np.float64)).max(axis=1))
    a, c = _pair(lambda m: m.map_loss_forward(y, labels, j=spec.MAP_J))
    _same(a, c, 2 * loss_scale, "MAP forward")
    a, c = _pair(lambda m: m.map_loss_backward(y, labels, j=spec.MAP_J))
    _same(a, c, 32 * u, "MAP backward")  # softmax-like weights in [0, 1], a few u each
