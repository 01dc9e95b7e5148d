"""Unroll-and-jam of the loops around the innermost loop of a specialized nest (nest passes).

:func:`jam_reduction` applies when the innermost loop does not index the output,
:func:`jam_sum` when it does, so at most one of them changes a nest, and neither
changes the innermost loop: their order in the schedule does not matter.
:func:`jam_outputs` continues outwards after :func:`jam_reduction`, :func:`jam_sum_outer`
after :func:`jam_sum`.
"""

from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.analysis import reducible, whole
from codegen.ir import NestPlan, Update
from codegen.passes.table import MAX_ACCUMULATORS
from derive.indexing import isym

#: Independent accumulators an unroll-and-jam aims for: a dot product with a single
#: accumulator is one chain of dependent simd FMAs, bound by the FMA latency; a few
#: chains (sharing the loads that do not depend on the jammed loop) keep the FMA units
#: busy.
JAM = 4


def jam_reduction(plan: NestPlan) -> NestPlan:
    """Jam the loop just outside an innermost reduction into independent accumulators.

    ``y[n, o] += sum_i w[o, i] * x[n, i]`` with ``o`` jammed by 4 becomes four updates
    per iteration of ``i`` (``x[n, i]`` read once for all four), which the accumulate
    pass turns into four independent accumulators of one simd loop. The jammed loop
    steps over blocks ``o4`` of :data:`JAM` values (or is unrolled whole when it has
    at most 8 iterations); it must not be the first (parallel) loop nor an expanded one,
    and must run a whole constant range from 0.
    """
    r = _around_reduction(plan)
    if r is None:
        return plan
    loops, body, var = list(plan.loops), plan.body, plan.loops[r - 1]
    trips = len(plan.ranges[isym(var)])
    block = trips if trips <= 8 else JAM if trips % JAM == 0 else None
    if block is None or block < 2:
        return plan
    if block == trips:
        return _jammed_whole(plan, r)
    name = f"{var}{block}"
    copies = _copies(body, var, isym(name) * block, block)
    return dataclasses.replace(
        plan,
        loops=tuple(loops[: r - 1] + [name] + loops[r:]),
        body=copies,
        made={**plan.made, name: trips // block},
    )


def jam_outputs(plan: NestPlan) -> NestPlan:
    """Jam whole, outwards, the loops indexing the output around an innermost reduction.

    After :func:`jam_reduction`, ``dw[k, u, v] += sum_{n, i, j} dy[n, k, i, j] x[n, i + u,
    j + v]`` holds one update per ``v`` inside the loop ``u``; each ``u`` then reads the
    whole of ``dy[n, k]`` again (and row-pads it again). Jamming ``u`` as well gives one
    reduction with an accumulator per ``(u, v)`` that reads ``dy[n, k]`` once. Repeats
    outwards while the loop just outside the reduction loops indexes the output, is one
    of the spec's (not the first, an expanded one nor one the run-time mask indexes), runs
    a whole constant range from 0, does not index some read every update multiplies by
    (the read the copies share), and the updates, times its trips, stay within
    :data:`MAX_ACCUMULATORS`.
    """
    while True:
        r = _around_reduction(plan)
        if r is None:
            return plan
        var = plan.loops[r - 1]
        trips = len(plan.ranges[isym(var)])
        if var not in plan.nest.loops or len(plan.body) * trips > MAX_ACCUMULATORS:
            return plan
        if _masks(plan, var) or not _shared_read(plan.body, isym(var)):
            return plan
        plan = _jammed_whole(plan, r)


def _around_reduction(plan: NestPlan) -> int | None:
    """Position ``r`` such that ``loops[r:]`` only reduce and ``loops[r - 1]`` can be jammed.

    None unless the body is plain updates that the inner loops reduce, and the loop
    ``loops[r - 1]`` is neither the first loop nor an expanded one and runs whole.
    """
    loops, body = plan.loops, plan.body
    if not all(isinstance(u, Update) for u in body):  # cse temporaries: keep it simple
        return None
    lhs_vars = {x for u in body for x in u.lhs.free_symbols}
    r = len(loops)
    while r > 0 and isym(loops[r - 1]) not in lhs_vars:
        r -= 1
    if r < 2 or r == len(loops) or loops[r - 1] in plan.expand:
        return None
    if not reducible(body, {isym(x) for x in loops[r:]}) or not whole(plan, loops[r - 1]):
        return None
    return r


def _masks(plan: NestPlan, var: str) -> bool:
    """Loop ``var`` indexes the run-time mask guarding the body (it must stay a loop)."""
    return plan.cond is not None and isym(var) in plan.cond.free_symbols


def _shared_read(body, var) -> bool:
    """Some read that every update multiplies by and ``var`` does not index."""
    factors = [{a for a in sp.Mul.make_args(u.rhs) if isinstance(a, sp.Indexed)} for u in body]
    return any(var not in a.free_symbols for a in set.intersection(*factors))


def _copies(body, var, start, count) -> tuple:
    """The updates of ``body`` once per value ``start + t`` (t < count) of ``var``."""
    return tuple(
        Update(u.lhs.xreplace(sub), u.op, u.rhs.xreplace(sub))
        for t in range(count)
        for sub in [{isym(var): start + t}]
        for u in body
    )


def _jammed_whole(plan: NestPlan, r: int) -> NestPlan:
    """``loops[r - 1]`` unrolled whole into the body: its copies are the constants 0..trips-1."""
    var = plan.loops[r - 1]
    body = _copies(plan.body, var, sp.Integer(0), len(plan.ranges[isym(var)]))
    return dataclasses.replace(plan, loops=plan.loops[: r - 1] + plan.loops[r:], body=body)


def jam_sum(plan: NestPlan) -> NestPlan:
    """Unroll by :data:`JAM` the loop around an innermost loop along the output, into one sum.

    ``dx[n, i] += dy[n, o] w[o, i]`` with ``o`` around the simd loop over ``i``: every
    ``o`` reads and writes the whole row ``dx[n, :]``. Stepping ``o`` by 4 with the 4
    products summed in one update reads and writes it once per 4. The loop must be one
    of the spec's, not index the output, not be the first (parallel) loop, and run a
    whole constant range from 0 of a multiple of JAM trips (more than JAM).
    """
    loops, body = list(plan.loops), plan.body
    if len(loops) < 3 or not all(isinstance(u, Update) and u.op == "+=" for u in body):
        return plan
    var, inner = loops[-2], loops[-1]
    lhs_vars = {x for u in body for x in u.lhs.free_symbols}
    if isym(var) in lhs_vars or isym(inner) not in lhs_vars or var not in plan.nest.loops:
        return plan
    if var in plan.expand or not whole(plan, var):
        return plan
    trips = len(plan.ranges[isym(var)])
    if trips % JAM or trips == JAM:
        return plan
    name = f"{var}{JAM}"
    steps = [{isym(var): JAM * isym(name) + t} for t in range(JAM)]
    body = tuple(Update(u.lhs, "+=", sp.Add(*[u.rhs.xreplace(s) for s in steps])) for u in body)
    return dataclasses.replace(
        plan,
        loops=tuple(loops[:-2] + [name, inner]),
        body=body,
        made={**plan.made, name: trips // JAM},
    )


def jam_sum_outer(plan: NestPlan) -> NestPlan:
    """Unroll whole, into one sum per update, a short loop around a multi-loop scatter.

    ``dx[n, i + u, j + v] += dy[n, k, i, j] w[k, u, v]`` over loops ``n, k, u, v, i, j``:
    every ``k`` adds into the whole of ``dx[n]`` again. With ``k`` unrolled into
    ``sum_k dy[n, k, i, j] w[k, u, v]`` each element is read and written once per
    ``(u, v)``, and the reads of ``dy`` become planes of the one loop ``n``, which row
    padding's scatter form then pads together. Applies to a nest of ``+=`` updates and
    to the outermost loop (not the first, an expanded one nor one the run-time mask
    indexes) that does not index the output but has at least two loops inside it, all of
    which do (one such loop is :func:`jam_sum`'s case), and runs a whole constant range
    from 0 of at most ``2 * JAM`` trips (a sum of as many products per element).
    """
    loops, body = plan.loops, plan.body
    if not all(isinstance(u, Update) and u.op == "+=" for u in body):
        return plan
    lhs_vars = {x for u in body for x in u.lhs.free_symbols}
    for r in range(1, len(loops) - 2):
        var, inside = loops[r], loops[r + 1 :]
        if isym(var) in lhs_vars or not all(isym(x) in lhs_vars for x in inside):
            continue
        if var not in plan.nest.loops or var in plan.expand or _masks(plan, var):
            return plan
        if not whole(plan, var):
            return plan
        trips = len(plan.ranges[isym(var)])
        if trips > 2 * JAM:
            return plan
        copies = [u.rhs.xreplace({isym(var): sp.Integer(t)}) for u in body for t in range(trips)]
        summed = tuple(
            Update(u.lhs, "+=", sp.Add(*copies[m * trips : (m + 1) * trips]))
            for m, u in enumerate(body)
        )
        return dataclasses.replace(plan, loops=loops[:r] + inside, body=summed)
    return plan
