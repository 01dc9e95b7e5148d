"""Generated kernels (both backends) == the layer definitions evaluated exactly in SymPy.

Each test draws a problem with hypothesis, runs one backend, and compares with
``tests/reference.py`` (exact rational arithmetic, or 40-digit evaluation for
tanh/exp/log). Tolerances are rounding-error bounds, derived in
``kernel_support`` (Higham's ``gamma_n * sum|terms|`` for sums of products) or
stated next to the elementwise tests; float64 comes out around 1e-15 relative
to ``sum|terms|``, float32 around ``n * 6e-8``. Since both backends are held to
the same bound against the same exact value, C == NumPy follows (and is also
tested directly, with more examples, below).
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_support import (
    DTYPES,
    UNIT_ROUNDOFF,
    ConvCase,
    assert_sum_close,
    assert_within,
    backend_fixture,
    both_backends,
    check_output,
    conv_c_equals_numpy,
    conv_cases,
    pool_input,
)

kern = backend_fixture()

# The SymPy oracle costs ~5 ms per conv output; fewer, richer examples keep the
# whole file well under a minute on 2 cores.
ORACLE = settings(max_examples=25)

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)


def _rng(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- convolution


def _check_conv_forward(kern, case: ConvCase):
    x, w, b, table = case.arrays()
    y = kern.conv2d_forward(x, w, b, stride=case.stride, padding=case.padding, table=table)
    check_output(y, case.dtype, (case.n, case.k, *case.out_hw), "conv2d_forward", (x, w, b))
    exact = ref.conv2d(x, w, b, case.stride, case.padding, table)
    abs_sum = ref.conv2d(np.abs(x), np.abs(w), np.abs(b), case.stride, case.padding, table)
    terms = ref.conv2d_terms(x, w, case.stride, case.padding, table) + 1  # + bias
    assert_sum_close(y, exact, abs_sum, terms, case.dtype, f"conv2d_forward {case}")


@ORACLE
@given(case=conv_cases())
def test_conv2d_forward_equals_definition(kern, case):
    _check_conv_forward(kern, case)


def _regime(n=1, c=2, k=2, h=5, w=5, kh=3, kw=3, stride=1, padding=0, table=None, dtype="float64"):
    return ConvCase(n, c, k, h, w, kh, kw, stride, padding, table, "uint8", dtype, seed=7)


REGIMES = {
    "1x1 kernel": _regime(kh=1, kw=1),
    "1x1 kernel, stride 2, padded": _regime(kh=1, kw=1, stride=2, padding=1),
    "kernel as large as the input": _regime(h=3, w=4, kh=3, kw=4),
    "kernel as large as the padded input": _regime(h=2, w=1, kh=4, kw=3, padding=1),
    "stride larger than the kernel": _regime(h=9, w=8, kh=2, kw=2, stride=3),
    "full padding p=k-1": _regime(h=4, w=4, kh=3, kw=3, padding=2),
    "half padding p=k//2": _regime(h=5, w=6, kh=3, kw=3, padding=1),
    "non-square kernel, stride 2": _regime(h=7, w=6, kh=2, kw=3, stride=2, padding=1),
    "table with an empty row": _regime(c=3, k=3, table=((1, 0, 1), (0, 0, 0), (1, 1, 1))),
    "float32": _regime(c=3, k=2, kh=2, kw=3, stride=2, padding=1, dtype="float32"),
}


@pytest.mark.parametrize("case", REGIMES.values(), ids=REGIMES.keys())
def test_conv2d_forward_regimes(kern, case):
    """The four padding regimes of the lecture's figures and the stride/size corners."""
    _check_conv_forward(kern, case)


@settings(max_examples=60)
@given(case=conv_cases(max_side=5))
def test_conv2d_c_equals_numpy(case):
    """C == NumPy on forward and all three backward kernels (bound: ``conv_c_equals_numpy``)."""
    conv_c_equals_numpy(*both_backends(), case)


# --------------------------------------------------------------------------- pooling


@st.composite
def pool_cases(draw):
    size = draw(st.integers(1, 3))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    hw = (size * draw(st.integers(1, 3)), size * draw(st.integers(1, 3)))
    return size, pool_input(draw(seeds), n, c, hw, draw(dtypes))


