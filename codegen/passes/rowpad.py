"""Row padding (tree passes): narrow output planes computed over the input's row pitch."""

from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.analysis import flat_offset
from codegen.ir import Block, Loop, Scratch, Update, map_exprs, node_exprs, transform, walk
from derive.indexing import isym


def row_padded(nodes) -> tuple:
    """Compute narrow output planes over the input's row pitch, so one loop vectorizes.

    ``y[.., i, j] += sum w * x[.., i + u, j + v]`` where rows of ``y`` are ``J`` wide but
    rows of ``x`` are ``P > J`` wide: a ``J``-iteration ``j`` loop vectorizes badly. With
    ``q = P i + j`` every read is ``x[base + q]``: a scratch row ``t[q]`` over
    ``q < P (I - 1) + J`` is one contiguous, vectorizable loop (the ``j >= J`` columns
    are computed and dropped; every read stays between the first and the last element a
    real output reads, so nothing out of bounds), then ``y[.., i, j] += t[P i + j]``.

    Top-down, the first of three forms that applies to a loop replaces it (the loops
    inside it are then left as they are):

    * gather (:func:`_pad_pair`): a loop pair ``i, j`` over constant ranges from 0
      around one ``+=`` whose reads all have one row pitch wider than the output's;
    * reduction (:func:`_pad_reduction`): the same pair as an accumulator reduction
      that reads one narrow plane;
    * scatter (:func:`_pad_scatter`): a loop around pairs that add narrow planes into
      a wider one.
    """

    def pad(node):
        if not isinstance(node, Loop):
            return None
        return _pad_pair(node) or _pad_reduction(node) or _pad_scatter(node)

    return transform(nodes, before=pad)


def sample_local(nodes) -> tuple:
    """Parallel loops whose row-padded fills read ``x[n, ...]`` read a local copy instead.

    ``x_n[c, r, s] = x[n, c, r, s]`` is copied once per iteration of the parallel loop
    ``n`` (one contiguous loop); every tap of a fill loop (:func:`_pad_pair`) is then a
    constant offset from one local address, where taps at ``x + (stride of n) * n +
    offset`` each keep a pointer register live, which the compiler spills along with
    the weights. Applies to an array every read of which, inside the loop, is at the
    loop's index.
    """
    return transform(
        nodes, after=lambda node: _sample_local(node) if isinstance(node, Loop) else node
    )


def _pad_pair(outer):
    """The gather form of :func:`row_padded`: ``Block(t, fill loops, add loop)``.

    The scratch row is filled by one loop per input plane the sum reads (after table
    expansion, one per connected pair): each loop's filter taps are invariants the
    compiler keeps in registers, where one loop over the taps of every plane would
    spill them and re-read each from the stack at every use.
    """
    if outer.parallel or outer.reduction or len(outer.body) != 1:
        return None
    inner = outer.body[0]
    if not isinstance(inner, Loop) or inner.parallel or inner.reduction or len(inner.body) != 1:
        return None
    (update,) = inner.body
    loops = (outer.lo, outer.hi, inner.lo, inner.hi)
    if not isinstance(update, Update) or update.op != "+=" or not all(b.is_Integer for b in loops):
        return None
    if outer.lo != 0 or inner.lo != 0:
        return None
    i, j = outer.var, inner.var
    reads = update.rhs.atoms(sp.Indexed)
    pitch = None
    for acc in reads:
        offset = flat_offset(acc)
        ci, cj = sp.diff(offset, i), sp.diff(offset, j)
        if (ci, cj) == (0, 0):
            continue
        if cj != 1 or not ci.is_Integer or (pitch is not None and ci != pitch):
            return None
        pitch = ci
    out_pitch = sp.diff(flat_offset(update.lhs), i)
    if pitch is None or pitch <= inner.hi or pitch == out_pitch:
        return None
    size = int(pitch * (outer.hi - 1) + inner.hi)
    q, t = isym("q"), sp.IndexedBase("t", shape=(size,))
    parts = _per_plane(update.rhs.xreplace({i: sp.Integer(0), j: q}), q)
    fills = tuple(
        Loop(q, sp.Integer(0), sp.Integer(size), (Update(t[q], "+=" if m else "=", part),))
        for m, part in enumerate(parts)
    )
    add = Loop(
        i,
        outer.lo,
        outer.hi,
        (Loop(j, inner.lo, inner.hi, (Update(update.lhs, "+=", t[pitch * i + j]),)),),
    )
    return Block((Scratch(sp.Symbol("t"), size), *fills, add))


