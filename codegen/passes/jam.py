"""Unroll-and-jam of the loops around an innermost specialized loop."""

from __future__ import annotations

import sympy as sp

from codegen.analysis import clip_range, constant_over, reducible
from codegen.ir import Update
from derive.indexing import isym

#: Independent accumulators an unroll-and-jam aims for: one simd FMA chain has a latency
#: of ~4 cycles, so a dot product with a single accumulator runs at a quarter of the
#: FMA throughput; 4 chains (sharing the loads that do not depend on the jammed loop) fill it.
JAM = 4


def jam(spec, nest, loops, body, ranges, env, expand):
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
    if not reducible(body, {isym(x) for x in loops[r:]}):
        return loops, body, {}
    var = loops[r - 1]
    rng = ranges.get(isym(var))
    if rng is None or rng.start != 0:
        return loops, body, {}
    bounds = clip_range(spec, nest, var, env) if var in nest.loops else (0, rng.stop)
    if tuple(constant_over(b, ranges) for b in bounds) != (0, rng.stop):
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


def sum_jam(spec, nest, loops, body, ranges, env, expand):
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
    if tuple(constant_over(b, ranges) for b in clip_range(spec, nest, var, env)) != (0, rng.stop):
        return loops, body, {}
    name = f"{var}{JAM}"
    steps = [{isym(var): JAM * isym(name) + t} for t in range(JAM)]
    body = tuple(Update(u.lhs, "+=", sp.Add(*[u.rhs.xreplace(s) for s in steps])) for u in body)
    return loops[:-2] + [name, inner], body, {name: len(rng) // JAM}
