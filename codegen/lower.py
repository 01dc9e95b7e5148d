"""Lowering: a :class:`~derive.kernels.KernelSpec` (plus concrete sizes) -> a small statement AST.

Two lowerings share the same spec and the same clipping rule:

* :func:`lower_c` gives a scalar loop nest (one :class:`Loop` per spec loop,
  an :class:`If` for the connection table, :class:`Update` statements on
  ``Indexed`` elements). With ``fixed`` sizes (a LeNet-5 layer) the bounds are
  constants, the connection table is compiled in (absent maps produce no code)
  and the kernel taps of a reduction are unrolled into one sum, with ``cse``.
* :func:`lower_numpy` gives Python loops over the kernel taps only; every other
  loop becomes slicing of strided windows and ``einsum`` / broadcasting.

Clipping (zero padding): an access ``x[..., a*i + t, ...]`` of an axis of size
``D`` is in bounds for ``ceil(-t/a) <= i < ceil((D - t)/a)``; a ``clip`` nest
restricts ``i`` to that range instead of reading padded zeros.

Computed positions: an access whose index contains ``Floor`` (a position computed from
float data) may fall anywhere; both lowerings read it as 0 outside its array
(:func:`guard_computed_reads`), the meaning the spec evaluation gives it.

Examples
--------
>>> from derive.kernels import load_table
>>> spec = load_table()["conv2d_forward"]
>>> fn = lower_c(spec)
>>> [type(node).__name__ for node in fn.body]
['Loop', 'Loop']
>>> loop_vars(fn.body[1])
['n', 'k', 'c', 'u', 'v', 'i', 'j']
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import sympy as sp

from derive.indexing import CeilDiv, Floor, FloorDiv, isym
from derive.kernelspec import KernelSpec, Nest

__all__ = ["CeilDiv", "FloorDiv"]  # re-exported for the printers

# --- the statement AST -----------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    """``for var in [lo, hi)``.

    ``parallel`` marks an OpenMP loop (its iterations write disjoint outputs), run
    in parallel when the nest's ``work`` (iteration count) reaches :data:`PARALLEL_WORK`.
    ``reduction`` names scalar accumulators of a vectorizable (``omp simd``) reduction.
    """

    var: sp.Symbol
    lo: sp.Expr
    hi: sp.Expr
    body: tuple
    parallel: bool = False
    work: sp.Expr = sp.Integer(0)
    reduction: tuple = ()


#: Below this many innermost iterations a parallel region costs more than it saves: the
#: iterations are simd-vectorized (~10 ns per 16), waking a sleeping (passive) OpenMP
#: thread costs tens of microseconds (C5's filter gradient at batch 1: 48,000 iterations).
PARALLEL_WORK = 1 << 18


@dataclass(frozen=True)
class Block:
    """A scope (``{ ... }`` in C) for accumulator locals."""

    body: tuple


@dataclass(frozen=True)
class If:
    """Execute ``body`` where ``cond`` (a mask entry) is non-zero."""

    cond: sp.Expr
    body: tuple


@dataclass(frozen=True)
class Let:
    """A scalar local ``var = value`` (integer bounds, a cse temporary, an accumulator)."""

    var: sp.Symbol
    value: sp.Expr
    integer: bool = True
    mutable: bool = False


@dataclass(frozen=True)
class Scratch:
    """A local float array ``var[size]`` (a row-padded block of partial results)."""

    var: sp.Symbol
    size: int


@dataclass(frozen=True)
class Update:
    """``lhs op rhs`` with op in ``=``, ``+=``, ``max=``, ``min=``."""

    lhs: sp.Expr
    op: str
    rhs: sp.Expr


@dataclass(frozen=True)
class Function:
    """A lowered kernel: the spec, the fixed sizes (if specialized) and the body."""

    name: str
    spec: KernelSpec
    fixed: tuple
    body: tuple


def loop_vars(node) -> list[str]:
    """Loop variables of the first chain of nested loops under ``node`` (outer first).

    >>> loop_vars(Loop(isym("i"), 0, 3, (Loop(isym("j"), 0, 2, ()),)))
    ['i', 'j']
    """
    out = []
    while isinstance(node, Loop | If | Block):
        if isinstance(node, Loop):
            out.append(str(node.var))
        node = next((b for b in node.body if isinstance(b, Loop | If | Block)), None)
    return out


def walk(nodes):
    """Every node of a body, depth first."""
    for node in nodes:
        yield node
        if isinstance(node, Loop | If | Block):
            yield from walk(node.body)


def node_exprs(node) -> tuple:
    """The expressions one node's own code reads (not its children's)."""
    if isinstance(node, Loop):
        return (node.lo, node.hi, node.work) if node.parallel else (node.lo, node.hi)
    if isinstance(node, If):
        return (node.cond,)
    if isinstance(node, Let):
        return (node.value,)
    if isinstance(node, Update):
        return (node.lhs, node.rhs)
    return ()


# --- shared helpers -----------------------------------------------------------------------


def accesses(nest: Nest):
    """Every ``Indexed`` the nest reads or writes (sorted for determinism)."""
    found = set()
    for stmt in nest.body:
        found |= sp.Tuple(stmt.lhs, stmt.rhs).atoms(sp.Indexed)
    return sorted(found, key=sp.default_sort_key)


def axis_size(spec: KernelSpec, name: str, axis: int) -> sp.Symbol:
    return isym(spec.array(name).dims[axis])


def clip_range(spec: KernelSpec, nest: Nest, var: str, env: dict) -> tuple[sp.Expr, sp.Expr]:
    """The loop range of ``var`` in ``nest``, restricted to in-bounds accesses when clipping.

    >>> from derive.kernels import load_table
    >>> spec = load_table()["conv2d_forward"]
    >>> clip_range(spec, spec.nests[1], "i", {})[0]
    Max(0, CeilDiv(Max(0, -dilation*u + padding), stride))
    """
    lo, hi = (sp.sympify(b).subs(env) for b in spec.range_of(var))
    if not nest.clip or var in nest.taps:  # taps are outer: the loops inside them are clipped
        return lo, hi
    sym = isym(var)
    for acc in accesses(nest):
        for axis, index in enumerate(acc.indices):
            if index == sym or sym not in index.free_symbols:
                continue
            a = sp.diff(index, sym)
            t = sp.expand(index - a * sym)
            size = axis_size(spec, str(acc.base), axis).subs(env)
            a, t = a.subs(env), t.subs(env)
            lo = sp.Max(lo, CeilDiv(sp.Max(-t, 0), a))
            hi = sp.Min(hi, CeilDiv(sp.Max(size - t, 0), a))
    return lo, hi


def _computed(acc) -> bool:
    """Does ``acc`` read at a position computed from float data (an index with Floor)?"""
    return isinstance(acc, sp.Indexed) and any(ix.has(Floor) for ix in acc.indices)


def guard_computed_reads(spec: KernelSpec, expr: sp.Expr) -> sp.Expr:
    """``expr`` with every computed read 0 outside its array:
    ``Piecewise((x[.., p, ..], 0 <= p < D), (0, True))`` for each computed index ``p``.

    >>> from derive.kernels import load_table
    >>> from derive.indexing import fsym
    >>> x = sp.IndexedBase("x")
    >>> n, i, j = isym("n"), isym("i"), isym("j")
    >>> read, inside = guard_computed_reads(
    ...     load_table()["affine_resample"], x[n, Floor(fsym("r")), j]
    ... ).args[0]
    >>> read, sorted(map(str, inside.args))
    (x[n, Floor(r), j], ['Floor(r) >= 0', 'H > Floor(r)'])
    """

    def guard(acc):
        inside = [
            sp.And(ix >= 0, ix < axis_size(spec, str(acc.base), axis))
            for axis, ix in enumerate(acc.indices)
            if ix.has(Floor)
        ]
        return sp.Piecewise((acc, sp.And(*inside)), (sp.Integer(0), True))

    return expr.replace(_computed, guard)


def _constant_over(expr, ranges: dict):
    """``expr`` evaluated for every value of its loop variables, if always the same."""
    free = [s for s in expr.free_symbols if s in ranges]
    if not free or any(s not in ranges for s in expr.free_symbols):
        return expr
    values = {
        expr.subs(dict(zip(free, pt, strict=True)))
        for pt in itertools.product(*(ranges[s] for s in free))
    }
    return values.pop() if len(values) == 1 else expr


def _env(spec: KernelSpec, fixed: dict) -> dict:
    env = {isym(k): sp.Integer(v) for k, v in fixed.items() if k != "table"}
    for name, formula in spec.derived:  # derived sizes follow from the fixed ones
        value = sp.sympify(formula).subs(env)
        if value.is_Integer:
            env.setdefault(isym(name), value)
    return env


def _parallel(nest: Nest, var: str) -> bool:
    """A loop may run in parallel when every statement writes at a bare ``var`` index."""
    return all(isym(var) in stmt.lhs.indices for stmt in nest.body)


# --- C -------------------------------------------------------------------------------------


def lower_c(spec: KernelSpec, fixed: dict | None = None, name: str | None = None) -> Function:
    """Lower ``spec`` to a scalar C loop nest.

    ``fixed`` maps size/param names to ints (and ``"table"`` to a tuple of rows of
    connected input maps, or None) for a specialization; the batch size stays a
    runtime argument.
    """
    fixed = dict(fixed or {})
    env = _env(spec, fixed)
    body = tuple(node for nest in spec.nests for node in _c_nest(spec, nest, env, fixed))
    if fixed:
        body = _row_padded(body)
    frozen = tuple(sorted((k, v) for k, v in fixed.items()))
    return Function(name or spec.name, spec, frozen, body)


def _shapes(spec: KernelSpec, env: dict) -> dict:
    """IndexedBase -> the same base carrying its (possibly constant) shape, for flat offsets."""
    return {
        a.base: sp.IndexedBase(a.name, shape=tuple(isym(d).subs(env) for d in a.dims))
        for a in spec.arrays
    }


def _c_nest(spec, nest, env, fixed):
    shaped = _shapes(spec, env)
    stmts = tuple(
        Update(
            s.lhs.subs(env).xreplace(shaped),
            s.op,
            guard_computed_reads(spec, s.rhs).subs(env).xreplace(shaped),
        )
        for s in nest.body
    )
    expand = _expanded(nest, fixed)
    ranges = {}
    for var in nest.loops:
        lo, hi = (sp.sympify(b).subs(env) for b in spec.range_of(var))
        if lo.is_Integer and hi.is_Integer:
            ranges[isym(var)] = range(int(lo), int(hi))
    loops = [
        x for x in nest.loops if not (fixed and _single_trip(spec, nest, x, env, ranges, expand))
    ]
    point = {isym(x): ranges[isym(x)][0] for x in nest.loops if x not in loops}
    stmts = tuple(Update(u.lhs.subs(point), u.op, u.rhs.subs(point)) for u in stmts)
    # A specialization for "all connected" (fixed table None) has no condition at all.
    all_connected = "table" in fixed and fixed["table"] is None
    cond = None if expand or all_connected or nest.cond is None else nest.cond.xreplace(shaped)
    made = {}  # loops made by fusing / jamming: name -> trip count
    if fixed and not expand and cond is None:
        loops, stmts, made = _fuse_contiguous(spec, nest, loops, stmts, ranges, env)
    body, unrolled = _unroll_taps(nest, stmts, loops, ranges) if fixed else (stmts, ())
    loops = [x for x in loops if x not in unrolled]
    # Iterations of one parallel region: from the first loop that is not expanded by the
    # table (the parallel candidate) inwards; pairs expanded outside it are separate regions.
    inside = loops[next((n for n, x in enumerate(loops) if x not in expand), len(loops)) :]
    work = sp.Mul(*[made.get(x) or _trips(spec, x) for x in inside]).subs(env)
    if expand and loops[: len(expand)] == list(expand):
        loops = _hoist_over_pairs(spec, nest, loops, expand, env, ranges)
        if loops[0] not in expand:  # one parallel region now runs every connected pair
            work *= sum(len(cs) for cs in fixed["table"])
    if fixed:
        before = loops
        loops, body, jammed = _jam(spec, nest, loops, body, ranges, env, expand)
        if loops == before:
            loops, body, jammed = _sum_jam(spec, nest, loops, body, ranges, env, expand)
        made.update(jammed)

    def bounds(var):
        if var in made:
            return sp.Integer(0), sp.Integer(made[var])
        lo, hi = clip_range(spec, nest, var, env)
        return tuple(_constant_over(b.subs(point), ranges) for b in (lo, hi))

    def plain(loops, body, accs):
        """The loops as they are; the innermost one carries the reduction accumulators."""
        if not loops:
            return body
        lo, hi = bounds(loops[0])
        inner = plain(loops[1:], body, accs)
        return (Loop(isym(loops[0]), lo, hi, inner, reduction=accs if len(loops) == 1 else ()),)

    def build(loops, done):
        if not loops:
            return body
        var = loops[0]
        if var in expand:
            rest = [x for x in loops if x not in expand]
            return _expand_pairs(spec, nest, fixed, lambda: build(rest, done))
        settled = cond is None or _cond_ready(cond, done)
        if done and settled and _reducible(body, {isym(x) for x in loops}):
            return _accumulate(loops, body, plain)
        lo, hi = bounds(var)
        inner = build(loops[1:], done + [var])
        wrap = cond is not None and _cond_ready(cond, done + [var]) and not _cond_ready(cond, done)
        if wrap:
            inner = (If(cond, inner),)
        parallel = not done and _parallel(nest, var) and work != 0
        if parallel and work.is_Integer and work < PARALLEL_WORK:
            parallel = False
        return (Loop(isym(var), lo, hi, inner, parallel=parallel, work=work),)

    return build(loops, [])


def _hoist_over_pairs(spec, nest, loops, expand, env, ranges):
    """Put the first parallel loop with constant bounds outside the table's (out, in) pairs.

    C3's filter gradient loops over pairs first (``dw[k, c, u, v]``): with the parallel
    loop inside them every pair was a parallel region of its own (60 thread wake-ups
    and barriers per call); hoisting ``u`` gives one region running every pair.
    """
    for var in loops[len(expand) :]:
        if not _parallel(nest, var) or isym(var) not in ranges:
            continue
        lo, hi = (_constant_over(b, ranges) for b in clip_range(spec, nest, var, env))
        if lo.is_Integer and hi.is_Integer:
            return [var] + [x for x in loops if x != var]
    return loops


def _trips(spec: KernelSpec, var: str) -> sp.Expr:
    lo, hi = spec.range_of(var)
    return hi - lo


def _flat_offset(acc: sp.Indexed) -> sp.Expr:
    """The row-major element offset of an access of a shaped array (as the C printer prints it)."""
    offset = sp.Integer(0)
    for index, size in zip(acc.indices, acc.base.shape, strict=True):
        offset = offset * size + index
    return sp.expand(offset)


def _contiguous(group, sizes, offsets) -> bool:
    """Loops ``group`` (outer first, trip counts ``sizes``) walk every access as one flat run.

    That is: each offset is affine in them with ``coef(outer) = coef(inner) * size(inner)``
    and a unit (or zero) innermost stride, so ``sum_g coef_g * g`` is ``coef_last * q`` with
    ``q`` the row-major index of the group's point.
    """
    unit = False
    for offset in offsets:
        coefs = [sp.diff(offset, isym(x)) for x in group]
        if not all(c.is_Integer for c in coefs) or coefs[-1] not in (0, 1):
            return False
        if any(coefs[n] != coefs[n + 1] * sizes[n + 1] for n in range(len(group) - 1)):
            return False
        unit = unit or coefs[-1] == 1
    return unit


def _fuse_contiguous(spec, nest, loops, stmts, ranges, env):
    """Merge the inner loops that read and write memory contiguously into one flat loop.

    C5's reduction ``sum_{c,u,v} w[k,c,u,v] * x[n,c,u,v]`` is one dot product over
    C*KH*KW contiguous elements; looping ``c`` outside unrolled taps reads both arrays
    with stride KH*KW. The largest group of (at least two) loops after the first whose
    accesses are all one contiguous run becomes a single innermost loop ``q`` over the
    group's points (row-major), the other loops keep their order outside it. Only for
    accumulations (``+=``) over full constant ranges, where the loop order is free.

    Returns (loops, statements, {fused name: trip count}).
    """

    def whole(x):  # a constant range from 0 that clipping does not restrict
        r = ranges.get(isym(x))
        bounds = tuple(_constant_over(b, ranges) for b in clip_range(spec, nest, x, env))
        return r is not None and r.start == 0 and bounds == (0, r.stop)

    candidates = [x for x in loops[1:] if whole(x)]
    if not all(u.op == "+=" for u in stmts):
        return loops, stmts, {}
    offsets = [_flat_offset(a) for u in stmts for a in sp.Tuple(u.lhs, u.rhs).atoms(sp.Indexed)]
    best = None
    for r in range(len(candidates), 1, -1):
        for group in itertools.combinations(candidates, r):
            sizes = [len(ranges[isym(x)]) for x in group]
            total = int(sp.Mul(*sizes))
            if (best is None or total > best[1]) and _contiguous(group, sizes, offsets):
                best = (group, total)
    if best is None:
        return loops, stmts, {}
    group, total = best
    name = "".join(group)
    sub = {isym(x): sp.Integer(0) for x in group[:-1]} | {isym(group[-1]): isym(name)}
    stmts = tuple(Update(u.lhs.xreplace(sub), u.op, u.rhs.xreplace(sub)) for u in stmts)
    ranges[isym(name)] = range(total)
    return [x for x in loops if x not in group] + [name], stmts, {name: total}


#: Independent accumulators an unroll-and-jam aims for: one simd FMA chain has a latency
#: of ~4 cycles, so a dot product with a single accumulator runs at a quarter of the
#: FMA throughput; 4 chains (sharing the loads that do not depend on the jammed loop) fill it.
JAM = 4


def _jam(spec, nest, loops, body, ranges, env, expand):
    """Unroll-and-jam the loop just outside a specialized innermost reduction.

    ``y[n, o] += sum_i w[o, i] * x[n, i]`` with ``o`` jammed by 4 becomes four
    accumulators in one simd loop over ``i`` (``x[n, i]`` loaded once for all four):
    four independent FMA chains instead of one latency-bound chain. The jammed loop
    steps over blocks ``o4`` of :data:`JAM` values (or all of them when it has at most
    8 iterations, e.g. a 5-tap kernel row); it must not be the first (parallel) loop.

    Returns (loops, body, {jammed loop name: trip count}).
    """
    lhs_vars = {x for u in body if isinstance(u, Update) for x in u.lhs.free_symbols}
    r = len(loops)
    while r > 0 and isym(loops[r - 1]) not in lhs_vars:
        r -= 1
    if r < 2 or r == len(loops) or loops[r - 1] in expand:
        return loops, body, {}
    if not all(isinstance(u, Update) for u in body):  # cse temporaries: keep it simple
        return loops, body, {}
    if not _reducible(body, {isym(x) for x in loops[r:]}):
        return loops, body, {}
    var = loops[r - 1]
    rng = ranges.get(isym(var))
    if rng is None or rng.start != 0:
        return loops, body, {}
    bounds = clip_range(spec, nest, var, env) if var in nest.loops else (0, rng.stop)
    if tuple(_constant_over(b, ranges) for b in bounds) != (0, rng.stop):
        return loops, body, {}
    trips = len(rng)
    block = trips if trips <= 8 else JAM if trips % JAM == 0 else None
    if block is None or block < 2:
        return loops, body, {}
    name = f"{var}{block}"
    # A loop jammed whole leaves no block loop: its copies are the constants 0..trips-1.
    start = isym(name) * block if block < trips else sp.Integer(0)
    copies = tuple(
        Update(u.lhs.xreplace(sub), u.op, u.rhs.xreplace(sub))
        for t in range(block)
        for sub in [{isym(var): start + t}]
        for u in body
    )
    if block == trips:
        return loops[: r - 1] + loops[r:], copies, {}
    return loops[: r - 1] + [name] + loops[r:], copies, {name: trips // block}


def _sum_jam(spec, nest, loops, body, ranges, env, expand):
    """Unroll by :data:`JAM` the loop around an innermost loop along the output, into one sum.

    F6's data gradient ``dx[n, i] += dy[n, o] w[o, i]`` runs ``o`` around the simd loop
    over ``i``: every ``o`` reads and writes the whole row ``dx[n, :]``. Stepping ``o``
    by 4 with the 4 products summed in one update reads and writes it once per 4. The
    loop must not index the output, nor be the first (parallel) loop, and must run a
    constant multiple of JAM trips from 0 that clipping leaves whole.

    Returns (loops, body, {unrolled loop name: trip count}).
    """
    if len(loops) < 3 or not all(isinstance(u, Update) and u.op == "+=" for u in body):
        return loops, body, {}
    var, inner = loops[-2], loops[-1]
    lhs_vars = {x for u in body for x in u.lhs.free_symbols}
    if isym(var) in lhs_vars or isym(inner) not in lhs_vars or var not in nest.loops:
        return loops, body, {}
    rng = ranges.get(isym(var))
    if var in expand or rng is None or rng.start != 0 or len(rng) % JAM or len(rng) == JAM:
        return loops, body, {}
    if tuple(_constant_over(b, ranges) for b in clip_range(spec, nest, var, env)) != (0, rng.stop):
        return loops, body, {}
    name = f"{var}{JAM}"
    steps = [{isym(var): JAM * isym(name) + t} for t in range(JAM)]
    body = tuple(Update(u.lhs, "+=", sp.Add(*[u.rhs.xreplace(s) for s in steps])) for u in body)
    return loops[:-2] + [name, inner], body, {name: len(rng) // JAM}


def _single_trip(spec, nest, var, env, ranges, expand) -> bool:
    """A loop of one iteration at fixed sizes (C5's 1x1 output): its index is a constant."""
    r = ranges.get(isym(var))
    if r is None or len(r) != 1 or var in expand:
        return False
    lo, hi = clip_range(spec, nest, var, env)
    return (_constant_over(lo, ranges), _constant_over(hi, ranges)) == (r.start, r.stop)


def _unroll_taps(nest, stmts, loops, ranges):
    """Unroll the constant kernel taps of a specialized reduction.

    A tap that does not index the output is summed into one expression (forward
    convolution: 25 products per output element). Taps that index the output stay
    loops with constant bounds: unrolling them into separate accumulators (one per
    filter entry) multiplied the code and its compile time for little gain.
    """
    if not all(u.op == "+=" for u in stmts):
        return stmts, ()
    taps = [t for t in nest.taps if t in loops and isym(t) in ranges]
    lhs_vars = {x for u in stmts for x in u.lhs.free_symbols}
    summed = tuple(t for t in taps if isym(t) not in lhs_vars)
    body = _unrolled(stmts, summed, ranges)
    return body, summed


def _reducible(body, loop_vars: set) -> bool:
    """The remaining loops only accumulate (+=) into elements that none of them indexes."""
    updates = [n for n in body if isinstance(n, Update)]
    return (
        bool(updates)
        and all(isinstance(n, Update | Let) for n in body)
        and all(u.op == "+=" and not (loop_vars & u.lhs.free_symbols) for u in updates)
    )


def _accumulate(loops, body, plain):
    """Sum the remaining loops in scalar accumulators, stored once at the end.

    The innermost loop becomes an ``omp simd`` reduction the compiler vectorizes
    (strict IEEE order would forbid it); each output element is written once.
    """
    accs, inner, after = [], [], []
    for node in body:
        if isinstance(node, Update):
            acc = sp.Symbol(f"acc{len(accs)}", real=True)
            accs.append(acc)
            inner.append(Update(acc, "+=", node.rhs))
            after.append(Update(node.lhs, "+=", acc))
        else:
            inner.append(node)
    lets = tuple(Let(a, sp.Integer(0), integer=False, mutable=True) for a in accs)
    return (Block(lets + plain(loops, tuple(inner), tuple(accs)) + tuple(after)),)


def _row_padded(nodes):
    """Compute narrow output planes over the input's row pitch, so one loop vectorizes.

    C3 forward: ``y[.., i, j] += sum w * x[.., i + u, j + v]`` with 10-wide rows of ``y``
    but 14-wide rows of ``x``; a 10-iteration ``j`` loop vectorizes badly. With
    ``q = 14 i + j`` every read is ``x[base + q]``: a scratch row ``t[q]`` over
    ``q < 14 (I - 1) + J`` is one contiguous, vectorizable loop (the ``j >= J`` columns
    are computed and dropped; every read stays between the first and the last element a
    real output reads, so nothing out of bounds), then ``y[.., i, j] += t[14 i + j]``.
    Applies to a loop pair ``i, j`` whose body is one ``+=`` with constant bounds from 0.
    A parallel loop over the samples whose body fills such rows reads its sample through
    a local copy (:func:`_sample_local`).
    """
    out = []
    for node in nodes:
        if isinstance(node, Loop | Block | If):
            padded = None
            if isinstance(node, Loop):
                padded = _pad_pair(node) or _pad_reduction(node) or _pad_scatter(node)
            if padded is not None:
                out.append(padded)
                continue
            body = _row_padded(node.body)
            if isinstance(node, Loop):
                node = _sample_local(dataclasses.replace(node, body=body))
            else:
                node = Block(body) if isinstance(node, Block) else If(node.cond, body)
        out.append(node)
    return tuple(out)


def _pad_pair(outer):
    """The gather form of :func:`_row_padded`: ``Block(t, fill loops, add loop)``.

    The scratch row is filled by one loop per input plane the sum reads (C3: one per
    connected (output, input) map pair): each loop's 25 weights are invariants the
    compiler keeps in registers, where one loop over all 75-150 taps of a map (or all
    16 maps) spilled them and re-read each from the stack at every use.
    """
    if outer.parallel or outer.reduction or len(outer.body) != 1:
        return None
    inner = outer.body[0]
    if not isinstance(inner, Loop) or inner.parallel or inner.reduction or len(inner.body) != 1:
        return None
    (update,) = inner.body
    loops = (outer.lo, outer.hi, inner.lo, inner.hi)
    if not isinstance(update, Update) or update.op != "+=" or not all(b.is_Integer for b in loops):
        return None
    if outer.lo != 0 or inner.lo != 0:
        return None
    i, j = outer.var, inner.var
    reads = update.rhs.atoms(sp.Indexed)
    pitch = None
    for acc in reads:
        offset = _flat_offset(acc)
        ci, cj = sp.diff(offset, i), sp.diff(offset, j)
        if (ci, cj) == (0, 0):
            continue
        if cj != 1 or not ci.is_Integer or (pitch is not None and ci != pitch):
            return None
        pitch = ci
    out_pitch = sp.diff(_flat_offset(update.lhs), i)
    if pitch is None or pitch <= inner.hi or pitch == out_pitch:
        return None
    size = int(pitch * (outer.hi - 1) + inner.hi)
    q, t = isym("q"), sp.IndexedBase("t", shape=(size,))
    parts = _per_plane(update.rhs.xreplace({i: sp.Integer(0), j: q}), q)
    fills = tuple(
        Loop(q, sp.Integer(0), sp.Integer(size), (Update(t[q], "+=" if m else "=", part),))
        for m, part in enumerate(parts)
    )
    add = Loop(
        i,
        outer.lo,
        outer.hi,
        (Loop(j, inner.lo, inner.hi, (Update(update.lhs, "+=", t[pitch * i + j]),)),),
    )
    return Block((Scratch(sp.Symbol("t"), size), *fills, add))


def _per_plane(expr, var) -> list:
    """The terms of ``expr`` summed per plane: the leading indices of their read along ``var``.

    >>> x, w, q = sp.IndexedBase("x"), sp.IndexedBase("w"), isym("q")
    >>> _per_plane(w[0] * x[1, 0, q] + w[1] * x[1, 0, q + 1] + w[2] * x[2, 0, q], q)
    [w[0]*x[1, 0, q] + w[1]*x[1, 0, q + 1], w[2]*x[2, 0, q]]
    """
    planes = {}
    for term in sp.Add.make_args(expr):
        moving = [a for a in term.atoms(sp.Indexed) if var in a.free_symbols]
        if len(moving) != 1:
            return [expr]
        planes.setdefault(moving[0].indices[:-2], []).append(term)
    return [sp.Add(*planes[k]) for k in sorted(planes, key=sp.default_sort_key)]


def _fill_reads(loop) -> set:
    """Arrays read at ``[loop.var, ...]`` by the :func:`_pad_pair` fills (``t[q] = ...``)."""
    found = set()
    for fill in walk(loop.body):
        if not isinstance(fill, Loop) or fill.var != isym("q"):
            continue
        for update in fill.body:
            if isinstance(update.lhs, sp.Indexed) and str(update.lhs.base) == "t":
                reads = update.rhs.atoms(sp.Indexed)
                found |= {a.base for a in reads if a.indices[0] == loop.var}
    return found


def _sample_local(loop):
    """A parallel loop over samples whose padded rows read ``x[n, ...]`` reads a local copy.

    ``x_n[c, r, s] = x[n, c, r, s]`` is copied once per sample (a contiguous loop); every
    tap of a fill loop is then a constant offset from one stack address, where taps at
    ``x + 1176 n + offset`` kept a pointer register per tap live and spilled them along
    with the weights (C3 forward at batch 64, hand-written C: the per-connection fills
    alone took 0.75x the time of one fill loop for all maps, with the copy 0.5x).
    """
    if not loop.parallel:
        return loop
    for base in sorted(_fill_reads(loop), key=str):
        every = {a for x in walk(loop.body) for e in node_exprs(x) for a in e.atoms(sp.Indexed)}
        if any(a.base == base and a.indices[0] != loop.var for a in every):
            continue
        local = sp.IndexedBase(f"{base.label}_n", shape=base.shape[1:])
        size = int(sp.Mul(*local.shape))
        q = isym("q")
        src = sp.IndexedBase(base.label, shape=(base.shape[0], size))[loop.var, q]
        copy = Loop(
            q, sp.Integer(0), sp.Integer(size), (Update(local[_unflat(q, local)], "=", src),)
        )
        body = _map_exprs(loop.body, lambda e, b=base, lo=local: _rebased(e, b, lo))
        loop = dataclasses.replace(loop, body=(Block((Scratch(local.label, size), copy, *body)),))
    return loop


def _unflat(q, base) -> tuple:
    """Row-major indices of ``base`` whose flat offset is ``q``: ``(0, .., 0, q)``."""
    return (sp.Integer(0),) * (len(base.shape) - 1) + (q,)


def _rebased(expr, base, local):
    """``expr`` with every ``base[n, *rest]`` read as ``local[*rest]``."""
    return expr.replace(
        lambda e: isinstance(e, sp.Indexed) and e.base == base,
        lambda e: local[e.indices[1:]],
    )


def _pad_reduction(outer):
    """The reduction form of :func:`_row_padded` (C3's filter gradient).

    ``acc_v += dy[.., i, j] * x[.., i + u, j + v]`` over ``i, j``: ``dy`` (pitch 10) is
    copied into a zeroed scratch at the pitch of ``x`` (14), then one contiguous simd
    loop ``acc_v += t[q] * x[base + q]`` covers the plane; the padding columns of ``t``
    are zero, so they add nothing (reads of ``x`` stay inside the real window's span).
    """
    if outer.parallel or outer.reduction or len(outer.body) != 1 or outer.lo != 0:
        return None
    inner = outer.body[0]
    if not isinstance(inner, Loop) or not inner.reduction or inner.lo != 0:
        return None
    if not (outer.hi.is_Integer and inner.hi.is_Integer):
        return None
    i, j = outer.var, inner.var
    narrow, pitch = set(), None
    for u in inner.body:
        if not isinstance(u, Update) or u.op != "+=" or not isinstance(u.lhs, sp.Symbol):
            return None
        for acc in u.rhs.atoms(sp.Indexed):
            offset = _flat_offset(acc)
            ci, cj = sp.diff(offset, i), sp.diff(offset, j)
            if cj != 1 or not ci.is_Integer:
                return None
            if ci == inner.hi:
                narrow.add(acc)
            elif pitch is None or ci == pitch:
                pitch = ci
            else:
                return None
    if len(narrow) != 1 or pitch is None or pitch <= inner.hi:
        return None
    (src,) = narrow
    size = int(pitch * (outer.hi - 1) + inner.hi)
    q, t = isym("q"), sp.IndexedBase("t", shape=(size,))
    zero = Loop(q, sp.Integer(0), sp.Integer(size), (Update(t[q], "=", sp.Integer(0)),))
    copy = Loop(
        i, outer.lo, outer.hi, (Loop(j, inner.lo, inner.hi, (Update(t[pitch * i + j], "=", src),)),)
    )
    sub = {i: sp.Integer(0), j: q}
    body = tuple(Update(u.lhs, "+=", u.rhs.xreplace({src: t[q]}).xreplace(sub)) for u in inner.body)
    reduce = Loop(q, sp.Integer(0), sp.Integer(size), body, reduction=inner.reduction)
    return Block((Scratch(sp.Symbol("t"), size), zero, copy, reduce))


def _scatter_pair(node):
    """(i loop, j loop, update, pitch P) of a scatter ``out[.., P i + j] += f(in[.., J i + j])``."""
    if not isinstance(node, Loop) or node.parallel or node.reduction or len(node.body) != 1:
        return None
    inner = node.body[0]
    if not isinstance(inner, Loop) or inner.parallel or inner.reduction or len(inner.body) != 1:
        return None
    (update,) = inner.body
    if (
        not isinstance(update, Update)
        or update.op != "+="
        or not isinstance(update.lhs, sp.Indexed)
    ):
        return None
    bounds = (node.lo, node.hi, inner.lo, inner.hi)
    if not all(b.is_Integer for b in bounds) or node.lo != 0 or inner.lo != 0:
        return None
    i, j = node.var, inner.var
    out = _flat_offset(update.lhs)
    pitch = sp.diff(out, i)
    if sp.diff(out, j) != 1 or not pitch.is_Integer or pitch <= inner.hi:
        return None
    for acc in update.rhs.atoms(sp.Indexed):
        offset = _flat_offset(acc)
        coefs = (sp.diff(offset, i), sp.diff(offset, j))
        if coefs != (0, 0) and coefs != (inner.hi, 1):
            return None
    return node, inner, update, pitch


def _pad_scatter(loop):
    """The scatter form of :func:`_row_padded` (C3's data gradient), hoisted to ``loop``.

    ``dx[.., i + u, j + v] += sum_k dy[.., k, i, j] * w[k, .., u, v]``: ``dx`` has pitch
    14, ``dy`` pitch 10. Each ``dy`` plane the nests under ``loop`` read is copied once
    per ``loop`` iteration into a zeroed scratch at pitch 14; every ``i, j`` pair then
    becomes one contiguous loop over ``q``. The padding columns add exact zeros to
    elements inside the span the real updates write.
    """
    pairs = [p for p in map(_scatter_pair, walk(loop.body)) if p is not None]
    if not pairs or len({(p[0].hi, p[1].hi, p[3]) for p in pairs}) != 1:
        return None
    rows, cols, pitch = pairs[0][0].hi, pairs[0][1].hi, pairs[0][3]
    planes = {}
    for outer, inner, update, _ in pairs:
        for acc in update.rhs.atoms(sp.Indexed):
            if outer.var in acc.free_symbols or inner.var in acc.free_symbols:
                used = set().union(*(ix.free_symbols for ix in acc.indices))
                if not used <= {outer.var, inner.var, loop.var}:
                    return None
                plane = acc.xreplace({outer.var: sp.Integer(0), inner.var: sp.Integer(0)})
                planes.setdefault(plane, acc.xreplace({outer.var: isym("i"), inner.var: isym("j")}))
    size = int(pitch * (rows - 1) + cols)
    total = size * len(planes)
    q, i, j = isym("q"), isym("i"), isym("j")
    t = sp.IndexedBase("t", shape=(total,))
    index = {plane: m for m, plane in enumerate(sorted(planes, key=sp.default_sort_key))}
    copies = tuple(
        Loop(
            i,
            sp.Integer(0),
            rows,
            (
                Loop(
                    j,
                    sp.Integer(0),
                    cols,
                    (Update(t[index[plane] * size + pitch * i + j], "=", planes[plane]),),
                ),
            ),
        )
        for plane in sorted(planes, key=sp.default_sort_key)
    )
    zero = Loop(q, sp.Integer(0), sp.Integer(total), (Update(t[q], "=", sp.Integer(0)),))

    def padded(outer, inner, update):
        sub = {}
        for acc in update.rhs.atoms(sp.Indexed):
            if outer.var in acc.free_symbols or inner.var in acc.free_symbols:
                plane = acc.xreplace({outer.var: sp.Integer(0), inner.var: sp.Integer(0)})
                sub[acc] = t[index[plane] * size + q]
        rhs = update.rhs.xreplace(sub)
        lhs = update.lhs.xreplace({outer.var: sp.Integer(0), inner.var: q})
        return Loop(q, sp.Integer(0), sp.Integer(size), (Update(lhs, "+=", rhs),))

    def rewrite(nodes):
        out = []
        for node in nodes:
            pair = _scatter_pair(node)
            if pair is not None:
                out.append(padded(*pair[:3]))
            elif isinstance(node, Loop):
                out.append(
                    Loop(
                        node.var,
                        node.lo,
                        node.hi,
                        rewrite(node.body),
                        node.parallel,
                        node.work,
                        node.reduction,
                    )
                )
            elif isinstance(node, Block):
                out.append(Block(rewrite(node.body)))
            elif isinstance(node, If):
                out.append(If(node.cond, rewrite(node.body)))
            else:
                out.append(node)
        return tuple(out)

    scratch = (Scratch(sp.Symbol("t"), total), zero, *copies)
    body = (Block(scratch + rewrite(loop.body)),)
    return Loop(loop.var, loop.lo, loop.hi, body, loop.parallel, loop.work, loop.reduction)


def _cond_ready(cond, bound_vars):
    return {str(x) for x in cond.indices} <= set(bound_vars)


def _expanded(nest: Nest, fixed: dict) -> tuple[str, ...]:
    """Loops replaced by the compiled-in connection table (only its present pairs)."""
    if nest.cond is None or fixed.get("table") is None:
        return ()
    return tuple(str(x) for x in nest.cond.indices)


def _expand_pairs(spec, nest, fixed, inner):
    """Emit the inner nest once per connected (out, in) pair of the table."""
    out_var, in_var = nest.cond.indices
    rows = fixed["table"]
    template = inner()
    pairs = [
        _subs_nodes(template, {out_var: sp.Integer(k), in_var: sp.Integer(c)})
        for k, cs in enumerate(rows)
        for c in sorted(cs)
    ]
    merged = _merge_same_targets(pairs)
    return tuple(node for nodes in _merge_shared_reads(merged) for node in nodes)


#: Accumulators one merged reduction may carry: AVX-512 has 32 vector registers, the
#: shared read and a product take two.
MAX_ACCUMULATORS = 30


def _reduction(nodes):
    """(accumulators, loop chain, innermost loop, stores) of an :func:`_accumulate` block."""
    if len(nodes) != 1 or not isinstance(nodes[0], Block):
        return None
    body = nodes[0].body
    lets = [x for x in body if isinstance(x, Let)]
    loops = [x for x in body if isinstance(x, Loop)]
    stores = [x for x in body if isinstance(x, Update)]
    if not lets or len(loops) != 1 or len(lets) + 1 + len(stores) != len(body):
        return None
    chain = [loops[0]]
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], Loop):
        chain.append(chain[-1].body[0])
    if not chain[-1].reduction or not all(isinstance(x, Update) for x in chain[-1].body):
        return None
    return lets, chain, stores


