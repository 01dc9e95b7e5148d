"""Scalar accumulators for reductions, stored once at the end."""

from __future__ import annotations

import sympy as sp

from codegen.ir import Block, Let, Update


def accumulate(loops, body, plain):
    """Sum the remaining loops in scalar accumulators, stored once at the end.

    The innermost loop becomes an ``omp simd`` reduction the compiler vectorizes
    (strict IEEE order would forbid it); each output element is written once.
    """
    accs, inner, after = [], [], []
    for node in body:
        if isinstance(node, Update):
            acc = sp.Symbol(f"acc{len(accs)}", real=True)
            accs.append(acc)
            inner.append(Update(acc, "+=", node.rhs))
            after.append(Update(node.lhs, "+=", acc))
        else:
            inner.append(node)
    lets = tuple(Let(a, sp.Integer(0), integer=False, mutable=True) for a in accs)
    return (Block(lets + plain(loops, tuple(inner), tuple(accs)) + tuple(after)),)
