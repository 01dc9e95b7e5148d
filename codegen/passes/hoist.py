"""Loop interchange over the pairs of a compiled-in connection table."""

from __future__ import annotations

from codegen.analysis import clip_range, constant_over, writes_disjoint
from derive.indexing import isym


def hoist_over_pairs(spec, nest, loops, expand, env, ranges):
    """Put the first parallel loop with constant bounds outside the table's (out, in) pairs.

    C3's filter gradient loops over pairs first (``dw[k, c, u, v]``): with the parallel
    loop inside them every pair was a parallel region of its own (60 thread wake-ups
    and barriers per call); hoisting ``u`` gives one region running every pair.
    """
    for var in loops[len(expand) :]:
        if not writes_disjoint(nest, var) or isym(var) not in ranges:
            continue
        lo, hi = (constant_over(b, ranges) for b in clip_range(spec, nest, var, env))
        if lo.is_Integer and hi.is_Integer:
            return [var] + [x for x in loops if x != var]
    return loops
