"""Loop fusion: inner loops that walk every access as one flat run become one loop."""

from __future__ import annotations

import itertools

import sympy as sp

from codegen.analysis import clip_range, constant_over, contiguous, flat_offset
from codegen.ir import Update
from derive.indexing import isym


def fuse_contiguous(spec, nest, loops, stmts, ranges, env):
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
        bounds = tuple(constant_over(b, ranges) for b in clip_range(spec, nest, x, env))
        return r is not None and r.start == 0 and bounds == (0, r.stop)

    candidates = [x for x in loops[1:] if whole(x)]
    if not all(u.op == "+=" for u in stmts):
        return loops, stmts, {}
    offsets = [flat_offset(a) for u in stmts for a in sp.Tuple(u.lhs, u.rhs).atoms(sp.Indexed)]
    best = None
    for r in range(len(candidates), 1, -1):
        for group in itertools.combinations(candidates, r):
            sizes = [len(ranges[isym(x)]) for x in group]
            total = int(sp.Mul(*sizes))
            if (best is None or total > best[1]) and contiguous(group, sizes, offsets):
                best = (group, total)
    if best is None:
        return loops, stmts, {}
    group, total = best
    name = "".join(group)
    sub = {isym(x): sp.Integer(0) for x in group[:-1]} | {isym(group[-1]): isym(name)}
    stmts = tuple(Update(u.lhs.xreplace(sub), u.op, u.rhs.xreplace(sub)) for u in stmts)
    ranges[isym(name)] = range(total)
    return [x for x in loops if x not in group] + [name], stmts, {name: total}
