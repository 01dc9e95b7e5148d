"""Facts about a spec's loops and accesses that lowering and the passes decide by.

Clipping (zero padding): an access ``x[..., a*i + t, ...]`` of an axis of size
``D`` is in bounds for ``ceil(-t/a) <= i < ceil((D - t)/a)``; :func:`clip_range`
restricts ``i`` to that range instead of reading padded zeros. An access whose index
contains ``Floor`` (a position computed from float data) may fall anywhere; both lowerings
read it as 0 outside its array (:func:`guard_computed_reads`), the meaning the spec
evaluation gives it. :func:`flat_offset`
is the row-major element offset of an access (as the C printer prints it) and
:func:`contiguous` tells whether a group of loops walks accesses as one flat run.
"""

from __future__ import annotations

import itertools

import sympy as sp

from codegen.ir import Let, NestPlan, Update
from derive.indexing import CeilDiv, Floor, isym
from derive.kernelspec import KernelSpec, Nest


def accesses(nest: Nest):
    """Every ``Indexed`` the nest reads or writes (sorted for determinism)."""
    found = set()
    for stmt in nest.body:
        found |= sp.Tuple(stmt.lhs, stmt.rhs).atoms(sp.Indexed)
    return sorted(found, key=sp.default_sort_key)


def axis_size(spec: KernelSpec, name: str, axis: int) -> sp.Symbol:
    return isym(spec.array(name).dims[axis])


def clip_range(spec: KernelSpec, nest: Nest, var: str, env: dict) -> tuple[sp.Expr, sp.Expr]:
    """The loop range of ``var`` in ``nest``, restricted to in-bounds accesses when clipping.

    >>> from derive.kernels import load_table
    >>> spec = load_table()["conv2d_forward"]
    >>> clip_range(spec, spec.nests[1], "i", {})[0]
    Max(0, CeilDiv(Max(0, -dilation*u + padding), stride))
    """
    lo, hi = (sp.sympify(b).subs(env) for b in spec.range_of(var))
    if not nest.clip or var in nest.taps:  # taps are outer: the loops inside them are clipped
        return lo, hi
    sym = isym(var)
    for acc in accesses(nest):
        for axis, index in enumerate(acc.indices):
            if index == sym or sym not in index.free_symbols:
                continue
            a = sp.diff(index, sym)
            t = sp.expand(index - a * sym)
            size = axis_size(spec, str(acc.base), axis).subs(env)
            a, t = a.subs(env), t.subs(env)
            lo = sp.Max(lo, CeilDiv(sp.Max(-t, 0), a))
            hi = sp.Min(hi, CeilDiv(sp.Max(size - t, 0), a))
    return lo, hi


def computed(acc) -> bool:
    """Does ``acc`` read at a position computed from float data (an index with Floor)?"""
    return isinstance(acc, sp.Indexed) and any(ix.has(Floor) for ix in acc.indices)


def guard_computed_reads(spec: KernelSpec, expr: sp.Expr) -> sp.Expr:
    """``expr`` with every computed read 0 outside its array:
    ``Piecewise((x[.., p, ..], 0 <= p < D), (0, True))`` for each computed index ``p``.

    >>> from derive.kernels import load_table
    >>> from derive.indexing import fsym
    >>> x = sp.IndexedBase("x")
    >>> n, i, j = isym("n"), isym("i"), isym("j")
    >>> read, inside = guard_computed_reads(
    ...     load_table()["affine_resample"], x[n, Floor(fsym("r")), j]
    ... ).args[0]
    >>> read, sorted(map(str, inside.args))
    (x[n, Floor(r), j], ['Floor(r) >= 0', 'H > Floor(r)'])
    """

    def guard(acc):
        inside = [
            sp.And(ix >= 0, ix < axis_size(spec, str(acc.base), axis))
            for axis, ix in enumerate(acc.indices)
            if ix.has(Floor)
        ]
        return sp.Piecewise((acc, sp.And(*inside)), (sp.Integer(0), True))

    return expr.replace(computed, guard)


