"""Random arguments at every kernel of the table: only ValueError/TypeError, never a crash.

Hypothesis replaces any subset of a valid call's arguments (``table_cases.first_problem``
of each kernel of the table) with random values: arrays of any dtype, rank, shape and
layout, None, ints at the C integer boundaries, floats with NaN and infinities, text,
pairs of huge sides. A call may succeed or raise ValueError or TypeError, nothing else.
The C backend runs in a child pytest process, so that a segfault fails the test
instead of killing the run. (Each argument made wrong on its own, with the exact
exception and message: ``test_kernels_table``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from table_cases import DTYPES, NAMES, first_problem, load_backend

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


@st.composite
def random_calls(draw):
    """``(kernel, arguments by name)``: a valid call with random arguments replaced."""
    name = draw(st.sampled_from(NAMES))
    args = first_problem(name).args(draw(st.sampled_from(DTYPES)))
    for arg in sorted(args):
        if draw(st.booleans()):
            args[arg] = draw(random_values)
    return name, args


def fuzz(mod):
    """Random calls of every kernel of one backend module (hypothesis drives the loop)."""

    @settings(max_examples=500, deadline=None)
    @given(random_calls())
    def random_only_value_or_type_errors(case):
        name, args = case
        try:
            getattr(mod, name)(**args)
        except (ValueError, TypeError):
            pass

    random_only_value_or_type_errors()


CHILD_ENV = "SYMCONV_FUZZ_CHILD_BACKEND"


@pytest.mark.parametrize("name", ["c", "np"])
def test_fuzz_every_kernel(name):
    """The NumPy backend is fuzzed in-process; the C backend in a child pytest process
    running :func:`test_fuzz_in_child`, so a segfault (negative return code) fails this
    test with the child's output."""
    mod = load_backend(name)
    if name == "np":
        fuzz(mod)
        return
    first_problem(NAMES[0]).call(mod, np.float64)  # build the C library here, not in the child
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, **{CHILD_ENV: name})
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist"]
    cmd += [f"{Path(__file__).resolve()}::test_fuzz_in_child"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    output = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"fuzzing {name} child exited with {proc.returncode}:\n{output}"
    assert "1 passed" in proc.stdout, f"the fuzzing child did not run its test:\n{output}"


@pytest.mark.skipif(
    CHILD_ENV not in os.environ, reason="runs only as test_fuzz_every_kernel's child"
)
def test_fuzz_in_child():
    fuzz(load_backend(os.environ[CHILD_ENV]))
