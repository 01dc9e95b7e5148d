"""C lowering: a :class:`~derive.kernelspec.KernelSpec` (plus concrete sizes) -> a scalar loop nest.

Each spec nest becomes a :class:`~codegen.ir.NestPlan` (its loops in spec order
around its statements), the nest passes of the target's :data:`SCHEDULE` rewrite
the plan, :func:`build` turns it into a tree (one :class:`~codegen.ir.Loop` per
remaining loop, an :class:`~codegen.ir.If` for the connection table, accumulators
and the compiled-in table's :class:`~codegen.ir.Pairs` where the plan says), and the
tree passes finish it. With
``fixed`` sizes (a specialization) the bounds are constants and the connection
table is compiled in (absent pairs produce no code).

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

import dataclasses
from typing import NamedTuple

import sympy as sp

from codegen.analysis import bounds, cond_ready, guard_computed_reads, shaped_arrays, size_env
from codegen.ir import Function, If, Loop, NestPlan, Pairs, Update
from codegen.passes.accumulate import accumulate, accumulated
from codegen.passes.fusion import fuse_contiguous
from codegen.passes.hoist import hoist_over_pairs
from codegen.passes.jam import jam_outputs, jam_reduction, jam_sum, jam_sum_outer
from codegen.passes.parallel import measure_work, parallelize, threads
from codegen.passes.rowpad import row_padded, sample_local
from codegen.passes.simd import simd_lengths
from codegen.passes.table import expand_pairs
from codegen.passes.unroll import single_trip, unroll_taps
from codegen.passes.zerofill import fold_zero_fill
from derive.indexing import isym
from derive.kernelspec import KernelSpec, Nest


class Schedule(NamedTuple):
    """The passes of one target, in order, by the IR they rewrite."""

    nest: tuple  # NestPlan -> NestPlan, per spec nest
    tree: tuple  # nodes -> nodes, over the function's body
    dialect: tuple  # (nodes, vector lanes) -> nodes, per printed dialect


#: Which passes run for which target: a generic kernel (every size a run-time argument)
#: or a specialization (fixed sizes, a compiled-in table).
SCHEDULE = {
    "generic": Schedule(
        nest=(measure_work, parallelize, accumulate),
        tree=(threads,),
        dialect=(simd_lengths,),
    ),
    "specialized": Schedule(
        nest=(
            single_trip,
            fuse_contiguous,
            unroll_taps,
            measure_work,
            hoist_over_pairs,
            jam_reduction,
            jam_outputs,
            jam_sum,
            jam_sum_outer,
            parallelize,
            accumulate,
        ),
        tree=(expand_pairs, row_padded, sample_local, fold_zero_fill, threads),
        dialect=(simd_lengths,),
    ),
}


def lower_c(
    spec: KernelSpec,
    fixed: dict | None = None,
    name: str | None = None,
    schedule: Schedule | None = None,
) -> Function:
    """Lower ``spec`` to a scalar C loop nest, through the nest and tree passes of ``schedule``.

    ``fixed`` maps size/param names to ints (and ``"table"`` to a tuple of rows of
    connected input maps, or None) for a specialization; the batch size stays a
    runtime argument. ``schedule`` defaults to the target's in :data:`SCHEDULE`.
    """
    fixed = dict(fixed or {})
    schedule = schedule or SCHEDULE["specialized" if fixed else "generic"]
    env = size_env(spec, fixed)
    body = ()
    for nest in spec.nests:
        plan = plan_nest(spec, nest, env, fixed)
        for nest_pass in schedule.nest:
            plan = nest_pass(plan)
        body += build(plan)
    for tree_pass in schedule.tree:
        body = tree_pass(body)
    frozen = tuple(sorted((k, v) for k, v in fixed.items()))
    return Function(name or spec.name, spec, frozen, body)


def for_dialect(fn: Function, lanes: int) -> Function:
    """``fn`` after its schedule's passes for one vector width (``lanes`` elements)."""
    body = fn.body
    for dialect_pass in SCHEDULE["specialized" if fn.fixed else "generic"].dialect:
        body = dialect_pass(body, lanes)
    return dataclasses.replace(fn, body=body)


def plan_nest(spec: KernelSpec, nest: Nest, env: dict, fixed: dict) -> NestPlan:
    """The unoptimized plan of one spec nest: its loops in spec order around its statements.

    Sizes in ``env`` are substituted and arrays carry their shapes (for flat offsets).
    A compiled-in table (``fixed["table"]`` rows) replaces the mask's loops by its
    connected pairs; a specialization for "all connected" (``fixed["table"]`` None)
    has no mask at all.
    """
    shaped = shaped_arrays(spec, env)
    body = tuple(
        Update(
            s.lhs.subs(env).xreplace(shaped),
            s.op,
            guard_computed_reads(spec, s.rhs).subs(env).xreplace(shaped),
        )
        for s in nest.body
    )
    table = fixed.get("table")
    expand = ()
    if nest.cond is not None and table is not None:
        expand = tuple(str(x) for x in nest.cond.indices)
    ranges = {}
    for var in nest.loops:
        lo, hi = (sp.sympify(b).subs(env) for b in spec.range_of(var))
        if lo.is_Integer and hi.is_Integer:
            ranges[isym(var)] = range(int(lo), int(hi))
    masked = nest.cond is not None and not expand and "table" not in fixed
    cond = nest.cond.xreplace(shaped) if masked else None
    return NestPlan(
        spec, nest, env, table, tuple(nest.loops), body, ranges, cond=cond, expand=expand
    )


def build(plan: NestPlan) -> tuple:
    """The loop tree of a plan, outer loop first.

    Each loop gets its (clipped) bounds; the mask's :class:`~codegen.ir.If` goes just
    inside the loop that completes its indices; the expanded loops become a
    :class:`~codegen.ir.Pairs` around the loops inside them;
    from ``plan.accumulate`` inwards the loops sum in accumulators
    (:func:`~codegen.passes.accumulate.accumulated`); ``plan.parallel`` is marked.
    """
    return _build(plan, list(plan.loops), [])


def _build(plan: NestPlan, loops: list, done: list) -> tuple:
    if not loops:
        return plan.body
    var = loops[0]
    if var in plan.expand:
        rest = [x for x in loops if x not in plan.expand]
        out_var, in_var = plan.nest.cond.indices
        return (Pairs(out_var, in_var, plan.table, _build(plan, rest, done)),)
    if var == plan.accumulate:
        return accumulated(_plain(plan, loops))
    lo, hi = bounds(plan, var)
    inner = _build(plan, loops[1:], done + [var])
    cond = plan.cond
    if cond is not None and cond_ready(cond, done + [var]) and not cond_ready(cond, done):
        inner = (If(cond, inner),)
    return (Loop(isym(var), lo, hi, inner, parallel=var == plan.parallel, work=plan.work),)


def _plain(plan: NestPlan, loops: list) -> tuple:
    """The loops as they are around the plan's body."""
    body = plan.body
    for var in reversed(loops):
        body = (Loop(isym(var), *bounds(plan, var), body),)
    return body
