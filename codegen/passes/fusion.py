"""Loop fusion: inner loops that walk every access as one flat run become one loop."""

from __future__ import annotations

import dataclasses
import itertools

import sympy as sp

from codegen.analysis import contiguous, flat_offset, whole
from codegen.ir import NestPlan, Update
from derive.indexing import isym


def fuse_contiguous(plan: NestPlan) -> NestPlan:
    """Merge the inner loops that read and write memory contiguously into one flat loop.

    ``sum_{c,u,v} w[k,c,u,v] * x[n,c,u,v]`` is one dot product over ``C*KH*KW``
    contiguous elements, where a loop ``c`` around unrolled taps would read both arrays
    with stride ``KH*KW``. The largest group of (at least two) loops after the first whose
    accesses are all one contiguous run (:func:`~codegen.analysis.contiguous`) becomes a
    single innermost loop named by the group's letters, over the group's points
    (row-major); the other loops keep their order outside it.

    Applies to a nest of accumulations (``+=``, where the loop order is free) with no
    mask and no expanded table, over loops that run whole constant ranges from 0.
    """
    if plan.expand or plan.cond is not None or not all(u.op == "+=" for u in plan.body):
        return plan
    candidates = [x for x in plan.loops[1:] if whole(plan, x)]
    offsets = [flat_offset(a) for u in plan.body for a in sp.Tuple(u.lhs, u.rhs).atoms(sp.Indexed)]
    best = None
    for r in range(len(candidates), 1, -1):
        for group in itertools.combinations(candidates, r):
            sizes = [len(plan.ranges[isym(x)]) for x in group]
            total = int(sp.Mul(*sizes))
            if (best is None or total > best[1]) and contiguous(group, sizes, offsets):
                best = (group, total)
    if best is None:
        return plan
    group, total = best
    name = "".join(group)
    sub = {isym(x): sp.Integer(0) for x in group[:-1]} | {isym(group[-1]): isym(name)}
    return dataclasses.replace(
        plan,
        loops=tuple(x for x in plan.loops if x not in group) + (name,),
        body=tuple(Update(u.lhs.xreplace(sub), u.op, u.rhs.xreplace(sub)) for u in plan.body),
        ranges={**plan.ranges, isym(name): range(total)},
        made={**plan.made, name: total},
    )