def _shared_reads(found):
    """The loop skeleton and the reads every update of a reduction multiplies by."""
    _, chain, _ = found
    skeleton = tuple((x.var, x.lo, x.hi, x.parallel) for x in chain)
    shared = set.intersection(*(set(sp.Mul.make_args(u.rhs)) for u in chain[-1].body))
    return skeleton, frozenset(a for a in shared if isinstance(a, sp.Indexed))


def _merge_shared_reads(nests):
    """Consecutive reductions that multiply by the same read, merged into one.

    C3's filter gradient ``dw[k, c, u, v] = sum dy[n, k, i, j] x[n, c, i + u, j + v]``:
    the 3 to 6 input maps ``c`` of output map ``k`` share the plane ``dy[n, k]``; one
    reduction over it with 5 accumulators per map reads (and row-pads) that plane once
    instead of once per map. At most :data:`MAX_ACCUMULATORS` accumulators per merge.
    """
    out, run = [], []

    def flush():
        if len(run) == 1:
            out.append(run[0][0])
        elif run:
            out.append(_merged_reduction([found for _, found in run]))
        run.clear()

    for nodes in nests:
        found = _reduction(nodes)
        key = _shared_reads(found) if found is not None else None
        if key is None or not key[1]:
            flush()
            out.append(nodes)
            continue
        count = sum(len(f[0]) for _, f in run) + len(found[0])
        if run and (_shared_reads(run[0][1]) != key or count > MAX_ACCUMULATORS):
            flush()
        run.append((nodes, found))
    flush()
    return out


