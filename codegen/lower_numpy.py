"""NumPy lowering: Python loops over the kernel taps only; every other loop becomes
slicing of strided windows and ``einsum`` / broadcasting.

Examples
--------
>>> from derive.kernels import load_table
>>> from codegen.ir import Loop, walk
>>> fn = lower_numpy(load_table()["conv2d_forward"])
>>> sorted({str(x.var) for x in walk(fn.body) if isinstance(x, Loop)})
['u', 'v']
"""

from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.analysis import axis_size, clip_range, computed, guard_computed_reads
from codegen.ir import Function, Let, Loop, Update
from derive.indexing import Floor, isym
from derive.kernelspec import KernelSpec


class View(sp.Function):
    """``array[slices]``: args are the array label and one entry per axis.

    An entry is a :class:`Span` (vectorized axis), :class:`Gather` (an index array,
    with :class:`Arange` for its companion axes) or a scalar expression (a tap).
    """


class Span(sp.Function):
    """Slice ``start:stop:step`` (``Span(0, size, 1)`` of a whole axis prints ``:``)."""


class Arange(sp.Function):
    """``numpy.arange(lo, hi)`` (a vectorized index used as a value or a gather axis)."""


class Align(sp.Function):
    """Put ``expr`` (axes ``have``) into the axis order ``want``: transpose + new axes."""


class Einsum(sp.Function):
    """``numpy.einsum(subscripts, *operands, optimize=True)``."""


class Scatter(sp.Function):
    """``Scatter(label, *index arrays)``: the target of a ``+=`` through indices read from
    an array (``dx[n, c, argmax // W, argmax % W]``), broadcast together."""


class Reduce(sp.Function):
    """``numpy.sum/max/min(expr, axis=axes)``."""


class Clip(sp.Function):
    """``numpy.clip(index, lo, hi)`` as int64: a computed index kept inside its axis, so
    the gather is valid everywhere (the guard of :func:`guard_computed_reads` discards the
    values read at clipped positions)."""


REDUCE_OP = {"=": None, "+=": "sum", "max=": "max", "min=": "min"}


def lower_numpy(spec: KernelSpec) -> Function:
    """Lower ``spec`` to Python loops over taps and vectorized statements."""
    body = tuple(node for nest in spec.nests for node in _np_nest(spec, nest))
    return Function(spec.name, spec, (), body)


def _np_nest(spec, nest):
    vec = [x for x in nest.loops if x not in nest.taps]
    lets, spans = [], {}
    for var in vec:
        lo, hi = clip_range(spec, nest, var, {})
        if nest.clip and (lo, hi) != spec.range_of(var):
            lo_s, hi_s = isym(f"{var}_lo"), isym(f"{var}_hi")
            lets += [Let(lo_s, lo), Let(hi_s, sp.Max(lo_s, hi))]
            lo, hi = lo_s, hi_s
        spans[isym(var)] = (lo, hi)
    body = (dataclasses.replace(s, rhs=guard_computed_reads(spec, s.rhs)) for s in nest.body)
    stmts = tuple(lets) + tuple(
        x for s in body for x in _floors_once(_np_stmt(spec, nest, s, spans))
    )
    for tap in reversed(nest.taps):
        lo, hi = spec.range_of(tap)
        stmts = (Loop(isym(tap), lo, hi, stmts),)
    return stmts


def _np_view(spec, acc, spans):
    """(View node, its vectorized letters) for one Indexed access."""
    if computed(acc):
        return _np_computed_view(spec, acc, spans)
    entries, letters = [], []
    gather = any(ix.atoms(sp.Indexed) for ix in acc.indices)
    for axis, index in enumerate(acc.indices):
        inner = index.atoms(sp.Indexed)
        vars_ = [v for v in index.free_symbols if v in spans]
        if inner:
            (sub,) = inner
            sub_view, sub_letters = _np_view(spec, sub, spans)
            entries.append(sub_view)
            letters += [x for x in sub_letters if x not in letters]
        elif not vars_:
            entries.append(index)
        else:
            (var,) = vars_
            lo, hi = spans[var]
            if gather:
                entries.append(Arange(lo, hi))
            else:
                a = sp.diff(index, var)
                start = index.subs(var, lo)
                size = axis_size(spec, str(acc.base), axis)
                if index == var and lo == 0 and hi == size:
                    entries.append(Span(0, size, 1))
                else:
                    entries.append(Span(start, start + a * (hi - lo), a))
            if var not in letters:
                letters.append(var)
    return View(sp.Symbol(str(acc.base)), *entries), letters


def _np_computed_view(spec, acc, spans):
    """A gather at computed positions: every index an integer array over the access's
    vectorized loops (outer first), computed ones clipped into their axis."""
    letters = [v for v in spans if any(v in ix.free_symbols for ix in acc.indices)]
    entries = []
    for axis, index in enumerate(acc.indices):
        sub = {a: _align(*_np_view(spec, a, spans), letters) for a in _outer_reads(index)}
        sub.update(
            {v: _align(Arange(*spans[v]), [v], letters) for v in index.free_symbols & set(spans)}
        )
        entry = index.xreplace(sub)
        if index.has(Floor):
            entry = Clip(entry, 0, axis_size(spec, str(acc.base), axis) - 1)
        entries.append(entry)
    return View(sp.Symbol(str(acc.base)), *entries), letters


def _outer_reads(expr) -> list:
    """The array reads of ``expr`` that are not inside another read's index (sorted)."""
    if isinstance(expr, sp.Indexed):
        return [expr]
    found = {a for arg in expr.args for a in _outer_reads(arg)}
    return sorted(found, key=sp.default_sort_key)


