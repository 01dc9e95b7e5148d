"""Integer ranges and memory alignment at the kernel boundary, both backends.

* Every int parameter and size is < 2**31 (``MAX_SIZE`` of :mod:`codegen.runtime.checks`):
  larger values used to wrap in ctypes (``stride=2**64`` killed the process with SIGFPE,
  ``stride=2**63`` returned 0 where NumPy returns 9).  Each is a ValueError naming the parameter.
* A misaligned input array is copied before C reads it (typed loads from a misaligned
  address are undefined behaviour in C); the results equal those of the aligned array.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_support import backend_fixture, load_backend
from table_cases import NAMES, TABLE, first_problem, named_outputs

from derive.kernelspec import FLOAT, INT64

kern = backend_fixture()


def _conv(kern, **kw):
    return kern.conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.zeros(1), **kw)


@pytest.mark.parametrize("stride", [2**64, 2**63, 2**31])
def test_huge_stride_is_a_value_error(kern, stride):
    with pytest.raises(ValueError, match=r"conv2d_forward: stride must be < 2\*\*31"):
        _conv(kern, stride=stride)


def test_largest_stride_agrees_with_numpy(kern):
    assert _conv(kern, stride=2**31 - 1).ravel().tolist() == [9.0]


def test_huge_padding_names_the_derived_size(kern):
    with pytest.raises(ValueError, match=r"Ho = .* must be < 2\*\*31 .*padding=2147483647"):
        _conv(kern, padding=2**31 - 1)


def _int_params():
    for fname in NAMES:
        for p in TABLE[fname].params:
            if p.kind in ("int", "hw"):
                yield fname, p.name, p.kind


def _call(kern, fname, **replace):
    """A valid call of ``fname`` (float64) with ``replace``d arguments; outputs by name."""
    args = {**first_problem(fname).args(np.float64), **replace}
    return named_outputs(TABLE[fname], getattr(kern, fname)(**args))


@pytest.mark.parametrize("fname,name,kind", list(_int_params()))
@pytest.mark.parametrize("value", [2**31, 2**63, 2**64])
def test_every_int_parameter_is_bounded(kern, fname, name, kind, value):
    bad = value if kind == "int" else (value, 6)
    with pytest.raises(ValueError, match=rf"{fname}: {name}(\[0\])? must be < 2\*\*31"):
        _call(kern, fname, **{name: bad})


def test_workspace_batch_is_bounded():
    c = load_backend("c")
    with pytest.raises(ValueError, match=r"batch must be < 2\*\*31"):
        c.lenet5_workspace(2**63, np.float64)


def _misaligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` at an odd byte address (not aligned for its dtype)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def _float_args():
    for fname in NAMES:
        for a in TABLE[fname].inputs:
            if a.kind in (FLOAT, INT64):
                yield fname, a.name


@pytest.mark.parametrize("fname,name", list(_float_args()))
def test_misaligned_input_gives_the_aligned_result(kern, fname, name):
    want = _call(kern, fname)
    got = _call(kern, fname, **{name: _misaligned(first_problem(fname).values[name])})
    for out in want:
        np.testing.assert_array_equal(got[out], want[out])


def test_c_never_sees_a_misaligned_array(monkeypatch):
    """The checked path (the fast path declines misaligned arrays) hands C aligned copies."""
    c = load_backend("c")
    seen = []
    real_call = c.LIBRARY.call

    def spy(kernel, dtype, values, table=None):
        seen.extend(a.flags.aligned for a in values.values() if isinstance(a, np.ndarray))
        return real_call(kernel, dtype, values, table)

    monkeypatch.setattr(c.LIBRARY, "call", spy)
    x = _misaligned(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    w = np.ones((4, 3, 3, 3))
    got = c.conv2d_forward(x, w, np.zeros(4))
    np.testing.assert_allclose(got, load_backend("np").conv2d_forward(x, w, np.zeros(4)))
    assert seen and all(seen)


def test_step_rejects_misaligned_parameters():
    c = load_backend("c")
    params = {n: np.zeros(s) for n, s in c.LENET5_PARAMS}
    name = c.LENET5_PARAMS[0][0]
    params[name] = _misaligned(params[name])
    x, labels = np.zeros((1, 1, 32, 32)), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match=rf"params\['{name}'\] must be C-contiguous and aligned"):
        c.lenet5_gradients(params, x, labels, c.lenet5_workspace(1, np.float64))
