"""Parallelization: which loops run on OpenMP threads, and under which conditions.

A nest's parallel loop (see :func:`codegen.lower_c.lower_c`) runs on threads only
when its ``work`` pays for waking them; :func:`threads` turns each parallel loop of
a tree into a :class:`~codegen.ir.Threads` annotation the printer renders.
"""

from __future__ import annotations

import dataclasses

from codegen.ir import Loop, Threads, transform, walk

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