def _np_stmt(spec, nest, stmt, spans):
    if stmt.op == "+=" and any(ix.atoms(sp.Indexed) for ix in stmt.lhs.indices):
        return _np_scatter(spec, nest, stmt, spans)
    lhs, out = _np_view(spec, stmt.lhs, spans)
    views = {}
    for acc in _outer_reads(stmt.rhs):
        views[acc] = _np_view(spec, acc, spans)
    order = list(out)
    for _, letters in views.values():
        order += [x for x in letters if x not in order]
    for var in sorted(stmt.rhs.free_symbols & set(spans), key=str):
        if var not in order:
            order.append(var)
    reduced = [x for x in order if x not in out]
    cond = _np_view(spec, nest.cond, spans) if nest.cond is not None else None
    rhs = _np_einsum(stmt, views, out, cond) if stmt.op == "+=" else None
    if rhs is None:
        rhs = _np_broadcast(stmt, views, spans, order, cond)
        if reduced:
            axes = sp.Tuple(*[order.index(x) for x in reduced])
            rhs = Reduce(rhs, sp.Symbol(REDUCE_OP[stmt.op]), axes)
        elif cond is not None:
            rhs = rhs * _align(*cond, order)
    if cond is not None and reduced and rhs.func is Reduce:
        rhs = rhs * _align(*cond, out)
    return Update(lhs, stmt.op, rhs)


def _floors_once(update: Update) -> tuple:
    """``update`` after one local per computed index it uses more than once.

    Bilinear resampling reads four taps around ``floor(position)``: each floor is an
    array the statement would otherwise compute again for every tap and guard. Floor is
    exact, so the values are those of the inline form.

    >>> from codegen.ir import Update
    >>> p, y, x = sp.Symbol("p"), sp.Symbol("y"), sp.Symbol("x")
    >>> [str(n.value if isinstance(n, Let) else n.rhs) for n in _floors_once(
    ...     Update(y, "=", x * Floor(p) + Floor(p) ** 2))]
    ['Floor(p)', 'floor_0**2 + floor_0*x']
    """
    floors = sorted(update.rhs.atoms(Floor), key=sp.default_sort_key)
    repeated = [f for f in floors if update.rhs.count(f) > 1]
    names = {f: sp.Symbol(f"floor_{m}") for m, f in enumerate(repeated)}
    lets = tuple(Let(var, f, integer=False) for f, var in names.items())
    return lets + (dataclasses.replace(update, rhs=update.rhs.xreplace(names)),)


def _np_scatter(spec, nest, stmt, spans):
    """``+=`` at indices read from arrays: every index and the value broadcast over the
    nest's vectorized loops, added by ``numpy.add.at`` (windows may share a target)."""
    order = [isym(x) for x in nest.loops if x not in nest.taps]
    reads = {acc: _np_view(spec, acc, spans) for acc in stmt.rhs.atoms(sp.Indexed)}
    index = []
    for ix in stmt.lhs.indices:
        sub = {acc: _align(*_np_view(spec, acc, spans), order) for acc in ix.atoms(sp.Indexed)}
        sub.update({v: _align(Arange(*spans[v]), [v], order) for v in ix.free_symbols & set(spans)})
        index.append(ix.xreplace(sub))
    cond = _np_view(spec, nest.cond, spans) if nest.cond is not None else None
    rhs = _np_broadcast(stmt, reads, spans, order, cond)
    return Update(Scatter(sp.Symbol(str(stmt.lhs.base)), *index), "+=", rhs)


def _align(expr, have, want):
    if list(have) == list(want):
        return expr
    return Align(expr, sp.Tuple(*have), sp.Tuple(*want))


def _np_einsum(stmt, views, out, cond):
    """``+=`` of a product of array reads: one einsum (None when not of that form)."""
    coeff, factors = [], []
    for f in sp.Mul.make_args(stmt.rhs):
        (factors if f in views else coeff).append(f)
    if not factors or any(c.atoms(sp.Indexed) for c in coeff):
        return None
    if any(set(views[f][1]) & {s for c in coeff for s in c.free_symbols} for f in factors):
        return None
    operands = [list(views[f]) for f in factors]
    if cond is not None:
        host = next((op for op in operands if set(cond[1]) <= set(op[1])), None)
        if host is None:
            if not set(cond[1]) <= set(out):
                return None
            coeff.append(_align(*cond, out))
        else:
            host[0] = host[0] * _align(cond[0], cond[1], host[1])
    letters = {
        v: chr(ord("a") + i) for i, v in enumerate(dict.fromkeys(sum((o[1] for o in operands), [])))
    }
    if not set(out) <= set(letters):
        return None
    if len(operands) == 1 and operands[0][1] == list(out):
        core = operands[0][0]
    else:
        subs = ",".join("".join(letters[v] for v in o[1]) for o in operands)
        subs += "->" + "".join(letters[v] for v in out)
        core = Einsum(sp.Symbol(subs), *[o[0] for o in operands])
    return sp.Mul(*coeff) * core


def _np_broadcast(stmt, views, spans, order, cond):
    """Element-wise expression with every read aligned to the axis order ``order``."""
    sub = {acc: _align(view, letters, order) for acc, (view, letters) in views.items()}
    for var in stmt.rhs.free_symbols & set(spans):
        sub[var] = _align(Arange(*spans[var]), [var], order)
    return stmt.rhs.xreplace(sub)
