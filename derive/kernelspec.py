"""The kernel spec schema: arrays, parameters, loop nests, validation, exact evaluation.

A :class:`KernelSpec` says *what* a kernel computes, never *how*: its arrays
(with symbolic index shapes), its scalar parameters, its index ranges and an
ordered list of loop :class:`Nest` s whose statements are SymPy ``Indexed``
assignments. Reads outside an array (the zero padding) contribute nothing: a
nest marked ``clip`` restricts its loops to the in-bounds part. The table
itself is data in :mod:`derive.kernels`; :func:`load_table` validates it and
rejects an inconsistent spec with a message naming the kernel, and
:func:`evaluate` runs a spec point by point in exact arithmetic (the meaning
every generated kernel is proven against).

Examples
--------
>>> from derive.kernels import load_table
>>> spec = load_table()["relu_backward"]
>>> evaluate(spec, {"dy": [5, 7], "z": [-1, 2]})["dz"]
array([0, 7], dtype=object)
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from derive.indexing import fsym, isym, size_expr

FLOAT, INT64, MASK = "float", "int64", "mask"
IN, OUT, TMP = "in", "out", "tmp"
OPS = ("=", "+=", "max=", "min=")


class KernelSpecError(ValueError):
    """An inconsistent kernel spec; the message starts with the kernel name."""


@dataclass(frozen=True)
class Array:
    """An array argument, output or scratch buffer of a kernel.

    ``dims`` names the size of each axis (symbols of the kernel). ``kind`` is
    ``float`` (the call's float dtype), ``int64`` or ``mask`` (0/1 per entry).
    ``flat`` arrays accept any shape and are processed as a flat vector of
    ``dims[0]`` elements (element-wise kernels). ``bounds`` names the sizes whose
    product bounds the values of an int64 input from above (labels < O; a flat
    position h*W + w < H*W).
    """

    name: str
    dims: tuple[str, ...]
    kind: str = FLOAT
    role: str = IN
    optional: bool = False
    flat: bool = False
    bounds: tuple[str, ...] = ()

    @property
    def base(self) -> sp.IndexedBase:
        return sp.IndexedBase(self.name)


@dataclass(frozen=True)
class Param:
    """A scalar argument: ``int`` (with a minimum), ``float``, or ``hw`` (a pair of sizes).

    An int param with ``default_from`` defaults to None, meaning the value of that
    other param (a pooling stride is the window size unless given).
    """

    name: str
    kind: str
    default: object = None
    minimum: int | None = None
    dims: tuple[str, ...] = ()
    default_from: str | None = None

    @property
    def symbol(self) -> sp.Symbol:
        return isym(self.name) if self.kind == "int" else fsym(self.name)


@dataclass(frozen=True)
class Stmt:
    """``lhs op rhs`` with ``op`` one of ``=``, ``+=``, ``max=``, ``min=``."""

    lhs: sp.Indexed
    op: str
    rhs: sp.Expr

    def __str__(self):
        return f"{sp.sstr(self.lhs)} {self.op} {sp.sstr(self.rhs)}"


@dataclass(frozen=True)
class Nest:
    """Statements executed at every point of the loops ``loops`` (outer first).

    ``taps`` are the few small loops (kernel taps) NumPy iterates in Python;
    every other loop is vectorized. ``cond`` (a mask entry) guards the body.
    ``clip`` restricts affine accesses to the array bounds (zero padding).
    """

    loops: tuple[str, ...]
    body: tuple[Stmt, ...]
    taps: tuple[str, ...] = ()
    cond: sp.Indexed | None = None
    clip: bool = False


@dataclass(frozen=True)
class Vjp:
    """How a backward kernel pairs with its forward kernel (the proof link, as data).

    ``grads`` pairs each output of the backward kernel with the forward input it is
    the gradient of: for a cotangent ``dy`` of the forward output ``y``,
    ``backward(dy, ...)[out] == d(sum dy * forward(...)[y]) / d in``.
    ``cotangent`` is ``(backward input, forward output)``; None for a loss, whose
    backward is the gradient of the summed per-sample loss (cotangent 1).
    ``saved`` pairs backward inputs with the forward outputs they receive (the
    argmax of max pooling, the output y of a squashing layer). Every other backward
    input or parameter takes the forward argument of the same name; an ``hw``
    parameter gives the forward's sizes of its dims.
    """

    forward: str
    grads: tuple[tuple[str, str], ...]
    cotangent: tuple[str, str] | None = None
    saved: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of the table (see the module docstring).

    A forward kernel names its ``definition``: a function of derive/ that computes
    the derivation's defining formula from the spec's inputs and params (keyword
    arguments, exact SymPy values) and returns ``{output name: array}``; ``cases``
    are the concrete sizes and parameters (a dict each) on which
    ``kernel.<name>`` proves the spec equal to it. A backward kernel instead names
    its forward kernel through ``vjp`` and is proven on the forward's cases.
    """

    name: str
    derivation: str
    doc: str
    arrays: tuple[Array, ...]
    params: tuple[Param, ...]
    signature: tuple[str, ...]
    returns: tuple[str, ...]
    ranges: tuple[tuple[str, object, object], ...]
    nests: tuple[Nest, ...]
    derived: tuple[tuple[str, object], ...] = ()
    constraints: tuple[tuple[object, str], ...] = ()
    definition: Callable | None = None
    vjp: Vjp | None = None
    cases: tuple[dict, ...] = ()

    @property
    def inputs(self) -> tuple[Array, ...]:
        return tuple(a for a in self.arrays if a.role == IN)

    @property
    def outputs(self) -> tuple[Array, ...]:
        return tuple(a for a in self.arrays if a.role == OUT)

    def array(self, name: str) -> Array:
        return next(a for a in self.arrays if a.name == name)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def dim_names(self) -> tuple[str, ...]:
        """Every size symbol, in order of first appearance (arrays, hw params, derived)."""
        names = [d for a in self.arrays for d in a.dims]
        names += [d for p in self.params for d in p.dims] + [n for n, _ in self.derived]
        return tuple(dict.fromkeys(names))

    def range_of(self, index: str) -> tuple[sp.Expr, sp.Expr]:
        lo, hi = next((lo, hi) for n, lo, hi in self.ranges if n == index)
        return size_expr(lo), size_expr(hi)

    def text(self) -> str:
        """Canonical text of the spec (hashed into the generated headers)."""
        lines = [f"kernel {self.name} ({self.derivation})"]
        lines += [f"array {a}" for a in self.arrays] + [f"param {p}" for p in self.params]
        lines += [f"range {n} in [{sp.sstr(lo)}, {sp.sstr(hi)})" for n, lo, hi in self.ranges]
        lines += [f"derived {n} = {sp.sstr(f)}" for n, f in self.derived]
        lines += [f"require {sp.sstr(c)}" for c, _ in self.constraints]
        for nest in self.nests:
            lines.append(f"nest {nest.loops} taps={nest.taps} cond={nest.cond} clip={nest.clip}")
            lines += [f"  {s}" for s in nest.body]
        return "\n".join(lines)

    def sha256(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


# --- validation ------------------------------------------------------------------------


def validate_table(specs, known_ids) -> dict[str, KernelSpec]:
    """Validate ``specs`` and index them by name.

    Parameters
    ----------
    specs
        Kernel specs to validate, forward kernels before the backward kernels
        that pair with them.
    known_ids
        Derivation ids a spec may cite.

    Raises
    ------
    KernelSpecError
        On any inconsistency; the message names the kernel.

    Examples
    --------
    >>> from derive.kernels import kernel_specs
    >>> table = validate_table(kernel_specs(), {s.derivation for s in kernel_specs()})
    >>> table["conv2d_backward_data"].vjp.grads
    (('dx', 'x'),)
    >>> validate_table(kernel_specs()[:1] * 2, {"layer.conv_forward"})
    Traceback (most recent call last):
    ...
    derive.kernelspec.KernelSpecError: conv2d_forward: duplicate kernel name
    """
    table: dict[str, KernelSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise KernelSpecError(f"{spec.name}: duplicate kernel name")
        validate(spec, known_ids)
        _check_pairing(spec, table)
        table[spec.name] = spec
    return table


def _check_pairing(spec: KernelSpec, earlier: dict) -> None:
    """A kernel is either defined (forward, with proof cases) or the VJP of an earlier one."""

    def fail(msg):
        raise KernelSpecError(f"{spec.name}: {msg}")

    if (spec.definition is None) == (spec.vjp is None):
        fail("give exactly one of definition= (a forward kernel) and vjp= (a backward kernel)")
    if spec.definition is not None:
        if not spec.cases:
            fail("a defined kernel needs proof cases (cases=...)")
        return
    if spec.cases:
        fail("a backward kernel is proven on its forward kernel's cases; drop cases=")
    v = spec.vjp
    fwd = earlier.get(v.forward)
    if fwd is None:
        fail(f"vjp of {v.forward!r}, which is not an earlier kernel of the table")
    fwd_in = {a.name for a in fwd.inputs}
    fwd_out = {a.name for a in fwd.outputs}
    outs, ins = {a.name for a in spec.outputs}, {a.name for a in spec.inputs}
    if {o for o, _ in v.grads} != outs:
        fail(f"grads {v.grads} must pair every output {sorted(outs)} with a forward input")
    for out, src in v.grads:
        if src not in fwd_in or fwd.array(src).kind != FLOAT:
            fail(f"grads: {out} pairs with {src!r}, not a float input of {fwd.name}")
    pairs = list(v.saved) + ([v.cotangent] if v.cotangent else [])
    for mine, theirs in pairs:
        if mine not in ins or theirs not in fwd_out:
            fail(f"{mine!r} -> {theirs!r}: needs an input here and an output of {fwd.name}")
    fed = {m for m, _ in pairs}
    forward_args = fwd_in | {p.name for p in fwd.params}
    for name in ins - fed:
        if name not in forward_args:
            fail(f"input {name!r} is neither paired nor an argument of {fwd.name}")
    for p in spec.params:
        if p.kind != "hw" and p.name not in forward_args:
            fail(f"param {p.name!r} is not a param of {fwd.name}")


def validate(spec: KernelSpec, known_ids) -> None:
    """Raise :class:`KernelSpecError` naming ``spec`` when it is inconsistent."""

    def fail(msg):
        raise KernelSpecError(f"{spec.name}: {msg}")

    if spec.derivation not in known_ids:
        fail(f"unknown derivation id {spec.derivation!r}")
    names = [a.name for a in spec.arrays] + [p.name for p in spec.params]
    if len(set(names)) != len(names):
        fail(f"duplicate argument names in {names}")
    args = {a.name for a in spec.inputs} | {p.name for p in spec.params}
    if set(spec.signature) != args:
        fail(f"signature {spec.signature} must list exactly the inputs and params {sorted(args)}")
    # A float parameter is checked against the call's dtype, which its float arrays set.
    position = {name: i for i, name in enumerate(spec.signature)}
    last_array = max((position[a.name] for a in spec.inputs if a.kind == FLOAT), default=None)
    for p in spec.params:
        if p.kind == "float" and (last_array is None or position[p.name] < last_array):
            fail(f"float param {p.name!r} must follow the float arrays in the signature")
    if not spec.returns or not set(spec.returns) <= {a.name for a in spec.outputs}:
        fail(f"returns {spec.returns} must be outputs")
    dims = set(spec.dim_names())
    params = {p.name for p in spec.params}
    indices = {n for n, _, _ in spec.ranges}
    clash = indices & (dims | params | {a.name for a in spec.arrays})
    if clash:
        fail(f"index names clash with sizes, params or arrays: {sorted(clash)}")
    scalars = dims | params
    for n, lo, hi in spec.ranges:
        _check_free(fail, f"range of {n}", size_expr(lo) + size_expr(hi), scalars)
    for n, f in spec.derived:
        _check_free(fail, f"derived size {n}", f, scalars)
    for c, _ in spec.constraints:
        _check_free(fail, "constraint", c, scalars)
    written = set()
    for nest in spec.nests:
        for stmt in nest.body:
            target = str(stmt.lhs.base)
            if stmt.op not in OPS:
                fail(f"statement {stmt}: unknown op {stmt.op!r}; use {OPS}")
            if target in {a.name for a in spec.inputs}:
                fail(f"statement {stmt}: writes the input {target}")
            if target not in written and stmt.op != "=" and target in {a.name for a in spec.arrays}:
                fail(f"statement {stmt} accumulates into {target} before initializing it (=)")
        written |= _check_nest(spec, nest, fail, indices, scalars)
    unwritten = {a.name for a in spec.arrays if a.role != IN} - written
    if unwritten:
        fail(f"outputs never written: {sorted(unwritten)}")


def _check_free(fail, where, expr, allowed):
    free = sp.sympify(expr).free_symbols
    unknown = {str(x) for x in free if type(x) is sp.Symbol} - set(allowed)
    if unknown:
        fail(f"{where} uses unknown symbols {sorted(unknown)}")


def _check_nest(spec, nest, fail, indices, scalars):
    arrays = {a.name: a for a in spec.arrays}
    if set(nest.loops) - indices:
        fail(f"loop over undeclared indices {sorted(set(nest.loops) - indices)}")
    if len(set(nest.loops)) != len(nest.loops) or not set(nest.taps) <= set(nest.loops):
        fail(f"nest {nest.loops}: repeated loops or taps {nest.taps} not among them")
    allowed = set(nest.loops) | scalars | set(arrays)  # array labels are symbols too
    exprs = [(s.lhs, s.rhs) for s in nest.body]
    if nest.cond is not None:
        if arrays.get(str(nest.cond.base)) is None or arrays[str(nest.cond.base)].kind != MASK:
            fail(f"condition {nest.cond} must read a declared mask array")
        if any(s.op != "+=" for s in nest.body):
            fail("a conditional nest may only accumulate (+=)")
        exprs.append((nest.cond, sp.Integer(0)))
    written = set()
    for lhs, rhs in exprs:
        for acc in sp.Tuple(lhs, rhs).atoms(sp.Indexed):
            _check_access(spec, acc, arrays, fail, nest)
        _check_free(fail, f"statement {lhs}", sp.Tuple(lhs, rhs), allowed)
        written.add(str(lhs.base))
    for stmt in nest.body:
        missing = set(nest.loops) - {
            str(x) for x in (stmt.lhs.free_symbols | stmt.rhs.free_symbols)
        }
        if missing:
            fail(f"statement {stmt}: loops {sorted(missing)} do not appear in it")
    return written


def _check_access(spec, acc, arrays, fail, nest):
    name = str(acc.base)
    if name not in arrays:
        fail(f"access {acc} to undeclared array {name!r}")
    arr = arrays[name]
    if len(acc.indices) != len(arr.dims):
        fail(f"access {acc}: {name} has rank {len(arr.dims)}")
    for axis, (index, dim) in enumerate(zip(acc.indices, arr.dims, strict=True)):
        if index.is_Symbol and str(index) in nest.loops:
            lo, hi = spec.range_of(str(index))
            if lo != 0 or hi != isym(dim):
                fail(
                    f"access {acc}: index {index} ranges over [{lo}, {hi}) "
                    f"but axis {axis} of {name} has size {dim}"
                )


# --- the definition, evaluated directly ---------------------------------------------------


def evaluate(spec: KernelSpec, args: dict, sizes: dict | None = None) -> dict:
    """Evaluate ``spec`` point by point from its SymPy statements (the definition).

    Slow and exact: meant for proofs and tests on small shapes. ``args`` maps the
    signature names to values (nested lists / numpy arrays of numbers or SymPy
    expressions / scalars; ``hw`` params as pairs); missing params take their
    defaults. In a ``clip`` nest a statement runs only where every access is inside
    its array (reads of the zero padding contribute nothing, a max over a padded
    window ignores the padding); elsewhere a read outside an array is 0. Returns
    the outputs as NumPy object arrays, and their shapes under ``"_shape"``.

    Examples
    --------
    >>> from derive.kernels import load_table
    >>> spec = load_table()["conv2d_forward"]
    >>> out = evaluate(spec, {"x": [[[[1, 2], [3, 4]]]], "w": [[[[1]]]], "b": [10]})
    >>> out["y"].tolist()
    [[[[11, 12], [13, 14]]]]
    """
    env, values = _bind(spec, args, sizes or {})
    shapes = {a.name: tuple(int(env[isym(d)]) for d in a.dims) for a in spec.arrays}
    store = {a.name: dict(values[a.name]) if a.role == IN else {} for a in spec.arrays}
    for nest in spec.nests:
        loops = [isym(x) for x in nest.loops]
        ranges = [
            range(*(int(sp.sympify(b).subs(env)) for b in spec.range_of(x))) for x in nest.loops
        ]
        cond = _bound(nest.cond, env) if nest.cond is not None else None
        body = [(_bound(st.lhs, env), st.op, sp.sympify(st.rhs).subs(env)) for st in nest.body]
        for point in itertools.product(*ranges):
            at = dict(zip(loops, point, strict=True))
            if cond is not None and not _read(cond, at, store, shapes):
                continue
            for lhs, op, rhs in body:
                _exec(lhs, op, rhs, at, store, shapes, nest.clip)
    out = {a.name: _as_array(store[a.name], shapes[a.name]) for a in spec.arrays if a.role == OUT}
    out["_shape"] = shapes
    return out


def _bound(acc: sp.Indexed, env: dict) -> sp.Indexed:
    """``acc`` with the sizes and params of ``env`` substituted into its indices."""
    return acc.func(acc.base, *(sp.sympify(ix).subs(env) for ix in acc.indices))


def _as_array(values: dict, shape: tuple) -> np.ndarray:
    out = np.empty(int(np.prod(shape)), dtype=object)
    for i in range(out.size):
        out[i] = sp.sympify(values.get(i, 0))
    return out.reshape(shape)


def _bind(spec, args, sizes):
    env, values = {}, {}
    for p in spec.params:
        val = args.get(p.name, p.default)
        if val is None and p.default_from:
            val = args.get(p.default_from, spec.param(p.default_from).default)
        if p.kind == "hw":
            for d, x in zip(p.dims, val, strict=True):
                env[isym(d)] = int(x)
        else:
            env[p.symbol] = _exact(val) if p.kind == "float" else int(val)
    for a in spec.inputs:
        val = args.get(a.name)
        if val is None:
            val = np.ones([int(env[isym(d)]) for d in a.dims]) if a.optional else None
        arr = np.asarray(val)
        shape = (arr.size,) if a.flat else arr.shape
        for d, size in zip(a.dims, shape, strict=True):
            env.setdefault(isym(d), int(size))
        values[a.name] = {i: sp.sympify(v) for i, v in enumerate(arr.reshape(-1).tolist())}
    env.update({isym(k): int(v) for k, v in sizes.items()})
    for name, formula in spec.derived:
        env.setdefault(isym(name), int(sp.sympify(formula).subs(env)))
    return env, values


def _exact(value):
    """A float parameter as the exact rational of its binary value (SymPy values as given)."""
    return (
        sp.Rational(float(value)) if isinstance(value, float | np.floating) else sp.sympify(value)
    )


def _position(acc, at, store, shapes):
    """Flat position of ``acc`` at loop point ``at`` (indices may read other arrays:
    ``labels[p]``); None outside the array."""
    idx = []
    for x in acc.indices:
        inner = {a: _read(a, at, store, shapes) for a in x.atoms(sp.Indexed)}
        idx.append(int(x.xreplace(inner).xreplace(at)))
    shape = shapes[str(acc.base)]
    if any(not 0 <= x < d for x, d in zip(idx, shape, strict=True)):
        return None
    return int(np.ravel_multi_index(idx, shape)) if idx else 0


def _read(acc, at, store, shapes):
    pos = _position(acc, at, store, shapes)
    return 0 if pos is None else store[str(acc.base)].get(pos, 0)


def _exec(lhs, op, rhs, at, store, shapes, clip):
    pos = _position(lhs, at, store, shapes)
    if pos is None:
        return
    reads = {}
    for a in rhs.atoms(sp.Indexed):
        where = _position(a, at, store, shapes)
        if where is None and clip:
            return
        reads[a] = 0 if where is None else store[str(a.base)].get(where, 0)
    value = sp.sympify(rhs.xreplace(reads)).xreplace(at)
    target = store[str(lhs.base)]
    old = target.get(pos, 0)
    if op == "=":
        target[pos] = value
    elif op == "+=":
        target[pos] = old + value
    else:
        target[pos] = (sp.Max if op == "max=" else sp.Min)(old, value)
