"""Problems for every kernel of the table, drawn from its spec; exact references and bounds.

Everything here is read from :func:`derive.kernels.load_table`: a kernel's arrays
(dims, kind, ``flat``, ``bounds``, ``optional``), its params (``int`` with a
minimum, ``float``, ``hw``), its derived sizes and constraints, and, for a
backward kernel, its :class:`~derive.kernelspec.Vjp` pairing. Nothing names a
kernel, so a kernel added to the table is covered by the tests the moment it is
added.

* :func:`problems` draws a valid call of a kernel (a :class:`Problem`): the sizes
  of a forward kernel are drawn inside its constraints (drawn, then filtered, then
  kept small enough for exact evaluation); a backward kernel's call is built from
  a drawn call of its forward kernel through the pairing (the cotangent takes the
  forward output's shape, ``saved`` inputs are the forward kernel's outputs, an
  ``hw`` param the forward's sizes, everything else the forward argument of the
  same name), exactly as ``kernel.<name>`` proves it.
* :func:`exact_outputs` evaluates the spec (:func:`derive.kernelspec.evaluate`) on
  the exact rationals of the inputs, together with a first-order bound on the
  rounding error of any evaluation of it in floating point (:func:`error_spec`).
* :func:`consistent` decides from the spec alone whether a call's sizes are valid
  (the oracle of the bad-input tests); :func:`bad_arguments` makes each argument
  wrong in the ways its kind allows.
* :func:`check_against_spec` checks both backends in both dtypes against the exact
  evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume
from hypothesis import strategies as st

from derive.indexing import Floor, isym
from derive.kernels import load_table
from derive.kernelspec import FLOAT, INT64, MASK, OUT, TMP, Array, KernelSpec, Stmt, evaluate

TABLE: dict[str, KernelSpec] = load_table()
NAMES: tuple[str, ...] = tuple(TABLE)
BACKWARD: tuple[str, ...] = tuple(n for n in NAMES if TABLE[n].vjp is not None)
MODULES = {"np": "generated.np_kernels", "c": "generated.c_kernels"}
DTYPES = (np.float32, np.float64)
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}

#: Float params other than their defaults: exact in float32, so one exact reference
#: serves both dtypes.
FLOAT_PARAMS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Largest drawn side of an array axis (element-wise arrays: :data:`MAX_FLAT` entries).
MAX_SIDE, MAX_FLAT = 5, 12
#: Int params are drawn in [minimum, minimum + INT_SPAN] (stride 1-3, padding 0-2, ...).
INT_SPAN = 2
#: Loop points (all nests) of one exact evaluation: ~1-3 ms each, so an example
#: stays well under a second.
WORK_BUDGET = 160


def load_backend(name: str):
    """A generated backend module, or skip while it has not been generated."""
    modname = MODULES[name]
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            pytest.skip(f"{modname} is not generated yet")
        raise


def forward_of(spec: KernelSpec) -> KernelSpec:
    """The kernel whose call a problem of ``spec`` is drawn from (itself if forward)."""
    return TABLE[spec.vjp.forward] if spec.vjp else spec


# --- sizes ---------------------------------------------------------------------------


def _derived_names(spec: KernelSpec) -> set[str]:
    return {name for name, _ in spec.derived}


def free_sizes(spec: KernelSpec) -> tuple[str, ...]:
    """The size names a call chooses (every size that is not derived)."""
    derived = _derived_names(spec)
    return tuple(d for d in spec.dim_names() if d not in derived)


def _flat_dims(spec: KernelSpec) -> set[str]:
    return {a.dims[0] for a in spec.arrays if a.flat}


def complete(spec: KernelSpec, env: dict[str, int]) -> dict[str, int] | None:
    """``env`` (free sizes and int params) with the derived sizes, or None when the
    call is invalid: a derived size below 1 or disagreeing with a given one, or a
    violated constraint.

    >>> conv = {p.name: p.default for p in TABLE["conv2d_forward"].params}
    >>> sizes = dict(N=1, C=1, K=1, H=2, W=5, KH=3, KW=2)
    >>> complete(TABLE["conv2d_forward"], {**sizes, **conv, "padding": 1})["Wo"]
    6
    >>> complete(TABLE["conv2d_forward"], {**sizes, **conv}) is None  # KH > H
    True
    """
    full = dict(env)
    subs = {isym(k): sp.Integer(v) for k, v in env.items()}
    for name, formula in spec.derived:
        value = sp.sympify(formula).subs(subs)
        if not value.is_Integer or value < 1:
            return None
        if name in full and full[name] != int(value):
            return None
        full[name] = int(value)
        subs[isym(name)] = value
    for relation, _ in spec.constraints:
        if sp.sympify(relation).subs(subs) is not sp.true:
            return None
    return full


def work(spec: KernelSpec, env: dict[str, int]) -> int:
    """Loop points of all nests of ``spec`` at ``env`` (the cost of :func:`evaluate`)."""
    subs = {isym(k): v for k, v in env.items()}
    total = 0
    for nest in spec.nests:
        points = 1
        for loop in nest.loops:
            lo, hi = (int(b.subs(subs)) for b in spec.range_of(loop))
            points *= max(0, hi - lo)
        total += points
    return total


def _shape(array: Array, env: dict) -> tuple[int, ...]:
    return tuple(env[d] for d in array.dims)


# --- problems ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One valid call of ``spec``: every size, and the arguments by signature name.

    Float arrays are float64 arrays of float32-representable values (the same
    numbers in both dtypes); int64 arrays, masks (or None), ints, floats (exact in
    float32) and ``hw`` tuples are passed as they are; an int param left to default
    to another is None. Flat (element-wise) arrays have any rank. ``env`` holds every
    size and int param.
    """

    spec: KernelSpec
    env: dict
    values: dict

    def args(self, dtype) -> dict:
        """Fresh arguments of the call in ``dtype`` (by name)."""
        out = {}
        for name, value in self.values.items():
            if isinstance(value, np.ndarray) and value.dtype == np.float64:
                value = value.astype(dtype)
            elif isinstance(value, np.ndarray):
                value = value.copy()
            out[name] = value
        return out

    def positional(self, dtype) -> tuple:
        """The arguments in signature order (what the C fast path takes)."""
        args = self.args(dtype)
        return tuple(args[name] for name in self.spec.signature)

    def call(self, module, dtype, **replace) -> dict[str, np.ndarray]:
        """Run the kernel of ``module``; its outputs by name."""
        args = self.args(dtype)
        args.update(replace)
        return named_outputs(self.spec, getattr(module, self.spec.name)(**args))

    def exact_args(self) -> dict:
        """The arguments as exact SymPy numbers (what the spec is evaluated on)."""
        out = {}
        for name, value in self.values.items():
            if isinstance(value, np.ndarray) and value.dtype == np.float64:
                value = exact(value)
            elif isinstance(value, float):
                value = sp.Rational(value)
            elif isinstance(value, np.ndarray) and value.dtype != np.int64:  # a mask
                value = value.astype(np.int64)
            out[name] = value
        return out

    def __repr__(self):
        parts = [f"{k}={v}" for k, v in sorted(self.env.items())]
        parts += [
            f"{k}={v!r}"
            for k, v in self.values.items()
            if not isinstance(v, np.ndarray) and k not in self.env
        ]
        return f"{self.spec.name}({', '.join(parts)})"