def _per_plane(expr, var) -> list:
    """The terms of ``expr`` summed per plane: the leading indices of their read along ``var``.

    >>> x, w, q = sp.IndexedBase("x"), sp.IndexedBase("w"), isym("q")
    >>> _per_plane(w[0] * x[1, 0, q] + w[1] * x[1, 0, q + 1] + w[2] * x[2, 0, q], q)
    [w[0]*x[1, 0, q] + w[1]*x[1, 0, q + 1], w[2]*x[2, 0, q]]
    """
    planes = {}
    for term in sp.Add.make_args(expr):
        moving = [a for a in term.atoms(sp.Indexed) if var in a.free_symbols]
        if len(moving) != 1:
            return [expr]
        planes.setdefault(moving[0].indices[:-2], []).append(term)
    return [sp.Add(*planes[k]) for k in sorted(planes, key=sp.default_sort_key)]


def _fill_reads(loop) -> set:
    """Arrays read at ``[loop.var, ...]`` by the :func:`_pad_pair` fills (``t[q] = ...``)."""
    found = set()
    for fill in walk(loop.body):
        if not isinstance(fill, Loop) or fill.var != isym("q"):
            continue
        for update in fill.body:
            if isinstance(update.lhs, sp.Indexed) and str(update.lhs.base) == "t":
                reads = update.rhs.atoms(sp.Indexed)
                found |= {a.base for a in reads if a.indices[0] == loop.var}
    return found


def _sample_local(loop):
    """One loop with :func:`sample_local` applied (unchanged unless parallel)."""
    if not loop.parallel:
        return loop
    for base in sorted(_fill_reads(loop), key=str):
        every = {a for x in walk(loop.body) for e in node_exprs(x) for a in e.atoms(sp.Indexed)}
        if any(a.base == base and a.indices[0] != loop.var for a in every):
            continue
        local = sp.IndexedBase(f"{base.label}_n", shape=base.shape[1:])
        size = int(sp.Mul(*local.shape))
        q = isym("q")
        src = sp.IndexedBase(base.label, shape=(base.shape[0], size))[loop.var, q]
        copy = Loop(
            q, sp.Integer(0), sp.Integer(size), (Update(local[_unflat(q, local)], "=", src),)
        )
        body = map_exprs(loop.body, lambda e, b=base, lo=local: _rebased(e, b, lo))
        loop = dataclasses.replace(loop, body=(Block((Scratch(local.label, size), copy, *body)),))
    return loop


def _unflat(q, base) -> tuple:
    """Row-major indices of ``base`` whose flat offset is ``q``: ``(0, .., 0, q)``."""
    return (sp.Integer(0),) * (len(base.shape) - 1) + (q,)


def _rebased(expr, base, local):
    """``expr`` with every ``base[n, *rest]`` read as ``local[*rest]``."""
    return expr.replace(
        lambda e: isinstance(e, sp.Indexed) and e.base == base,
        lambda e: local[e.indices[1:]],
    )


def _pad_reduction(outer):
    """The reduction form of :func:`row_padded` (a filter gradient).

    ``acc_v += dy[.., i, j] * x[.., i + u, j + v]`` over ``i, j``: ``dy`` (pitch ``J``) is
    copied into a zeroed scratch at the pitch ``P`` of ``x``, then one contiguous simd
    loop ``acc_v += t[q] * x[base + q]`` covers the plane; the padding columns of ``t``
    are zero, so they add nothing (reads of ``x`` stay inside the real window's span).
    """
    if outer.parallel or outer.reduction or len(outer.body) != 1 or outer.lo != 0:
        return None
    inner = outer.body[0]
    if not isinstance(inner, Loop) or not inner.reduction or inner.lo != 0:
        return None
    if not (outer.hi.is_Integer and inner.hi.is_Integer):
        return None
    i, j = outer.var, inner.var
    narrow, pitch = set(), None
    for u in inner.body:
        if not isinstance(u, Update) or u.op != "+=" or not isinstance(u.lhs, sp.Symbol):
            return None
        for acc in u.rhs.atoms(sp.Indexed):
            offset = flat_offset(acc)
            ci, cj = sp.diff(offset, i), sp.diff(offset, j)
            if cj != 1 or not ci.is_Integer:
                return None
            if ci == inner.hi:
                narrow.add(acc)
            elif pitch is None or ci == pitch:
                pitch = ci
            else:
                return None
    if len(narrow) != 1 or pitch is None or pitch <= inner.hi:
        return None
    (src,) = narrow
    size = int(pitch * (outer.hi - 1) + inner.hi)
    q, t = isym("q"), sp.IndexedBase("t", shape=(size,))
    zero = Loop(q, sp.Integer(0), sp.Integer(size), (Update(t[q], "=", sp.Integer(0)),))
    copy = Loop(
        i, outer.lo, outer.hi, (Loop(j, inner.lo, inner.hi, (Update(t[pitch * i + j], "=", src),)),)
    )
    sub = {i: sp.Integer(0), j: q}
    body = tuple(Update(u.lhs, "+=", u.rhs.xreplace({src: t[q]}).xreplace(sub)) for u in inner.body)
    reduce = Loop(q, sp.Integer(0), sp.Integer(size), body, reduction=inner.reduction)
    return Block((Scratch(sp.Symbol("t"), size), zero, copy, reduce))


