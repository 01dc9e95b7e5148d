"""Parallelization: which loop of a nest runs on OpenMP threads, and under which conditions.

Two nest passes, :func:`measure_work` and :func:`parallelize`, choose the loop; the
tree pass :func:`threads` turns each parallel loop into a :class:`~codegen.ir.Threads`
annotation that the printer renders.
"""

from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.analysis import trips, writes_disjoint
from codegen.ir import Loop, NestPlan, Threads, transform, walk

#: Innermost iterations below which a parallel region costs more than it saves: the
#: iterations are simd-vectorized and cheap, while waking a sleeping (passive) OpenMP
#: thread costs far more than one vector iteration.
PARALLEL_WORK = 1 << 18
#: Iterations per sample below which a parallel loop whose work depends on the batch
#: also gets a serial copy (see :func:`threads`).
SERIAL_COPY_WORK = 1 << 14
#: Iterations per OpenMP chunk of a parallel loop that is itself the vectorized one (an
#: elementwise loop).  The compiler splits each thread's share into SIMD vectors plus a
#: scalar remainder, and glibc's vector tanh and its scalar tanh may differ in the last
#: bits: with shares that depend on the thread count, so would the result.  Fixed chunks
#: (a multiple of every vector width) put every element in the same place of the same
#: chunk on any number of threads.
ELEMENTWISE_CHUNK = 1024


def measure_work(plan: NestPlan) -> NestPlan:
    """Record the work of the nest's parallel region: innermost iterations of one run.

    The product of the trip counts of the loops from the first one the table does not
    expand inwards (expanded pairs outside it are separate regions). Run after the
    passes that remove loops (single trips, unrolled taps: their iterations are part of
    the body) and before jamming, which regroups iterations without changing the work.
    """
    loops = plan.loops
    inside = loops[next((n for n, x in enumerate(loops) if x not in plan.expand), len(loops)) :]
    work = sp.Mul(*[plan.made.get(x) or trips(plan.spec, x) for x in inside]).subs(plan.env)
    return dataclasses.replace(plan, work=work)


def parallelize(plan: NestPlan) -> NestPlan:
    """Mark the nest's first loop outside the expanded table as its parallel loop.

    Applies when every statement writes at that loop's bare index (the iterations write
    disjoint outputs) and the work is not a constant below :data:`PARALLEL_WORK`.
    """
    var = next((x for x in plan.loops if x not in plan.expand), None)
    if var is None or not writes_disjoint(plan.nest, var) or plan.work == 0:
        return plan
    if plan.work.is_Integer and plan.work < PARALLEL_WORK:
        return plan
    return dataclasses.replace(plan, parallel=var)


def threads(nodes) -> tuple:
    """Annotate every parallel loop with how it runs on threads.

    * guard: none when the work is a constant (lowering keeps a loop parallel only
      when that constant reaches :data:`PARALLEL_WORK`); else ``work >= PARALLEL_WORK``,
      preceded by ``trips > 1`` when the trip count is not constant (a single
      iteration gains nothing from threads);
    * chunk: :data:`ELEMENTWISE_CHUNK` when no loop is nested inside (the parallel
      loop is the vectorized one), else the default schedule;
    * serial copy: for a guarded loop whose work depends on more than one size, or
      is below :data:`SERIAL_COPY_WORK` per unit of its one size. A false ``if()``
      clause still makes OpenMP build a one-thread team, a fixed cost comparable to
      a small loop's whole run; a long unrolled loop keeps the clause, since a copy
      would double its text for a negligible saving.
    """

    def annotate(node):
        if not isinstance(node, Loop) or not node.parallel:
            return node
        guard = ()
        if not node.work.is_Integer:
            guard = ((node.work, ">=", PARALLEL_WORK),)
            if not (node.hi - node.lo).is_Integer:
                guard = ((node.hi - node.lo, ">", 1),) + guard
        innermost = not any(isinstance(x, Loop) for x in walk(node.body))
        free = node.work.free_symbols
        small = len(free) > 1 or node.work.subs({s: 1 for s in free}) < SERIAL_COPY_WORK
        annotation = Threads(guard, ELEMENTWISE_CHUNK if innermost else 0, bool(guard) and small)
        return dataclasses.replace(node, threads=annotation)

    return transform(nodes, after=annotate)