def named_outputs(spec: KernelSpec, result) -> dict[str, np.ndarray]:
    """A kernel's return value as ``{output name: array}`` (``spec.returns`` order)."""
    result = result if isinstance(result, tuple) else (result,)
    assert len(result) == len(spec.returns), f"{spec.name}: {len(result)} results"
    return dict(zip(spec.returns, result, strict=True))


def exact(a) -> np.ndarray:
    """Exact SymPy rationals of a float array (``Rational(float(v))`` is exact).

    >>> exact(np.array([0.5, -2.0]))
    array([1/2, -2], dtype=object)
    """
    a = np.asarray(a, dtype=np.float64)
    out = np.empty(a.shape, dtype=object)
    for idx, v in np.ndenumerate(a):
        out[idx] = sp.Rational(float(v))
    return out


def _float32_normal(rng, shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32).astype(np.float64)


#: Values of :func:`ties`: repeated, 0 included; no float param of :data:`FLOAT_PARAMS`
#: plus one of them is 0 (a denominator ``mu + h``).
TIES = (-1.25, 0.0, 1.0, 2.0)


def ties(rng, shape) -> np.ndarray:
    """Values from :data:`TIES`: equal maxima (the first in row-major order must win),
    ReLU kinks at exactly 0, sums exact in both dtypes."""
    return rng.choice(TIES, size=shape)


def away_from_zero(rng, shape) -> np.ndarray:
    """Pairwise distinct values of random sign with magnitudes in [0.5, 1.5).

    Distinct: a maximum is unique and stays so under a finite-difference step much
    smaller than the gaps (>= 1/(2 size)); away from 0: no ReLU kink within reach,
    and no gradient tiny by chance. Exact in float32.
    """
    size = int(np.prod(shape))
    ranks = rng.permutation(size)
    mags = 0.5 + (ranks + rng.uniform(0.25, 0.75, size)) / size
    signs = rng.choice([-1.0, 1.0], size)
    return (signs * mags).astype(np.float32).astype(np.float64).reshape(shape)