def constant_over(expr, ranges: dict):
    """``expr`` evaluated for every value of its loop variables, if always the same."""
    free = [s for s in expr.free_symbols if s in ranges]
    if not free or any(s not in ranges for s in expr.free_symbols):
        return expr
    values = {
        expr.subs(dict(zip(free, pt, strict=True)))
        for pt in itertools.product(*(ranges[s] for s in free))
    }
    return values.pop() if len(values) == 1 else expr


def size_env(spec: KernelSpec, fixed: dict) -> dict:
    env = {isym(k): sp.Integer(v) for k, v in fixed.items() if k != "table"}
    for name, formula in spec.derived:  # derived sizes follow from the fixed ones
        value = sp.sympify(formula).subs(env)
        if value.is_Integer:
            env.setdefault(isym(name), value)
    return env


def writes_disjoint(nest: Nest, var: str) -> bool:
    """A loop may run in parallel when every statement writes at a bare ``var`` index."""
    return all(isym(var) in stmt.lhs.indices for stmt in nest.body)


def shaped_arrays(spec: KernelSpec, env: dict) -> dict:
    """IndexedBase -> the same base carrying its (possibly constant) shape, for flat offsets."""
    return {
        a.base: sp.IndexedBase(a.name, shape=tuple(isym(d).subs(env) for d in a.dims))
        for a in spec.arrays
    }


def trips(spec: KernelSpec, var: str) -> sp.Expr:
    lo, hi = spec.range_of(var)
    return hi - lo


def flat_offset(acc: sp.Indexed) -> sp.Expr:
    """The row-major element offset of an access of a shaped array (as the C printer prints it)."""
    offset = sp.Integer(0)
    for index, size in zip(acc.indices, acc.base.shape, strict=True):
        offset = offset * size + index
    return sp.expand(offset)


def contiguous(group, sizes, offsets) -> bool:
    """Loops ``group`` (outer first, trip counts ``sizes``) walk every access as one flat run.

    That is: each offset is affine in them with ``coef(outer) = coef(inner) * size(inner)``
    and a unit (or zero) innermost stride, so ``sum_g coef_g * g`` is ``coef_last * q`` with
    ``q`` the row-major index of the group's point.
    """
    unit = False
    for offset in offsets:
        coefs = [sp.diff(offset, isym(x)) for x in group]
        if not all(c.is_Integer for c in coefs) or coefs[-1] not in (0, 1):
            return False
        if any(coefs[n] != coefs[n + 1] * sizes[n + 1] for n in range(len(group) - 1)):
            return False
        unit = unit or coefs[-1] == 1
    return unit


def reducible(body, loop_vars: set) -> bool:
    """The remaining loops only accumulate (+=) into elements that none of them indexes."""
    updates = [n for n in body if isinstance(n, Update)]
    return (
        bool(updates)
        and all(isinstance(n, Update | Let) for n in body)
        and all(u.op == "+=" and not (loop_vars & u.lhs.free_symbols) for u in updates)
    )


def cond_ready(cond, bound_vars):
    return {str(x) for x in cond.indices} <= set(bound_vars)


def bounds(plan: NestPlan, var: str) -> tuple[sp.Expr, sp.Expr]:
    """``[lo, hi)`` of loop ``var`` of ``plan``: ``[0, trips)`` for a loop a pass made,
    else its clipped range with the single-trip loops substituted, folded to a constant
    where it takes one value over the constant ranges."""
    if var in plan.made:
        return sp.Integer(0), sp.Integer(plan.made[var])
    lo, hi = clip_range(plan.spec, plan.nest, var, plan.env)
    return tuple(constant_over(b.subs(plan.point), plan.ranges) for b in (lo, hi))


def whole(plan: NestPlan, var: str) -> bool:
    """Loop ``var`` runs a constant range from 0 that clipping does not restrict."""
    r = plan.ranges.get(isym(var))
    return r is not None and r.start == 0 and bounds(plan, var) == (0, r.stop)