def _merged_reduction(founds):
    """One accumulate block running the reductions ``founds`` (accumulators renumbered)."""
    lets, updates, stores, accs = [], [], [], []
    for old_lets, chain, old_stores in founds:
        sub = {}
        for let in old_lets:
            sub[let.var] = sp.Symbol(f"acc{len(accs)}", real=True)
            accs.append(sub[let.var])
            lets.append(Let(sub[let.var], let.value, let.integer, let.mutable))
        updates += [Update(sub[u.lhs], u.op, u.rhs) for u in chain[-1].body]
        stores += [Update(u.lhs, u.op, u.rhs.xreplace(sub)) for u in old_stores]
    chain = founds[0][1]
    nest = dataclasses.replace(chain[-1], body=tuple(updates), reduction=tuple(accs))
    for loop in reversed(chain[:-1]):
        nest = dataclasses.replace(loop, body=(nest,))
    return (Block((*lets, nest, *stores)),)


def _skeleton(nodes):
    """The structure of plain ``+=`` loop nests without their right-hand sides (else None)."""
    out = []
    for node in nodes:
        if isinstance(node, Loop):
            body = _skeleton(node.body)
            if body is None:
                return None
            out.append((node.var, node.lo, node.hi, node.parallel, node.work, node.reduction, body))
        elif isinstance(node, Update) and node.op == "+=":
            out.append(node.lhs)
        else:
            return None
    return tuple(out)