def _flat_shape(choose, size: int) -> tuple[int, ...]:
    """A shape (rank 1-3, chosen) with ``size`` elements."""
    rank = choose([1, 2, 3])
    shape, rest = [], size
    for _ in range(rank - 1):
        d = choose([d for d in range(1, rest + 1) if rest % d == 0])
        shape.append(d)
        rest //= d
    return tuple(shape) + (rest,)


#: Sides are mostly small (cheap exact evaluation), sometimes up to MAX_SIDE.
_side = st.one_of(st.integers(1, 2), st.integers(1, 3), st.integers(1, MAX_SIDE))


@st.composite
def forward_problems(draw, spec: KernelSpec, fd: bool = False, budget: int = WORK_BUDGET):
    """A valid call of the forward kernel ``spec``, sizes drawn inside its constraints.

    ``fd``: float inputs from :func:`away_from_zero` (finite differences), else
    float32-representable standard normal values, or :func:`ties`.
    """
    env = {}
    flat = _flat_dims(spec)
    for d in free_sizes(spec):
        env[d] = draw(st.integers(1, MAX_FLAT)) if d in flat else draw(_side)
    left_out = set()
    for p in spec.params:
        if p.kind == "int":
            lo = p.minimum if p.minimum is not None else 0
            env[p.name] = draw(st.integers(lo, lo + INT_SPAN))
            if p.default_from and draw(st.booleans()):  # None: the other param's value
                left_out.add(p.name)
    for name in left_out:
        env[name] = env[spec.param(name).default_from]
    full = complete(spec, env)
    assume(full is not None and work(spec, full) <= budget)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    choose = lambda options: draw(st.sampled_from(options))  # noqa: E731
    return build_forward(spec, full, rng, fd, choose, left_out)


def first_forward(spec: KernelSpec) -> Problem:
    """A deterministic valid call of the forward kernel ``spec``, its params at their
    defaults: the smallest equal sides (2, then 3, ...) that the spec accepts.

    >>> first_forward(TABLE["conv2d_forward"]).env["H"]
    2
    """
    for side in (2, 3, 4, 1, 5, 6):
        env = {d: side for d in free_sizes(spec)}
        ints = [p for p in spec.params if p.kind == "int"]
        for p in ints:
            env[p.name] = p.default if p.default is not None else p.minimum
        left_out = {p.name for p in ints if p.default_from}
        for name in left_out:
            env[name] = env[spec.param(name).default_from]
        full = complete(spec, env)
        if full is not None:
            rng = np.random.default_rng(0)
            return build_forward(spec, full, rng, False, lambda o: o[0], left_out)
    raise AssertionError(f"{spec.name}: no valid call with equal sides up to 6")


def build_forward(spec: KernelSpec, full: dict, rng, fd: bool, choose, left_out=()) -> Problem:
    """The call of forward kernel ``spec`` at sizes ``full``; ``choose(options)`` picks
    among options (the first is the default: a mask given as uint8, a float param at
    its default), ``rng`` draws the values; params in ``left_out`` are passed as None
    (they default to another param's value)."""
    values = {}
    floats = away_from_zero if fd else choose([_float32_normal, ties])
    for a in spec.inputs:
        shape = _shape(a, full)
        if a.flat:  # every flat array shares the first one's shape (of any rank)
            first = _first_flat(spec)
            shape = values[first].shape if a.name != first else _flat_shape(choose, shape[0])
        if a.kind == FLOAT:
            values[a.name] = floats(rng, shape)
        elif a.kind == MASK:
            dtype = choose([np.uint8, np.bool_] + ([None] if a.optional else []))
            mask = rng.integers(0, 2, size=shape)
            values[a.name] = None if dtype is None else mask.astype(dtype)
        elif a.kind == INT64 and a.bounds:
            values[a.name] = rng.integers(0, upper_bound(a, full), size=shape).astype(np.int64)
        else:
            raise NotImplementedError(
                f"{spec.name}: cannot draw input {a.name!r} (kind {a.kind}, no bounds) "
                "of a forward kernel; extend tests/table_cases.py"
            )
    for p in spec.params:
        if p.kind == "int":
            values[p.name] = None if p.name in left_out else full[p.name]
        elif p.kind == "float":
            choices = list(FLOAT_PARAMS)
            if p.default is not None:  # the default, as the float32 kernel sees it
                choices.insert(0, float(np.float32(p.default)))
            values[p.name] = choose(choices)
        else:
            values[p.name] = tuple(full[d] for d in p.dims)
    return Problem(spec, full, values)


def _first_flat(spec: KernelSpec) -> str | None:
    return next((a.name for a in spec.inputs if a.flat), None)


