"""Corners the drawn calls of ``test_kernels_table`` reach only by chance, checked every run.

The convolution regimes of the lecture's output-size figures (no, half and full
padding; a kernel as large as the padded input; stride larger than the kernel; a
connection table with an empty row) against the conv2d_forward spec evaluated
exactly (``table_cases.check_against_spec``: both backends, both dtypes, the
spec's rounding-error bound); and max pooling's ties, where the first maximum in
row-major order wins (as PyTorch) and the backward routes dy there only.
"""

from __future__ import annotations

import numpy as np
import pytest
from table_cases import DTYPES, MODULES, check_against_spec, load_backend, problem_at


@pytest.fixture(scope="module")
def backends():
    return {name: load_backend(name) for name in MODULES}


def _conv(N=1, C=1, K=2, H=5, W=5, KH=3, KW=3, stride=1, padding=0):
    return dict(N=N, C=C, K=K, H=H, W=W, KH=KH, KW=KW, stride=stride, padding=padding)


CONV_REGIMES = {
    "1x1 kernel": _conv(KH=1, KW=1),
    "1x1 kernel, stride 2, padded": _conv(KH=1, KW=1, stride=2, padding=1),
    "kernel as large as the input": _conv(H=3, W=4, KH=3, KW=4),
    "kernel as large as the padded input": _conv(H=2, W=1, KH=4, KW=3, padding=1),
    "stride larger than the kernel": _conv(H=9, W=8, KH=2, KW=2, stride=3),
    "full padding p=k-1": _conv(H=4, W=4, padding=2),
    "half padding p=k//2": _conv(H=5, W=6, padding=1),
    "non-square kernel, stride 2": _conv(H=7, W=6, KH=2, KW=3, stride=2, padding=1),
    "dilated non-square kernel, stride 2, padded": {
        **_conv(H=7, W=6, KH=2, KW=3, stride=2, padding=1),
        "dilation": 2,
    },
}


@pytest.mark.parametrize("regime", CONV_REGIMES)
def test_conv2d_forward_regimes(backends, regime):
    check_against_spec(problem_at("conv2d_forward", CONV_REGIMES[regime]), backends)


@pytest.mark.parametrize("table_dtype", [np.uint8, np.bool_])
def test_conv2d_forward_table_with_an_empty_row(backends, table_dtype):
    table = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], table_dtype)
    problem = problem_at("conv2d_forward", _conv(C=3, K=3, H=3, W=4, KH=2, KW=2), table=table)
    check_against_spec(problem, backends)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", sorted(MODULES))
def test_maxpool2d_argmax_ties_first_in_row_major(backends, backend, dtype):
    """Ties go to the first maximum in row-major order; backward routes dy there only."""
    kern = backends[backend]
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
