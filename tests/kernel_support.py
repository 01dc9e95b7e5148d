"""Shared helpers of the LeNet-size kernel tests: backends, conv cases, rounding-error bounds.

Backends are the two generated modules of the kernel contract
(``generated.np_kernels`` and ``generated.c_kernels``). A backend whose module
has not been generated yet is *skipped* with that reason; any other import
error fails the test.

Tolerances follow the standard rounding-error bound for a sum of ``n``
products (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1):
``|fl(sum) - sum| <= gamma_n * sum|terms|`` with ``gamma_n = n u / (1 - n u)``
and ``u`` the unit roundoff of the dtype (2**-24 for float32, 2**-53 for
float64). It holds for every summation order (pairwise, blocked, SIMD, FMA),
so it is the tightest bound the generated code can be held to. (Drawn calls of
every kernel against its spec evaluated exactly: ``table_cases``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from table_cases import DTYPES, MODULES, UNIT_ROUNDOFF, load_backend  # noqa: F401 (re-exported)


def backend_fixture():
    """A module-scoped fixture parametrized over both backends (ids ``np`` and ``c``).

    Module scope keeps it usable inside hypothesis ``@given`` tests.
    """

    @pytest.fixture(scope="module", params=sorted(MODULES, reverse=True))
    def kern(request):
        return load_backend(request.param)

    return kern


def both_backends():
    """``(np_kernels, c_kernels)``, skipping while either is not generated."""
    return load_backend("np"), load_backend("c")


def gamma(n: int, dtype) -> float:
    """``gamma_n = n u / (1 - n u)``: relative error bound of an n-term dot product."""
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    return n * u / (1 - n * u)


def assert_within(got, exact_value, bound, tol_abs, what: str):
    """``|got - exact| <= tol`` element-wise; message shows the worst entry.

    ``exact_value`` is float64 (the oracle's exact result rounded once);
    ``tol_abs`` is an array or scalar of absolute tolerances.
    """
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == np.shape(exact_value), f"{what}: shape {got.shape} != {exact_value.shape}"
    err = np.abs(got - exact_value)
    tol = np.broadcast_to(np.asarray(tol_abs, dtype=np.float64), err.shape)
    bad = err > tol
    if bad.any():
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {err.size} entries out of tolerance; worst at {i}: "
            f"got {got[i]!r}, exact {exact_value[i]!r}, |err| {err[i]:.3e} > tol {tol[i]:.3e} "
            f"(bound {np.broadcast_to(bound, err.shape)[i]!r})"
        )


def check_output(arr, dtype, shape, what: str, inputs=()):
    """Contract: a newly allocated C-contiguous array of the call's dtype and shape
    (sharing no memory with any of ``inputs``)."""
    assert isinstance(arr, np.ndarray), f"{what}: returned {type(arr).__name__}, not ndarray"
    assert arr.dtype == np.dtype(dtype), f"{what}: dtype {arr.dtype} != {np.dtype(dtype)}"
    assert arr.shape == tuple(shape), f"{what}: shape {arr.shape} != {tuple(shape)}"
    assert arr.flags.c_contiguous, f"{what}: result not C-contiguous"
    assert not any(np.shares_memory(arr, a) for a in inputs), f"{what}: result aliases an input"


# --------------------------------------------------------------------------- conv cases


@dataclass(frozen=True)
class ConvCase:
    """One convolution problem: shapes, stride, padding, optional table, dtype, seed."""

    n: int
    c: int
    k: int
    h: int
    w: int
    kh: int
    kw: int
    stride: int
    padding: int
    table: tuple | None  # rows of 0/1, shape (k, c)
    table_dtype: str
    dtype: str
    seed: int

    @property
    def out_hw(self) -> tuple[int, int]:
        s, p = self.stride, self.padding
        return (self.h + 2 * p - self.kh) // s + 1, (self.w + 2 * p - self.kw) // s + 1

    def arrays(self):
        """``x, w, b, table`` drawn from a normal distribution in ``dtype``."""
        rng = np.random.default_rng(self.seed)
        dt = np.dtype(self.dtype)
        x = rng.standard_normal((self.n, self.c, self.h, self.w)).astype(dt)
        w = rng.standard_normal((self.k, self.c, self.kh, self.kw)).astype(dt)
        b = rng.standard_normal(self.k).astype(dt)
        table = None if self.table is None else np.array(self.table, dtype=self.table_dtype)
        return x, w, b, table

    def dy(self):
        """A random output gradient of the forward's shape."""
        rng = np.random.default_rng(self.seed + 1)
        return rng.standard_normal((self.n, self.k, *self.out_hw)).astype(self.dtype)


def conv_calls(case: ConvCase, x, w, b, dy, table):
    """The four conv kernels of one case as ``name -> (call(module), terms per output)``."""
    kw = dict(stride=case.stride, padding=case.padding, table=table)
    ho, wo = case.out_hw
    return {
        "forward": (lambda m: m.conv2d_forward(x, w, b, **kw), case.c * case.kh * case.kw + 1),
        "backward_data": (
            lambda m: m.conv2d_backward_data(dy, w, (case.h, case.w), **kw),
            case.k * case.kh * case.kw,
        ),
        "backward_filter": (
            lambda m: m.conv2d_backward_filter(x, dy, (case.kh, case.kw), **kw),
            case.n * ho * wo,
        ),
        "backward_bias": (lambda m: m.conv2d_backward_bias(dy), case.n * ho * wo),
    }


def conv_c_equals_numpy(npk, ck, case: ConvCase):
    """C == NumPy on forward and all three backward kernels of ``case``.

    Both must lie within ``gamma_n * sum|terms|`` of the exact value, so they lie
    within twice that of each other (times a margin 2 for the ``1/(1-nu)`` of
    gamma_n); ``sum|terms|`` is the NumPy kernel run in float64 on ``|inputs|`` (that
    kernel is checked against the spec evaluated exactly in test_kernels_table).
    """
    x, w, b, table = case.arrays()
    dy = case.dy()
    calls = conv_calls(case, x, w, b, dy, table)
    f64 = [np.abs(a).astype(np.float64) for a in (x, w, b, dy)]
    abs_calls = conv_calls(case, *f64, table)
    for name, (call, n_terms) in calls.items():
        a, c = call(npk), call(ck)
        check_output(c, case.dtype, a.shape, f"c conv2d_{name}")
        bound = abs_calls[name][0](npk)
        tol = 2 * (2 * gamma(n_terms, case.dtype) * bound)
        assert_within(c, a.astype(np.float64), bound, tol, f"conv2d_{name} C vs NumPy {case}")