def _summed(a, b):
    """Two nests of one skeleton as one: each update adds both right-hand sides."""
    out = []
    for x, y in zip(a, b, strict=True):
        if isinstance(x, Loop):
            body = _summed(x.body, y.body)
            out.append(Loop(x.var, x.lo, x.hi, body, x.parallel, x.work, x.reduction))
        else:
            out.append(Update(x.lhs, "+=", x.rhs + y.rhs))
    return tuple(out)


def _merge_same_targets(pairs):
    """Nests of table pairs that accumulate into the same elements, merged into one.

    C3 forward: the 3 to 6 input maps of output map ``k`` add into the same
    ``y[n, k, i, j]``; one nest summing all their taps reads and writes ``y`` once
    instead of once per pair (backward_data likewise over the output maps of ``dx[n, c]``).
    Nests of any other form (accumulator blocks, cse temporaries) are kept as they are.
    """
    merged, order = {}, []
    for nodes in pairs:
        key = _skeleton(nodes)
        if key is None:
            order.append(nodes)
        elif key in merged:
            merged[key][0] = _summed(merged[key][0], nodes)
        else:
            merged[key] = [nodes]
            order.append(key)
    return [merged[x][0] if x in merged else x for x in order]


def _subs_nodes(nodes, sub):
    return _map_exprs(nodes, lambda e: e.subs(sub))


