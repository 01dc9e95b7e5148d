"""The lecture's worked examples, run through the generated kernels (both backends, dtypes).

Inputs and expected tables come from the derivations (``backprop.case1_mean``,
``backprop.case1_max``, ``backprop.case2`` ``.data["example"]``, in the kernel
API's NCHW shapes) and from ``derive.convolution``'s Convolved Feature example,
where they are proven equal to the lecture's printed tables. Integer and
quarter-valued tables are exact in binary floating point and compared exactly;
the case-2 tables (tenths) within a stated rounding bound.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_support import DTYPES, UNIT_ROUNDOFF, backend_fixture

from derive import convolution, core

kern = backend_fixture()


def example(derivation_id: str) -> dict:
    return core.get(derivation_id).data["example"]


def arr(nested, dtype) -> np.ndarray:
    """Nested lists of exact SymPy numbers -> array (each entry rounded once)."""
    return np.array(nested, dtype=object).astype(np.float64).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_pool_upsampling_table(kern, dtype):
    """up(δ) = δ ⊗ 1_{2x2} / 4 for δ = [[1,3],[2,4]]: the 0.25/0.75/0.5/1 table."""
    ex = example("backprop.case1_mean")
    dy = arr(ex["inputs"]["dy"], dtype)
    size = ex["inputs"]["size"]
    input_hw = (dy.shape[2] * size, dy.shape[3] * size)
    dx = kern.avgpool2d_backward(dy, input_hw, size=size)
    assert dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dx, arr(ex["expected"]["dx"], dtype))  # exact: quarters
    np.testing.assert_array_equal(dx[0, 0, 0], [0.25, 0.25, 0.75, 0.75])  # as printed
    assert dx.sum() == dy.sum()  # the lecture: the distributed δ sum to δ_k


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_routing_table(kern, dtype):
    """δ = [[1,3],[2,4]] routed to the recorded maxima: the lecture's 0/1/3/2/4 table."""
    ex = example("backprop.case1_max")
    x = arr(ex["inputs"]["x"], dtype)
    y, argmax = kern.maxpool2d_forward(x, size=2)
    np.testing.assert_array_equal(argmax, np.array(ex["inputs"]["argmax"], dtype=np.int64))
    np.testing.assert_array_equal(y, [[[[8, 9], [7, 8]]]])
    dy = arr(ex["inputs"]["dy"], dtype)
    dx = kern.maxpool2d_backward(dy, argmax, tuple(ex["inputs"]["input_hw"]))
    np.testing.assert_array_equal(dx, arr(ex["expected"]["dx"], dtype))
    np.testing.assert_array_equal(dx[0, 0, 0], [0, 0, 0, 3])  # as printed
    assert dx.sum() == dy.sum()


def _case2_tolerance(dy, w, dtype) -> float:
    """Rounding bound for the case-2 tables.

    Each 3x3 entry sums <= 8 products (2x2 taps, 2 maps) with sum|δ||k| <= 2.5; the
    tenths in k are rounded to the dtype (relative u each) and the sum adds gamma_8:
    (1 + 8) u * 2.5 = 22.5 u < 40 u.
    """
    assert np.abs(dy).max() <= 3 and np.abs(w).max() <= 0.4  # the premise of the bound
    return 40 * UNIT_ROUNDOFF[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_case2_full_convolutions_summed(kern, dtype):
    """δ_j = Σ_K full-conv(δ_K, k_Kj): two δ maps, two 2x2 kernels, one 3x3 δ.

    In the API this is conv2d_backward_data: forward is cross-correlation, so its
    adjoint is the full (true) convolution of dy with w, summed over output maps K.
    """
    ex = example("backprop.case2")
    dy, w = arr(ex["inputs"]["dy"], dtype), arr(ex["inputs"]["w"], dtype)
    hw = tuple(ex["inputs"]["input_hw"])
    tol = _case2_tolerance(dy, w, dtype)
    dx = kern.conv2d_backward_data(dy, w, hw)
    assert dx.dtype == np.dtype(dtype) and dx.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(dx, arr(ex["expected"]["dx"], np.float64), rtol=0, atol=tol)
    np.testing.assert_allclose(dx[0, 0, 0], [-0.5, 0.4, 0.7], rtol=0, atol=tol)  # as printed
    for K, full in enumerate(ex["expected"]["per_kernel"]):  # each kernel's own table
        one = kern.conv2d_backward_data(np.ascontiguousarray(dy[:, K : K + 1]), w[K : K + 1], hw)
        np.testing.assert_allclose(one[0, 0], arr(full, np.float64), rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_case2_with_connection_table(kern, dtype):
    """The same example with a table connecting only map K=1: only its full convolution."""
    ex = example("backprop.case2")
    dy, w = arr(ex["inputs"]["dy"], dtype), arr(ex["inputs"]["w"], dtype)
    table = np.array([[0], [1]], dtype=np.uint8)
    dx = kern.conv2d_backward_data(dy, w, tuple(ex["inputs"]["input_hw"]), table=table)
    tol = _case2_tolerance(dy, w, dtype)
    expected = arr(ex["expected"]["per_kernel"][1], np.float64)
    np.testing.assert_allclose(dx[0, 0], expected, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolved_feature(kern, dtype):
    """The 5x5 binary image * the 3x3 X-shaped kernel = [[4,3,4],[2,4,3],[2,3,4]] (exact)."""
    x = np.array(convolution.FEATURE_IMAGE, dtype=dtype)[None, None]
    w = np.array(convolution.FEATURE_KERNEL, dtype=dtype)[None, None]
    y = kern.conv2d_forward(x, w, np.zeros(1, dtype))
    np.testing.assert_array_equal(y[0, 0], convolution.FEATURE_RESULT)
    np.testing.assert_array_equal(y[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])  # the slide
