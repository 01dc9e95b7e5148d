"""Every kernel of the table, both backends, tested from its spec alone.

Parametrized over ``derive.kernels.load_table()`` (nothing is listed by hand), on
calls drawn inside each spec's constraints (``table_cases``):

* the outputs of both backends in both dtypes equal the spec evaluated exactly on
  the inputs (random values, or ties and zeros: ``table_cases.ties``) by
  :func:`derive.kernelspec.evaluate`, the meaning ``kernel.<name>`` proves equal
  to the derivation, within a first-order rounding-error bound
  computed from the spec's own statements (``table_cases.error_spec``): Higham's
  ``(n-1) sum|terms|`` for every sum, one rounding per product, 4 ulps per tanh,
  exp or log, doubled (``table_cases.tolerance``);
* every backward kernel is the vector-Jacobian product of the forward kernel its
  ``Vjp`` pairs it with: central finite differences of ``<forward(x), dy>`` (or of
  the summed loss) along sampled coordinates and random directions ``e`` equal
  ``<backward(dy)[out], e>``, with non-zero gradients;
* every argument, by the kind the spec gives it, rejected when wrong with the
  documented exception naming it; the C fast path declines each such call;
* the C fast path returns bit for bit what the checked path returns;
* both backends expose exactly the table's kernels with the spec's signature.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from table_cases import (
    BACKWARD,
    DTYPES,
    MODULES,
    NAMES,
    TABLE,
    bad_arguments,
    check_against_spec,
    check_contract,
    first_problem,
    int_param,
    load_backend,
    named_outputs,
    outputs_shape,
    problems,
)

from derive.kernelspec import FLOAT, MASK


def exact_examples(name: str) -> int:
    """Drawn calls of kernel ``name`` checked against its exact evaluation.

    Exact evaluation costs ~1-3 ms per loop point: a handful of small calls per
    kernel (each checked on 2 backends x 2 dtypes), one more per regime (int param,
    optional mask), keeps the file well within a minute on one core.
    """
    spec = TABLE[name]
    regimes = sum(p.kind == "int" for p in spec.params) + sum(a.optional for a in spec.inputs)
    return 3 + regimes


CHEAP = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def backends():
    return {name: load_backend(name) for name in MODULES}


# --- a. both backends x both dtypes == the spec, evaluated exactly ---------------------


@pytest.mark.parametrize("name", NAMES)
def test_kernel_equals_its_spec_evaluated_exactly(backends, name):
    @settings(
        max_examples=exact_examples(name),
        deadline=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(problem=problems(name))
    def check(problem):
        check_against_spec(problem, backends)

    check()


# --- b. backward == VJP of forward: finite differences ----------------------------------

#: Central-difference step (float64). With |J| <= S_J (see _scale) and n <= ~2e3
#: roundings per output, J is off by <= n u S_J <= 2.3e-13 S_J, so the difference
#: quotient by <= 2.3e-8 S_J; the truncation error h**2/6 |J'''| is 0 for the
#: kernels of degree <= 2 in each input and <= 1e-9 S_J for the tanh/exp/log ones
#: (third derivatives <= 54 A of the data's scale, |z| < 1.5, S <= 3).
STEP = 1e-5
#: Allowed |finite difference - <gradient, e>|, relative to 1 + S_J: 4x the above.
FD_TOL = 1e-7
#: Coordinates of an input checked one by one (a random direction checks them all).
COORDINATES = 12
#: A gradient counts as non-zero (the check not vacuous) above this many tolerances.
NONZERO = 100


def _scale(fwd, forward, cotangent):
    """S_J: <|dy|, max(|f(x)|, |f(|x|)|)> over the paired output (or the summed loss).

    For kernels multilinear in their inputs f(|x|) is sum|terms| of each output; for
    the others |f(x)| is the size of the values J sums.
    """
    absolute = {a.name: np.abs(fwd.values[a.name]) for a in fwd.spec.inputs if a.kind == FLOAT}
    outs, outs_abs = forward(), forward(**absolute)
    name, dy = cotangent
    mag = np.maximum(np.abs(outs[name]), np.abs(outs_abs[name]))
    return float(np.sum(np.abs(dy) * mag))


@pytest.mark.parametrize("backend", sorted(MODULES))
@pytest.mark.parametrize("name", BACKWARD)
@CHEAP
@given(data=st.data())
def test_backward_is_the_vjp_of_its_forward(backends, name, backend, data):
    """<forward(x + h e) - forward(x - h e), dy> / 2h == <backward(dy)[out], e>.

    For every (out, in) pair of the kernel's ``Vjp``: e runs over (up to
    :data:`COORDINATES` random) coordinates of ``in`` and two random unit directions;
    for a loss, J is the summed loss.
    """
    fwd, bwd = data.draw(problems(name, fd=True), label="forward call, backward call")
    spec, module = TABLE[name], backends[backend]
    v = spec.vjp
    grads = bwd.call(module, np.float64)

    def forward(**replace):
        return fwd.call(module, np.float64, **replace)

    if v.cotangent:
        cot_name, dy = v.cotangent[1], bwd.values[v.cotangent[0]]
    else:  # a loss: the gradient of the sum of its per-sample values
        cot_name = next(r for r in fwd.spec.returns if fwd.spec.array(r).kind == FLOAT)
        dy = np.ones(outputs_shape(fwd, cot_name))

    def J(outs):
        return float(np.vdot(outs[cot_name].reshape(-1), dy.reshape(-1)))

    tol = FD_TOL * (1 + _scale(fwd, forward, (cot_name, dy)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="directions"))
    nonzero = False
    for out, src in v.grads:
        x0 = fwd.values[src]
        g = grads[out]
        check_contract(g, np.float64, x0.shape, f"{backend} {name} {out}", bwd.values)
        picked = rng.permutation(x0.size)[:COORDINATES]
        directions = [np.eye(1, x0.size, k).reshape(x0.shape) for k in picked]
        for _ in range(2):
            e = rng.standard_normal(x0.shape)
            directions.append(e / np.linalg.norm(e))
        for e in directions:
            plus, minus = forward(**{src: x0 + STEP * e}), forward(**{src: x0 - STEP * e})
            fd = (J(plus) - J(minus)) / (2 * STEP)
            analytic = float(np.vdot(g.reshape(-1), e.reshape(-1)))
            assert abs(fd - analytic) <= tol, (
                f"{backend} {name}: <{out}, e> = {analytic!r} but the central difference of "
                f"{v.forward} along {src} gives {fd!r} (tol {tol:.2e}); e = {e.reshape(-1)}"
            )
        nonzero |= float(np.abs(g).max()) > NONZERO * tol
    note(f"tolerance {tol:.3e}, gradients non-zero: {nonzero}")
    # An example whose every gradient is ~0 (an input the output never reads) checks
    # nothing: it does not count, and a kernel with no other examples fails as
    # Unsatisfiable instead of passing.
    assume(nonzero)


# --- c. bad arguments, by the kinds the spec gives them ----------------------------------


def _names(message: str, arg: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(arg)}(?!\w)", message) is not None


@pytest.mark.parametrize("backend", sorted(MODULES))
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_bad_arguments_raise_errors_naming_them(backends, name, backend, data):
    problem = data.draw(problems(name), label="valid call")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    spec, module = TABLE[name], backends[backend]
    fast = module.LIBRARY.fast if backend == "c" else None
    count = 0
    for arg, bad, exc, names in bad_arguments(problem, dtype):
        args = problem.args(dtype)
        args[arg] = bad
        with pytest.raises((TypeError, ValueError)) as info:
            getattr(module, name)(**args)
        what = f"{backend} {name}({arg}={_short(bad)})"
        assert info.type is exc, f"{what}: raised {info.type.__name__}, expected {exc.__name__}"
        named = any(_names(str(info.value), n) for n in names)
        assert named, f"{what}: the message names none of {names}: {info.value}"
        assert str(info.value).startswith(f"{name}: "), f"{what}: {info.value}"
        if fast is not None:
            positional = tuple(args[n] for n in spec.signature)
            assert getattr(fast, name)(*positional) is None, f"{what}: the fast path accepted it"
        count += 1
    assert count >= 4 * len(spec.signature) - 4 * sum(1 for a in spec.inputs if a.kind == MASK), (
        f"{name}: only {count} bad arguments tried"
    )


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        flags = "" if value.flags.c_contiguous else ", non-contiguous"
        return f"<{value.dtype} {value.shape}{flags}>"
    return repr(value)


# --- d. the C fast path == the checked path, bit for bit ---------------------------------


def _identical(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", NAMES)
@CHEAP
@given(data=st.data())
def test_fast_path_equals_checked_path(backends, name, data):
    """A plain valid call (fresh arrays, Python ints and floats) takes the fast path and
    returns exactly what ``_checked_<name>`` returns (the same C function)."""
    problem = data.draw(problems(name, budget=4000), label="call")
    ck = backends["c"]
    for dtype in DTYPES:
        args = problem.positional(dtype)
        fast = getattr(ck.LIBRARY.fast, name)(*args)
        assert fast is not None, f"{name}: the fast path declined a valid call"
        checked = getattr(ck, f"_checked_{name}")(*args)
        fast, checked = named_outputs(TABLE[name], fast), named_outputs(TABLE[name], checked)
        for out in fast:
            assert _identical(fast[out], checked[out]), f"{name} {out}: fast != checked"


# --- the API is the table ----------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(MODULES))
def test_backends_expose_exactly_the_tables_kernels(backends, backend):
    """Each kernel with the spec's signature, order and defaults; NumPy has nothing else."""
    module = backends[backend]
    for name, spec in TABLE.items():
        params = inspect.signature(getattr(module, name)).parameters
        assert tuple(params) == spec.signature, f"{backend} {name}: {tuple(params)}"
        for p in spec.params:
            default = params[p.name].default
            want = inspect.Parameter.empty if p.default is None else p.default
            if p.default_from:  # None: the value of another param
                want = None
            assert default == want, f"{backend} {name}: {p.name}={default!r}, spec {want!r}"
        for a in spec.inputs:
            want = None if a.optional else inspect.Parameter.empty
            assert params[a.name].default is want, f"{backend} {name}: {a.name}"
    if backend == "np":
        public = {
            n
            for n, f in vars(module).items()
            if inspect.isfunction(f) and not n.startswith("_") and f.__module__ == module.__name__
        }
        assert public == set(TABLE), f"not in the table: {public - set(TABLE)}"


@pytest.mark.parametrize(
    "name",
    [n for n in NAMES if any(p.default is not None or p.default_from for p in TABLE[n].params)],
)
@pytest.mark.parametrize("backend", sorted(MODULES))
def test_omitted_params_take_the_spec_defaults(backends, name, backend):
    """Leaving out a param with a default == passing the spec's default, bit for bit."""
    spec, module = TABLE[name], backends[backend]
    problem = first_problem(name)
    defaults = {p.name: p.default for p in spec.params if p.default is not None}
    for p in spec.params:
        if p.default_from:  # the value of the param it defaults from
            defaults[p.name] = int_param(spec, {**problem.values, p.name: None}, p.name)
    for dtype in DTYPES:
        args = problem.args(dtype)
        explicit = named_outputs(spec, getattr(module, name)(**{**args, **defaults}))
        left_out = {k: v for k, v in args.items() if k not in defaults}
        implicit = named_outputs(spec, getattr(module, name)(**left_out))
        for out in explicit:
            assert _identical(explicit[out], implicit[out]), f"{backend} {name} {out}"
