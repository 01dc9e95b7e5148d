"""Bad input to every kernel: a clear ValueError/TypeError naming the argument, never a crash.

Two parts:

* explicit cases (wrong dtype, mixed dtypes, rank, shape, non-contiguous and
  negative-stride arrays, mismatched channels, stride 0, negative padding, bad
  table shape/dtype, labels out of range, ...) with the exception type of the
  contract and the argument name in the message;
* hypothesis fuzzing of EVERY contract function of both backends: a valid call
  with one argument replaced by something invalid must raise ValueError or
  TypeError; fully random arguments may only raise those two (or succeed). The
  C backend's fuzzing runs in a child pytest process so that a segfault fails
  the test instead of killing the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_support import backend_fixture, load_backend

kern = backend_fixture()

F64, F32 = np.float64, np.float32
N, C, K, HW, KS, HO = 2, 3, 4, 6, 3, 4  # the base conv problem: 6x6 input, 3x3 kernel
P = 3  # pooled side (2x2 windows over 6x6)


def _rand(shape, dtype=F64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _argmax():
    """A valid max-pool argmax of the base pooling problem (window top-left corners)."""
    i, j = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    return np.broadcast_to(2 * i * HW + 2 * j, (N, C, P, P)).astype(np.int64).copy()


# Kinds: "f" float array, "argmax"/"labels" int64 array, "table" connection table,
# "int" an int >= 0 or >= 1 parameter, "hw" a (rows, cols) pair, "real" a float scalar.
# Each entry: (name, kind, valid value or its float shape, keyword?).
def signatures(dtype=F64):
    """Every contract function with a small valid argument list (in call order)."""
    f = lambda *shape: ("f", shape)  # noqa: E731
    x, w, dy = f(N, C, HW, HW), f(K, C, KS, KS), f(N, K, HO, HO)
    stride, padding, table = ("int", 1, True), ("int", 0, True), ("table", None, True)
    px, pdy, size2 = f(N, C, HW, HW), f(N, C, P, P), ("int", 2, True)
    z, o = f(2, 5), f(2, 3)
    A, S, beta, j = (
        ("real", 1.7159, True),
        ("real", 2 / 3, True),
        ("real", 1.0, True),
        ("real", 1.0, True),
    )
    labels = ("labels", np.array([1, 9], np.int64), False)
    y10 = f(2, 10)
    sigs = {
        "conv2d_forward": dict(x=x, w=w, b=f(K), stride=stride, padding=padding, table=table),
        "conv2d_backward_data": dict(
            dy=dy,
            w=w,
            input_hw=("hw", (HW, HW), False),
            stride=stride,
            padding=padding,
            table=table,
        ),
        "conv2d_backward_filter": dict(
            x=x,
            dy=dy,
            kernel_hw=("hw", (KS, KS), False),
            stride=stride,
            padding=padding,
            table=table,
        ),
        "conv2d_backward_bias": dict(dy=dy),
        "avgpool2d_forward": dict(x=px, size=size2),
        "avgpool2d_backward": dict(dy=pdy, size=size2),
        "maxpool2d_forward": dict(x=px, size=size2),
        "maxpool2d_backward": dict(
            dy=pdy, argmax=("argmax", _argmax(), False), input_hw=("hw", (HW, HW), False)
        ),
        "subsample_forward": dict(x=px, coef=f(C), bias=f(C)),
        "subsample_backward": dict(dz=pdy, x=px, coef=f(C)),
        "scaled_tanh_forward": dict(z=z, A=A, S=S),
        "scaled_tanh_backward": dict(dy=z, z=z, A=A, S=S),
        "sigmoid_forward": dict(z=z, beta=beta),
        "sigmoid_backward": dict(dy=z, z=z, beta=beta),
        "relu_forward": dict(z=z),
        "relu_backward": dict(dy=z, z=z),
        "dense_forward": dict(x=f(2, 5), w=f(3, 5), b=f(3)),
        "dense_backward": dict(dy=o, x=f(2, 5), w=f(3, 5)),
        "rbf_forward": dict(x=f(2, 5), centers=f(3, 5)),
        "rbf_backward": dict(dy=o, x=f(2, 5), centers=f(3, 5)),
        "map_loss_forward": dict(y=y10, labels=labels, j=j),
        "map_loss_backward": dict(y=y10, labels=labels, j=j),
        "squared_error_forward": dict(y=o, t=o),
        "squared_error_backward": dict(y=o, t=o),
        "softmax_xent_forward": dict(logits=y10, labels=labels),
        "softmax_xent_backward": dict(logits=y10, labels=labels),
        "scaled_tanh_backward_from_output": dict(dy=z, y=z, A=A, S=S),
        "sdlm_update": dict(w=z, g=z, h=z, eta=("real", 0.1, False), mu=("real", 0.02, False)),
        "sgd_momentum_update": dict(
            w=z, v=z, g=z, rate=("real", 0.1, False), momentum=("real", 0.9, False)
        ),
    }
    out = {}
    for fname, params in sigs.items():
        out[fname] = {}
        for seed, (pname, spec) in enumerate(params.items()):
            if spec[0] == "f":
                out[fname][pname] = ("f", _rand(spec[1], dtype, seed), False)
            else:
                out[fname][pname] = spec
    return out


FUNCTIONS = sorted(signatures())
ELEMENTWISE_ANY_RANK = {"scaled_tanh_forward", "sigmoid_forward", "relu_forward"}


def call(mod, fname: str, params: dict):
    """Call ``mod.fname`` with positional required and keyword optional arguments."""
    args = [v for (kind, v, kw) in params.values() if not kw]
    kwargs = {p: v for p, (kind, v, kw) in params.items() if kw}
    return getattr(mod, fname)(*args, **kwargs)


def with_arg(fname: str, name: str, value, dtype=F64) -> dict:
    params = signatures(dtype)[fname]
    kind, _, kw = params[name]
    params[name] = (kind, value, kw)
    return params


def test_valid_base_calls_succeed(kern):
    """The fuzzing base: every contract function accepts its base call (both dtypes)."""
    for dtype in (F32, F64):
        for fname, params in signatures(dtype).items():
            out = call(kern, fname, params)
            for a in out if isinstance(out, tuple) else (out,):
                assert isinstance(a, np.ndarray), fname
                assert a.dtype in (np.dtype(dtype), np.dtype(np.int64)), (fname, a.dtype)


# --------------------------------------------------------------------------- explicit cases


def _noncontig(a):
    big = np.repeat(a, 2, axis=-1)
    return big[..., ::2]


def _negstride(a):
    return a[..., ::-1]


x64 = _rand((N, C, HW, HW))
EITHER = (TypeError, ValueError)
CASES = [
    # (function, argument, bad value, exception, dtype of the rest)
    ("conv2d_forward", "x", x64.astype(np.int32), TypeError, F64),
    ("conv2d_forward", "x", x64.astype(np.float16), TypeError, F64),
    ("conv2d_forward", "x", x64.astype(np.complex128), TypeError, F64),
    ("conv2d_forward", "x", x64.tolist(), TypeError, F64),
    ("conv2d_forward", "x", None, TypeError, F64),
    ("conv2d_forward", "w", _rand((K, C, KS, KS), F32), TypeError, F64),  # mixed dtypes
    ("conv2d_forward", "b", _rand((K,), F64), TypeError, F32),  # mixed dtypes
    ("conv2d_forward", "x", x64[0], ValueError, F64),  # rank 3
    ("conv2d_forward", "x", x64[None], ValueError, F64),  # rank 5
    ("conv2d_forward", "x", _noncontig(x64), ValueError, F64),
    ("conv2d_forward", "x", _negstride(x64), ValueError, F64),
    ("conv2d_forward", "x", np.asfortranarray(x64), ValueError, F64),
    ("conv2d_forward", "w", _rand((K, C + 1, KS, KS)), ValueError, F64),  # channels
    ("conv2d_forward", "w", _rand((K, C, KS)), ValueError, F64),
    ("conv2d_forward", "b", _rand((K + 1,)), ValueError, F64),
    ("conv2d_forward", "b", _rand((K, 1)), ValueError, F64),
    ("conv2d_forward", "stride", 0, ValueError, F64),
    ("conv2d_forward", "stride", -2, ValueError, F64),
    ("conv2d_forward", "stride", 1.5, TypeError, F64),
    ("conv2d_forward", "stride", "1", TypeError, F64),
    ("conv2d_forward", "padding", -1, ValueError, F64),
    ("conv2d_forward", "padding", None, TypeError, F64),
    ("conv2d_forward", "table", np.ones((K, C + 1), np.uint8), ValueError, F64),
    ("conv2d_forward", "table", np.ones((C, K), np.uint8), ValueError, F64),
    ("conv2d_forward", "table", np.ones(K * C, np.uint8), ValueError, F64),
    ("conv2d_forward", "table", np.ones((K, C), np.float64), TypeError, F64),
    ("conv2d_forward", "table", np.ones((K, C), np.int32), TypeError, F64),
    ("conv2d_backward_data", "dy", _rand((N, K + 1, HO, HO)), ValueError, F64),  # vs w's K
    ("conv2d_backward_data", "dy", _rand((N, K, HO + 1, HO)), ValueError, F64),  # vs input_hw
    ("conv2d_backward_data", "input_hw", (HW + 1, HW), ValueError, F64),
    ("conv2d_backward_data", "input_hw", (HW,), EITHER, F64),  # wrong length: type or value
    ("conv2d_backward_data", "input_hw", (-HW, HW), ValueError, F64),
    ("conv2d_backward_data", "input_hw", None, TypeError, F64),
    ("conv2d_backward_data", "w", _rand((K, C, KS, KS), F32), TypeError, F64),
    ("conv2d_backward_data", "stride", 0, ValueError, F64),
    ("conv2d_backward_data", "padding", -1, ValueError, F64),
    ("conv2d_backward_filter", "dy", _rand((N + 1, K, HO, HO)), ValueError, F64),  # vs x's N
    ("conv2d_backward_filter", "kernel_hw", (KS + 1, KS), ValueError, F64),  # vs dy's Ho
    ("conv2d_backward_filter", "kernel_hw", (0, KS), ValueError, F64),
    ("conv2d_backward_filter", "dy", _noncontig(_rand((N, K, HO, HO))), ValueError, F64),
    ("conv2d_backward_filter", "table", np.ones((K, C), np.float32), TypeError, F64),
    ("conv2d_backward_filter", "stride", 0, ValueError, F64),
    ("conv2d_backward_bias", "dy", _rand((N, K, HO)), ValueError, F64),
    ("conv2d_backward_bias", "dy", _rand((N, K, HO, HO)).astype(np.int64), TypeError, F64),
    ("avgpool2d_forward", "x", _rand((N, C, 5, HW)), ValueError, F64),  # 5 not divisible by 2
    ("avgpool2d_forward", "size", 0, ValueError, F64),
    ("avgpool2d_backward", "dy", _negstride(_rand((N, C, P, P))), ValueError, F64),
    ("maxpool2d_forward", "x", _rand((C, HW, HW)), ValueError, F64),
    ("maxpool2d_forward", "size", -1, ValueError, F64),
    ("maxpool2d_backward", "argmax", np.full((N, C, P, P), HW * HW, np.int64), ValueError, F64),
    ("maxpool2d_backward", "argmax", np.full((N, C, P, P), -1, np.int64), ValueError, F64),
    ("maxpool2d_backward", "argmax", _argmax().astype(np.float64), TypeError, F64),
    ("maxpool2d_backward", "argmax", _argmax()[:, :, :2], ValueError, F64),
    ("maxpool2d_backward", "input_hw", (HW, -HW), ValueError, F64),
    ("subsample_forward", "coef", _rand((C + 1,)), ValueError, F64),
    ("subsample_forward", "bias", _rand((C,), F32), TypeError, F64),
    ("subsample_forward", "x", _rand((N, C, 5, 5)), ValueError, F64),  # odd sides
    ("subsample_backward", "dz", _rand((N, C, P, P + 1)), ValueError, F64),
    ("subsample_backward", "coef", _rand((C,)).astype(np.int32), TypeError, F64),
    ("scaled_tanh_forward", "z", np.arange(4), TypeError, F64),
    ("scaled_tanh_forward", "A", None, TypeError, F64),
    ("scaled_tanh_backward", "dy", _rand((2, 6)), ValueError, F64),
    ("sigmoid_forward", "beta", "1", TypeError, F64),
    ("sigmoid_backward", "z", _rand((2, 5), F32), TypeError, F64),
    ("relu_forward", "z", _noncontig(_rand((2, 5))), ValueError, F64),
    ("relu_backward", "dy", _rand((5, 2)), ValueError, F64),
    ("dense_forward", "w", _rand((3, 6)), ValueError, F64),  # inner sizes differ
    ("dense_forward", "x", _rand((2, 5, 1)), ValueError, F64),
    ("dense_forward", "b", _rand((4,)), ValueError, F64),
    ("dense_backward", "dy", _rand((2, 4)), ValueError, F64),
    ("rbf_forward", "centers", _rand((3, 6)), ValueError, F64),
    ("rbf_backward", "dy", _rand((3, 3)), ValueError, F64),
    ("map_loss_forward", "labels", np.array([1, 10], np.int64), ValueError, F64),
    ("map_loss_forward", "labels", np.array([-1, 0], np.int64), ValueError, F64),
    ("map_loss_forward", "labels", np.array([1.0, 2.0]), TypeError, F64),
    ("map_loss_forward", "labels", np.array([1, 2, 3], np.int64), ValueError, F64),
    ("map_loss_backward", "labels", np.array([[1, 2]], np.int64), ValueError, F64),
    ("map_loss_backward", "j", None, TypeError, F64),
    ("squared_error_forward", "t", _rand((2, 4)), ValueError, F64),
    ("squared_error_backward", "t", _rand((2, 3), F32), TypeError, F64),
    ("softmax_xent_forward", "labels", np.array([0, 10], np.int64), ValueError, F64),
    ("softmax_xent_backward", "logits", _rand((2, 10, 1)), ValueError, F64),
]


@pytest.mark.parametrize(
    "fname, arg, value, exc, dtype",
    CASES,
    ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_argument_raises_naming_it(kern, fname, arg, value, exc, dtype):
    params = with_arg(fname, arg, value, dtype)
    with pytest.raises(exc) as info:
        call(kern, fname, params)
    message = str(info.value)
    assert re.search(rf"\b{arg}\b", message), (
        f"{fname}: the {type(info.value).__name__} message does not name {arg!r}: {message!r}"
    )


INT_ARRAYS = [
    ("conv2d_forward", "table", np.ones((K, 2 * C), np.uint8)[:, ::2]),
    ("conv2d_forward", "table", np.ones((K, C), np.uint8)[::-1]),
    ("maxpool2d_backward", "argmax", np.repeat(_argmax(), 2, axis=-1)[..., ::2]),
    ("map_loss_forward", "labels", np.array([9, 0, 1, 1], np.int64)[::2]),
    ("softmax_xent_backward", "labels", np.array([9, 1], np.int64)[::-1]),
]


@pytest.mark.parametrize(
    "fname, arg, value", INT_ARRAYS, ids=[f"{c[0]}-{c[1]}" for c in INT_ARRAYS]
)
def test_noncontiguous_int_arrays_rejected_or_copied(kern, fname, arg, value):
    """The contract requires C-contiguity of float arrays; a non-contiguous table, argmax
    or labels array must either be rejected (ValueError naming it) or give exactly the
    result of its contiguous copy -- never be read with the wrong strides."""
    assert not value.flags.c_contiguous
    try:
        got = call(kern, fname, with_arg(fname, arg, value))
    except ValueError as exc:
        assert re.search(rf"\b{arg}\b", str(exc)), str(exc)
        return
    want = call(kern, fname, with_arg(fname, arg, np.ascontiguousarray(value)))
    for g, w in zip(*(o if isinstance(o, tuple) else (o,) for o in (got, want)), strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("fname", ["conv2d_forward", "conv2d_backward_filter"])
def test_output_smaller_than_one_pixel(kern, fname):
    """A kernel larger than the padded input gives Ho < 1: ValueError."""
    if fname == "conv2d_forward":
        params = with_arg(fname, "w", _rand((K, C, HW + 1, HW + 1)))
    else:
        params = with_arg(fname, "kernel_hw", (HW + 1, HW + 1))
    with pytest.raises(ValueError):
        call(kern, fname, params)


def test_every_contract_function_exists(kern):
    missing = [f for f in FUNCTIONS if not callable(getattr(kern, f, None))]
    assert not missing, f"{kern.__name__} lacks contract functions {missing}"


# --------------------------------------------------------------------------- fuzzing

DTYPES_ALL = [np.int8, np.int32, np.int64, np.uint8, np.bool_, np.float16, np.float32]
DTYPES_ALL += [np.float64, np.longdouble, np.complex64, np.complex128, object]


@st.composite
def random_arrays(draw):
    """Arrays of random dtype, rank 0..5, shape (sides 0..4), and memory layout."""
    dtype = draw(st.sampled_from(DTYPES_ALL))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
    a = np.asarray(np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape) * 3)
    a = a.astype(dtype) if dtype is not object else a.astype(object)
    layout = draw(st.sampled_from(["c", "f", "neg", "step"]))
    if a.ndim and layout == "f":
        a = np.asfortranarray(a)
    elif a.ndim and layout == "neg":
        a = a[..., ::-1]
    elif a.ndim and layout == "step":
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    return a


# Small ints, and ints at the C integer overflow boundaries. (No mid-sized ones: a
# valid padding of 10**4 would legitimately allocate gigabytes.)
random_ints = st.one_of(
    st.integers(-3, 10),
    st.sampled_from([2**31 - 1, 2**31, 2**32 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
)
# Sides: small, or so large that H*W overflows (no valid-but-huge planes either).
random_sides = st.one_of(
    st.integers(-3, 10), st.sampled_from([2**62, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])
)
random_values = st.one_of(
    random_arrays(),
    st.none(),
    random_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.tuples(random_sides, random_sides),
    st.lists(st.floats(-2, 2), max_size=4),
)


def _invalid_replacements(fname: str, name: str, kind: str, value, dtype):
    """Values that make the call invalid for sure (the contract says so)."""
    other = F32 if dtype == F64 else F64
    out = ["x"] if kind == "table" else [None, "x"]  # table=None is the valid default
    if kind in ("f", "argmax", "labels", "table"):
        arr = value if value is not None else np.ones((K, C), np.uint8)
        if kind == "f":
            out += [_noncontig(arr), _negstride(arr)]  # every base float array has W >= 2
            out += [arr.astype(np.int32), arr.astype(np.float16), arr.astype(np.complex128)]
            if fname not in ELEMENTWISE_ANY_RANK:
                out += [arr[None], np.zeros(())]
        if kind in ("argmax", "labels"):
            out += [arr.astype(np.float64), arr[None]]
        if kind == "labels":
            out += [np.array([1, 10], np.int64), np.array([-1, 0], np.int64)]
        if kind == "argmax":
            out += [np.full_like(arr, HW * HW), np.full_like(arr, -1)]
        if kind == "table":
            out += [
                np.ones((K, C), np.float64),
                np.ones((K, C + 1), np.uint8),
                np.ones(K, np.uint8),
            ]
    if kind == "f" and _is_followup(fname, name):
        out.append(value.astype(other))  # mixed dtypes
    if kind == "int":
        out += [-1, 1.5, "2", [1]] + ([0] if name != "padding" else [])
        out += [2**31, 2**63, 2**64]  # beyond what C's int64 index arithmetic may hold
    if kind == "hw":
        out += [(HW,), (HW, HW, HW), (-1, HW), (HW, 0), (HW + 0.5, HW), "66", (2**63, HW)]
    if kind == "real":
        out += ["1.0", [1.0, 2.0], {}]
    return out


def _is_followup(fname: str, name: str) -> bool:
    """Is ``name`` a float array that is not the function's first float argument?"""
    floats = [p for p, (kind, _, _) in signatures()[fname].items() if kind == "f"]
    return name in floats[1:]


