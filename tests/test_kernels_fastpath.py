"""The CPython fast path of the C bindings accepts only what the Python checks accept.

``generated/c/symconv_fast.c`` checks a call in C and declines it (returns None)
unless every check of ``codegen/runtime/checks.py`` would pass; the binding then runs
``_checked_<kernel>``, whose checks raise the documented errors. So for every call
the fast path either declines, or the checked path accepts the call too and both
return the same arrays bit for bit (the same C function on the same inputs). Here:
the random calls of the bad-input fuzzer, the LeNet-5 layer calls (which must not
decline), calls the fast path declines by design, and the module's life cycle.
(Drawn valid calls and each invalid argument of every kernel of the table:
``test_kernels_table``.) A crash of the fast path on bad input is caught by the
bad-input fuzzer's child process.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from table_cases import NAMES, TABLE, load_backend
from test_kernels_badinput import random_calls

from codegen import render
from codegen.runtime import c_library
from derive.indexing import FloorDiv, isym
from derive.kernels import load_table

ck = load_backend("c")


@pytest.fixture(scope="module")
def fast():
    """The loaded fast-path module (built here, cached)."""
    ck.relu_forward(np.ones(2))
    assert not isinstance(ck.LIBRARY.fast, c_library.Declining), "the fast path did not build"
    return ck.LIBRARY.fast


def positional(fname: str, args: dict) -> tuple:
    """The call's arguments in signature order, defaults filled in (the bindings call
    the fast path so)."""
    bound = inspect.signature(getattr(ck, fname)).bind(**args)
    bound.apply_defaults()
    assert tuple(bound.arguments) == TABLE[fname].signature
    return tuple(bound.arguments.values())


def _same(a, b) -> bool:
    a, b = (x if isinstance(x, tuple) else (x,) for x in (a, b))
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def compare(fast, fname: str, args: tuple) -> str:
    """'declined', 'rejected' (checks raise, fast path declined) or 'accepted' (equal)."""
    out = getattr(fast, fname)(*args)
    try:
        want = getattr(ck, f"_checked_{fname}")(*args)
    except (ValueError, TypeError):
        assert out is None, f"{fname}: the fast path accepted a call the checks reject"
        return "rejected"
    if out is None:
        return "declined"
    assert _same(out, want), f"{fname}: the fast path and the checked path differ"
    return "accepted"


def test_fast_path_agrees_on_random_calls(fast):
    @settings(max_examples=400, deadline=None)
    @given(random_calls())
    def random_arguments(case):
        fname, params = case
        compare(fast, fname, positional(fname, params))

    random_arguments()


def _lenet_calls(dtype, table_dtype):
    """(kernel, args) of every LeNet-5 layer kernel at batch 1 and 3, as the runtime calls them."""
    rng = np.random.default_rng(5)
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    from generated import lenet5_spec as spec

    c3 = np.array([[c in maps for c in range(6)] for maps in spec.C3_TABLE], table_dtype)
    for n in (1, 3):
        for c, k, side, table in ((1, 6, 32, None), (6, 16, 14, c3), (16, 120, 5, None)):
            x, w, b, dy = r(n, c, side, side), r(k, c, 5, 5), r(k), r(n, k, side - 4, side - 4)
            yield "conv2d_forward", dict(x=x, w=w, b=b, table=table)
            yield "conv2d_backward_data", dict(dy=dy, w=w, input_hw=(side, side), table=table)
            yield "conv2d_backward_filter", dict(x=x, dy=dy, kernel_hw=(5, 5), table=table)
            yield "conv2d_backward_bias", dict(dy=dy)
        for c, side in ((6, 28), (16, 10)):
            x, dz = r(n, c, side, side), r(n, c, side // 2, side // 2)
            yield "subsample_forward", dict(x=x, coef=r(c), bias=r(c))
            yield "subsample_backward", dict(dz=dz, x=x, coef=r(c))
        yield "dense_forward", dict(x=r(n, 120), w=r(84, 120), b=r(84))
        yield "dense_backward", dict(dy=r(n, 84), x=r(n, 120), w=r(84, 120))
        yield "rbf_forward", dict(x=r(n, 84), centers=r(10, 84))
        yield "rbf_backward", dict(dy=r(n, 10), x=r(n, 84), centers=r(10, 84))
        yield "scaled_tanh_forward", dict(z=r(n, 84), A=spec.SQUASH_A, S=spec.SQUASH_S)
        labels = np.arange(n, dtype=np.int64)
        yield "map_loss_forward", dict(y=r(n, 10), labels=labels, j=spec.MAP_J)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("table_dtype", [np.uint8, bool])
def test_lenet5_layers_take_the_fast_path(fast, dtype, table_dtype):
    """Every LeNet-5 layer call is accepted and equals the checked path bit for bit
    (so the fast path runs the same specialization the ctypes path picks)."""
    for fname, args in _lenet_calls(dtype, table_dtype):
        assert compare(fast, fname, positional(fname, args)) == "accepted", fname


class _Sub(np.ndarray):
    pass


def _unaligned(shape):
    raw = np.zeros(np.prod(shape) * 8 + 1, np.uint8)[1:]
    return raw.view(np.float64).reshape(shape)


DECLINED = {  # kernel, its arguments by name
    "ndarray subclass": ("relu_forward", lambda: dict(z=np.ones((2, 3)).view(_Sub))),
    "big-endian float64": ("relu_forward", lambda: dict(z=np.ones((2, 3), ">f8"))),
    "unaligned": ("relu_forward", lambda: dict(z=_unaligned((2, 3)))),
    "numpy int stride": (
        "conv2d_forward",
        lambda: dict(
            x=np.ones((1, 1, 4, 4)), w=np.ones((2, 1, 3, 3)), b=np.ones(2), stride=np.int64(1)
        ),
    ),
    "numpy float parameter": ("sigmoid_forward", lambda: dict(z=np.ones(3), beta=np.float64(1))),
    "int parameter beyond int64": ("sigmoid_forward", lambda: dict(z=np.ones(3), beta=2**64)),
    "size at 2**31": ("avgpool2d_forward", lambda: dict(x=np.ones((1, 1, 4, 4)), size=2**31)),
    "bool table holding a 2": (
        "conv2d_forward",
        lambda: dict(
            x=np.ones((1, 2, 4, 4)),
            w=np.ones((2, 2, 3, 3)),
            b=np.ones(2),
            table=np.array([[1, 2], [1, 1]], np.uint8).view(bool),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_declined_calls_get_the_checked_result(fast, case):
    """What the fast path does not check cheaply it declines; the binding still answers
    exactly as the checked path (a result or the same error)."""
    fname, make = DECLINED[case]
    args = positional(fname, make())
    assert getattr(fast, fname)(*args) is None
    try:
        want = getattr(ck, f"_checked_{fname}")(*args)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            getattr(ck, fname)(*args)
    else:
        assert _same(getattr(ck, fname)(*args), want)


def test_fast_path_declines_before_bind(fast):
    """An unbound fast-path module (no kernel addresses yet) declines instead of crashing,
    and bind rejects anything but the tuple of every kernel's address."""
    code = (
        "import numpy as np\n"
        "from codegen import build\n"
        "from generated import c_kernels as ck\n"
        "m = build.load_extension(ck.FAST_SOURCE, 'symconv_fast')\n"
        "print(m.relu_forward(np.ones(3)))\n"
        "try:\n"
        "    m.bind((1, 2))\n"
        "except TypeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "None"
    assert out.stdout.splitlines()[1].startswith("bind: addresses must be a tuple of")


def test_size_formulas_are_checked_for_int64_overflow_and_division():
    spec = load_table()["conv2d_forward"]
    H, s, p = isym("H"), isym("stride"), isym("padding")
    render._check_formula(spec, FloorDiv(H * H - 1, s) + 1)  # quadratic, positive divisor
    with pytest.raises(ValueError, match="more than quadratic"):
        render._check_formula(spec, H * H * s)
    with pytest.raises(ValueError, match="divides by padding"):
        render._check_formula(spec, FloorDiv(H, p))


def test_without_the_fast_path_every_call_is_checked(fast, monkeypatch, caplog):
    """No Python headers (the extension does not build): logged, and every call takes
    the checked path with the same results and errors."""
    from codegen import build

    def fail(*args):
        raise build.BuildError("Python.h: No such file or directory")

    monkeypatch.setattr(build, "load_extension", fail)
    monkeypatch.setattr(ck.LIBRARY, "fast", c_library.Unloaded(ck.LIBRARY))
    x = np.arange(6.0).reshape(2, 3) - 2
    assert _same(ck.relu_forward(x), ck._checked_relu_forward(x))
    assert isinstance(ck.LIBRARY.fast, c_library.Declining)
    assert "no C fast path" in caplog.text
    with pytest.raises(TypeError, match="relu_forward: z must be a numpy.ndarray"):
        ck.relu_forward([1.0])


@pytest.mark.parametrize("fname", NAMES)
def test_wrong_argument_counts_decline(fast, fname):
    """The fast path is called positionally by the bindings only, but any count of
    anything declines safely."""
    n = len(inspect.signature(getattr(ck, fname)).parameters)
    for args in ((), (None,) * (n - 1), (np.ones(3),) * (n + 1), (None,) * n):
        assert getattr(fast, fname)(*args) is None
