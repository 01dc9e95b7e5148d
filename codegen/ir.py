"""The loop IR the lowerings build and the passes transform, with one generic walk.

Nodes are frozen dataclasses: :class:`Loop`, :class:`Block` (a scope), :class:`If`
(a mask entry), :class:`Pairs` (the pairs of a compiled-in table), :class:`Let` (a
scalar local), :class:`Scratch` (a local array), :class:`Update` (``lhs op rhs``) and
:class:`Function` (a lowered kernel). A tree pass is a function from a tuple of nodes
to a tuple of nodes; :func:`walk` visits every node, :func:`transform` rebuilds a tree
top-down and :func:`map_exprs` rewrites the expressions every node holds. Before the
tree, a spec nest is a :class:`NestPlan` that the nest passes rewrite.

Examples
--------
>>> from derive.indexing import isym
>>> i, j = isym("i"), isym("j")
>>> nest = (Loop(i, 0, 3, (Loop(j, 0, 2, ()),)),)
>>> [str(node.var) for node in walk(nest)]
['i', 'j']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from derive.kernelspec import KernelSpec, Nest


@dataclass(frozen=True)
class Threads:
    """How a parallel loop runs on OpenMP threads (placed by :mod:`codegen.passes.parallel`).

    ``guard`` holds conditions ``(expr, op, bound)``, all of which must hold for the
    threads to start (none: always); ``chunk`` is the static schedule's chunk (0: the
    default schedule); with ``serial_copy`` the loop is also emitted without threads,
    taken when the guard fails.
    """

    guard: tuple = ()
    chunk: int = 0
    serial_copy: bool = False


@dataclass(frozen=True)
class Loop:
    """``for var in [lo, hi)``.

    ``parallel`` marks a loop whose iterations write disjoint outputs, chosen to run on
    threads; ``work`` counts the innermost iterations one run of it performs.
    ``reduction`` names scalar accumulators of a vectorizable (``omp simd``) reduction.
    The annotations the printer renders: ``threads`` (:class:`Threads`) and ``simdlen``
    (the vector length of a reduction, 0: the compiler's choice).
    """

    var: sp.Symbol
    lo: sp.Expr
    hi: sp.Expr
    body: tuple
    parallel: bool = False
    work: sp.Expr = sp.Integer(0)
    reduction: tuple = ()
    threads: Threads | None = None
    simdlen: int = 0


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
class Pairs:
    """``body`` once per connected pair of a compiled-in table.

    ``out_var, in_var`` take the values ``k, c`` for every ``c`` in ``rows[k]``. Lowering
    places it; :func:`codegen.passes.table.expand_pairs` replaces it by the copies.
    """

    out_var: sp.Symbol
    in_var: sp.Symbol
    rows: tuple
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


#: The nodes with a body of nodes.
CONTAINERS = (Loop, If, Block, Pairs)


@dataclass(frozen=True)
class Function:
    """A lowered kernel: the spec, the fixed sizes (if specialized) and the body."""

    name: str
    spec: KernelSpec
    fixed: tuple
    body: tuple


@dataclass(frozen=True)
class NestPlan:
    """One spec nest on its way to a tree: named loops (outer first) around one body.

    The nest passes (:data:`codegen.lower_c.SCHEDULE`) rewrite a plan;
    :func:`codegen.lower_c.build` turns it into nodes. ``spec`` and ``nest`` are the
    kernel spec and its :class:`~derive.kernelspec.Nest` (clipping, taps); ``env`` maps
    fixed sizes to values; ``table`` holds the rows of a compiled-in connection table.

    Attributes the passes rewrite: ``loops`` (names, outer first), ``body`` (updates and
    lets), ``ranges`` (constant ranges by loop symbol), ``made`` (trip count, from 0, of
    each loop a pass made), ``point`` (values of the loops removed as single trips),
    ``cond`` (the mask entry guarding the body, or None), ``expand`` (the loops the
    table's connected pairs replace), ``work`` (innermost iterations of one parallel
    region), ``parallel`` (the loop run on threads, or None) and ``accumulate`` (the
    outermost loop summed in scalar accumulators, or None).
    """

    spec: KernelSpec
    nest: Nest
    env: dict
    table: tuple | None
    loops: tuple
    body: tuple
    ranges: dict
    made: dict = dataclasses.field(default_factory=dict)
    point: dict = dataclasses.field(default_factory=dict)
    cond: sp.Expr | None = None
    expand: tuple = ()
    work: sp.Expr = sp.Integer(0)
    parallel: str | None = None
    accumulate: str | None = None


def loop_vars(node) -> list[str]:
    """Loop variables of the first chain of nested loops under ``node`` (outer first).

    >>> from derive.indexing import isym
    >>> loop_vars(Loop(isym("i"), 0, 3, (Loop(isym("j"), 0, 2, ()),)))
    ['i', 'j']
    """
    out = []
    while isinstance(node, CONTAINERS):
        if isinstance(node, Loop):
            out.append(str(node.var))
        node = next((b for b in node.body if isinstance(b, CONTAINERS)), None)
    return out


def walk(nodes):
    """Every node of a body, depth first."""
    for node in nodes:
        yield node
        if isinstance(node, CONTAINERS):
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


def map_exprs(nodes, f) -> tuple:
    """The nodes with ``f`` applied to every expression they hold (scratch arrays kept)."""

    def own(node):
        if isinstance(node, Loop):
            return dataclasses.replace(node, lo=f(node.lo), hi=f(node.hi), work=f(node.work))
        if isinstance(node, If):
            return dataclasses.replace(node, cond=f(node.cond))
        if isinstance(node, Let):
            return dataclasses.replace(node, value=f(node.value))
        if isinstance(node, Update):
            return dataclasses.replace(node, lhs=f(node.lhs), rhs=f(node.rhs))
        return node

    return transform(nodes, after=own)


def transform(nodes, before=None, after=None) -> tuple:
    """``nodes`` rebuilt top-down: the one generic tree rewrite of the passes.

    ``before(node)`` may return a replacement (a node or a tuple of nodes), which is
    kept as it is; otherwise the node's body is transformed and ``after`` (if given)
    maps the rebuilt node to its replacement (a node or a tuple of nodes).

    >>> from derive.indexing import isym
    >>> i, j = isym("i"), isym("j")
    >>> nest = (Loop(i, 0, 3, (Loop(j, 0, 2, ()),)),)
    >>> flat = transform(nest, before=lambda n: Block(()) if n.var == j else None)
    >>> flat[0].body
    (Block(body=()),)
    """
    out = []
    for node in nodes:
        new = before(node) if before is not None else None
        if new is None:
            if isinstance(node, CONTAINERS):
                node = dataclasses.replace(node, body=transform(node.body, before, after))
            new = after(node) if after is not None else node
        out += new if isinstance(new, tuple) else (new,)
    return tuple(out)