def backward_problem(spec: KernelSpec, fwd: Problem, rng, fd: bool = False) -> Problem:
    """The call of backward kernel ``spec`` paired with the forward call ``fwd``.

    The cotangent is drawn in the forward output's shape; ``saved`` inputs are the
    forward outputs of the generated NumPy kernel (float ones rounded to float32);
    ``hw`` params give the forward's sizes; the rest take the forward's arguments.
    """
    v = spec.vjp
    saved = dict(v.saved)
    outputs = {}
    if saved:
        outputs = fwd.call(load_backend("np"), np.float64)
    values = {}
    for a in spec.inputs:
        if v.cotangent and a.name == v.cotangent[0]:
            shape = outputs_shape(fwd, v.cotangent[1])
            values[a.name] = away_from_zero(rng, shape) if fd else _float32_normal(rng, shape)
        elif a.name in saved:
            out = outputs[saved[a.name]]
            if out.dtype.kind == "f" and not fd:  # the same numbers in both dtypes
                out = out.astype(np.float32).astype(np.float64)
            values[a.name] = out
        else:
            values[a.name] = fwd.values[a.name]
    for p in spec.params:
        if p.kind == "hw":
            values[p.name] = tuple(fwd.env[d] for d in p.dims)
        else:
            values[p.name] = fwd.values[p.name]
    env = dict(fwd.env)
    for a in spec.inputs:  # sizes of the backward's own names (maxpool: size = H // Ho)
        if not a.flat and isinstance(values[a.name], np.ndarray):
            env.update(zip(a.dims, values[a.name].shape, strict=True))
    env = complete(spec, {k: env[k] for k in free_sizes(spec) if k in env} | _ints(values, spec))
    assert env is not None, f"{spec.name}: the paired call of {fwd!r} is not valid by the spec"
    return Problem(spec, env, values)


def _ints(values: dict, spec: KernelSpec) -> dict:
    """The int params of a call, those passed as None resolved to their defaults."""
    return {p.name: int_param(spec, values, p.name) for p in spec.params if p.kind == "int"}


def int_param(spec: KernelSpec, values: dict, name: str) -> int:
    """The value an int param takes in a call (None: the param it defaults from)."""
    p = spec.param(name)
    value = values.get(name, p.default)
    if value is None and p.default_from:
        return int_param(spec, values, p.default_from)
    return value


def upper_bound(a: Array, env: dict) -> int:
    """The exclusive upper bound of an int64 input's values (product of its ``bounds``)."""
    names = (a.bounds,) if isinstance(a.bounds, str) else a.bounds
    return int(np.prod([env[d] for d in names]))


def outputs_shape(fwd: Problem, name: str) -> tuple[int, ...]:
    """Shape of forward output ``name`` (flat outputs: the flat inputs' shape)."""
    a = fwd.spec.array(name)
    if a.flat:
        return fwd.values[_first_flat(fwd.spec)].shape
    return _shape(a, fwd.env)


@functools.cache
def first_problem(name: str) -> Problem:
    """A deterministic valid call of kernel ``name`` (see :func:`first_forward`)."""
    spec = TABLE[name]
    fwd = first_forward(forward_of(spec))
    return fwd if spec.vjp is None else backward_problem(spec, fwd, np.random.default_rng(1))


@st.composite
def problems(draw, name: str, fd: bool = False, budget: int = WORK_BUDGET):
    """A valid call of kernel ``name`` (forward: drawn; backward: from its forward's)."""
    spec = TABLE[name]
    fwd = draw(forward_problems(forward_of(spec), fd=fd, budget=budget))
    if spec.vjp is None:
        return fwd
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bwd = backward_problem(spec, fwd, rng, fd=fd)
    assume(work(spec, bwd.env) <= 2 * budget)
    return bwd if not fd else (fwd, bwd)


# --- exact values and error bounds -----------------------------------------------------

#: Ulps of its result a transcendental function (tanh, exp, log) may be off by:
#: glibc's libm and libmvec (the C backend's SIMD tanh) document <= 4 ulp, NumPy's
#: SIMD loops <= 4 ulp; measured here <= 2.5.
TRANSCENDENTAL_ULPS = 4


def _is_exact_constant(c) -> bool:
    """A constant that a float holds exactly: integers and dyadic rationals (+-oo too)."""
    c = sp.sympify(c)
    if c.is_infinite or c.is_Integer:
        return True
    return bool(c.is_Rational) and _pow2(int(c.q))


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _rounds(factor) -> bool:
    """Does multiplying by ``factor`` round? (Not by a signed power of two.)"""
    return not (factor.is_Rational and _pow2(abs(int(factor.p))) and _pow2(int(factor.q)))


