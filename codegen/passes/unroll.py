"""Unrolling nest passes: single-trip loops become constants, constant kernel taps one sum."""

from __future__ import annotations

import dataclasses
import itertools

import sympy as sp

from codegen.analysis import bounds
from codegen.ir import Let, NestPlan, Update
from derive.indexing import isym


def single_trip(plan: NestPlan) -> NestPlan:
    """Remove the loops of one iteration: their index becomes a constant of the body.

    Applies to a loop (not an expanded one) with a constant range of one value that
    clipping leaves whole, e.g. a 1x1 output plane at fixed sizes.
    """

    def one(var):
        r = plan.ranges.get(isym(var))
        if r is None or len(r) != 1 or var in plan.expand:
            return False
        return bounds(plan, var) == (r.start, r.stop)

    point = {isym(x): plan.ranges[isym(x)][0] for x in plan.loops if one(x)}
    if not point:
        return plan
    body = tuple(Update(u.lhs.subs(point), u.op, u.rhs.subs(point)) for u in plan.body)
    loops = tuple(x for x in plan.loops if isym(x) not in point)
    return dataclasses.replace(plan, loops=loops, body=body, point={**plan.point, **point})


def unroll_taps(plan: NestPlan) -> NestPlan:
    """Unroll the constant kernel taps of a reduction that do not index the output.

    Each such tap loop is summed into one expression (a forward convolution: one sum
    of every product of a filter window per output element), with common
    subexpressions factored into locals. Taps that index the output stay loops with
    constant bounds: unrolling them into separate accumulators (one per filter entry)
    multiplies the code and its compile time for little gain. Applies to a nest of
    accumulations (``+=``) whose taps run constant ranges.
    """
    if not all(u.op == "+=" for u in plan.body):
        return plan
    taps = [t for t in plan.nest.taps if t in plan.loops and isym(t) in plan.ranges]
    lhs_vars = {x for u in plan.body for x in u.lhs.free_symbols}
    summed = tuple(t for t in taps if isym(t) not in lhs_vars)
    if not summed:
        return plan
    loops = tuple(x for x in plan.loops if x not in summed)
    return dataclasses.replace(plan, loops=loops, body=_unrolled(plan.body, summed, plan.ranges))


def _unrolled(stmts, unroll, ranges):
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