def _map_exprs(nodes, f):
    """The nodes with ``f`` applied to every expression they hold (scratch arrays kept)."""
    out = []
    for node in nodes:
        if isinstance(node, Loop):
            lo, hi, work = f(node.lo), f(node.hi), f(node.work)
            body = _map_exprs(node.body, f)
            out.append(Loop(node.var, lo, hi, body, node.parallel, work, node.reduction))
        elif isinstance(node, If):
            out.append(If(f(node.cond), _map_exprs(node.body, f)))
        elif isinstance(node, Block):
            out.append(Block(_map_exprs(node.body, f)))
        elif isinstance(node, Let):
            out.append(Let(node.var, f(node.value), node.integer, node.mutable))
        elif isinstance(node, Update):
            out.append(Update(f(node.lhs), node.op, f(node.rhs)))
        else:
            out.append(node)
    return tuple(out)


def _unrolled(stmts, unroll, ranges):
    if not unroll:
        return stmts
    taps = [isym(t) for t in unroll]
    points = list(itertools.product(*(ranges[t] for t in taps)))
    out = []
    for stmt in stmts:
        terms = [stmt.rhs.subs(dict(zip(taps, pt, strict=True))) for pt in points]
        out.append(Update(stmt.lhs, "+=", sp.Add(*terms)))
    return _with_cse(tuple(out))