class _ErrorRules:
    """First-order rounding-error bounds of spec expressions, in units of u.

    For an expression ``e`` of exact value ``v``, :meth:`err` builds an expression of
    the spec's arrays that bounds ``|fl(e) - v| / u`` for any evaluation order of
    each sum, with every operation rounded (Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2nd ed., ch. 3): a sum of ``k`` terms adds
    ``(k-1) sum|terms|``, a product of ``k`` factors ``(k-1)|product|`` plus each
    factor's error times the other factors, a function ``f(a)`` adds
    ``|f'(a)| err(a)`` and :data:`TRANSCENDENTAL_ULPS` ``|f(a)|``; a selection
    (Piecewise, Max, Min) the error of what it selects; an index ``Floor`` none.
    Inputs and params are exact
    (params are passed exact in the dtype). A value an earlier statement wrote
    carries its bound in the companion arrays ``E``, ``S``, ``C`` (see
    :func:`error_spec`).
    """

    def __init__(self, computed: set[str]):
        self.computed = computed

    def err(self, e):
        e = sp.sympify(e)
        if e.is_Number or e is sp.S.NegativeInfinity or e is sp.S.Infinity:
            return sp.Integer(0) if _is_exact_constant(e) else abs(e)
        if isinstance(e, sp.Indexed):
            name = str(e.base)
            if name not in self.computed:
                return sp.Integer(0)
            E, S, C = (sp.IndexedBase(companion(name, c))[e.indices] for c in "ESC")
            return E + (C - 1) * S
        if e.is_Symbol:
            return sp.Integer(0)
        if e.is_Add:
            terms = e.args
            return sp.Add(*map(self.err, terms)) + (len(terms) - 1) * sp.Add(*map(sp.Abs, terms))
        if e.is_Mul:
            fs = e.args
            rounding = max(0, sum(map(_rounds, fs)) - 1) * sp.Abs(e)
            parts = []
            for i, f in enumerate(fs):
                ef = self.err(f)
                if ef != 0:
                    parts.append(ef * sp.Mul(*[sp.Abs(g) for j, g in enumerate(fs) if j != i]))
            return sp.Add(*parts) + rounding
        if e.is_Pow:
            base, n = e.args
            if not n.is_Integer:
                return self._function(e, base, lambda t: t**n)
            k = int(n)
            ops = k - 1 if k > 0 else -k  # 1/b**k: k-1 products and a division
            deriv = sp.Abs(n * base ** (n - 1)) * self.err(base)
            return deriv + ops * sp.Abs(e)
        if isinstance(e, sp.Piecewise):
            return sp.Piecewise(*[(self.err(expr), cond) for expr, cond in e.args])
        if isinstance(e, sp.Max | sp.Min):
            return sp.Max(*map(self.err, e.args))
        if isinstance(e, Floor):
            # An index: exact where it is taken of an exact value. Where a rounded position
            # floors to the other side of an integer, the weights (position - floor), whose
            # error this bound carries, move the value continuously across it.
            return sp.Integer(0)
        if isinstance(e, sp.Function) and len(e.args) == 1:
            return self._function(e, e.args[0], e.func)
        raise NotImplementedError(f"no rounding-error rule for {type(e).__name__}: {e}")

    def _function(self, e, arg, f):
        t = sp.Dummy("t", real=True)
        slope = sp.diff(f(t), t).subs(t, arg)
        return sp.Abs(slope) * self.err(arg) + TRANSCENDENTAL_ULPS * sp.Abs(e)


def companion(name: str, which: str) -> str:
    """Name of the ``which`` (E, S or C) companion array of array ``name``."""
    return f"{name}__{which}"


@functools.cache
def error_spec(name: str) -> KernelSpec:
    """Kernel ``name``'s spec plus the rounding-error bound of each float value it writes.

    Every statement ``a[idx] op rhs`` writing a float array gets, just before it,
    statements on three companion arrays of ``a``: for ``=``, ``E = err(rhs)``,
    ``S = |rhs|``, ``C = 1``; for ``+=``, ``E += err(rhs)``, ``S += |rhs|``,
    ``C += 1``; for ``max=``/``min=``, ``E max= err(rhs)``. A value summed from
    ``C`` terms of total magnitude ``S`` is then within ``(E + (C-1) S) u`` of its
    exact value in any summation order (Higham's ``gamma_{C-1}`` bound, plus the
    terms' own errors ``E``). Statements run in the same nests, so clipping (zero
    padding) and connection-table conditions apply to them alike.
    """
    spec = TABLE[name]
    floats = {a.name for a in spec.arrays if a.role != "in" and a.kind == FLOAT}
    rules = _ErrorRules(floats)
    nests = []
    for nest in spec.nests:
        body = []
        for stmt in nest.body:
            target = str(stmt.lhs.base)
            if target in floats:
                body += _companion_stmts(stmt, rules)
            body.append(stmt)
        nests.append(dataclasses.replace(nest, body=tuple(body)))
    extra = []
    for a in spec.arrays:
        if a.name in floats:
            role = OUT if a.role == OUT else TMP
            extra += [Array(companion(a.name, c), a.dims, role=role, flat=a.flat) for c in "ESC"]
    return dataclasses.replace(spec, arrays=spec.arrays + tuple(extra), nests=tuple(nests))


