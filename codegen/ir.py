"""The loop IR the lowerings build and the passes transform, with one generic walk.

Nodes are frozen dataclasses: :class:`Loop`, :class:`Block` (a scope), :class:`If`
(a mask entry), :class:`Let` (a scalar local), :class:`Scratch` (a local array),
:class:`Update` (``lhs op rhs``) and :class:`Function` (a lowered kernel). A pass is
a function from a tuple of nodes to a tuple of nodes; :func:`walk` visits every node,
:func:`transform` rebuilds a tree top-down and :func:`map_exprs` rewrites the
expressions every node holds.

Examples
--------
>>> from derive.indexing import isym
>>> i, j = isym("i"), isym("j")
>>> nest = (Loop(i, 0, 3, (Loop(j, 0, 2, ()),)),)
>>> [str(node.var) for node in walk(nest)]
['i', 'j']
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.kernelspec import KernelSpec


@dataclass(frozen=True)
class Loop:
    """``for var in [lo, hi)``.

    ``parallel`` marks an OpenMP loop (its iterations write disjoint outputs), run
    in parallel when the nest's ``work`` (iteration count) reaches :data:`PARALLEL_WORK`.
    ``reduction`` names scalar accumulators of a vectorizable (``omp simd``) reduction.
    """

    var: sp.Symbol
    lo: sp.Expr
    hi: sp.Expr
    body: tuple
    parallel: bool = False
    work: sp.Expr = sp.Integer(0)
    reduction: tuple = ()


#: Below this many innermost iterations a parallel region costs more than it saves: the
#: iterations are simd-vectorized (~10 ns per 16), waking a sleeping (passive) OpenMP
#: thread costs tens of microseconds (C5's filter gradient at batch 1: 48,000 iterations).
PARALLEL_WORK = 1 << 18


@dataclass(frozen=True)
class Block:
    """A scope (``{ ... }`` in C) for accumulator locals."""

    body: tuple


@dataclass(frozen=True)
class If:
    """Execute ``body`` where ``cond`` (a mask entry) is non-zero."""

    cond: sp.Expr
    body: tuple


@dataclass(frozen=True)
class Let:
    """A scalar local ``var = value`` (integer bounds, a cse temporary, an accumulator)."""

    var: sp.Symbol
    value: sp.Expr
    integer: bool = True
    mutable: bool = False


@dataclass(frozen=True)
class Scratch:
    """A local float array ``var[size]`` (a row-padded block of partial results)."""

    var: sp.Symbol
    size: int


@dataclass(frozen=True)
class Update:
    """``lhs op rhs`` with op in ``=``, ``+=``, ``max=``, ``min=``."""

    lhs: sp.Expr
    op: str
    rhs: sp.Expr


@dataclass(frozen=True)
class Function:
    """A lowered kernel: the spec, the fixed sizes (if specialized) and the body."""

    name: str
    spec: KernelSpec
    fixed: tuple
    body: tuple


def loop_vars(node) -> list[str]:
    """Loop variables of the first chain of nested loops under ``node`` (outer first).

    >>> from derive.indexing import isym
    >>> loop_vars(Loop(isym("i"), 0, 3, (Loop(isym("j"), 0, 2, ()),)))
    ['i', 'j']
    """
    out = []
    while isinstance(node, Loop | If | Block):
        if isinstance(node, Loop):
            out.append(str(node.var))
        node = next((b for b in node.body if isinstance(b, Loop | If | Block)), None)
    return out


def walk(nodes):
    """Every node of a body, depth first."""
    for node in nodes:
        yield node
        if isinstance(node, Loop | If | Block):
            yield from walk(node.body)


def node_exprs(node) -> tuple:
    """The expressions one node's own code reads (not its children's)."""
    if isinstance(node, Loop):
        return (node.lo, node.hi, node.work) if node.parallel else (node.lo, node.hi)
    if isinstance(node, If):
        return (node.cond,)
    if isinstance(node, Let):
        return (node.value,)
    if isinstance(node, Update):
        return (node.lhs, node.rhs)
    return ()


def subs_nodes(nodes, sub):
    return map_exprs(nodes, lambda e: e.subs(sub))


def map_exprs(nodes, f):
    """The nodes with ``f`` applied to every expression they hold (scratch arrays kept)."""
    out = []
    for node in nodes:
        if isinstance(node, Loop):
            lo, hi, work = f(node.lo), f(node.hi), f(node.work)
            body = map_exprs(node.body, f)
            out.append(Loop(node.var, lo, hi, body, node.parallel, work, node.reduction))
        elif isinstance(node, If):
            out.append(If(f(node.cond), map_exprs(node.body, f)))
        elif isinstance(node, Block):
            out.append(Block(map_exprs(node.body, f)))
        elif isinstance(node, Let):
            out.append(Let(node.var, f(node.value), node.integer, node.mutable))
        elif isinstance(node, Update):
            out.append(Update(f(node.lhs), node.op, f(node.rhs)))
        else:
            out.append(node)
    return tuple(out)