@ORACLE
@given(pc=pool_cases())
def test_avgpool2d_forward_equals_definition(kern, pc):
    size, x = pc
    y = kern.avgpool2d_forward(x, size=size)
    n, c, h, w = x.shape
    check_output(y, x.dtype, (n, c, h // size, w // size), "avgpool2d_forward")
    exact = ref.avgpool2d(x, size)
    # size**2 additions plus the division by size**2 (inexact for size 3).
    assert_sum_close(y, exact, ref.avgpool2d(np.abs(x), size), size**2 + 1, x.dtype, "avgpool")


@ORACLE
@given(pc=pool_cases())
def test_maxpool2d_forward_equals_definition(kern, pc):
    """Max is exact (no rounding): values and argmax must match bit for bit."""
    size, x = pc
    y, am = kern.maxpool2d_forward(x, size=size)
    n, c, h, w = x.shape
    check_output(y, x.dtype, (n, c, h // size, w // size), "maxpool2d_forward y")
    check_output(am, np.int64, (n, c, h // size, w // size), "maxpool2d_forward argmax")
    exact, exact_am = ref.maxpool2d(x, size)
    np.testing.assert_array_equal(y.astype(np.float64), ref.to_float(exact))
    np.testing.assert_array_equal(am, exact_am)


@ORACLE
@given(seed=seeds, dtype=dtypes, n=st.integers(1, 2), c=st.integers(1, 3), hh=st.integers(1, 3))
def test_subsample_forward_equals_definition(kern, seed, dtype, n, c, hh):
    rng = _rng(seed)
    x = rng.standard_normal((n, c, 2 * hh, 2 * (4 - hh))).astype(dtype)
    coef, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    z = kern.subsample_forward(x, coef, bias)
    check_output(z, dtype, (n, c, hh, 4 - hh), "subsample_forward")
    exact = ref.subsample(x, coef, bias)
    abs_sum = ref.subsample(np.abs(x), np.abs(coef), np.abs(bias))
    # 3 additions in the window, 1 product, 1 bias addition: within gamma_6.
    assert_sum_close(z, exact, abs_sum, 6, dtype, "subsample_forward")


# --------------------------------------------------------------------------- activations


def _act_input(seed, dtype):
    rng = _rng(seed)
    shape = tuple(rng.integers(1, 4, size=rng.integers(1, 5)))  # any rank 1..4
    return (3 * rng.standard_normal(shape)).astype(dtype)


@ORACLE
@given(seed=seeds, dtype=dtypes, params=st.sampled_from([(1.7159, 2 / 3), (1.0, 1.0), (0.5, 3.0)]))
def test_scaled_tanh_forward_equals_definition(kern, seed, dtype, params):
    A, S = params
    z = _act_input(seed, dtype)
    y = kern.scaled_tanh_forward(z, A=A, S=S)
    check_output(y, dtype, z.shape, "scaled_tanh_forward", inputs=(z,))
    exact = ref.to_float(ref.scaled_tanh(z, A, S))
    # A*tanh(S*z): S*z, tanh, A* each add <= ~2u relative (tanh's condition number
    # |x tanh'(x)/tanh(x)| <= 1), plus rounding A and S to the dtype: 16u relative,
    # plus one ulp of the output range A for a libm tanh near 0.
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    assert_within(y, exact, exact, 16 * u * np.abs(exact) + u * A, "scaled_tanh_forward")
    if dtype == np.float64:  # the default constants are the contract's
        y0 = kern.scaled_tanh_forward(z)
        assert_within(y0, ref.to_float(ref.scaled_tanh(z)), 0, 16 * u * 1.7159, "tanh defaults")


@ORACLE
@given(seed=seeds, dtype=dtypes, beta=st.sampled_from([1.0, 0.5, 2.0]))
def test_sigmoid_forward_equals_definition(kern, seed, dtype, beta):
    z = _act_input(seed, dtype)
    y = kern.sigmoid_forward(z, beta=beta)
    check_output(y, dtype, z.shape, "sigmoid_forward", inputs=(z,))
    exact = ref.to_float(ref.sigmoid(z, beta))
    # exp(-beta z) has condition number |beta z|, the rest a few u: relative
    # 8u(2 + |beta z|), plus 4u absolute (one ulp of the output range [0, 1]).
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    cond = 2 + np.abs(beta * z.astype(np.float64))
    assert_within(y, exact, exact, 8 * u * cond * np.abs(exact) + 4 * u, "sigmoid_forward")


@ORACLE
@given(seed=seeds, dtype=dtypes)
def test_relu_forward_equals_definition(kern, seed, dtype):
    z = _act_input(seed, dtype)
    z.flat[0] = 0.0  # the kink itself
    y = kern.relu_forward(z)
    check_output(y, dtype, z.shape, "relu_forward", inputs=(z,))
    np.testing.assert_array_equal(y.astype(np.float64), ref.to_float(ref.relu(z)))  # exact


# --------------------------------------------------------------------------- dense, rbf


dense_shapes = st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 5))


@ORACLE
@given(seed=seeds, dtype=dtypes, shape=dense_shapes)
def test_dense_forward_equals_definition(kern, seed, dtype, shape):
    n, i, o = shape
    rng = _rng(seed)
    x, w = rng.standard_normal((n, i)).astype(dtype), rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    y = kern.dense_forward(x, w, b)
    check_output(y, dtype, (n, o), "dense_forward")
    abs_sum = ref.dense(np.abs(x), np.abs(w), np.abs(b))
    assert_sum_close(y, ref.dense(x, w, b), abs_sum, i + 1, dtype, "dense_forward")


@ORACLE
@given(seed=seeds, dtype=dtypes, shape=dense_shapes)
def test_rbf_forward_equals_definition(kern, seed, dtype, shape):
    n, i, o = shape
    rng = _rng(seed)
    x = rng.standard_normal((n, i)).astype(dtype)
    centers = rng.choice([-1.0, 1.0], size=(o, i)).astype(dtype)  # LeNet's +-1 codes
    centers[0] = rng.standard_normal(i)  # and arbitrary ones
    y = kern.rbf_forward(x, centers)
    check_output(y, dtype, (n, o), "rbf_forward")
    exact = ref.rbf(x, centers)
    # Each term (x-c)^2 carries <= 3u (subtract, square); all terms are >= 0 so
    # sum|terms| is the exact value itself: gamma_{i+3}.
    assert_sum_close(y, exact, exact, i + 3, dtype, "rbf_forward")


# --------------------------------------------------------------------------- losses


@st.composite
def loss_cases(draw):
    rng = _rng(draw(seeds))
    n, o = draw(st.integers(1, 4)), draw(st.integers(2, 10))
    y = (2 * rng.standard_normal((n, o))).astype(draw(dtypes))
    labels = rng.integers(0, o, size=n).astype(np.int64)
    return y, labels


def _loss_tol(y, u):
    """logsumexp-type losses: absolute error ~u * (row size + max|y| * few)."""
    o = y.shape[1]
    return 16 * u * (o + 2) * (1 + np.abs(y.astype(np.float64)).max(axis=1))


@ORACLE
@given(case=loss_cases(), j=st.sampled_from([1.0, 0.5, 3.0]))
def test_map_loss_forward_equals_definition(kern, case, j):
    y, labels = case
    e = kern.map_loss_forward(y, labels, j=j)
    check_output(e, y.dtype, (y.shape[0],), "map_loss_forward")
    exact = ref.to_float(ref.map_loss(y, labels, j))
    assert_within(e, exact, exact, _loss_tol(y, UNIT_ROUNDOFF[y.dtype]), "map_loss_forward")


@ORACLE
@given(case=loss_cases())
def test_softmax_xent_forward_equals_definition(kern, case):
    logits, labels = case
    e = kern.softmax_xent_forward(logits, labels)
    check_output(e, logits.dtype, (logits.shape[0],), "softmax_xent_forward")
    exact = ref.to_float(ref.softmax_xent(logits, labels))
    tol = _loss_tol(logits, UNIT_ROUNDOFF[logits.dtype])
    assert_within(e, exact, exact, tol, "softmax_xent_forward")


@ORACLE
@given(case=loss_cases(), seed=seeds)
def test_squared_error_forward_equals_definition(kern, case, seed):
    y, _ = case
    t = _rng(seed).standard_normal(y.shape).astype(y.dtype)
    e = kern.squared_error_forward(y, t)
    check_output(e, y.dtype, (y.shape[0],), "squared_error_forward")
    exact = ref.squared_error(y, t)
    # o terms (t-y)^2 each with <= 3u, summed, halved exactly: gamma_{o+3} * exact.
    assert_sum_close(e, exact, exact, y.shape[1] + 3, y.dtype, "squared_error_forward")