def _companion_stmts(stmt: Stmt, rules: _ErrorRules) -> list[Stmt]:
    name, idx = str(stmt.lhs.base), stmt.lhs.indices
    E, S, C = (sp.IndexedBase(companion(name, c))[idx] for c in "ESC")
    rhs = sp.sympify(stmt.rhs)
    size = sp.Integer(0) if rhs.is_infinite else sp.Abs(rhs)
    if stmt.op == "=":
        return [Stmt(E, "=", rules.err(rhs)), Stmt(S, "=", size), Stmt(C, "=", sp.Integer(1))]
    if stmt.op == "+=":
        return [Stmt(E, "+=", rules.err(rhs)), Stmt(S, "+=", size), Stmt(C, "+=", sp.Integer(1))]
    return [Stmt(E, "max=", rules.err(rhs))]


def _to_float(values) -> np.ndarray:
    flat = [float(sp.N(v, 30)) for v in np.asarray(values, dtype=object).reshape(-1)]
    return np.array(flat, dtype=np.float64).reshape(np.shape(values))


@dataclass(frozen=True)
class Reference:
    """A kernel's exact outputs (rounded once to float64) and their error bounds (units of u)."""

    values: dict
    bounds: dict


def exact_outputs(problem: Problem) -> Reference:
    """Evaluate the spec on the problem's exact inputs, with rounding-error bounds.

    Float outputs come with ``E + (C-1) S`` of :func:`error_spec` (in units of u);
    int64 outputs (argmax) are exact.
    """
    spec = problem.spec
    args, later = problem.exact_args(), {}
    for p in spec.params:
        value = args.get(p.name)
        if p.kind == "float" and sp.nsimplify(value) != value:
            # evaluate() passes float params through nsimplify, which would turn the
            # float32 value of 0.01 into 1/100: pass a symbol, substitute it after.
            later[sp.Dummy(p.name, positive=value > 0)] = value
            args[p.name] = next(reversed(later))
    out = evaluate(error_spec(spec.name), args)
    if later:
        out = {k: _substitute(v, later) for k, v in out.items() if k != "_shape"}
    values, bounds = {}, {}
    for a in spec.outputs:
        if a.kind == FLOAT:
            values[a.name] = _to_float(out[a.name])
            e, s, c = (out[companion(a.name, x)] for x in "ESC")
            bounds[a.name] = _to_float(e + (c - 1) * s)
        else:
            values[a.name] = np.array(out[a.name].tolist(), dtype=np.int64)
    return Reference(values, bounds)


def _substitute(values: np.ndarray, subs: dict) -> np.ndarray:
    flat = [sp.sympify(v).xreplace(subs) for v in values.reshape(-1)]
    return np.array(flat, dtype=object).reshape(values.shape)


def tolerance(bound_units, value, dtype) -> np.ndarray:
    """Absolute tolerance for a kernel output of ``dtype`` against the exact value.

    Twice the first-order bound (covers its second-order terms while ``n u`` is
    small, and code whose operation tree differs slightly from the spec's: constants
    folded, FMA) plus the rounding of the exact value to float64 for the comparison,
    plus the smallest normal number of the dtype (underflow of exp).
    """
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    return 2 * u * bound_units + 2.0**-53 * np.abs(value) + np.finfo(dtype).tiny


# --- the spec as a validity oracle ------------------------------------------------------


def consistent(spec: KernelSpec, args: dict) -> bool:
    """Are the sizes of ``args`` (shapes, hw params, int params) a valid call by the spec?

    Shapes bind the size names of their axes (a flat array's whole shape must equal
    the first flat array's); every name must bind to one value, derived sizes must
    agree and be >= 1, and every constraint must hold. Values are not checked.
    """
    env, flat_shape = {}, {}

    def bind(dim, size):
        if env.setdefault(dim, size) != size:
            raise ValueError

    try:
        for a in spec.inputs:
            value = args.get(a.name)
            if value is None:
                continue
            shape = np.shape(value)
            if a.flat:
                if flat_shape.setdefault(a.dims[0], shape) != shape:
                    return False
                bind(a.dims[0], int(np.prod(shape)))
            elif a.kind != MASK:
                if len(shape) != len(a.dims):
                    return False
                for d, s in zip(a.dims, shape, strict=True):
                    bind(d, s)
        for p in spec.params:
            if p.kind == "hw":
                for d, s in zip(p.dims, args[p.name], strict=True):
                    bind(d, s)
            elif p.kind == "int":
                bind(p.name, int_param(spec, args, p.name))
        for a in spec.inputs:  # masks take the shape the other arrays give them
            if a.kind == MASK and args.get(a.name) is not None:
                if np.shape(args[a.name]) != tuple(env[d] for d in a.dims):
                    return False
    except ValueError:
        return False
    return complete(spec, env) is not None


