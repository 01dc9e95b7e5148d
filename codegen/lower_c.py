"""C lowering: a :class:`~derive.kernelspec.KernelSpec` (plus concrete sizes) -> a scalar loop nest.

One :class:`~codegen.ir.Loop` per spec loop, an :class:`~codegen.ir.If` for the
connection table, :class:`~codegen.ir.Update` statements on ``Indexed`` elements.
With ``fixed`` sizes (a specialization) the bounds are constants, the connection
table is compiled in (absent pairs produce no code) and the passes of
:mod:`codegen.passes` reshape the nest.

Examples
--------
>>> from derive.kernels import load_table
>>> from codegen.ir import loop_vars
>>> fn = lower_c(load_table()["conv2d_forward"])
>>> [type(node).__name__ for node in fn.body]
['Loop', 'Loop']
>>> loop_vars(fn.body[1])
['n', 'k', 'c', 'u', 'v', 'i', 'j']
"""

from __future__ import annotations

import sympy as sp

from codegen.analysis import (
    clip_range,
    cond_ready,
    constant_over,
    expanded_loops,
    reducible,
    shaped_arrays,
    size_env,
    trips,
    writes_disjoint,
)
from codegen.ir import Function, If, Loop, Update
from codegen.passes.accumulate import accumulate
from codegen.passes.fusion import fuse_contiguous
from codegen.passes.hoist import hoist_over_pairs
from codegen.passes.jam import jam, sum_jam
from codegen.passes.parallel import PARALLEL_WORK, threads
from codegen.passes.rowpad import row_padded
from codegen.passes.table import expand_pairs
from codegen.passes.unroll import single_trip, unroll_taps
from derive.indexing import isym
from derive.kernelspec import KernelSpec


def lower_c(spec: KernelSpec, fixed: dict | None = None, name: str | None = None) -> Function:
    """Lower ``spec`` to a scalar C loop nest.

    ``fixed`` maps size/param names to ints (and ``"table"`` to a tuple of rows of
    connected input maps, or None) for a specialization; the batch size stays a
    runtime argument.
    """
    fixed = dict(fixed or {})
    env = size_env(spec, fixed)
    body = tuple(node for nest in spec.nests for node in _c_nest(spec, nest, env, fixed))
    if fixed:
        body = row_padded(body)
    body = threads(body)
    frozen = tuple(sorted((k, v) for k, v in fixed.items()))
    return Function(name or spec.name, spec, frozen, body)


def _c_nest(spec, nest, env, fixed):
    shaped = shaped_arrays(spec, env)
    stmts = tuple(
        Update(s.lhs.subs(env).xreplace(shaped), s.op, s.rhs.subs(env).xreplace(shaped))
        for s in nest.body
    )
    expand = expanded_loops(nest, fixed)
    ranges = {}
    for var in nest.loops:
        lo, hi = (sp.sympify(b).subs(env) for b in spec.range_of(var))
        if lo.is_Integer and hi.is_Integer:
            ranges[isym(var)] = range(int(lo), int(hi))
    loops = [
        x for x in nest.loops if not (fixed and single_trip(spec, nest, x, env, ranges, expand))
    ]
    point = {isym(x): ranges[isym(x)][0] for x in nest.loops if x not in loops}
    stmts = tuple(Update(u.lhs.subs(point), u.op, u.rhs.subs(point)) for u in stmts)
    # A specialization for "all connected" (fixed table None) has no condition at all.
    all_connected = "table" in fixed and fixed["table"] is None
    cond = None if expand or all_connected or nest.cond is None else nest.cond.xreplace(shaped)
    made = {}  # loops made by fusing / jamming: name -> trip count
    if fixed and not expand and cond is None:
        loops, stmts, made = fuse_contiguous(spec, nest, loops, stmts, ranges, env)
    body, unrolled = unroll_taps(nest, stmts, loops, ranges) if fixed else (stmts, ())
    loops = [x for x in loops if x not in unrolled]
    # Iterations of one parallel region: from the first loop that is not expanded by the
    # table (the parallel candidate) inwards; pairs expanded outside it are separate regions.
    inside = loops[next((n for n, x in enumerate(loops) if x not in expand), len(loops)) :]
    work = sp.Mul(*[made.get(x) or trips(spec, x) for x in inside]).subs(env)
    if expand and loops[: len(expand)] == list(expand):
        loops = hoist_over_pairs(spec, nest, loops, expand, env, ranges)
        if loops[0] not in expand:  # one parallel region now runs every connected pair
            work *= sum(len(cs) for cs in fixed["table"])
    if fixed:
        before = loops
        loops, body, jammed = jam(spec, nest, loops, body, ranges, env, expand)
        if loops == before:
            loops, body, jammed = sum_jam(spec, nest, loops, body, ranges, env, expand)
        made.update(jammed)

    def bounds(var):
        if var in made:
            return sp.Integer(0), sp.Integer(made[var])
        lo, hi = clip_range(spec, nest, var, env)
        return tuple(constant_over(b.subs(point), ranges) for b in (lo, hi))

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
            return expand_pairs(spec, nest, fixed, lambda: build(rest, done))
        settled = cond is None or cond_ready(cond, done)
        if done and settled and reducible(body, {isym(x) for x in loops}):
            return accumulate(loops, body, plain)
        lo, hi = bounds(var)
        inner = build(loops[1:], done + [var])
        wrap = cond is not None and cond_ready(cond, done + [var]) and not cond_ready(cond, done)
        if wrap:
            inner = (If(cond, inner),)
        parallel = not done and writes_disjoint(nest, var) and work != 0
        if parallel and work.is_Integer and work < PARALLEL_WORK:
            parallel = False
        return (Loop(isym(var), lo, hi, inner, parallel=parallel, work=work),)

    return build(loops, [])