def _scatter_pair(node):
    """(i loop, j loop, update, pitch P) of a scatter ``out[.., P i + j] += f(in[.., J i + j])``."""
    if not isinstance(node, Loop) or node.parallel or node.reduction or len(node.body) != 1:
        return None
    inner = node.body[0]
    if not isinstance(inner, Loop) or inner.parallel or inner.reduction or len(inner.body) != 1:
        return None
    (update,) = inner.body
    if (
        not isinstance(update, Update)
        or update.op != "+="
        or not isinstance(update.lhs, sp.Indexed)
    ):
        return None
    bounds = (node.lo, node.hi, inner.lo, inner.hi)
    if not all(b.is_Integer for b in bounds) or node.lo != 0 or inner.lo != 0:
        return None
    i, j = node.var, inner.var
    out = flat_offset(update.lhs)
    pitch = sp.diff(out, i)
    if sp.diff(out, j) != 1 or not pitch.is_Integer or pitch <= inner.hi:
        return None
    for acc in update.rhs.atoms(sp.Indexed):
        offset = flat_offset(acc)
        coefs = (sp.diff(offset, i), sp.diff(offset, j))
        if coefs != (0, 0) and coefs != (inner.hi, 1):
            return None
    return node, inner, update, pitch


def _pad_scatter(loop):
    """The scatter form of :func:`row_padded` (a data gradient), hoisted to ``loop``.

    ``dx[.., i + u, j + v] += sum_k dy[.., k, i, j] * w[k, .., u, v]``: ``dx`` has pitch
    ``P``, ``dy`` pitch ``J < P``. Each ``dy`` plane the nests under ``loop`` read is copied
    once per ``loop`` iteration into a zeroed scratch at pitch ``P``; every ``i, j`` pair then
    becomes one contiguous loop over ``q``. The padding columns add exact zeros to
    elements inside the span the real updates write.
    """
    pairs = [p for p in map(_scatter_pair, walk(loop.body)) if p is not None]
    if not pairs or len({(p[0].hi, p[1].hi, p[3]) for p in pairs}) != 1:
        return None
    rows, cols, pitch = pairs[0][0].hi, pairs[0][1].hi, pairs[0][3]
    planes = {}
    for outer, inner, update, _ in pairs:
        for acc in update.rhs.atoms(sp.Indexed):
            if outer.var in acc.free_symbols or inner.var in acc.free_symbols:
                used = set().union(*(ix.free_symbols for ix in acc.indices))
                if not used <= {outer.var, inner.var, loop.var}:
                    return None
                plane = acc.xreplace({outer.var: sp.Integer(0), inner.var: sp.Integer(0)})
                planes.setdefault(plane, acc.xreplace({outer.var: isym("i"), inner.var: isym("j")}))
    size = int(pitch * (rows - 1) + cols)
    total = size * len(planes)
    q, i, j = isym("q"), isym("i"), isym("j")
    t = sp.IndexedBase("t", shape=(total,))
    index = {plane: m for m, plane in enumerate(sorted(planes, key=sp.default_sort_key))}
    copies = tuple(
        Loop(
            i,
            sp.Integer(0),
            rows,
            (
                Loop(
                    j,
                    sp.Integer(0),
                    cols,
                    (Update(t[index[plane] * size + pitch * i + j], "=", planes[plane]),),
                ),
            ),
        )
        for plane in sorted(planes, key=sp.default_sort_key)
    )
    zero = Loop(q, sp.Integer(0), sp.Integer(total), (Update(t[q], "=", sp.Integer(0)),))

    def padded(outer, inner, update):
        sub = {}
        for acc in update.rhs.atoms(sp.Indexed):
            if outer.var in acc.free_symbols or inner.var in acc.free_symbols:
                plane = acc.xreplace({outer.var: sp.Integer(0), inner.var: sp.Integer(0)})
                sub[acc] = t[index[plane] * size + q]
        rhs = update.rhs.xreplace(sub)
        lhs = update.lhs.xreplace({outer.var: sp.Integer(0), inner.var: q})
        return Loop(q, sp.Integer(0), sp.Integer(size), (Update(lhs, "+=", rhs),))

    def rewrite(node):
        pair = _scatter_pair(node)
        return padded(*pair[:3]) if pair is not None else None

    scratch = (Scratch(sp.Symbol("t"), total), zero, *copies)
    return dataclasses.replace(loop, body=(Block(scratch + transform(loop.body, before=rewrite)),))
