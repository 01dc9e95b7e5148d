"""The symbols and functions kernel specs are written with, beyond SymPy's own.

Kernel specs (:mod:`derive.kernels`) index arrays with affine expressions of
integer loop symbols (``i*stride + u*dilation - padding``), size their outputs
with ``FloorDiv``, turn a float position into an index with ``Floor`` and test float
reads with ``IsNaN``; codegen prints all of them.
They live here, apart from the spec schema, because printers, lowering and the
table all use them.

Examples
--------
>>> FloorDiv(isym("H") + 2, 2).is_integer
True
>>> CeilDiv(7, 2), FloorDiv(7, 2)
(4, 3)
"""

from __future__ import annotations

import sympy as sp
from sympy.logic.boolalg import BooleanFunction


def isym(name: str) -> sp.Symbol:
    """An integer, non-negative symbol (indices, sizes, stride, padding)."""
    return sp.Symbol(name, integer=True, nonnegative=True)


def fsym(name: str) -> sp.Symbol:
    """A real symbol (float parameters such as A, S, beta, j)."""
    return sp.Symbol(name, real=True)


def size_expr(x) -> sp.Expr:
    """A range bound: a size name (``"Ho"``) becomes :func:`isym`, numbers stay numbers.

    Names are never parsed by ``sympify`` (``"E"``, ``"I"``, ``"S"``, ``"N"`` mean
    other things to SymPy).

    >>> size_expr("E").is_integer, size_expr(2)
    (True, 2)
    """
    return isym(x) if isinstance(x, str) else sp.sympify(x)


class FloorDiv(sp.Function):
    """``floor(a / b)`` for non-negative integers, kept unevaluated for printing.

    >>> FloorDiv(7, 2)
    3
    """

    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return sp.Integer(a // b)
        return None


class CeilDiv(sp.Function):
    """``ceil(a / b)`` for non-negative ``a`` and positive ``b`` (loop bounds).

    >>> CeilDiv(7, 2), CeilDiv(0, 3)
    (4, 0)
    """

    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return sp.Integer(-(-a // b))
        if b == 1:
            return a
        return None


class Floor(sp.Function):
    """``floor(x)`` of a real expression as an integer index (a position computed from
    float data, such as a resampling's source row).

    An access whose index contains ``Floor`` may fall outside its array; there it reads 0
    (the meaning :func:`derive.kernelspec.evaluate` gives every read outside an array),
    which the generated code makes explicit with a bounds test.

    >>> Floor(sp.Rational(-1, 2)), Floor(sp.Rational(7, 3)), Floor(fsym("r")).is_integer
    (-1, 2, True)
    """

    is_integer = True

    @classmethod
    def eval(cls, x):
        if x.is_number and x.is_real:
            return sp.floor(x)
        return None


class IsNaN(BooleanFunction):
    """``isnan(x)`` of a float read: False in exact arithmetic, where no NaN exists.

    Specs use it where a NaN input must win a comparison, as in PyTorch's max pooling
    (``val > max || isnan(val)``); the printers emit the dialect's ``isnan``.

    >>> IsNaN(sp.Rational(1, 2)), IsNaN(sp.Symbol("x")).is_Boolean
    (False, True)
    """

    @classmethod
    def eval(cls, x):
        if x.is_number:
            return sp.false
        return None
