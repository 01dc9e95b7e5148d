"""Scalar accumulators for reductions, stored once at the end."""

from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.analysis import cond_ready, reducible
from codegen.ir import Block, Let, Loop, NestPlan, Update
from derive.indexing import isym


def accumulate(plan: NestPlan) -> NestPlan:
    """Choose the outermost loop from which the nest only sums into fixed elements.

    That is the first loop, after at least one other and inside the mask's guard, such
    that it and the loops inside it only accumulate (``+=``) into elements none of them
    indexes (expanded table loops do not count). :func:`accumulated` builds that part
    of the tree.
    """
    loops, done = list(plan.loops), []
    while loops:
        var = loops[0]
        if var in plan.expand:
            loops = [x for x in loops if x not in plan.expand]
            continue
        settled = plan.cond is None or cond_ready(plan.cond, done)
        if done and settled and reducible(plan.body, {isym(x) for x in loops}):
            return dataclasses.replace(plan, accumulate=var)
        done.append(var)
        loops.pop(0)
    return plan


def accumulated(nodes: tuple) -> tuple:
    """A chain of loops around updates, summed in scalar accumulators stored once at the end.

    Each update ``lhs += rhs`` of the innermost body becomes ``acc += rhs`` there and
    ``lhs += acc`` after the chain; the innermost loop carries the accumulators as an
    ``omp simd`` reduction the compiler vectorizes (strict IEEE order would forbid it).
    Each output element is written once.
    """
    chain = list(nodes)
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], Loop):
        chain.append(chain[-1].body[0])
    accs, inner, after = [], [], []
    for node in chain[-1].body:
        if isinstance(node, Update):
            acc = sp.Symbol(f"acc{len(accs)}", real=True)
            accs.append(acc)
            inner.append(Update(acc, "+=", node.rhs))
            after.append(Update(node.lhs, "+=", acc))
        else:
            inner.append(node)
    nest = dataclasses.replace(chain[-1], body=tuple(inner), reduction=tuple(accs))
    for loop in reversed(chain[:-1]):
        nest = dataclasses.replace(loop, body=(nest,))
    lets = tuple(Let(a, sp.Integer(0), integer=False, mutable=True) for a in accs)
    return (Block((*lets, nest, *after)),)
