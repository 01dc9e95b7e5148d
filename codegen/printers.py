"""Printers: SymPy expressions and lowered statements -> C99 or NumPy source text.

Nothing else in the project turns mathematics into strings. The C printer is one
class; float and double differ only by the :class:`Dialect` data it is given
(type name, literal suffix, math function suffix: ``tanhf`` vs ``tanh``).
A SymPy node neither printer supports raises :class:`UnsupportedNode` naming
its class.

Examples
--------
>>> import sympy as sp
>>> x = sp.Symbol("x", real=True)
>>> CPrinter(F32).doprint(sp.tanh(2 * x / 3))
'tanhf((2.0F/3.0F)*x)'
>>> CPrinter(F64).doprint(sp.tanh(2 * x / 3))
'tanh((2.0/3.0)*x)'
>>> NumpyPrinter().doprint(sp.Max(x, 0))
'numpy.maximum(0, x)'
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter
from sympy.printing.numpy import NumPyPrinter

from codegen import ir
from codegen import lower_numpy as N
from derive.indexing import CeilDiv, Floor, FloorDiv, IsNaN


class UnsupportedNode(TypeError):
    """A SymPy node the target printer cannot emit; the message names its class."""


@dataclass(frozen=True)
class Dialect:
    """The data that distinguishes float from double C code."""

    suffix: str  # function-name suffix: symconv_conv2d_forward_f32
    ctype: str  # element type
    numpy_dtype: str  # matching numpy dtype name
    sympy_type: object  # for SymPy's literal suffixes and math function names
    vector_lanes: int  # elements of one 64-byte (AVX-512) vector


F32 = Dialect("f32", "float", "float32", float32, 16)
F64 = Dialect("f64", "double", "float64", float64, 8)
DIALECTS = (F32, F64)

_SUPPORTED = (
    sp.Symbol,
    sp.Number,
    sp.NumberSymbol,
    sp.Add,
    sp.Mul,
    sp.Pow,
    sp.Indexed,
    sp.IndexedBase,
    sp.Tuple,
    sp.tanh,
    sp.exp,
    sp.log,
    sp.Max,
    sp.Min,
    sp.Mod,
    sp.Piecewise,
    sp.Or,
    sp.And,
    sp.logic.boolalg.BooleanTrue,
    sp.core.relational.Relational,
    sp.core.numbers.Infinity,
    sp.core.numbers.NegativeInfinity,
    sp.codegen.ast.Token,
)


def _check_supported(printer, expr, extra=()):
    """Raise :class:`UnsupportedNode` for a function the kernels never use."""
    if isinstance(expr, sp.Basic) and not isinstance(expr, _SUPPORTED + tuple(extra)):
        raise UnsupportedNode(
            f"{type(printer).__name__} cannot print SymPy node {type(expr).__name__}: {expr}"
        )


def _int_minmax(printer, expr, op):
    """Integer Max/Min as nested conditional expressions."""
    args = [printer._print(a) for a in expr.args]
    out = args[0]
    for a in args[1:]:
        out = f"(({out}) {op} ({a}) ? ({out}) : ({a}))"
    return out


def _nan_minmax(printer, expr, op):
    """Float Max/Min that propagate NaN, as PyTorch's relu and max pooling do (C's
    ``fmax`` and ``fmin`` return the other argument): ``a op b || isnan(a) ? a : b``,
    with literal arguments last (``isnan`` of a literal is never printed)."""
    args = sorted(expr.args, key=lambda a: a.is_number)
    out = printer._print(args[0])
    for a in args[1:]:
        b = printer._print(a)
        out = f"((({out}) {op} ({b}) || isnan({out})) ? ({out}) : ({b}))"
    return out


class CPrinter(C99CodePrinter):
    """C99 printer for one :class:`Dialect`; arrays print as flat row-major reads.

    >>> import sympy as sp
    >>> n, i = sp.symbols("n i", integer=True, nonnegative=True)
    >>> x = sp.IndexedBase("x", shape=(sp.Symbol("N", integer=True), 5))
    >>> CPrinter(F64).doprint(x[n, i + 1] ** 2)
    '(x[i + 5*n + 1]*x[i + 5*n + 1])'
    >>> CPrinter(F32).doprint(sp.Max(n, i))
    '((i) > (n) ? (i) : (n))'
    >>> CPrinter(F64).doprint(sp.erf(n))
    Traceback (most recent call last):
    ...
    codegen.printers.UnsupportedNode: CPrinter cannot print SymPy node erf: erf(n)
    """

    def __init__(self, dialect: Dialect):
        super().__init__({"type_aliases": {real: dialect.sympy_type}})
        self.dialect = dialect
        self._in_index = False

    def _print(self, expr, **kwargs):
        _check_supported(self, expr, (CeilDiv, FloorDiv, Floor, IsNaN))
        return super()._print(expr, **kwargs)

    def _print_IsNaN(self, expr):
        return f"isnan({self._print(expr.args[0])})"

    def _print_Floor(self, expr):
        # floor of the dialect's float type (floorf, floor); converted to an integer only
        # inside an array index, which the guard of a computed read evaluates after its
        # bounds test (on a NaN or huge position the conversion would be undefined)
        text = super()._print_floor(sp.floor(expr.args[0], evaluate=False))
        return f"((int64_t){text})" if self._in_index else text

    def _print_Indexed(self, expr):
        shape = expr.base.shape
        offset = sp.Integer(0)
        for index, size in zip(expr.indices, shape, strict=True):
            offset = offset * size + index
        outer, self._in_index = self._in_index, True
        try:
            return f"{self._print(expr.base.label)}[{self._print(sp.expand(offset))}]"
        finally:
            self._in_index = outer

    def _print_Max(self, expr):
        if all(a.is_integer for a in expr.args):
            return _int_minmax(self, expr, ">")
        return _nan_minmax(self, expr, ">")

    def _print_Min(self, expr):
        if all(a.is_integer for a in expr.args):
            return _int_minmax(self, expr, "<")
        return _nan_minmax(self, expr, "<")

    def _print_Pow(self, expr):
        base, e = expr.args
        if e.is_Integer and 2 <= abs(e) <= 3:
            prod = "*".join([self.parenthesize(base, 100)] * int(abs(e)))
            if e > 0:
                return f"({prod})"
            return f"({self._print(sp.Float(1.0))}/({prod}))"
        return super()._print_Pow(expr)

    def _print_Float(self, expr):
        # Canonical shortest decimal: identical text on every run and platform.
        return super()._print_Float(sp.Float(float(expr), 17))

    def _print_Piecewise(self, expr):
        (value, cond), (other, true) = expr.args
        if true is not sp.true:
            raise UnsupportedNode(f"{type(self).__name__}: Piecewise needs a final True branch")
        return f"(({self._print(cond)}) ? ({self._print(value)}) : ({self._print(other)}))"

    def _print_CeilDiv(self, expr):
        a, b = (self._print(x) for x in expr.args)
        return f"(({a}) + ({b}) - 1)/({b})"

    def _print_FloorDiv(self, expr):
        a, b = (self._print(x) for x in expr.args)
        return f"(({a})/({b}))"

    def _print_Mod(self, expr):
        # Only index arithmetic uses Mod (a flat position's column): integers >= 0.
        a, b = (self._print(x) for x in expr.args)
        return f"(({a}) % ({b}))"

    # --- statements -------------------------------------------------------------------

    def block(self, nodes, indent: int = 1) -> list[str]:
        """C lines of lowered statements (:mod:`codegen.ir` nodes)."""
        pad = "    " * indent
        lines = []
        for node in nodes:
            if isinstance(node, ir.Loop) and node.threads and node.threads.serial_copy:
                lines += ["#ifdef _OPENMP", f"{pad}if ({self._guard(node.threads)}) {{"]
                lines.append(f"{pad}    #pragma omp parallel for{self._schedule(node.threads)}")
                lines += self._loop(node, indent + 1, threads=False) + [f"{pad}}} else", "#endif"]
                lines += self._loop(node, indent, threads=False)
            elif isinstance(node, ir.Loop):
                lines += self._loop(node, indent)
            elif isinstance(node, ir.If):
                lines.append(f"{pad}if ({self._print(node.cond)}) {{")
                lines += self.block(node.body, indent + 1) + [f"{pad}}}"]
            elif isinstance(node, ir.Block):
                lines += [f"{pad}{{"] + self.block(node.body, indent + 1) + [f"{pad}}}"]
            elif isinstance(node, ir.Scratch):
                lines.append(f"{pad}{self.dialect.ctype} {self._print(node.var)}[{node.size}];")
            elif isinstance(node, ir.Let):
                ctype = "int64_t" if node.integer else self.dialect.ctype
                const = "" if node.mutable else "const "
                value = self._print(node.value)
                lines.append(f"{pad}{const}{ctype} {self._print(node.var)} = {value};")
            elif isinstance(node, ir.Update):
                lines.append(f"{pad}{self.update(node)}")
            else:
                raise UnsupportedNode(f"CPrinter cannot print statement {type(node).__name__}")
        return lines

    def _loop(self, loop: ir.Loop, indent: int, threads: bool = True) -> list[str]:
        """``for`` over a loop node, after its pragmas (no thread pragma if not ``threads``)."""
        pad = "    " * indent
        v, lo, hi = (self._print(x) for x in (loop.var, loop.lo, loop.hi))
        lines = self._pragmas(loop, pad) if threads or loop.threads is None else []
        lines.append(f"{pad}for (int64_t {v} = {lo}; {v} < {hi}; ++{v}) {{")
        return lines + self.block(loop.body, indent + 1) + [f"{pad}}}"]

    @staticmethod
    def _schedule(threads: ir.Threads) -> str:
        return f" schedule(static, {threads.chunk})" if threads.chunk else ""

    def _guard(self, threads: ir.Threads) -> str:
        """The C condition of a :class:`~codegen.ir.Threads` guard (its terms joined by &&)."""
        return " && ".join(f"({self._print(e)}) {op} {bound}" for e, op, bound in threads.guard)

    def _pragmas(self, loop: ir.Loop, pad: str) -> list[str]:
        """OpenMP pragmas: threads over a parallel loop, simd over a reduction."""
        if loop.threads:
            clause = self._schedule(loop.threads)
            if loop.threads.guard:
                clause += f" if({self._guard(loop.threads)})"
            return ["#ifdef _OPENMP", f"{pad}#pragma omp parallel for{clause}", "#endif"]
        if loop.reduction:
            accs = ", ".join(self._print(a) for a in loop.reduction)
            guard = "#if defined(_OPENMP) || defined(SYMCONV_OMP_SIMD)"
            length = f" simdlen({loop.simdlen})" if loop.simdlen else ""
            simd = f"omp simd{length} reduction(+: {accs})"
            return [guard, f"{pad}#pragma {simd}", "#endif"]
        return []

    def update(self, node: ir.Update) -> str:
        lhs, rhs = self._print(node.lhs), node.rhs
        if node.op in ("max=", "min="):
            fn = sp.Max if node.op == "max=" else sp.Min
            return f"{lhs} = {self._print(fn(node.lhs, rhs, evaluate=False))};"
        return f"{lhs} {node.op} {self._print(rhs)};"


class CheckPrinter(CPrinter):
    """C text of the size formulas the CPython fast path evaluates (``symconv_fast.c``).

    Sizes and parameters are the C locals ``v_<name>`` (bare names such as ``I``
    clash with C macros); division and remainder round like Python's ``//`` and
    ``%``, whose results the Python checks see, by the helpers ``floordiv`` and
    ``floormod`` of the extension.

    >>> import sympy as sp
    >>> from derive.indexing import FloorDiv, isym
    >>> H, s = isym("H"), isym("stride")
    >>> CheckPrinter().doprint(FloorDiv(H - 5, s) + 1)
    'floordiv(v_H - 5, v_stride) + 1'
    >>> CheckPrinter().doprint(sp.Eq(sp.Mod(H, 2), 0))
    'floormod(v_H, 2) == 0'
    """

    def __init__(self):
        super().__init__(F64)

    def _print_Symbol(self, expr):
        return f"v_{expr.name}"

    def _print_FloorDiv(self, expr):
        a, b = (self._print(x) for x in expr.args)
        return f"floordiv({a}, {b})"

    def _print_Mod(self, expr):
        a, b = (self._print(x) for x in expr.args)
        return f"floormod({a}, {b})"


class NumpyPrinter(NumPyPrinter):
    """NumPy printer for vectorized statements (views, einsum, reductions).

    >>> import sympy as sp
    >>> x = sp.Symbol("x", real=True)
    >>> NumpyPrinter().doprint(sp.Piecewise((x, x > 0), (0, True)))
    'numpy.where(x > 0, x, 0)'
    >>> NumpyPrinter().doprint(sp.besselj(0, x))
    Traceback (most recent call last):
    ...
    codegen.printers.UnsupportedNode: NumpyPrinter cannot print SymPy node besselj: besselj(0, x)
    """

    _kf = {**NumPyPrinter._kf, "exp": "numpy.exp", "log": "numpy.log", "tanh": "numpy.tanh"}

    def __init__(self):
        super().__init__({"fully_qualified_modules": True})

    def _print(self, expr, **kwargs):
        extra = (N.View, N.Span, N.Arange, N.Align, N.Einsum, N.Reduce, CeilDiv, FloorDiv)
        _check_supported(self, expr, extra + (N.Scatter, N.Clip, Floor, IsNaN))
        return super()._print(expr, **kwargs)

    def _print_IsNaN(self, expr):
        return f"numpy.isnan({self._print(expr.args[0])})"

    def _print_Floor(self, expr):
        return f"numpy.floor({self._print(expr.args[0])})"

    def _print_Clip(self, expr):
        return f"numpy.clip({', '.join(self._print(a) for a in expr.args)}).astype(numpy.int64)"

    def _print_And(self, expr):
        # element-wise on arrays of broadcastable shapes (logical_and.reduce stacks them);
        # sorted: the order of And's arguments is not stable from run to run
        return " & ".join(f"({self._print(a)})" for a in sorted(expr.args, key=sp.default_sort_key))

    def _minmax(self, expr, fn, builtin):
        args = [self._print(a) for a in expr.args]
        if all(a.is_integer for a in expr.args):
            return f"{builtin}({', '.join(args)})"
        out = args[0]
        for a in args[1:]:
            out = f"numpy.{fn}({out}, {a})"
        return out

    def _print_Max(self, expr):
        return self._minmax(expr, "maximum", "max")

    def _print_Min(self, expr):
        return self._minmax(expr, "minimum", "min")

    def _print_Piecewise(self, expr):
        (value, cond), (other, true) = expr.args
        if true is not sp.true:
            raise UnsupportedNode(f"{type(self).__name__}: Piecewise needs a final True branch")
        return f"numpy.where({self._print(cond)}, {self._print(value)}, {self._print(other)})"

    def _print_Relational(self, expr):
        lhs, rhs = (self.parenthesize(a, 50) for a in expr.args)
        return f"{lhs} {expr.rel_op} {rhs}"

    _print_Equality = _print_Relational
    _print_StrictGreaterThan = _print_Relational
    _print_StrictLessThan = _print_Relational

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Pow(self, expr, rational=False):
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, 100)}"
        return super()._print_Pow(expr, rational=rational)

    def _print_CeilDiv(self, expr):
        a, b = (self._print(x) for x in expr.args)
        return f"-(-({a}) // ({b}))"

    def _print_Mod(self, expr):
        a, b = (self.parenthesize(x, 100) for x in expr.args)
        return f"{a} % {b}"

    def _print_FloorDiv(self, expr):
        a, b = (self._print(x) for x in expr.args)
        return f"({a}) // ({b})"

    def _print_View(self, expr):
        label, *entries = expr.args
        return f"{self._print(label)}[{', '.join(self._entry(e) for e in entries)}]"

    def _entry(self, e):
        if isinstance(e, N.Span):
            start, stop, step = e.args
            if start == 0 and step == 1 and isinstance(e.args[1], sp.Symbol):
                return ":"
            text = f"{self._print(start)}:{self._print(stop)}"
            return text if step == 1 else f"{text}:{self._print(step)}"
        return self._print(e)

    def _print_Arange(self, expr):
        lo, hi = (self._print(a) for a in expr.args)
        return f"numpy.arange({lo}, {hi})"

    def _print_Align(self, expr):
        inner, have, want = expr.args
        have, want = list(have), list(want)
        kept = [v for v in want if v in have]
        atomic = isinstance(inner, N.View | N.Arange | sp.Symbol)
        text = self._print(inner) if atomic else f"({self._print(inner)})"
        if kept != have:
            text += f".transpose({', '.join(str(have.index(v)) for v in kept)})"
        if len(kept) == len(want):
            return text
        return f"{text}[{', '.join(':' if v in have else 'None' for v in want)}]"

    def _print_Einsum(self, expr):
        subs, *ops = expr.args
        operands = ", ".join(self._print(o) for o in ops)
        return f"numpy.einsum({str(subs)!r}, {operands}, optimize=True)"

    def _print_Reduce(self, expr):
        inner, op, axes = expr.args
        axis = ", ".join(str(a) for a in axes)
        return f"numpy.{op}({self._print(inner)}, axis=({axis},))"

    # --- statements -------------------------------------------------------------------

    def block(self, nodes, indent: int = 1) -> list[str]:
        """Python lines of lowered statements."""
        pad = "    " * indent
        lines = []
        for node in nodes:
            if isinstance(node, ir.Loop):
                lo, hi = self._print(node.lo), self._print(node.hi)
                rng = f"range({hi})" if node.lo == 0 else f"range({lo}, {hi})"
                lines.append(f"{pad}for {self._print(node.var)} in {rng}:")
                lines += self.block(node.body, indent + 1)
            elif isinstance(node, ir.Let):
                lines.append(f"{pad}{self._print(node.var)} = {self._print(node.value)}")
            elif isinstance(node, ir.Update):
                lines.append(f"{pad}{self.update(node)}")
            else:
                raise UnsupportedNode(f"NumpyPrinter cannot print statement {type(node).__name__}")
        return lines

    def update(self, node: ir.Update) -> str:
        if isinstance(node.lhs, N.Scatter):  # repeated indices each add (unlike a[idx] += v)
            label, *index = (self._print(a) for a in node.lhs.args)
            return f"numpy.add.at({label}, ({', '.join(index)}), {self._print(node.rhs)})"
        lhs, rhs = self._print(node.lhs), self._print(node.rhs)
        if node.op in ("max=", "min="):
            fn = "maximum" if node.op == "max=" else "minimum"
            return f"{lhs} = numpy.{fn}({lhs}, {rhs})"
        return f"{lhs} {node.op} {rhs}"
