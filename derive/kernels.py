"""The kernel table: every layer kernel as a declarative, checked SymPy spec.

A :class:`KernelSpec` says *what* a kernel computes, never *how*: its arrays
(with symbolic index shapes), its scalar parameters, its index ranges and an
ordered list of loop :class:`Nest` s whose statements are SymPy ``Indexed``
assignments, e.g. the forward convolution (cross-correlation, the lecture's
rewrite)::

    y[n, k, i, j] = b[k]
    y[n, k, i, j] += x[n, c, i*s + u - p, j*s + v - p] * w[k, c, u, v]   (if table[k, c])

Reads outside an array (the zero padding) contribute nothing: a nest marked
``clip`` restricts its loops to the in-bounds part. ``codegen`` lowers these
specs to NumPy and C; tests evaluate them directly as the definition
(:func:`evaluate`). :func:`load_table` validates every spec and rejects an
inconsistent one with a message naming the kernel.

Examples
--------
>>> table = load_table()
>>> table["conv2d_forward"].derivation
'layer.conv_forward'
>>> [a.name for a in table["conv2d_forward"].inputs]
['x', 'w', 'b', 'table']
>>> print(table["conv2d_forward"].nests[1].body[0])
y[n, k, i, j] += w[k, c, u, v]*x[n, c, i*stride - padding + u, j*stride - padding + v]
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from derive import core

FLOAT, INT64, MASK = "float", "int64", "mask"
IN, OUT, TMP = "in", "out", "tmp"
OPS = ("=", "+=", "max=", "min=")


class KernelSpecError(ValueError):
    """An inconsistent kernel spec; the message starts with the kernel name."""


def size_expr(x) -> sp.Expr:
    """A range bound: a size name (``"Ho"``) becomes :func:`isym`, numbers stay numbers.

    Names are never parsed by ``sympify`` (``"E"``, ``"I"``, ``"S"``, ``"N"`` mean
    other things to SymPy).

    >>> size_expr("E").is_integer, size_expr(2)
    (True, 2)
    """
    return isym(x) if isinstance(x, str) else sp.sympify(x)


def isym(name: str) -> sp.Symbol:
    """An integer, non-negative symbol (indices, sizes, stride, padding)."""
    return sp.Symbol(name, integer=True, nonnegative=True)


def fsym(name: str) -> sp.Symbol:
    """A real symbol (float parameters such as A, S, beta, j)."""
    return sp.Symbol(name, real=True)


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


@dataclass(frozen=True)
class Array:
    """An array argument, output or scratch buffer of a kernel.

    ``dims`` names the size of each axis (symbols of the kernel). ``kind`` is
    ``float`` (the call's float dtype), ``int64`` or ``mask`` (0/1 per entry).
    ``flat`` arrays accept any shape and are processed as a flat vector of
    ``dims[0]`` elements (element-wise kernels). ``bounds`` gives an exclusive
    upper bound for the values of an int64 input (labels < O). ``window`` names
    the sizes ``(H, W, size)`` of an argmax input: each value must be a flat
    position ``h*W + w`` inside the ``size x size`` window of its output element.
    """

    name: str
    dims: tuple[str, ...]
    kind: str = FLOAT
    role: str = IN
    optional: bool = False
    flat: bool = False
    bounds: str | None = None
    window: tuple[str, ...] = ()

    @property
    def base(self) -> sp.IndexedBase:
        return sp.IndexedBase(self.name)


@dataclass(frozen=True)
class Param:
    """A scalar argument: ``int`` (with a minimum), ``float``, or ``hw`` (a pair of sizes)."""

    name: str
    kind: str
    default: object = None
    minimum: int | None = None
    dims: tuple[str, ...] = ()

    @property
    def symbol(self) -> sp.Symbol:
        return isym(self.name) if self.kind == "int" else fsym(self.name)


@dataclass(frozen=True)
class Stmt:
    """``lhs op rhs`` with ``op`` one of ``=``, ``+=``, ``max=``, ``min=``."""

    lhs: sp.Indexed
    op: str
    rhs: sp.Expr

    def __str__(self):
        return f"{sp.sstr(self.lhs)} {self.op} {sp.sstr(self.rhs)}"


@dataclass(frozen=True)
class Nest:
    """Statements executed at every point of the loops ``loops`` (outer first).

    ``taps`` are the few small loops (kernel taps) NumPy iterates in Python;
    every other loop is vectorized. ``cond`` (a mask entry) guards the body.
    ``clip`` restricts affine accesses to the array bounds (zero padding).
    """

    loops: tuple[str, ...]
    body: tuple[Stmt, ...]
    taps: tuple[str, ...] = ()
    cond: sp.Indexed | None = None
    clip: bool = False


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of the table. See the module docstring."""

    name: str
    derivation: str
    doc: str
    arrays: tuple[Array, ...]
    params: tuple[Param, ...]
    signature: tuple[str, ...]
    returns: tuple[str, ...]
    ranges: tuple[tuple[str, object, object], ...]
    nests: tuple[Nest, ...]
    derived: tuple[tuple[str, object], ...] = ()
    constraints: tuple[tuple[object, str], ...] = ()
    symbols: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def inputs(self) -> tuple[Array, ...]:
        return tuple(a for a in self.arrays if a.role == IN)

    @property
    def outputs(self) -> tuple[Array, ...]:
        return tuple(a for a in self.arrays if a.role == OUT)

    def array(self, name: str) -> Array:
        return next(a for a in self.arrays if a.name == name)

    def dim_names(self) -> tuple[str, ...]:
        """Every size symbol, in order of first appearance (arrays, hw params, derived)."""
        names = [d for a in self.arrays for d in a.dims]
        names += [d for p in self.params for d in p.dims] + [n for n, _ in self.derived]
        return tuple(dict.fromkeys(names))

    def range_of(self, index: str) -> tuple[sp.Expr, sp.Expr]:
        lo, hi = next((lo, hi) for n, lo, hi in self.ranges if n == index)
        return size_expr(lo), size_expr(hi)

    def text(self) -> str:
        """Canonical text of the spec (hashed into the generated headers)."""
        lines = [f"kernel {self.name} ({self.derivation})"]
        lines += [f"array {a}" for a in self.arrays] + [f"param {p}" for p in self.params]
        lines += [f"range {n} in [{sp.sstr(lo)}, {sp.sstr(hi)})" for n, lo, hi in self.ranges]
        lines += [f"derived {n} = {sp.sstr(f)}" for n, f in self.derived]
        lines += [f"require {sp.sstr(c)}" for c, _ in self.constraints]
        for nest in self.nests:
            lines.append(f"nest {nest.loops} taps={nest.taps} cond={nest.cond} clip={nest.clip}")
            lines += [f"  {s}" for s in nest.body]
        return "\n".join(lines)

    def sha256(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


# --- builders ----------------------------------------------------------------------

_I = {name: isym(name) for name in "n k c i j u v h r o p e".split()}


def _ix(*names):
    return tuple(_I[x] for x in names)


def _A(name):
    return sp.IndexedBase(name)


STRIDE = Param("stride", "int", 1, 1)
PADDING = Param("padding", "int", 0, 0)


def _conv_common():
    s, p = isym("stride"), isym("padding")
    n, k, c, i, j, u, v = _ix("n", "k", "c", "i", "j", "u", "v")
    ranges = (
        ("n", 0, "N"),
        ("k", 0, "K"),
        ("c", 0, "C"),
        ("i", 0, "Ho"),
        ("j", 0, "Wo"),
        ("u", 0, "KH"),
        ("v", 0, "KW"),
        ("h", 0, "H"),
        ("r", 0, "W"),
    )
    H, W, KH, KW = (isym(x) for x in ("H", "W", "KH", "KW"))
    derived = (
        ("Ho", FloorDiv(H + 2 * p - KH, s) + 1),
        ("Wo", FloorDiv(W + 2 * p - KW, s) + 1),
    )
    constraints = (
        (sp.Ge(H + 2 * p, KH), "kernel height KH exceeds padded input height H + 2*padding"),
        (sp.Ge(W + 2 * p, KW), "kernel width KW exceeds padded input width W + 2*padding"),
    )
    xs = _A("x")[n, c, i * s + u - p, j * s + v - p]
    table = Array("table", ("K", "C"), MASK, optional=True)
    return (n, k, c, i, j, u, v), xs, ranges, derived, constraints, table


def _conv_specs():
    (n, k, c, i, j, u, v), xs, ranges, derived, constraints, table = _conv_common()
    h, w_ = _ix("h", "r")
    x4 = Array("x", ("N", "C", "H", "W"))
    w4 = Array("w", ("K", "C", "KH", "KW"))
    dy4 = Array("dy", ("N", "K", "Ho", "Wo"))
    y, wb, b, dy, dx, dw = (_A(a) for a in ("y", "w", "b", "dy", "dx", "dw"))
    T = _A("table")[k, c]
    s, p = isym("stride"), isym("padding")
    common = dict(ranges=ranges, derived=derived, constraints=constraints)
    yield KernelSpec(
        "conv2d_forward",
        "layer.conv_forward",
        "Cross-correlation of x with w (stride, zero padding, optional connection table) plus b.",
        (x4, w4, Array("b", ("K",)), table, Array("y", ("N", "K", "Ho", "Wo"), role=OUT)),
        (STRIDE, PADDING),
        ("x", "w", "b", "stride", "padding", "table"),
        ("y",),
        nests=(
            Nest(_names(n, k, i, j), (Stmt(y[n, k, i, j], "=", b[k]),)),
            Nest(
                _names(n, k, c, u, v, i, j),
                (Stmt(y[n, k, i, j], "+=", xs * wb[k, c, u, v]),),
                taps=("u", "v"),
                cond=T,
                clip=True,
            ),
        ),
        **common,
    )
    yield KernelSpec(
        "conv2d_backward_data",
        "backprop.case2",
        "dJ/dx: the full convolution of dy with w (transpose of the forward map).",
        (dy4, w4, table, Array("dx", ("N", "C", "H", "W"), role=OUT)),
        (STRIDE, PADDING, Param("input_hw", "hw", dims=("H", "W"))),
        ("dy", "w", "input_hw", "stride", "padding", "table"),
        ("dx",),
        nests=(
            Nest(_names(n, c, h, w_), (Stmt(dx[n, c, h, w_], "=", sp.Integer(0)),)),
            Nest(
                _names(n, c, k, u, v, i, j),
                (
                    Stmt(
                        dx[n, c, i * s + u - p, j * s + v - p],
                        "+=",
                        dy[n, k, i, j] * wb[k, c, u, v],
                    ),
                ),
                taps=("u", "v"),
                cond=T,
                clip=True,
            ),
        ),
        **common,
    )
    yield KernelSpec(
        "conv2d_backward_filter",
        "grad.kernel",
        "dJ/dw: the valid cross-correlation of the input with dy (0 for absent connections).",
        (x4, dy4, table, Array("dw", ("K", "C", "KH", "KW"), role=OUT)),
        (STRIDE, PADDING, Param("kernel_hw", "hw", dims=("KH", "KW"))),
        ("x", "dy", "kernel_hw", "stride", "padding", "table"),
        ("dw",),
        nests=(
            Nest(_names(k, c, u, v), (Stmt(dw[k, c, u, v], "=", sp.Integer(0)),)),
            Nest(
                _names(k, c, u, v, n, i, j),
                (Stmt(dw[k, c, u, v], "+=", dy[n, k, i, j] * xs),),
                taps=("u", "v"),
                cond=T,
                clip=True,
            ),
        ),
        **common,
    )
    db = _A("db")
    yield KernelSpec(
        "conv2d_backward_bias",
        "grad.bias",
        "dJ/db[k] = sum over n, i, j of dy[n, k, i, j].",
        (Array("dy", ("N", "K", "Ho", "Wo")), Array("db", ("K",), role=OUT)),
        (),
        ("dy",),
        ("db",),
        ranges=(("n", 0, "N"), ("k", 0, "K"), ("i", 0, "Ho"), ("j", 0, "Wo")),
        nests=(
            Nest(("k",), (Stmt(db[k], "=", sp.Integer(0)),)),
            Nest(_names(k, n, i, j), (Stmt(db[k], "+=", dy[n, k, i, j]),)),
        ),
    )


def _names(*symbols):
    return tuple(str(x) for x in symbols)


def _pool_specs():
    n, c, i, j, u, v = _ix("n", "c", "i", "j", "u", "v")
    q = isym("size")
    H, W, Ho, Wo = (isym(x) for x in ("H", "W", "Ho", "Wo"))
    x, y, dy, dx, am = (_A(a) for a in ("x", "y", "dy", "dx", "argmax"))
    ranges = (
        ("n", 0, "N"),
        ("c", 0, "C"),
        ("i", 0, "Ho"),
        ("j", 0, "Wo"),
        ("u", 0, "size"),
        ("v", 0, "size"),
        ("h", 0, "H"),
        ("r", 0, "W"),
    )
    divisible = (
        (sp.Eq(sp.Mod(H, q), 0), "input height H must be divisible by size"),
        (sp.Eq(sp.Mod(W, q), 0), "input width W must be divisible by size"),
    )
    derived = (("Ho", FloorDiv(H, q)), ("Wo", FloorDiv(W, q)))
    size = Param("size", "int", 2, 1)
    x4 = Array("x", ("N", "C", "H", "W"))
    win = x[n, c, i * q + u, j * q + v]
    yield KernelSpec(
        "avgpool2d_forward",
        "layer.pool_forward",
        "Mean over non-overlapping size x size windows.",
        (x4, Array("y", ("N", "C", "Ho", "Wo"), role=OUT)),
        (size,),
        ("x", "size"),
        ("y",),
        ranges,
        (
            Nest(_names(n, c, i, j), (Stmt(y[n, c, i, j], "=", sp.Integer(0)),)),
            Nest(
                _names(n, c, u, v, i, j),
                (Stmt(y[n, c, i, j], "+=", win / q**2),),
                taps=("u", "v"),
            ),
        ),
        derived,
        divisible,
    )
    yield KernelSpec(
        "avgpool2d_backward",
        "backprop.case1_mean",
        "The lecture's up(): dx = kron(dy, ones(size, size)) / size**2.",
        (Array("dy", ("N", "C", "Ho", "Wo")), Array("dx", ("N", "C", "H", "W"), role=OUT)),
        (size,),
        ("dy", "size"),
        ("dx",),
        ranges,
        (
            Nest(
                _names(n, c, u, v, i, j),
                (Stmt(dx[n, c, i * q + u, j * q + v], "=", dy[n, c, i, j] / q**2),),
                taps=("u", "v"),
            ),
        ),
        (("H", q * Ho), ("W", q * Wo)),
    )
    flat_pos = (i * q + u) * W + j * q + v
    yield KernelSpec(
        "maxpool2d_forward",
        "backprop.case1_max",
        "Max over non-overlapping windows; argmax = flat index h*W+w (first maximum wins).",
        (
            x4,
            Array("y", ("N", "C", "Ho", "Wo"), role=OUT),
            Array("argmax", ("N", "C", "Ho", "Wo"), INT64, OUT),
        ),
        (size,),
        ("x", "size"),
        ("y", "argmax"),
        ranges,
        (
            Nest(
                _names(n, c, i, j),
                (
                    Stmt(y[n, c, i, j], "=", -sp.oo),
                    Stmt(am[n, c, i, j], "=", (i * q) * W + j * q),
                ),
            ),
            Nest(
                _names(n, c, u, v, i, j),
                (
                    # argmax first: it compares against the running max before the update
                    Stmt(
                        am[n, c, i, j],
                        "=",
                        sp.Piecewise((flat_pos, win > y[n, c, i, j]), (am[n, c, i, j], True)),
                    ),
                    Stmt(y[n, c, i, j], "max=", win),
                ),
                taps=("u", "v"),
            ),
        ),
        derived,
        divisible,
    )
    qd = isym("size")
    yield KernelSpec(
        "maxpool2d_backward",
        "backprop.case1_max",
        "Routes dy[n, c, i, j] to the recorded argmax position of its window.",
        (
            Array("dy", ("N", "C", "Ho", "Wo")),
            Array("argmax", ("N", "C", "Ho", "Wo"), INT64, window=("H", "W", "size")),
            Array("dx", ("N", "C", "H", "W"), role=OUT),
        ),
        (Param("input_hw", "hw", dims=("H", "W")),),
        ("dy", "argmax", "input_hw"),
        ("dx",),
        ranges,
        (
            Nest(
                _names(n, c, u, v, i, j),
                (
                    Stmt(
                        dx[n, c, i * qd + u, j * qd + v],
                        "=",
                        sp.Piecewise((dy[n, c, i, j], sp.Eq(am[n, c, i, j], flat_pos)), (0, True)),
                    ),
                ),
                taps=("u", "v"),
            ),
        ),
        (("size", FloorDiv(H, Ho)),),
        (
            (sp.Eq(H, qd * Ho), "input height H must be a multiple of dy's height"),
            (sp.Eq(W, qd * Wo), "input width W must be the same multiple of dy's width"),
        ),
    )
    coef, bias, z, dz, dcoef, dbias = (_A(a) for a in ("coef", "bias", "z", "dz", "dcoef", "dbias"))
    sub_ranges = tuple((nm, lo, 2 if nm in "uv" else hi) for nm, lo, hi in ranges)
    two = sp.Integer(2)
    w2 = x[n, c, i * two + u, j * two + v]
    even = (
        (sp.Eq(sp.Mod(H, 2), 0), "input height H must be even (2x2 windows)"),
        (sp.Eq(sp.Mod(W, 2), 0), "input width W must be even (2x2 windows)"),
    )
    half = (("Ho", FloorDiv(H, 2)), ("Wo", FloorDiv(W, 2)))
    yield KernelSpec(
        "subsample_forward",
        "layer.pool_forward",
        "LeNet S2/S4: z = coef[c] * (sum of the 2x2 window) + bias[c].",
        (
            x4,
            Array("coef", ("C",)),
            Array("bias", ("C",)),
            Array("z", ("N", "C", "Ho", "Wo"), role=OUT),
        ),
        (),
        ("x", "coef", "bias"),
        ("z",),
        sub_ranges,
        (
            Nest(_names(n, c, i, j), (Stmt(z[n, c, i, j], "=", bias[c]),)),
            Nest(
                _names(n, c, u, v, i, j),
                (Stmt(z[n, c, i, j], "+=", coef[c] * w2),),
                taps=("u", "v"),
            ),
        ),
        half,
        even,
    )
    yield KernelSpec(
        "subsample_backward",
        "backprop.case1_mean",
        "Gradients of subsample_forward: dx = coef up(dz), dcoef = <dz, down(x)>, dbias = sum dz.",
        (
            Array("dz", ("N", "C", "Ho", "Wo")),
            x4,
            Array("coef", ("C",)),
            Array("dx", ("N", "C", "H", "W"), role=OUT),
            Array("dcoef", ("C",), role=OUT),
            Array("dbias", ("C",), role=OUT),
        ),
        (),
        ("dz", "x", "coef"),
        ("dx", "dcoef", "dbias"),
        sub_ranges,
        (
            Nest(
                _names(n, c, u, v, i, j),
                (Stmt(dx[n, c, i * two + u, j * two + v], "=", coef[c] * dz[n, c, i, j]),),
                taps=("u", "v"),
            ),
            Nest(("c",), (Stmt(dcoef[c], "=", sp.Integer(0)), Stmt(dbias[c], "=", sp.Integer(0)))),
            Nest(
                _names(c, n, u, v, i, j),
                (Stmt(dcoef[c], "+=", dz[n, c, i, j] * w2),),
                taps=("u", "v"),
            ),
            Nest(_names(c, n, i, j), (Stmt(dbias[c], "+=", dz[n, c, i, j]),)),
        ),
        half,
        even,
    )


def _elementwise(name, derivation, doc, params, fwd_rhs, bwd_rhs):
    """A forward y = f(z) and backward dz = dy * f'(z) pair over flat arrays."""
    e = _I["e"]
    z, dy = _A("z")[e], _A("dy")[e]
    ranges = (("e", 0, "E"),)
    pnames = tuple(p.name for p in params)
    yield KernelSpec(
        f"{name}_forward",
        derivation,
        doc,
        (Array("z", ("E",), flat=True), Array("y", ("E",), role=OUT, flat=True)),
        params,
        ("z",) + pnames,
        ("y",),
        ranges,
        (Nest(("e",), (Stmt(_A("y")[e], "=", fwd_rhs(z)),)),),
    )
    yield KernelSpec(
        f"{name}_backward",
        derivation,
        f"Gradient of {name}_forward: dz = dy * f'(z).",
        (
            Array("dy", ("E",), flat=True),
            Array("z", ("E",), flat=True),
            Array("dz", ("E",), role=OUT, flat=True),
        ),
        params,
        ("dy", "z") + pnames,
        ("dz",),
        ranges,
        (Nest(("e",), (Stmt(_A("dz")[e], "=", bwd_rhs(dy, z)),)),),
    )


def _activation_specs():
    A, S, beta = fsym("A"), fsym("S"), fsym("beta")
    yield from _elementwise(
        "scaled_tanh",
        "act.scaled_tanh",
        "LeNet's squashing function y = A tanh(S z).",
        (Param("A", "float", 1.7159), Param("S", "float", 2 / 3)),
        lambda z: A * sp.tanh(S * z),
        lambda dy, z: dy * A * S * (1 - sp.tanh(S * z) ** 2),
    )

    # f' = (S/A)(A^2 - f^2) (act.scaled_tanh, step 2): back-propagation through a squashed
    # layer can reuse its output instead of evaluating tanh again (the costliest op there).
    e = _I["e"]
    dy, y = _A("dy")[e], _A("y")[e]
    yield KernelSpec(
        "scaled_tanh_backward_from_output",
        "act.scaled_tanh",
        "Gradient of scaled_tanh_forward from its output y = A tanh(S z): "
        "dz = dy * (S/A) * (A**2 - y**2).",
        (
            Array("dy", ("E",), flat=True),
            Array("y", ("E",), flat=True),
            Array("dz", ("E",), role=OUT, flat=True),
        ),
        (Param("A", "float", 1.7159), Param("S", "float", 2 / 3)),
        ("dy", "y", "A", "S"),
        ("dz",),
        (("e", 0, "E"),),
        (Nest(("e",), (Stmt(_A("dz")[e], "=", dy * S / A * (A**2 - y**2)),)),),
    )

    # 1/(1+exp(-t)) == (1 + tanh(t/2))/2 exactly; the tanh form never overflows.
    def sig(z):
        return (1 + sp.tanh(beta * z / 2)) / 2

    yield from _elementwise(
        "sigmoid",
        "act.sigmoid",
        "Sigmoid with slope beta: y = 1/(1+exp(-beta z)), computed as (1+tanh(beta z/2))/2.",
        (Param("beta", "float", 1.0),),
        sig,
        lambda dy, z: dy * beta * sig(z) * (1 - sig(z)),
    )
    yield from _elementwise(
        "relu",
        "act.relu",
        "Rectifier y = max(z, 0); its gradient passes dy where z > 0.",
        (),
        lambda z: sp.Max(z, 0),
        lambda dy, z: sp.Piecewise((dy, z > 0), (0, True)),
    )


def _dense_specs():
    n, o, i = _I["n"], _I["o"], _I["i"]
    x, w, b, y, dy, dx, dw, db = (_A(a) for a in ("x", "w", "b", "y", "dy", "dx", "dw", "db"))
    cen, dcen = _A("centers"), _A("dcenters")
    ranges = (("n", 0, "N"), ("o", 0, "O"), ("i", 0, "I"))
    x2, w2 = Array("x", ("N", "I")), Array("w", ("O", "I"))
    dy2 = Array("dy", ("N", "O"))
    yield KernelSpec(
        "dense_forward",
        "lenet5.layers",
        "Fully connected layer y = x @ w.T + b.",
        (x2, w2, Array("b", ("O",)), Array("y", ("N", "O"), role=OUT)),
        (),
        ("x", "w", "b"),
        ("y",),
        ranges,
        (
            Nest(("n", "o"), (Stmt(y[n, o], "=", b[o]),)),
            Nest(("n", "o", "i"), (Stmt(y[n, o], "+=", x[n, i] * w[o, i]),)),
        ),
    )
    yield KernelSpec(
        "dense_backward",
        "lenet5.layers",
        "Gradients of dense_forward: dx = dy @ w, dw = dy.T @ x, db = sum_n dy.",
        (
            dy2,
            x2,
            w2,
            Array("dx", ("N", "I"), role=OUT),
            Array("dw", ("O", "I"), role=OUT),
            Array("db", ("O",), role=OUT),
        ),
        (),
        ("dy", "x", "w"),
        ("dx", "dw", "db"),
        ranges,
        (
            Nest(("n", "i"), (Stmt(dx[n, i], "=", sp.Integer(0)),)),
            Nest(("n", "o", "i"), (Stmt(dx[n, i], "+=", dy[n, o] * w[o, i]),)),
            Nest(("o", "i"), (Stmt(dw[o, i], "=", sp.Integer(0)),)),
            Nest(("o", "n", "i"), (Stmt(dw[o, i], "+=", dy[n, o] * x[n, i]),)),
            Nest(("o",), (Stmt(db[o], "=", sp.Integer(0)),)),
            Nest(("o", "n"), (Stmt(db[o], "+=", dy[n, o]),)),
        ),
    )
    cen2 = Array("centers", ("O", "I"))
    diff = x[n, i] - cen[o, i]
    yield KernelSpec(
        "rbf_forward",
        "lenet5.rbf",
        "Euclidean RBF units y[n, o] = sum_i (x[n, i] - centers[o, i])**2.",
        (x2, cen2, Array("y", ("N", "O"), role=OUT)),
        (),
        ("x", "centers"),
        ("y",),
        ranges,
        (
            Nest(("n", "o"), (Stmt(y[n, o], "=", sp.Integer(0)),)),
            Nest(("n", "o", "i"), (Stmt(y[n, o], "+=", diff**2),)),
        ),
    )
    yield KernelSpec(
        "rbf_backward",
        "lenet5.rbf",
        "Gradients of rbf_forward with respect to x and the centers.",
        (
            dy2,
            x2,
            cen2,
            Array("dx", ("N", "I"), role=OUT),
            Array("dcenters", ("O", "I"), role=OUT),
        ),
        (),
        ("dy", "x", "centers"),
        ("dx", "dcenters"),
        ranges,
        (
            Nest(("n", "i"), (Stmt(dx[n, i], "=", sp.Integer(0)),)),
            Nest(("n", "o", "i"), (Stmt(dx[n, i], "+=", 2 * dy[n, o] * diff),)),
            Nest(("o", "i"), (Stmt(dcen[o, i], "=", sp.Integer(0)),)),
            Nest(("o", "n", "i"), (Stmt(dcen[o, i], "+=", -2 * dy[n, o] * diff),)),
        ),
    )


def _loss_specs():
    p, o = _I["p"], _I["o"]
    jj = fsym("j")
    y, t, lab, E, g, m, ssum = (_A(a) for a in ("y", "t", "labels", "E", "g", "m", "ssum"))
    ranges = (("p", 0, "P"), ("o", 0, "O"))
    y2 = Array("y", ("P", "O"))
    labels = Array("labels", ("P",), INT64, bounds="O")
    tmps = (Array("m", ("P",), role=TMP), Array("ssum", ("P",), role=TMP))
    E1, g2 = Array("E", ("P",), role=OUT), Array("g", ("P", "O"), role=OUT)
    jparam = Param("j", "float", 1.0)
    # log(e^-j + sum_i e^-y_i) = -m + log(e^(m-j) + sum_i e^(m-y_i)) with m = min(j, min_i y_i):
    # every exponent is <= 0, so nothing overflows.
    map_prologue = (
        Nest(("p",), (Stmt(m[p], "=", jj),)),
        Nest(("p", "o"), (Stmt(m[p], "min=", y[p, o]),)),
        Nest(("p",), (Stmt(ssum[p], "=", sp.exp(m[p] - jj)),)),
        Nest(("p", "o"), (Stmt(ssum[p], "+=", sp.exp(m[p] - y[p, o])),)),
    )
    yield KernelSpec(
        "map_loss_forward",
        "loss.map",
        "LeNet-5's MAP criterion per sample: y[p, label] + log(exp(-j) + sum_i exp(-y[p, i])).",
        (y2, labels, E1) + tmps,
        (jparam,),
        ("y", "labels", "j"),
        ("E",),
        ranges,
        map_prologue + (Nest(("p",), (Stmt(E[p], "=", y[p, lab[p]] - m[p] + sp.log(ssum[p])),)),),
    )
    yield KernelSpec(
        "map_loss_backward",
        "loss.map",
        "d(sum of MAP losses)/dy = onehot(label) - exp(-y) / (exp(-j) + sum_i exp(-y_i)).",
        (y2, labels, g2) + tmps,
        (jparam,),
        ("y", "labels", "j"),
        ("g",),
        ranges,
        map_prologue
        + (
            Nest(("p", "o"), (Stmt(g[p, o], "=", -sp.exp(m[p] - y[p, o]) / ssum[p]),)),
            Nest(("p",), (Stmt(g[p, lab[p]], "+=", sp.Integer(1)),)),
        ),
    )
    yield KernelSpec(
        "squared_error_forward",
        "loss.squared_error",
        "Per-sample squared error 0.5 * sum_o (t - y)**2.",
        (y2, Array("t", ("P", "O")), E1),
        (),
        ("y", "t"),
        ("E",),
        ranges,
        (
            Nest(("p",), (Stmt(E[p], "=", sp.Integer(0)),)),
            Nest(("p", "o"), (Stmt(E[p], "+=", (t[p, o] - y[p, o]) ** 2 / 2),)),
        ),
    )
    yield KernelSpec(
        "squared_error_backward",
        "loss.squared_error",
        "d(sum of squared errors)/dy = y - t.",
        (y2, Array("t", ("P", "O")), g2),
        (),
        ("y", "t"),
        ("g",),
        ranges,
        (Nest(("p", "o"), (Stmt(g[p, o], "=", y[p, o] - t[p, o]),)),),
    )
    z = _A("logits")
    z2 = Array("logits", ("P", "O"))
    # log sum_i e^(z_i) = m + log sum_i e^(z_i - m) with m = max_i z_i (no overflow).
    xent_prologue = (
        Nest(("p",), (Stmt(m[p], "=", -sp.oo),)),
        Nest(("p", "o"), (Stmt(m[p], "max=", z[p, o]),)),
        Nest(("p",), (Stmt(ssum[p], "=", sp.Integer(0)),)),
        Nest(("p", "o"), (Stmt(ssum[p], "+=", sp.exp(z[p, o] - m[p])),)),
    )
    yield KernelSpec(
        "softmax_xent_forward",
        "loss.softmax_xent",
        "Per-sample softmax cross-entropy -log softmax(logits)[label].",
        (z2, labels, E1) + tmps,
        (),
        ("logits", "labels"),
        ("E",),
        ranges,
        xent_prologue + (Nest(("p",), (Stmt(E[p], "=", m[p] + sp.log(ssum[p]) - z[p, lab[p]]),)),),
    )
    yield KernelSpec(
        "softmax_xent_backward",
        "loss.softmax_xent",
        "d(sum of cross-entropies)/dlogits = softmax(logits) - onehot(label).",
        (z2, labels, g2) + tmps,
        (),
        ("logits", "labels"),
        ("g",),
        ranges,
        xent_prologue
        + (
            Nest(("p", "o"), (Stmt(g[p, o], "=", sp.exp(z[p, o] - m[p]) / ssum[p]),)),
            Nest(("p",), (Stmt(g[p, lab[p]], "+=", sp.Integer(-1)),)),
        ),
    )


def _update_specs():
    """Parameter updates over flat arrays (any parameter shape); the new values are outputs.

    Kernels never write their inputs, so a caller updating in place copies w_new back.
    """
    e = _I["e"]
    w, g, hh, v = (_A(a)[e] for a in ("w", "g", "h", "v"))
    w_new, v_new = _A("w_new"), _A("v_new")
    eta, mu, rate, momentum = (fsym(x) for x in ("eta", "mu", "rate", "momentum"))
    flat = {name: Array(name, ("E",), flat=True) for name in ("w", "g", "h", "v")}
    out = {name: Array(name, ("E",), role=OUT, flat=True) for name in ("w_new", "v_new")}
    ranges = (("e", 0, "E"),)
    yield KernelSpec(
        "sdlm_update",
        "opt.sdlm",
        "Stochastic diagonal Levenberg-Marquardt: w_new = w - eta g / (mu + h).",
        (flat["w"], flat["g"], flat["h"], out["w_new"]),
        (Param("eta", "float"), Param("mu", "float")),
        ("w", "g", "h", "eta", "mu"),
        ("w_new",),
        ranges,
        (Nest(("e",), (Stmt(w_new[e], "=", w - eta * g / (mu + hh)),)),),
    )
    yield KernelSpec(
        "sgd_momentum_update",
        "opt.sgd_momentum",
        "SGD with momentum: v_new = momentum v - rate g, w_new = w + v_new.",
        (flat["w"], flat["v"], flat["g"], out["w_new"], out["v_new"]),
        (Param("rate", "float"), Param("momentum", "float")),
        ("w", "v", "g", "rate", "momentum"),
        ("w_new", "v_new"),
        ranges,
        (
            Nest(
                ("e",),
                (
                    Stmt(v_new[e], "=", momentum * v - rate * g),
                    Stmt(w_new[e], "=", w + v_new[e]),
                ),
            ),
        ),
    )


def kernel_specs() -> tuple[KernelSpec, ...]:
    """Every kernel of the API contract, in a stable order (unvalidated)."""
    return (
        *_conv_specs(),
        *_pool_specs(),
        *_activation_specs(),
        *_dense_specs(),
        *_loss_specs(),
        *_update_specs(),
    )


# --- validation ------------------------------------------------------------------------


def load_table(specs=None, known_ids=None) -> dict[str, KernelSpec]:
    """Validate ``specs`` (default: :func:`kernel_specs`) and index them by name.

    Parameters
    ----------
    specs
        Kernel specs to validate.
    known_ids
        Derivation ids a spec may cite (default: the derive registry).

    Raises
    ------
    KernelSpecError
        On any inconsistency; the message names the kernel.

    Examples
    --------
    >>> len(load_table())
    29
    """
    specs = kernel_specs() if specs is None else tuple(specs)
    known = set(core.ids() if known_ids is None else known_ids)
    table: dict[str, KernelSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise KernelSpecError(f"{spec.name}: duplicate kernel name")
        validate(spec, known)
        table[spec.name] = spec
    return table


def validate(spec: KernelSpec, known_ids) -> None:
    """Raise :class:`KernelSpecError` naming ``spec`` when it is inconsistent."""

    def fail(msg):
        raise KernelSpecError(f"{spec.name}: {msg}")

    if spec.derivation not in known_ids:
        fail(f"unknown derivation id {spec.derivation!r}")
    names = [a.name for a in spec.arrays] + [p.name for p in spec.params]
    if len(set(names)) != len(names):
        fail(f"duplicate argument names in {names}")
    args = {a.name for a in spec.inputs} | {p.name for p in spec.params}
    if set(spec.signature) != args:
        fail(f"signature {spec.signature} must list exactly the inputs and params {sorted(args)}")
    if not spec.returns or not set(spec.returns) <= {a.name for a in spec.outputs}:
        fail(f"returns {spec.returns} must be outputs")
    dims = set(spec.dim_names())
    params = {p.name for p in spec.params}
    indices = {n for n, _, _ in spec.ranges}
    clash = indices & (dims | params | {a.name for a in spec.arrays})
    if clash:
        fail(f"index names clash with sizes, params or arrays: {sorted(clash)}")
    scalars = dims | params
    for n, lo, hi in spec.ranges:
        _check_free(fail, f"range of {n}", size_expr(lo) + size_expr(hi), scalars)
    for n, f in spec.derived:
        _check_free(fail, f"derived size {n}", f, scalars)
    for c, _ in spec.constraints:
        _check_free(fail, "constraint", c, scalars)
    written = set()
    for nest in spec.nests:
        for stmt in nest.body:
            target = str(stmt.lhs.base)
            if stmt.op not in OPS:
                fail(f"statement {stmt}: unknown op {stmt.op!r}; use {OPS}")
            if target in {a.name for a in spec.inputs}:
                fail(f"statement {stmt}: writes the input {target}")
            if target not in written and stmt.op != "=" and target in {a.name for a in spec.arrays}:
                fail(f"statement {stmt} accumulates into {target} before initializing it (=)")
        written |= _check_nest(spec, nest, fail, indices, scalars)
    unwritten = {a.name for a in spec.arrays if a.role != IN} - written
    if unwritten:
        fail(f"outputs never written: {sorted(unwritten)}")


def _check_free(fail, where, expr, allowed):
    free = sp.sympify(expr).free_symbols
    unknown = {str(x) for x in free if type(x) is sp.Symbol} - set(allowed)
    if unknown:
        fail(f"{where} uses unknown symbols {sorted(unknown)}")


def _check_nest(spec, nest, fail, indices, scalars):
    arrays = {a.name: a for a in spec.arrays}
    if set(nest.loops) - indices:
        fail(f"loop over undeclared indices {sorted(set(nest.loops) - indices)}")
    if len(set(nest.loops)) != len(nest.loops) or not set(nest.taps) <= set(nest.loops):
        fail(f"nest {nest.loops}: repeated loops or taps {nest.taps} not among them")
    allowed = set(nest.loops) | scalars | set(arrays)  # array labels are symbols too
    exprs = [(s.lhs, s.rhs) for s in nest.body]
    if nest.cond is not None:
        if arrays.get(str(nest.cond.base)) is None or arrays[str(nest.cond.base)].kind != MASK:
            fail(f"condition {nest.cond} must read a declared mask array")
        if any(s.op != "+=" for s in nest.body):
            fail("a conditional nest may only accumulate (+=)")
        exprs.append((nest.cond, sp.Integer(0)))
    written = set()
    for lhs, rhs in exprs:
        for acc in sp.Tuple(lhs, rhs).atoms(sp.Indexed):
            _check_access(spec, acc, arrays, fail, nest)
        _check_free(fail, f"statement {lhs}", sp.Tuple(lhs, rhs), allowed)
        written.add(str(lhs.base))
    for stmt in nest.body:
        missing = set(nest.loops) - {
            str(x) for x in (stmt.lhs.free_symbols | stmt.rhs.free_symbols)
        }
        if missing:
            fail(f"statement {stmt}: loops {sorted(missing)} do not appear in it")
    return written


def _check_access(spec, acc, arrays, fail, nest):
    name = str(acc.base)
    if name not in arrays:
        fail(f"access {acc} to undeclared array {name!r}")
    arr = arrays[name]
    if len(acc.indices) != len(arr.dims):
        fail(f"access {acc}: {name} has rank {len(arr.dims)}")
    for axis, (index, dim) in enumerate(zip(acc.indices, arr.dims, strict=True)):
        if index.is_Symbol and str(index) in nest.loops:
            lo, hi = spec.range_of(str(index))
            if lo != 0 or hi != isym(dim):
                fail(
                    f"access {acc}: index {index} ranges over [{lo}, {hi}) "
                    f"but axis {axis} of {name} has size {dim}"
                )


def by_derivation(table: dict[str, KernelSpec]) -> dict[str, list[str]]:
    """Kernel names grouped by the derivation id they implement."""
    out: dict[str, list[str]] = {}
    for spec in table.values():
        out.setdefault(spec.derivation, []).append(spec.name)
    return out


# --- the definition, evaluated directly ---------------------------------------------------


def evaluate(spec: KernelSpec, args: dict, sizes: dict | None = None) -> dict:
    """Evaluate ``spec`` point by point from its SymPy statements (the definition).

    Slow and exact-minded: meant for tests on small shapes. ``args`` maps the
    signature names to values (nested lists / numpy arrays / scalars; ``hw``
    params as pairs); missing params take their defaults. Reads outside an
    array count as 0 (zero padding). Returns the outputs as nested dicts of
    flat index -> value (use :func:`to_nested`).

    Examples
    --------
    >>> spec = load_table()["conv2d_forward"]
    >>> out = evaluate(spec, {"x": [[[[1, 2], [3, 4]]]], "w": [[[[1]]]], "b": [10]})
    >>> to_nested(out["y"], out["_shape"]["y"])
    [[[[11, 12], [13, 14]]]]
    """
    env, values = _bind(spec, args, sizes or {})
    shapes = {a.name: tuple(int(env[isym(d)]) for d in a.dims) for a in spec.arrays}
    store = {a.name: dict(values[a.name]) if a.role == IN else {} for a in spec.arrays}
    for nest in spec.nests:
        ranges = [
            range(*(int(sp.sympify(b).subs(env)) for b in spec.range_of(x))) for x in nest.loops
        ]
        for point in itertools.product(*ranges):
            local = dict(env)
            local.update({isym(x): val for x, val in zip(nest.loops, point, strict=True)})
            if nest.cond is not None and not _read(nest.cond, local, store, shapes):
                continue
            for stmt in nest.body:
                _exec(stmt, local, store, shapes)
    out = {a.name: store[a.name] for a in spec.arrays if a.role == OUT}
    out["_shape"] = shapes
    return out


def _bind(spec, args, sizes):
    env, values = {}, {}
    for p in spec.params:
        val = args.get(p.name, p.default)
        if p.kind == "hw":
            for d, x in zip(p.dims, val, strict=True):
                env[isym(d)] = int(x)
        else:
            env[p.symbol] = sp.nsimplify(val) if p.kind == "float" else int(val)
    for a in spec.inputs:
        val = args.get(a.name)
        if val is None:
            val = np.ones([int(env[isym(d)]) for d in a.dims]) if a.optional else None
        arr = np.asarray(val)
        shape = (arr.size,) if a.flat else arr.shape
        for d, size in zip(a.dims, shape, strict=True):
            env.setdefault(isym(d), int(size))
        values[a.name] = dict(enumerate(arr.reshape(-1).tolist()))
    env.update({isym(k): int(v) for k, v in sizes.items()})
    for name, formula in spec.derived:
        env.setdefault(isym(name), int(sp.sympify(formula).subs(env)))
    return env, values


def _position(acc, env, store, shapes):
    """Flat position of ``acc`` (indices may read other arrays: labels[p]); None if outside."""
    idx = []
    for x in acc.indices:
        x = sp.sympify(x)
        x = sp.sympify(x.xreplace({a: _read(a, env, store, shapes) for a in x.atoms(sp.Indexed)}))
        idx.append(int(x.subs(env)))
    shape = shapes[str(acc.base)]
    if any(not 0 <= x < d for x, d in zip(idx, shape, strict=True)):
        return None
    return int(np.ravel_multi_index(idx, shape)) if idx else 0


def _read(acc, env, store, shapes):
    pos = _position(acc, env, store, shapes)
    return 0 if pos is None else store[str(acc.base)].get(pos, 0)


def _exec(stmt, env, store, shapes):
    pos = _position(stmt.lhs, env, store, shapes)
    if pos is None:
        return
    reads = {a: _read(a, env, store, shapes) for a in stmt.rhs.atoms(sp.Indexed)}
    rhs = sp.sympify(stmt.rhs.xreplace(reads)).subs(env)
    target = store[str(stmt.lhs.base)]
    old = target.get(pos, 0)
    if stmt.op == "=":
        target[pos] = rhs
    elif stmt.op == "+=":
        target[pos] = old + rhs
    else:
        target[pos] = (sp.Max if stmt.op == "max=" else sp.Min)(old, rhs)


def to_nested(values: dict, shape: tuple) -> list:
    """Flat-index dict -> nested lists of ``shape`` (ints where exact, else floats)."""
    flat = [sp.sympify(values.get(i, 0)) for i in range(int(np.prod(shape)))]
    flat = [int(x) if x.is_Integer else float(x) for x in flat]
    return np.array(flat, dtype=object).reshape(shape).tolist()