# --- bad arguments, by kind ---------------------------------------------------------------


def _axis_over_one(a: np.ndarray) -> int | None:
    return next((k for k in range(a.ndim - 1, -1, -1) if a.shape[k] > 1), None)


def _layouts(a: np.ndarray) -> list:
    """Non-contiguous versions of ``a`` (a step of 2, a flipped axis, Fortran order)."""
    k = _axis_over_one(a)
    if k is None:
        return []
    step = np.repeat(a, 2, axis=k)[(slice(None),) * k + (slice(None, None, 2),)]
    flipped = np.flip(a, axis=k)
    out = [step, flipped]
    if sum(s > 1 for s in a.shape) >= 2:
        out.append(np.asfortranarray(a))
    return [b for b in out if not b.flags.c_contiguous]


def _grown(a: np.ndarray, axis: int) -> np.ndarray:
    return np.concatenate([a, a.take([-1], axis=axis)], axis=axis)


def bad_arguments(problem: Problem, dtype):
    """``(argument, bad value, exception type, names)`` for every argument of a valid call.

    The exception types are those of ``codegen/runtime/checks.py``: TypeError for a wrong
    type or dtype, ValueError for a wrong rank, shape, layout or value. A changed
    size is used only where the spec (:func:`consistent`) says the call is invalid;
    the message may then name either argument of the disagreement (``names``: the
    argument and those sharing the changed size); otherwise it must name the argument.
    """
    spec = problem.spec
    args = problem.args(dtype)
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    floats = [a.name for a in spec.inputs if a.kind == FLOAT]
    for a in spec.inputs:
        value = args[a.name]
        if value is None:  # an optional mask left out: give a wrong one
            value = np.ones(tuple(problem.env[d] for d in a.dims), np.uint8)
        common = [(layout, ValueError, ()) for layout in _layouts(value)]
        common += [(np.zeros((0,) + value.shape[1:], value.dtype), ValueError, ())]
        common += [(value.tolist(), TypeError, ()), ("x", TypeError, ())]
        if not a.flat:
            common += [(value[None], ValueError, ()), (value[0, ...], ValueError, ())]
        for axis in range(value.ndim):
            grown = _grown(value, axis)
            if not consistent(spec, {**args, a.name: grown}):
                dim = a.dims[0] if a.flat else a.dims[axis]
                common.append((grown, ValueError, _sharing(spec, dim)))
        if a.kind == FLOAT:
            yield from ((a.name, v, e, (a.name,) + n) for v, e, n in common)
            yield a.name, None, TypeError, (a.name,)
            for wrong in (np.int32, np.int64, np.float16, np.complex128):
                yield a.name, value.astype(wrong), TypeError, (a.name,)
            if len(floats) > 1:  # one call, one float dtype
                yield a.name, value.astype(other), TypeError, (a.name,)
        elif a.kind == INT64:
            yield from ((a.name, v, e, (a.name,) + n) for v, e, n in common)
            yield a.name, None, TypeError, (a.name,)
            yield a.name, value.astype(np.float64), TypeError, (a.name,)
            yield a.name, value.astype(np.int32), TypeError, (a.name,)
            for out_of_range in (-1, upper_bound(a, problem.env)):
                bad = value.copy()
                bad.flat[0] = out_of_range
                yield a.name, bad, ValueError, (a.name,)
        elif a.kind == MASK:
            yield from ((a.name, v, e, (a.name,) + n) for v, e, n in common)
            yield a.name, value.astype(np.float64), TypeError, (a.name,)
            yield a.name, value.astype(np.int32), TypeError, (a.name,)
            two = value.astype(np.uint8)
            two.flat[0] = 2
            yield a.name, two, ValueError, (a.name,)
    for p in spec.params:
        if p.kind == "int":
            lowest = p.minimum if p.minimum is not None else 0
            for bad in {lowest - 1, -1, 2**63}:  # C takes int64
                yield p.name, bad, ValueError, (p.name,)
            for bad in (1.5, "2", True, np.float64(1.0)) + (() if p.default_from else (None,)):
                yield p.name, bad, TypeError, (p.name,)
            bigger = int_param(spec, args, p.name) + 1
            if not consistent(spec, {**args, p.name: bigger}):
                yield p.name, bigger, ValueError, (p.name,)
        elif p.kind == "float":
            for bad in (float("nan"), float("inf"), -float("inf")):
                yield p.name, bad, ValueError, (p.name,)
            if np.dtype(dtype) == np.float32:  # finite in Python, inf in the call's dtype
                for bad in (1e200, -3.5e38):
                    yield p.name, bad, ValueError, (p.name,)
            for bad in ("1.0", True, None, 1j):
                yield p.name, bad, TypeError, (p.name,)
        else:
            hw = args[p.name]
            for bad in (hw[:1], hw + (1,), "66", None, (1.5,) + hw[1:], (True,) + hw[1:]):
                yield p.name, bad, TypeError, (p.name,)
            for bad in ((0,) + hw[1:], (-1,) + hw[1:], (2**63,) + hw[1:]):
                yield p.name, bad, ValueError, (p.name,)
            for k in range(len(hw)):
                bigger = hw[:k] + (hw[k] + 1,) + hw[k + 1 :]
                if not consistent(spec, {**args, p.name: bigger}):
                    yield p.name, bigger, ValueError, (p.name,) + _sharing(spec, p.dims[k])


