"""Loop interchange: one parallel region over every pair of a compiled-in table (a nest pass)."""

from __future__ import annotations

import dataclasses

from codegen.analysis import bounds, writes_disjoint
from derive.indexing import isym


def hoist_over_pairs(plan):
    """Put the first parallel loop with constant bounds outside the table's (out, in) pairs.

    A nest whose outermost loops are the expanded pairs (a filter gradient
    ``dw[k, c, u, v]`` loops over pairs first) would have its parallel loop inside
    every pair: one parallel region, with its thread wake-up and barrier, per pair.
    Moved outside them, one region runs every pair; its work is multiplied by the
    number of pairs. Applies when the nest starts with the expanded loops and a later
    loop writes disjoint outputs over a constant range.
    """
    expand = plan.expand
    if not expand or plan.loops[: len(expand)] != expand:
        return plan
    for var in plan.loops[len(expand) :]:
        if not writes_disjoint(plan.nest, var) or isym(var) not in plan.ranges:
            continue
        lo, hi = bounds(plan, var)
        if lo.is_Integer and hi.is_Integer:
            loops = (var,) + tuple(x for x in plan.loops if x != var)
            pairs = sum(len(cs) for cs in plan.table)
            return dataclasses.replace(plan, loops=loops, work=plan.work * pairs)
    return plan