def _with_cse(stmts):
    """Factor common subexpressions of unrolled bodies into locals (only when cse finds any)."""
    exprs = [s.rhs for s in stmts]
    pairs, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t"), order="canonical")
    if not pairs:
        return stmts
    lets = tuple(Let(sym, val, integer=bool(val.is_integer)) for sym, val in pairs)
    return lets + tuple(Update(s.lhs, s.op, r) for s, r in zip(stmts, reduced, strict=True))


# --- NumPy ---------------------------------------------------------------------------------


class View(sp.Function):
    """``array[slices]``: args are the array label and one entry per axis.

    An entry is a :class:`Span` (vectorized axis), :class:`Gather` (an index array,
    with :class:`Arange` for its companion axes) or a scalar expression (a tap).
    """


class Span(sp.Function):
    """Slice ``start:stop:step`` (``Span(0, size, 1)`` of a whole axis prints ``:``)."""


class Arange(sp.Function):
    """``numpy.arange(lo, hi)`` (a vectorized index used as a value or a gather axis)."""


class Align(sp.Function):
    """Put ``expr`` (axes ``have``) into the axis order ``want``: transpose + new axes."""


class Einsum(sp.Function):
    """``numpy.einsum(subscripts, *operands, optimize=True)``."""


class Scatter(sp.Function):
    """``Scatter(label, *index arrays)``: the target of a ``+=`` through indices read from
    an array (``dx[n, c, argmax // W, argmax % W]``), broadcast together."""