@st.composite
def invalid_calls(draw):
    fname = draw(st.sampled_from(FUNCTIONS))
    dtype = draw(st.sampled_from([F32, F64]))
    params = signatures(dtype)[fname]
    name = draw(st.sampled_from(sorted(params)))
    kind, value, kw = params[name]
    bad = draw(st.sampled_from(_invalid_replacements(fname, name, kind, value, dtype)))
    params[name] = (kind, bad, kw)
    return fname, name, params


@st.composite
def random_calls(draw):
    fname = draw(st.sampled_from(FUNCTIONS))
    params = signatures(draw(st.sampled_from([F32, F64])))[fname]
    for name in sorted(params):
        if draw(st.booleans()):
            kind, _, kw = params[name]
            params[name] = (kind, draw(random_values), kw)
    return fname, params


def fuzz(mod):
    """Run both fuzzers against one backend module (hypothesis drives the loops)."""

    @settings(max_examples=500)
    @given(invalid_calls())
    def invalid_must_raise(case):
        fname, name, params = case
        with pytest.raises((ValueError, TypeError)):
            call(mod, fname, params)

    @settings(max_examples=500)
    @given(random_calls())
    def random_only_value_or_type_errors(case):
        fname, params = case
        try:
            call(mod, fname, params)
        except (ValueError, TypeError):
            pass

    invalid_must_raise()
    random_only_value_or_type_errors()


CHILD_ENV = "SYMCONV_FUZZ_CHILD_BACKEND"


@pytest.mark.parametrize("name", ["c", "np"])
def test_fuzz_every_function(name):
    """Random invalid arguments at every function: only ValueError/TypeError, no crash.

    The NumPy backend is fuzzed in-process; the C backend in a child pytest
    process running :func:`test_fuzz_in_child`, so a segfault (negative return
    code) fails this test with the child's output.
    """
    mod = load_backend(name)
    if name == "np":
        fuzz(mod)
        return
    mod.relu_forward(np.ones(2))  # build the C library here (cached), not in the timed child
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, **{CHILD_ENV: name})
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    cmd += [f"{Path(__file__).resolve()}::test_fuzz_in_child"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    output = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"fuzzing {name} child exited with {proc.returncode}:\n{output}"
    assert "1 passed" in proc.stdout, f"the fuzzing child did not run its test:\n{output}"


@pytest.mark.skipif(
    CHILD_ENV not in os.environ, reason="runs only as test_fuzz_every_function's child"
)
def test_fuzz_in_child():
    fuzz(load_backend(os.environ[CHILD_ENV]))
