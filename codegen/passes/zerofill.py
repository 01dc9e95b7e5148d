"""Zero fills folded into the first step of the sum that follows them (a tree pass)."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import sympy as sp

from codegen.analysis import flat_offset
from codegen.ir import Block, Let, Loop, Update, node_exprs, transform, walk

#: The most elements (fill and sum alike) the coverage check enumerates.
MAX_ENUMERATED = 1 << 20


class _Write(NamedTuple):
    """An update of the filled array and the loops around it (outer first)."""

    update: Update
    loops: tuple


def fold_zero_fill(nodes) -> tuple:
    """Drop a nest that zeroes an array when the next nest sums into each element once
    per step of its reduction: that nest's first step assigns instead of adding.

    ``dw[k, c] = 0``, then ``for k: for n < N: for c: dw[k, c] += dy[n, k] x[n, c]``,
    becomes ``for k: {n = 0; for c: dw[k, c] = dy[n, k] x[n, c]}; for 1 <= n < N: for
    c: ... += ...}``: one sweep over ``dw`` fewer. A sum whose reduction runs inside (an
    accumulator added once, ``db[o] += acc``) just assigns. ``0 + p`` is ``p``: the
    values are unchanged (only a zero sum's sign may differ, ``-0`` for ``+0``).

    Applies to two consecutive nests of the body: the first only writes ``a[...] = 0``,
    through loops alone; the second writes ``a`` only by ``+=`` that do not read ``a``,
    inside loops and blocks (no mask), with at most one loop around them that does not
    index ``a`` (the reduction: from 0 to a size, so at least one step, with nothing but
    loops and these updates inside it), and in one reduction step its updates hit every
    element the fill zeroes exactly once. That is counted element by element over
    constant ranges, or, with a run-time range, the single update must be the fill's
    own access inside the fill's own loops.
    """
    out, rest = [], list(nodes)
    while rest:
        node = rest.pop(0)
        folded = _fold(node, rest[0]) if rest else None
        if folded is None:
            out.append(node)
        else:
            out += folded
            rest.pop(0)
    return tuple(out)


def _fold(fill_nest, sum_nest) -> tuple | None:
    """The nodes of ``sum_nest`` with its first step assigning, or None if the fold does
    not apply."""
    fill = _fill(fill_nest)
    if fill is None:
        return None
    fill_loops, zeroed = fill
    name = zeroed.base.label
    writes = _writes(sum_nest, name)
    if not writes or any(w.update.op != "+=" for w in writes) or _reads(sum_nest, name):
        return None
    # The loops around an update that do not index it (compared by identity: the same
    # loop node, not an equal one elsewhere).
    reductions = [tuple(lp for lp in w.loops if not _indexes(lp, w.update)) for w in writes]
    reduction = reductions[0]
    if len(reduction) > 1 or any(
        tuple(map(id, r)) != tuple(map(id, reduction)) for r in reductions
    ):
        return None
    if not _covers(fill_loops, zeroed, writes, reduction):
        return None
    if not reduction:
        return _assigning((sum_nest,), name)
    return _peeled(sum_nest, reduction[0], name)


def _fill(node):
    """``(loops, access)`` of a perfect loop nest around one ``a[...] = 0``, else None."""
    loops = []
    while isinstance(node, Loop) and len(node.body) == 1:
        loops.append(node)
        node = node.body[0]
    if not loops or not isinstance(node, Update) or node.op != "=" or node.rhs != 0:
        return None
    return tuple(loops), node.lhs


def _writes(node, name) -> list[_Write] | None:
    """Every update of array ``name`` in ``node`` with its loops; None past a mask."""
    found = []

    def visit(n, loops):
        if isinstance(n, Update):
            if _targets(n, name):
                found.append(_Write(n, loops))
            return True
        if isinstance(n, Loop):
            return all(visit(b, loops + (n,)) for b in n.body)
        if isinstance(n, Block):
            return all(visit(b, loops) for b in n.body)
        return not any(_targets(x, name) for x in walk((n,)))

    return found if visit(node, ()) else None


def _reads(nest, name) -> bool:
    """Does any expression of ``nest`` read array ``name`` (its updates' targets aside)?"""
    for node in walk((nest,)):
        if _targets(node, name):
            exprs = (*node.lhs.indices, node.rhs)
        else:
            exprs = node_exprs(node)
        if any(acc.base.label == name for e in exprs for acc in sp.sympify(e).atoms(sp.Indexed)):
            return True
    return False


def _targets(node, name) -> bool:
    """Is ``node`` an update of array ``name``?"""
    return (
        isinstance(node, Update)
        and isinstance(node.lhs, sp.Indexed)
        and node.lhs.base.label == name
    )


def _indexes(loop: Loop, update: Update) -> bool:
    return loop.var in update.lhs.free_symbols


def _covers(fill_loops, zeroed, writes, reduction) -> bool:
    """One reduction step's updates hit every zeroed element exactly once."""
    if reduction:
        r = reduction[0]
        if r.lo != 0 or r.parallel or r.reduction or not _positive_size(r.hi):
            return False
        inside = walk(r.body)
        if not all(isinstance(x, Loop) or any(x is w.update for w in writes) for x in inside):
            return False
    counted = _offsets(fill_loops, zeroed)
    if counted is not None:
        hits = [_offsets(_outputs(w.loops, reduction), w.update.lhs) for w in writes]
        if any(h is None for h in hits):
            return False
        summed = np.sort(np.concatenate(hits))
        return np.array_equal(summed, counted) and bool(np.all(np.diff(counted) > 0))
    if len(writes) != 1 or writes[0].update.lhs != zeroed:
        return False
    loops = {(lp.var, lp.lo, lp.hi) for lp in _outputs(writes[0].loops, reduction)}
    bare = set(zeroed.indices) == {lp.var for lp in fill_loops} == {v for v, _, _ in loops}
    return bare and loops == {(lp.var, lp.lo, lp.hi) for lp in fill_loops}


def _outputs(loops, reduction) -> tuple:
    """``loops`` without the reduction loop (by identity)."""
    return tuple(lp for lp in loops if all(lp is not r for r in reduction))


def _positive_size(hi) -> bool:
    """A trip count of at least one: a positive constant, or a size (every size is >= 1)."""
    hi = sp.sympify(hi)
    return (hi.is_Integer and hi >= 1) or isinstance(hi, sp.Symbol)


def _offsets(loops, access):
    """The sorted flat offsets ``access`` takes over ``loops`` (constant ranges), or None."""
    if not all(sp.sympify(b).is_Integer for lp in loops for b in (lp.lo, lp.hi)):
        return None
    if math.prod(int(lp.hi - lp.lo) for lp in loops) > MAX_ENUMERATED:
        return None
    offset = flat_offset(access)
    variables = [lp.var for lp in loops]
    coefs = [sp.diff(offset, x) for x in variables]
    base = offset.subs({x: 0 for x in variables})
    if not all(e.is_Integer for e in (*coefs, base)):
        return None  # not affine in the loops with constant strides
    points = np.array([int(base)], dtype=np.int64)
    for lp, coef in zip(loops, coefs, strict=True):
        steps = int(coef) * np.arange(int(lp.lo), int(lp.hi), dtype=np.int64)
        points = (points[:, None] + steps[None, :]).ravel()
    return np.sort(points)


def _assigning(nodes, name) -> tuple:
    """``nodes`` with every ``+=`` into array ``name`` an assignment."""

    def assign(node):
        if _targets(node, name) and node.op == "+=":
            return dataclasses.replace(node, op="=")
        return node

    return transform(nodes, after=assign)


def _peeled(nest, reduction: Loop, name) -> tuple:
    """``nest`` with the first step of loop ``reduction`` taken out of it, assigning."""

    def peel(node):
        if node is not reduction:
            return None
        # The step's index is a local, not substituted: substitution would let SymPy
        # reorder the terms of a sum, and the printed order is the order of the adds.
        first = Block((Let(node.var, node.lo), *_assigning(node.body, name)))
        return (first, dataclasses.replace(node, lo=node.lo + 1))

    return transform((nest,), before=peel)
