"""The parameter-update kernels and the output form of the squashing derivative, both
backends, against their definitions evaluated in exact rational arithmetic.

Inputs are exact in their dtype; scalar parameters are rounded to the dtype first (the
C float variant takes float scalars, NumPy float32 arithmetic casts Python floats), so
the only errors are the kernels' own roundings.  Each bound below counts them: every
operation rounds to within u (the unit roundoff) of its exact result, so a chain of k
operations on terms t_i stays within ~k u sum|t_i| (Higham, 3.1).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_support import DTYPES, UNIT_ROUNDOFF, assert_within, backend_fixture, check_output

kern = backend_fixture()
CASES = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)


def _arrays(seed, dtype, count):
    """``count`` arrays of one random shape (rank 1..3), standard normal, in ``dtype``."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 5, size=rng.integers(1, 4)))
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)], rng


def _exact(f, *arrays):
    """``f`` element by element in exact rationals over the (exact) float inputs."""
    flat = [np.asarray(a, np.float64).ravel() for a in arrays]
    vals = [float(f(*(Fraction(float(v)) for v in row))) for row in zip(*flat, strict=True)]
    return np.array(vals).reshape(np.shape(arrays[0]))


def _rounded(value, dtype):
    return float(np.asarray(value, dtype))


@CASES
@given(
    seed=seeds,
    dtype=dtypes,
    eta=st.sampled_from([1e-5, 0.0005, 0.3]),
    mu=st.sampled_from([0.02, 1.0]),
)
def test_sdlm_update_equals_definition(kern, seed, dtype, eta, mu):
    (w, g, h), rng = _arrays(seed, dtype, 3)
    h = np.abs(h)  # a Gauss-Newton diagonal is >= 0
    w_new = kern.sdlm_update(w, g, h, eta, mu)
    check_output(w_new, dtype, w.shape, "sdlm_update", inputs=(w, g, h))
    e, m = Fraction(_rounded(eta, dtype)), Fraction(_rounded(mu, dtype))
    exact = _exact(lambda w_, g_, h_: w_ - e * g_ / (m + h_), w, g, h)
    step = np.abs(_exact(lambda g_, h_: e * g_ / (m + h_), g, h))
    # mu + h, eta * g, the division, the subtraction: 4 roundings, <= 5u(|w| + |step|).
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    assert_within(w_new, exact, exact, 5 * u * (np.abs(w.astype(np.float64)) + step), "sdlm_update")
    assert (w_new != w).any() or not g.any()  # the update moved something


@CASES
@given(
    seed=seeds,
    dtype=dtypes,
    rate=st.sampled_from([1e-4, 0.01, 0.5]),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_sgd_momentum_update_equals_definition(kern, seed, dtype, rate, momentum):
    (w, v, g), _ = _arrays(seed, dtype, 3)
    w_new, v_new = kern.sgd_momentum_update(w, v, g, rate, momentum)
    for out, name in ((w_new, "w_new"), (v_new, "v_new")):
        check_output(out, dtype, w.shape, name, inputs=(w, v, g))
    r, m = Fraction(_rounded(rate, dtype)), Fraction(_rounded(momentum, dtype))
    v_exact = _exact(lambda v_, g_: m * v_ - r * g_, v, g)
    w_exact = _exact(lambda w_, v_, g_: w_ + m * v_ - r * g_, w, v, g)
    terms = np.abs(_exact(lambda v_, g_: abs(m * v_) + abs(r * g_), v, g))
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    # v: m v, r g, the difference (3 roundings); w: v's error plus one more addition.
    assert_within(v_new, v_exact, v_exact, 3 * u * terms, "v_new")
    tol_w = 5 * u * (np.abs(w.astype(np.float64)) + terms)
    assert_within(w_new, w_exact, w_exact, tol_w, "w_new")


@CASES
@given(seed=seeds, dtype=dtypes, params=st.sampled_from([(1.7159, 2 / 3), (1.0, 1.0), (0.5, 3.0)]))
def test_scaled_tanh_backward_from_output_equals_definition(kern, seed, dtype, params):
    A, S = params
    (dy, y), rng = _arrays(seed, dtype, 2)
    y = (A * np.tanh(y)).astype(dtype)  # outputs of the squashing function, |y| < A
    dz = kern.scaled_tanh_backward_from_output(dy, y, A=A, S=S)
    check_output(dz, dtype, y.shape, "scaled_tanh_backward_from_output", inputs=(dy, y))
    a, s = Fraction(_rounded(A, dtype)), Fraction(_rounded(S, dtype))
    exact = _exact(lambda dy_, y_: dy_ * s / a * (a * a - y_ * y_), dy, y)
    # A*A, y*y, their difference, then three products/quotients: <= 8u of the terms
    # |dy| (S/A)(A^2 + y^2) (the difference may cancel, its inputs' errors do not).
    mag = np.abs(dy.astype(np.float64)) * S / A * (A * A + y.astype(np.float64) ** 2)
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    assert_within(dz, exact, exact, 8 * u * mag, "scaled_tanh_backward_from_output")
    if dtype == np.float64:  # the same derivative as the tanh form, from z
        z = np.arctanh(y / A) / S
        np.testing.assert_allclose(
            dz, kern.scaled_tanh_backward(dy, z, A=A, S=S), rtol=1e-9, atol=1e-12
        )