class Reduce(sp.Function):
    """``numpy.sum/max/min(expr, axis=axes)``."""


class Clip(sp.Function):
    """``numpy.clip(index, lo, hi)`` as int64: a computed index kept inside its axis, so
    the gather is valid everywhere (the guard of :func:`guard_computed_reads` discards the
    values read at clipped positions)."""


REDUCE_OP = {"=": None, "+=": "sum", "max=": "max", "min=": "min"}


def lower_numpy(spec: KernelSpec) -> Function:
    """Lower ``spec`` to Python loops over taps and vectorized statements."""
    body = tuple(node for nest in spec.nests for node in _np_nest(spec, nest))
    return Function(spec.name, spec, (), body)


def _np_nest(spec, nest):
    vec = [x for x in nest.loops if x not in nest.taps]
    lets, spans = [], {}
    for var in vec:
        lo, hi = clip_range(spec, nest, var, {})
        if nest.clip and (lo, hi) != spec.range_of(var):
            lo_s, hi_s = isym(f"{var}_lo"), isym(f"{var}_hi")
            lets += [Let(lo_s, lo), Let(hi_s, sp.Max(lo_s, hi))]
            lo, hi = lo_s, hi_s
        spans[isym(var)] = (lo, hi)
    body = (dataclasses.replace(s, rhs=guard_computed_reads(spec, s.rhs)) for s in nest.body)
    stmts = tuple(lets) + tuple(_np_stmt(spec, nest, s, spans) for s in body)
    for tap in reversed(nest.taps):
        lo, hi = spec.range_of(tap)
        stmts = (Loop(isym(tap), lo, hi, stmts),)
    return stmts


