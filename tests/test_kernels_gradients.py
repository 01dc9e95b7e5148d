"""Every gradient kernel == central finite differences, plus adjoint identities.

For a forward kernel ``f`` and a random output weighting ``g`` the scalar
``J = <f(inputs), g>`` has ``dJ/d(input)`` equal to the backward kernel called
with ``dy = g``; losses are checked as ``J = sum of per-sample losses``. The
finite differences are central, in float64, one entry at a time.

Tolerance of the finite differences (step ``H = 1e-6``): the truncation error
is ``H**2/6 * |J'''| ~ 2e-13`` for these O(1) smooth functions (zero for the
linear ones), the rounding error is ``|error of J| / H`` with ``|error of J| <=
n u sum|terms| ~ 1e3 * 1.1e-16 * 1e2 = 1e-11`` for the small sizes drawn here,
i.e. ~1e-5 at worst; we allow ``1e-5 * (1 + max|grad|)`` absolute plus 1e-5
relative. A wrong index or a missing factor produces O(max|grad|) errors.

Every test also asserts the gradient is non-zero (max entry > 1e-4, ten times the
finite differences' absolute tolerance; random data makes them O(1)), so nothing passes
vacuously.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_support import (
    DTYPES,
    assert_within,
    backend_fixture,
    conv_cases,
    gamma,
    pool_input,
)

kern = backend_fixture()

H = 1e-6  # finite-difference step (see the module docstring)
FD = settings(max_examples=20)  # per-entry finite differences cost 2 calls per entry

seeds = st.integers(0, 2**32 - 1)


def numeric_grad(J, a: np.ndarray) -> np.ndarray:
    """Central differences ``(J(a + H e_i) - J(a - H e_i)) / 2H`` for every entry of ``a``."""
    a = a.copy()
    grad = np.empty_like(a, dtype=np.float64)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + H
        j_plus = J(a)
        a[idx] = old - H
        j_minus = J(a)
        a[idx] = old
        grad[idx] = (j_plus - j_minus) / (2 * H)
    return grad


def assert_grad(analytic, J, a, what: str):
    """``analytic == numeric_grad(J, a)`` within the FD tolerance, and not all zero."""
    fd = numeric_grad(J, a)
    assert not np.shares_memory(analytic, a), f"{what}: gradient aliases its input"
    assert analytic.shape == a.shape, f"{what}: gradient shape {analytic.shape} != {a.shape}"
    assert analytic.dtype == np.float64, f"{what}: gradient dtype {analytic.dtype}"
    tol = 1e-5 * (1 + np.abs(fd).max()) + 1e-5 * np.abs(fd)
    assert_within(analytic, fd, fd, tol, f"{what} vs finite differences")
    # Non-zero and resolved: 10x above the FD tolerance's absolute part, so the comparison
    # above checked real values.  (Sums of O(1) terms of random signs can cancel to ~1e-4.)
    assert np.abs(analytic).max() > 1e-4, f"{what}: gradient is (numerically) zero"


def inner(a, b) -> float:
    return float(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def away_from_zero(a):
    """Map values to ``sign(a) * [0.5, 1.5)``: random signs and sizes, none tiny.

    Tiny inputs would make some small drawn problems' gradients tiny by chance, and
    the non-zero assertion meaningless.
    """
    return np.where(a < 0, -1.0, 1.0) * (0.5 + np.abs(a) % 1.0)


def normal(rng, shape):
    return away_from_zero(rng.standard_normal(shape))


# --------------------------------------------------------------------------- convolution


def _reads_input(size: int, k: int, s: int, p: int) -> bool:
    """Does some output tap ``i*s + u`` (u < k) land inside the unpadded ``[p, p+size)``?

    With stride > kernel and padding, an input can be skipped entirely (e.g. a 1-pixel
    input, padding 1, 1-tap kernel, stride 2 reads only padding).
    """
    n_out = (size + 2 * p - k) // s + 1
    return any(p <= i * s + u < p + size for i in range(n_out) for u in range(k))


@FD
@given(case=conv_cases(dtypes=("float64",)))
def test_conv2d_gradients_equal_finite_differences(kern, case):
    """backward_data, backward_filter and backward_bias against FD of <conv2d_forward, g>."""
    x, w, b, table = case.arrays()
    x, w, g = away_from_zero(x), away_from_zero(w), away_from_zero(case.dy())
    kw = dict(stride=case.stride, padding=case.padding, table=table)
    sees_x = _reads_input(case.h, case.kh, case.stride, case.padding) and _reads_input(
        case.w, case.kw, case.stride, case.padding
    )
    connected = table is None or np.asarray(table).any()

    dx = kern.conv2d_backward_data(g, w, (case.h, case.w), **kw)
    dw = kern.conv2d_backward_filter(x, g, (case.kh, case.kw), **kw)
    db = kern.conv2d_backward_bias(g)
    assert_grad(db, lambda b_: inner(kern.conv2d_forward(x, w, b_, **kw), g), b, "db")
    if not (connected and sees_x):  # the output does not depend on x or w: both exactly 0
        assert not dx.any() and not dw.any(), "x, w unread: dx and dw must be exactly 0"
        return
    assert_grad(dx, lambda x_: inner(kern.conv2d_forward(x_, w, b, **kw), g), x, "dx")
    assert_grad(dw, lambda w_: inner(kern.conv2d_forward(x, w_, b, **kw), g), w, "dw")
    if table is not None:  # absent connections: filter gradient exactly 0 (contract)
        absent = ~np.asarray(table).astype(bool)
        assert not dw[absent].any(), "filter gradient of an absent connection must be 0"


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30)
@given(case=conv_cases(max_side=5))
def test_conv2d_adjoint_identities(kern, dtype, case):
    """<conv(x, w, 0), y> == <x, backward_data(y, w)> == <w, backward_filter(x, y)>.

    All three are the same sum of n = N*K*Ho*Wo*C*KH*KW products, so they agree
    within 2 gamma_n sum|products| (sum|products| from the same identity on |.|).
    """
    x, w, _, table = case.arrays()
    x, w = x.astype(dtype), w.astype(dtype)
    y = case.dy().astype(dtype)
    zero = np.zeros(case.k, dtype)
    kw = dict(stride=case.stride, padding=case.padding, table=table)
    lhs = inner(kern.conv2d_forward(x, w, zero, **kw), y)
    via_data = inner(x, kern.conv2d_backward_data(y, w, (case.h, case.w), **kw))
    via_filter = inner(w, kern.conv2d_backward_filter(x, y, (case.kh, case.kw), **kw))
    ax, aw, ay = (np.abs(a).astype(np.float64) for a in (x, w, y))
    scale = inner(kern.conv2d_forward(ax, aw, np.zeros(case.k), **kw), ay)
    ho, wo = case.out_hw
    n = case.n * case.k * ho * wo * case.c * case.kh * case.kw
    tol = 2 * 2 * gamma(n, dtype) * scale
    assert abs(lhs - via_data) <= tol, (lhs, via_data, tol, case)
    assert abs(lhs - via_filter) <= tol, (lhs, via_filter, tol, case)


# --------------------------------------------------------------------------- pooling


@st.composite
def pool_shapes(draw):
    size = draw(st.integers(1, 3))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return size, n, c, (size * draw(st.integers(1, 3)), size * draw(st.integers(1, 3)))


@FD
@given(shape=pool_shapes(), seed=seeds)
def test_avgpool2d_backward_equals_finite_differences(kern, shape, seed):
    size, n, c, hw = shape
    x = pool_input(seed, n, c, hw, np.float64)
    g = normal(np.random.default_rng(seed), (n, c, hw[0] // size, hw[1] // size))
    dx = kern.avgpool2d_backward(g, size=size)
    assert_grad(dx, lambda x_: inner(kern.avgpool2d_forward(x_, size=size), g), x, "avgpool dx")


@FD
@given(shape=pool_shapes(), seed=seeds)
def test_maxpool2d_backward_equals_finite_differences(kern, shape, seed):
    """Entries are distinct multiples of 1/4, so the argmax is stable under +-H."""
    size, n, c, hw = shape
    x = pool_input(seed, n, c, hw, np.float64)
    g = normal(np.random.default_rng(seed), (n, c, hw[0] // size, hw[1] // size))
    _, argmax = kern.maxpool2d_forward(x, size=size)
    dx = kern.maxpool2d_backward(g, argmax, hw)
    assert_grad(dx, lambda x_: inner(kern.maxpool2d_forward(x_, size=size)[0], g), x, "maxpool dx")


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=20)
@given(shape=pool_shapes(), seed=seeds)
def test_pool_adjoint_identities(kern, dtype, shape, seed):
    """<pool(x), y> == <x, pool_backward(y)> for mean and max pooling.

    Max pooling copies values (exact); mean pooling is a size**2 + 1 term sum per
    output, within 2 gamma_{size^2+1} <|x|, up(|y|)> of each other.
    """
    size, n, c, hw = shape
    rng = np.random.default_rng(seed)
    x = normal(rng, (n, c, *hw)).astype(dtype)
    y = normal(rng, (n, c, hw[0] // size, hw[1] // size)).astype(dtype)
    lhs = inner(kern.avgpool2d_forward(x, size=size), y)
    rhs = inner(x, kern.avgpool2d_backward(y, size=size))
    scale = inner(np.abs(x), kern.avgpool2d_backward(np.abs(y), size=size))
    n_terms = x.size + size**2 + 1
    assert abs(lhs - rhs) <= 4 * gamma(n_terms, dtype) * scale, (lhs, rhs)
    ymax, argmax = kern.maxpool2d_forward(x, size=size)
    lhs = inner(ymax, y)
    rhs = inner(x, kern.maxpool2d_backward(y, argmax, hw))
    assert abs(lhs - rhs) <= 2 * gamma(y.size, dtype) * inner(np.abs(ymax), np.abs(y)), (lhs, rhs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_argmax_ties_first_in_row_major(kern, dtype):
    """Ties go to the first maximum in row-major order; backward routes dy there only."""
    x = np.zeros((1, 2, 4, 6), dtype)  # channel 0: all windows tied everywhere
    x[0, 1] = [  # channel 1: ties placed so row-major and column-major firsts differ
        [0, 5, 1, 1, 2, 0],
        [5, 0, 1, 1, 0, 2],
        [3, 3, 0, 0, 7, 7],
        [3, 3, 0, 9, 7, 7],
    ]
    y, argmax = kern.maxpool2d_forward(x, size=2)
    W = 6
    first_of_window = [[(2 * i) * W + 2 * j for j in range(3)] for i in range(2)]
    np.testing.assert_array_equal(argmax[0, 0], first_of_window)
    np.testing.assert_array_equal(argmax[0, 1], [[1, 2, 4], [12, 21, 16]])
    np.testing.assert_array_equal(y[0, 1], [[5, 1, 2], [3, 9, 7]])
    dy = np.arange(1, 13, dtype=dtype).reshape(1, 2, 2, 3)
    dx = kern.maxpool2d_backward(dy, argmax, (4, 6))
    assert dx.dtype == np.dtype(dtype) and dx.shape == x.shape
    assert np.count_nonzero(dx) == dy.size  # one position per window
    np.testing.assert_array_equal(dx.reshape(2, -1)[0, first_of_window], dy[0, 0])
    np.testing.assert_array_equal(dx.sum(axis=(2, 3)), dy.sum(axis=(2, 3)))  # sum conserved


# --------------------------------------------------------------------------- subsampling


@FD
@given(
    seed=seeds,
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    hw=st.sampled_from([(2, 2), (4, 2), (4, 6)]),
)
def test_subsample_backward_equals_finite_differences(kern, seed, n, c, hw):
    rng = np.random.default_rng(seed)
    x, coef, bias = normal(rng, (n, c, *hw)), normal(rng, c), normal(rng, c)
    g = normal(rng, (n, c, hw[0] // 2, hw[1] // 2))
    dx, dcoef, dbias = kern.subsample_backward(g, x, coef)
    assert_grad(dx, lambda x_: inner(kern.subsample_forward(x_, coef, bias), g), x, "subsample dx")
    assert_grad(
        dcoef, lambda c_: inner(kern.subsample_forward(x, c_, bias), g), coef, "subsample dcoef"
    )
    assert_grad(
        dbias, lambda b_: inner(kern.subsample_forward(x, coef, b_), g), bias, "subsample dbias"
    )


# --------------------------------------------------------------------------- activations


def _act_data(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 4, size=rng.integers(1, 5)))
    z = normal(rng, shape)
    z[np.abs(z) < 1e-3] = 0.5  # keep relu's kink farther than H from every entry
    z.flat[0] = 0.3  # one active, unsaturated unit: no gradient here is ~0 everywhere
    return z, normal(rng, shape)


@FD
@given(seed=seeds, params=st.sampled_from([(1.7159, 2 / 3), (1.0, 1.0), (0.5, 3.0)]))
def test_scaled_tanh_backward_equals_finite_differences(kern, seed, params):
    A, S = params
    z, g = _act_data(seed)
    dz = kern.scaled_tanh_backward(g, z, A=A, S=S)
    assert_grad(dz, lambda z_: inner(kern.scaled_tanh_forward(z_, A=A, S=S), g), z, "tanh dz")
    default = kern.scaled_tanh_backward(g, z)
    assert_grad(default, lambda z_: inner(kern.scaled_tanh_forward(z_), g), z, "tanh default dz")


@FD
@given(seed=seeds, params=st.sampled_from([(1.7159, 2 / 3), (1.0, 1.0), (0.5, 3.0)]))
def test_scaled_tanh_backward_from_output_equals_finite_differences(kern, seed, params):
    A, S = params
    z, g = _act_data(seed)
    y = kern.scaled_tanh_forward(z, A=A, S=S)
    dz = kern.scaled_tanh_backward_from_output(g, y, A=A, S=S)
    assert_grad(dz, lambda z_: inner(kern.scaled_tanh_forward(z_, A=A, S=S), g), z, "tanh dz(y)")
    default = kern.scaled_tanh_backward_from_output(g, kern.scaled_tanh_forward(z))
    assert_grad(default, lambda z_: inner(kern.scaled_tanh_forward(z_), g), z, "tanh dz(y) default")


@FD
@given(seed=seeds, beta=st.sampled_from([1.0, 0.5, 2.0]))
def test_sigmoid_backward_equals_finite_differences(kern, seed, beta):
    z, g = _act_data(seed)
    dz = kern.sigmoid_backward(g, z, beta=beta)
    assert_grad(dz, lambda z_: inner(kern.sigmoid_forward(z_, beta=beta), g), z, "sigmoid dz")


@FD
@given(seed=seeds)
def test_relu_backward_equals_finite_differences(kern, seed):
    z, g = _act_data(seed)
    dz = kern.relu_backward(g, z)
    assert_grad(dz, lambda z_: inner(kern.relu_forward(z_), g), z, "relu dz")


# --------------------------------------------------------------------------- dense, rbf


dense_shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5))


@FD
@given(seed=seeds, shape=dense_shapes)
def test_dense_backward_equals_finite_differences(kern, seed, shape):
    n, i, o = shape
    rng = np.random.default_rng(seed)
    x, w, b, g = normal(rng, (n, i)), normal(rng, (o, i)), normal(rng, o), normal(rng, (n, o))
    dx, dw, db = kern.dense_backward(g, x, w)
    assert_grad(dx, lambda x_: inner(kern.dense_forward(x_, w, b), g), x, "dense dx")
    assert_grad(dw, lambda w_: inner(kern.dense_forward(x, w_, b), g), w, "dense dw")
    assert_grad(db, lambda b_: inner(kern.dense_forward(x, w, b_), g), b, "dense db")


@FD
@given(seed=seeds, shape=dense_shapes)
def test_rbf_backward_equals_finite_differences(kern, seed, shape):
    n, i, o = shape
    rng = np.random.default_rng(seed)
    x, centers, g = normal(rng, (n, i)), normal(rng, (o, i)), normal(rng, (n, o))
    dx, dcenters = kern.rbf_backward(g, x, centers)
    assert_grad(dx, lambda x_: inner(kern.rbf_forward(x_, centers), g), x, "rbf dx")
    assert_grad(dcenters, lambda c_: inner(kern.rbf_forward(x, c_), g), centers, "rbf dcenters")


# --------------------------------------------------------------------------- losses


@st.composite
def loss_data(draw):
    rng = np.random.default_rng(draw(seeds))
    n, o = draw(st.integers(1, 4)), draw(st.integers(2, 10))
    return 2 * normal(rng, (n, o)), rng.integers(0, o, size=n).astype(np.int64), rng


@FD
@given(data=loss_data(), j=st.sampled_from([1.0, 0.5, 3.0]))
def test_map_loss_backward_equals_finite_differences(kern, data, j):
    y, labels, _ = data
    dy = kern.map_loss_backward(y, labels, j=j)
    assert_grad(dy, lambda y_: kern.map_loss_forward(y_, labels, j=j).sum(), y, "map_loss dy")


@FD
@given(data=loss_data())
def test_squared_error_backward_equals_finite_differences(kern, data):
    y, _, rng = data
    t = normal(rng, y.shape)
    dy = kern.squared_error_backward(y, t)
    assert_grad(dy, lambda y_: kern.squared_error_forward(y_, t).sum(), y, "squared_error dy")


@FD
@given(data=loss_data())
def test_softmax_xent_backward_equals_finite_differences(kern, data):
    logits, labels, _ = data
    dz = kern.softmax_xent_backward(logits, labels)
    assert_grad(
        dz, lambda z_: kern.softmax_xent_forward(z_, labels).sum(), logits, "softmax_xent dz"
    )
