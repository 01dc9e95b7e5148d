"""Unrolling: single-trip loops become constants, constant kernel taps one sum."""

from __future__ import annotations

import itertools

import sympy as sp

from codegen.analysis import clip_range, constant_over
from codegen.ir import Let, Update
from derive.indexing import isym


def single_trip(spec, nest, var, env, ranges, expand) -> bool:
    """A loop of one iteration at fixed sizes (C5's 1x1 output): its index is a constant."""
    r = ranges.get(isym(var))
    if r is None or len(r) != 1 or var in expand:
        return False
    lo, hi = clip_range(spec, nest, var, env)
    return (constant_over(lo, ranges), constant_over(hi, ranges)) == (r.start, r.stop)


def unroll_taps(nest, stmts, loops, ranges):
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