def _sharing(spec: KernelSpec, dim: str) -> tuple[str, ...]:
    """The arguments whose sizes include ``dim``."""
    arrays = tuple(a.name for a in spec.inputs if dim in a.dims)
    return arrays + tuple(p.name for p in spec.params if dim in p.dims)


# --- checks ---------------------------------------------------------------------------


def check_contract(arr, dtype, shape, what, inputs):
    """A new C-contiguous array of the call's dtype and shape, aliasing no input."""
    assert isinstance(arr, np.ndarray), f"{what}: returned {type(arr).__name__}"
    assert arr.dtype == np.dtype(dtype), f"{what}: dtype {arr.dtype} != {np.dtype(dtype)}"
    assert arr.shape == tuple(shape), f"{what}: shape {arr.shape} != {tuple(shape)}"
    assert arr.flags.c_contiguous, f"{what}: not C-contiguous"
    aliased = [
        k for k, a in inputs.items() if isinstance(a, np.ndarray) and np.shares_memory(arr, a)
    ]
    assert not aliased, f"{what}: aliases the input(s) {aliased}"


def assert_within(got, want, tol, what):
    err = np.abs(got - want)
    bad = ~(err <= tol)  # NaN counts as out of tolerance
    if bad.any():
        i = int(np.argmax(np.where(bad, err - tol, -np.inf)))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} entries out of tolerance; worst at flat "
            f"index {i}: got {got[i]!r}, exact {want[i]!r}, |err| {err[i]:.3e} > tol {tol[i]:.3e}"
        )


def check_against_spec(problem: Problem, backends: dict) -> None:
    """Every output of ``problem``'s kernel, on each backend and dtype, == the spec.

    Float outputs within :func:`tolerance` of the exact value, int64 outputs
    (argmax) equal; each a new C-contiguous array of the right dtype and shape.
    """
    spec = problem.spec
    ref = exact_outputs(problem)
    for backend, module in backends.items():
        for dtype in DTYPES:
            args = problem.args(dtype)
            got = named_outputs(spec, getattr(module, spec.name)(**args))
            for out, value in got.items():
                what = f"{backend} {np.dtype(dtype).name} {spec.name} {out}"
                a = spec.array(out)
                want = ref.values[out]
                shape = outputs_shape(problem, out) if a.flat else want.shape
                check_contract(value, dtype if a.kind == FLOAT else np.int64, shape, what, args)
                if a.kind != FLOAT:
                    np.testing.assert_array_equal(value.reshape(-1), want.reshape(-1), what)
                    continue
                tol = tolerance(ref.bounds[out].reshape(-1), want.reshape(-1), dtype)
                got64 = value.astype(np.float64).reshape(-1)
                assert_within(got64, want.reshape(-1), tol, what)


def problem_at(name: str, sizes: dict, **values) -> Problem:
    """A call of forward kernel ``name`` at the given sizes and int params (the rest
    at defaults or first choices), with ``values`` replacing drawn arguments."""
    spec = TABLE[name]
    env = {p.name: p.default for p in spec.params if p.kind == "int"}
    full = complete(spec, {**env, **sizes})
    assert full is not None, f"{name}: {sizes} is not a valid call"
    problem = build_forward(spec, full, np.random.default_rng(7), False, lambda o: o[0])
    return Problem(spec, full, {**problem.values, **values})