def _np_view(spec, acc, spans):
    """(View node, its vectorized letters) for one Indexed access."""
    if _computed(acc):
        return _np_computed_view(spec, acc, spans)
    entries, letters = [], []
    gather = any(ix.atoms(sp.Indexed) for ix in acc.indices)
    for axis, index in enumerate(acc.indices):
        inner = index.atoms(sp.Indexed)
        vars_ = [v for v in index.free_symbols if v in spans]
        if inner:
            (sub,) = inner
            sub_view, sub_letters = _np_view(spec, sub, spans)
            entries.append(sub_view)
            letters += [x for x in sub_letters if x not in letters]
        elif not vars_:
            entries.append(index)
        else:
            (var,) = vars_
            lo, hi = spans[var]
            if gather:
                entries.append(Arange(lo, hi))
            else:
                a = sp.diff(index, var)
                start = index.subs(var, lo)
                size = axis_size(spec, str(acc.base), axis)
                if index == var and lo == 0 and hi == size:
                    entries.append(Span(0, size, 1))
                else:
                    entries.append(Span(start, start + a * (hi - lo), a))
            if var not in letters:
                letters.append(var)
    return View(sp.Symbol(str(acc.base)), *entries), letters


def _np_computed_view(spec, acc, spans):
    """A gather at computed positions: every index an integer array over the access's
    vectorized loops (outer first), computed ones clipped into their axis."""
    letters = [v for v in spans if any(v in ix.free_symbols for ix in acc.indices)]
    entries = []
    for axis, index in enumerate(acc.indices):
        sub = {a: _align(*_np_view(spec, a, spans), letters) for a in _outer_reads(index)}
        sub.update(
            {v: _align(Arange(*spans[v]), [v], letters) for v in index.free_symbols & set(spans)}
        )
        entry = index.xreplace(sub)
        if index.has(Floor):
            entry = Clip(entry, 0, axis_size(spec, str(acc.base), axis) - 1)
        entries.append(entry)
    return View(sp.Symbol(str(acc.base)), *entries), letters


def _outer_reads(expr) -> list:
    """The array reads of ``expr`` that are not inside another read's index (sorted)."""
    if isinstance(expr, sp.Indexed):
        return [expr]
    found = {a for arg in expr.args for a in _outer_reads(arg)}
    return sorted(found, key=sp.default_sort_key)


def _np_stmt(spec, nest, stmt, spans):
    if stmt.op == "+=" and any(ix.atoms(sp.Indexed) for ix in stmt.lhs.indices):
        return _np_scatter(spec, nest, stmt, spans)
    lhs, out = _np_view(spec, stmt.lhs, spans)
    views = {}
    for acc in _outer_reads(stmt.rhs):
        views[acc] = _np_view(spec, acc, spans)
    order = list(out)
    for _, letters in views.values():
        order += [x for x in letters if x not in order]
    for var in sorted(stmt.rhs.free_symbols & set(spans), key=str):
        if var not in order:
            order.append(var)
    reduced = [x for x in order if x not in out]
    cond = _np_view(spec, nest.cond, spans) if nest.cond is not None else None
    rhs = _np_einsum(stmt, views, out, cond) if stmt.op == "+=" else None
    if rhs is None:
        rhs = _np_broadcast(stmt, views, spans, order, cond)
        if reduced:
            axes = sp.Tuple(*[order.index(x) for x in reduced])
            rhs = Reduce(rhs, sp.Symbol(REDUCE_OP[stmt.op]), axes)
        elif cond is not None:
            rhs = rhs * _align(*cond, order)
    if cond is not None and reduced and rhs.func is Reduce:
        rhs = rhs * _align(*cond, out)
    return Update(lhs, stmt.op, rhs)


def _np_scatter(spec, nest, stmt, spans):
    """``+=`` at indices read from arrays: every index and the value broadcast over the
    nest's vectorized loops, added by ``numpy.add.at`` (windows may share a target)."""
    order = [isym(x) for x in nest.loops if x not in nest.taps]
    reads = {acc: _np_view(spec, acc, spans) for acc in stmt.rhs.atoms(sp.Indexed)}
    index = []
    for ix in stmt.lhs.indices:
        sub = {acc: _align(*_np_view(spec, acc, spans), order) for acc in ix.atoms(sp.Indexed)}
        sub.update({v: _align(Arange(*spans[v]), [v], order) for v in ix.free_symbols & set(spans)})
        index.append(ix.xreplace(sub))
    cond = _np_view(spec, nest.cond, spans) if nest.cond is not None else None
    rhs = _np_broadcast(stmt, reads, spans, order, cond)
    return Update(Scatter(sp.Symbol(str(stmt.lhs.base)), *index), "+=", rhs)


def _align(expr, have, want):
    if list(have) == list(want):
        return expr
    return Align(expr, sp.Tuple(*have), sp.Tuple(*want))


def _np_einsum(stmt, views, out, cond):
    """``+=`` of a product of array reads: one einsum (None when not of that form)."""
    coeff, factors = [], []
    for f in sp.Mul.make_args(stmt.rhs):
        (factors if f in views else coeff).append(f)
    if not factors or any(c.atoms(sp.Indexed) for c in coeff):
        return None
    if any(set(views[f][1]) & {s for c in coeff for s in c.free_symbols} for f in factors):
        return None
    operands = [list(views[f]) for f in factors]
    if cond is not None:
        host = next((op for op in operands if set(cond[1]) <= set(op[1])), None)
        if host is None:
            if not set(cond[1]) <= set(out):
                return None
            coeff.append(_align(*cond, out))
        else:
            host[0] = host[0] * _align(cond[0], cond[1], host[1])
    letters = {
        v: chr(ord("a") + i) for i, v in enumerate(dict.fromkeys(sum((o[1] for o in operands), [])))
    }
    if not set(out) <= set(letters):
        return None
    if len(operands) == 1 and operands[0][1] == list(out):
        core = operands[0][0]
    else:
        subs = ",".join("".join(letters[v] for v in o[1]) for o in operands)
        subs += "->" + "".join(letters[v] for v in out)
        core = Einsum(sp.Symbol(subs), *[o[0] for o in operands])
    return sp.Mul(*coeff) * core


def _np_broadcast(stmt, views, spans, order, cond):
    """Element-wise expression with every read aligned to the axis order ``order``."""
    sub = {acc: _align(view, letters, order) for acc, (view, letters) in views.items()}
    for var in stmt.rhs.free_symbols & set(spans):
        sub[var] = _align(Arange(*spans[var]), [var], order)
    return stmt.rhs.xreplace(sub)
