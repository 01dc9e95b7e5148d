"""The kernel table: every kernel of the API as a declarative SymPy spec, as data.

Each :class:`~derive.kernelspec.KernelSpec` names its arrays, params, index ranges
and loop nests of ``Indexed`` statements (the schema: :mod:`derive.kernelspec`).
The forward convolution, for example (cross-correlation, the lecture's rewrite)::

    y[n, k, i, j] = b[k]
    y[n, k, i, j] += x[n, c, i*s + u - p, j*s + v - p] * w[k, c, u, v]   (if table[k, c])

A forward kernel names its ``definition``, the function of derive/ its derivation
proves things about, and the concrete ``cases`` on which ``kernel.<name>``
(:mod:`derive.proofs`) proves the spec equal to it; a backward kernel names its
forward kernel and which of its outputs are the gradients of which forward inputs
(:class:`~derive.kernelspec.Vjp`), and is proven equal to the vector-Jacobian
product of that forward spec. ``codegen`` emits only proven kernels; the tests are
driven by this table.

Examples
--------
>>> table = load_table()
>>> table["conv2d_forward"].derivation
'layer.conv_forward'
>>> [a.name for a in table["conv2d_forward"].inputs]
['x', 'w', 'b', 'table']
>>> print(table["conv2d_forward"].nests[1].body[0])  # doctest: +NORMALIZE_WHITESPACE
y[n, k, i, j] += w[k, c, u, v]*x[n, c, dilation*u + i*stride - padding,
                                       dilation*v + j*stride - padding]
>>> table["conv2d_backward_filter"].vjp.grads
(('dw', 'w'),)
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from derive import activations, core, layers, optim, resample
from derive import lenet5 as lenet
from derive.indexing import FloorDiv, IsNaN, fsym, isym
from derive.kernelspec import (
    INT64,
    MASK,
    OUT,
    TMP,
    Array,
    KernelSpec,
    Nest,
    Param,
    Stmt,
    Vjp,
    validate_table,
)

_I = {name: isym(name) for name in "n k c i j u v h r o p e".split()}


def _ix(*names):
    return tuple(_I[x] for x in names)


def _A(name):
    return sp.IndexedBase(name)


def _names(*symbols):
    return tuple(str(x) for x in symbols)


def _entrywise(f, args):
    """The definition of an element-wise kernel: ``f`` applied entry by entry.

    ``args`` names ``f``'s positional arguments: flat arrays are read entry by
    entry, params passed whole; a tuple result gives several outputs.
    """

    def definition(**kw):
        size = max(np.size(kw[a]) for a in args)
        cols = [np.broadcast_to(np.asarray(kw[a], dtype=object).reshape(-1), size) for a in args]
        values = [f(*entry) for entry in zip(*cols, strict=True)]
        if values and isinstance(values[0], tuple):
            return tuple(np.array(col, dtype=object) for col in zip(*values, strict=True))
        return np.array(values, dtype=object)

    definition.__qualname__ = f"entrywise({f.__module__}.{f.__qualname__})"
    return definition


# --- convolution -------------------------------------------------------------------

STRIDE = Param("stride", "int", 1, 1)
PADDING = Param("padding", "int", 0, 0)
DILATION = Param("dilation", "int", 1, 1)

#: The regimes of a convolution proof: stride 1 and 2, padding 0 and 1, dilation 1
#: and 2, with and without a (partial) connection table, non-square inputs and
#: kernels, batch 2, 2 input and 2 output maps.
_CONV_CASES = (
    dict(N=2, C=2, K=2, H=3, W=4, KH=2, KW=3, stride=1, padding=0, dilation=1, table=None),
    dict(
        N=1, C=2, K=2, H=4, W=3, KH=3, KW=2, stride=2, padding=1, dilation=1,
        table=((1, 0), (1, 1)),
    ),
    dict(N=1, C=2, K=2, H=5, W=4, KH=2, KW=2, stride=2, padding=0, dilation=2, table=None),
    dict(
        N=1, C=2, K=2, H=3, W=4, KH=2, KW=2, stride=1, padding=1, dilation=2,
        table=((0, 1), (1, 0)),
    ),
    dict(N=2, C=2, K=2, H=5, W=6, KH=2, KW=3, stride=2, padding=1, dilation=2, table=None),
)  # fmt: skip


def _conv_specs():
    s, p, d = isym("stride"), isym("padding"), isym("dilation")
    n, k, c, i, j, u, v = _ix("n", "k", "c", "i", "j", "u", "v")
    h, w_ = _ix("h", "r")
    H, W, KH, KW = (isym(x) for x in ("H", "W", "KH", "KW"))
    xs = _A("x")[n, c, i * s + u * d - p, j * s + v * d - p]
    x4 = Array("x", ("N", "C", "H", "W"))
    w4 = Array("w", ("K", "C", "KH", "KW"))
    dy4 = Array("dy", ("N", "K", "Ho", "Wo"))
    table = Array("table", ("K", "C"), MASK, optional=True)
    y, wb, b, dy, dx, dw = (_A(a) for a in ("y", "w", "b", "dy", "dx", "dw"))
    T = _A("table")[k, c]
    common = dict(
        ranges=(
            ("n", 0, "N"),
            ("k", 0, "K"),
            ("c", 0, "C"),
            ("i", 0, "Ho"),
            ("j", 0, "Wo"),
            ("u", 0, "KH"),
            ("v", 0, "KW"),
            ("h", 0, "H"),
            ("r", 0, "W"),
        ),
        derived=(
            ("Ho", FloorDiv(H + 2 * p - d * (KH - 1) - 1, s) + 1),
            ("Wo", FloorDiv(W + 2 * p - d * (KW - 1) - 1, s) + 1),
        ),
        constraints=(
            (
                sp.Ge(H + 2 * p, d * (KH - 1) + 1),
                "dilated kernel height dilation*(KH-1)+1 exceeds padded input height H + 2*padding",
            ),
            (
                sp.Ge(W + 2 * p, d * (KW - 1) + 1),
                "dilated kernel width dilation*(KW-1)+1 exceeds padded input width W + 2*padding",
            ),
        ),
    )
    yield KernelSpec(
        name="conv2d_forward",
        derivation="layer.conv_forward",
        doc="Cross-correlation of x with w (stride, zero padding, dilation, optional connection "
        "table) plus b.",
        arrays=(x4, w4, Array("b", ("K",)), table, Array("y", ("N", "K", "Ho", "Wo"), role=OUT)),
        params=(STRIDE, PADDING, DILATION),
        signature=("x", "w", "b", "stride", "padding", "dilation", "table"),
        returns=("y",),
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
        definition=layers.conv2d_layer,
        cases=_CONV_CASES,
        **common,
    )
    yield KernelSpec(
        name="conv2d_backward_data",
        derivation="backprop.case2",
        doc="dJ/dx: the full convolution of dy with w (transpose of the forward map).",
        arrays=(dy4, w4, table, Array("dx", ("N", "C", "H", "W"), role=OUT)),
        params=(STRIDE, PADDING, DILATION, Param("input_hw", "hw", dims=("H", "W"))),
        signature=("dy", "w", "input_hw", "stride", "padding", "dilation", "table"),
        returns=("dx",),
        nests=(
            Nest(_names(n, c, h, w_), (Stmt(dx[n, c, h, w_], "=", sp.Integer(0)),)),
            Nest(
                _names(n, c, k, u, v, i, j),
                (
                    Stmt(
                        dx[n, c, i * s + u * d - p, j * s + v * d - p],
                        "+=",
                        dy[n, k, i, j] * wb[k, c, u, v],
                    ),
                ),
                taps=("u", "v"),
                cond=T,
                clip=True,
            ),
        ),
        vjp=Vjp("conv2d_forward", grads=(("dx", "x"),), cotangent=("dy", "y")),
        **common,
    )
    yield KernelSpec(
        name="conv2d_backward_filter",
        derivation="grad.kernel",
        doc="dJ/dw: the valid cross-correlation of the input with dy (0 for absent connections).",
        arrays=(x4, dy4, table, Array("dw", ("K", "C", "KH", "KW"), role=OUT)),
        params=(STRIDE, PADDING, DILATION, Param("kernel_hw", "hw", dims=("KH", "KW"))),
        signature=("x", "dy", "kernel_hw", "stride", "padding", "dilation", "table"),
        returns=("dw",),
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
        vjp=Vjp("conv2d_forward", grads=(("dw", "w"),), cotangent=("dy", "y")),
        **common,
    )
    db = _A("db")
    yield KernelSpec(
        name="conv2d_backward_bias",
        derivation="grad.bias",
        doc="dJ/db[k] = sum over n, i, j of dy[n, k, i, j].",
        arrays=(Array("dy", ("N", "K", "Ho", "Wo")), Array("db", ("K",), role=OUT)),
        params=(),
        signature=("dy",),
        returns=("db",),
        ranges=(("n", 0, "N"), ("k", 0, "K"), ("i", 0, "Ho"), ("j", 0, "Wo")),
        nests=(
            Nest(("k",), (Stmt(db[k], "=", sp.Integer(0)),)),
            Nest(_names(k, n, i, j), (Stmt(db[k], "+=", dy[n, k, i, j]),)),
        ),
        vjp=Vjp("conv2d_forward", grads=(("db", "b"),), cotangent=("dy", "y")),
    )


# --- pooling and LeNet-5 subsampling ---------------------------------------------------

#: The regimes of a pooling proof: windows that tile the input (stride = size), that
#: overlap (stride 1), that stride past it (stride > size) or do not divide it (floor
#: mode), padding 0 and 1, batch 2 and 2 maps.
_POOL_CASES = (
    dict(N=2, C=2, H=4, W=6, size=2),
    dict(N=1, C=2, H=5, W=4, size=3, stride=2, padding=1),
    dict(N=1, C=1, H=3, W=5, size=2, stride=1, padding=1),
    dict(N=1, C=2, H=5, W=5, size=2, stride=3),
)
#: Max pooling is compared at concrete points: distinct values (the maximum is
#: unique), then ties, where the first maximum in row-major order must win.
_MAX_CASES = tuple({**c, "values": "distinct"} for c in _POOL_CASES) + (
    dict(N=1, C=2, H=4, W=4, size=2, values="ties"),
    dict(N=1, C=1, H=4, W=5, size=3, stride=1, padding=1, values="ties"),
)
_SUBSAMPLE_CASES = (dict(N=2, C=2, H=4, W=6), dict(N=1, C=1, H=2, W=2))


def _pool_specs():
    n, c, i, j, u, v, h, r = _ix("n", "c", "i", "j", "u", "v", "h", "r")
    q, s, p = isym("size"), isym("stride"), isym("padding")
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
    params = (
        Param("size", "int", 2, 1),
        Param("stride", "int", minimum=1, default_from="size"),
        Param("padding", "int", 0, 0),
    )
    out_h, out_w = FloorDiv(H + 2 * p - q, s) + 1, FloorDiv(W + 2 * p - q, s) + 1
    fits = (
        (sp.Ge(H + 2 * p, q), "window size exceeds padded input height H + 2*padding"),
        (sp.Ge(W + 2 * p, q), "window size exceeds padded input width W + 2*padding"),
        (sp.Le(2 * p, q), "padding must be at most size // 2"),
    )
    pool = dict(ranges=ranges, params=params)
    x4, y4 = Array("x", ("N", "C", "H", "W")), Array("y", ("N", "C", "Ho", "Wo"), role=OUT)
    # reads outside x are the padding: clipped away (zeros for the mean, never the max)
    win = x[n, c, i * s + u - p, j * s + v - p]
    yield KernelSpec(
        name="avgpool2d_forward",
        derivation="layer.pool_forward",
        doc="Mean over size x size windows (stride, zero padding counted in the mean).",
        arrays=(x4, y4),
        signature=("x", "size", "stride", "padding"),
        returns=("y",),
        nests=(
            Nest(_names(n, c, i, j), (Stmt(y[n, c, i, j], "=", sp.Integer(0)),)),
            Nest(
                _names(n, c, u, v, i, j),
                (Stmt(y[n, c, i, j], "+=", win / q**2),),
                taps=("u", "v"),
                clip=True,
            ),
        ),
        derived=(("Ho", out_h), ("Wo", out_w)),
        constraints=fits,
        definition=layers.mean_pool_layer,
        cases=_POOL_CASES,
        **pool,
    )
    yield KernelSpec(
        name="avgpool2d_backward",
        derivation="backprop.case1_mean",
        doc="The lecture's up(): each dy spread evenly (1/size**2) over its window.",
        arrays=(Array("dy", ("N", "C", "Ho", "Wo")), Array("dx", ("N", "C", "H", "W"), role=OUT)),
        signature=("dy", "input_hw", "size", "stride", "padding"),
        returns=("dx",),
        nests=(
            Nest(_names(n, c, h, r), (Stmt(dx[n, c, h, r], "=", sp.Integer(0)),)),
            Nest(
                _names(n, c, u, v, i, j),
                (
                    Stmt(
                        dx[n, c, i * s + u - p, j * s + v - p],
                        "+=",
                        dy[n, c, i, j] / q**2,
                    ),
                ),
                taps=("u", "v"),
                clip=True,
            ),
        ),
        constraints=fits
        + (
            (sp.Eq(Ho, out_h), "dy's height must be (H + 2*padding - size) // stride + 1"),
            (sp.Eq(Wo, out_w), "dy's width must be (W + 2*padding - size) // stride + 1"),
        ),
        vjp=Vjp("avgpool2d_forward", grads=(("dx", "x"),), cotangent=("dy", "y")),
        ranges=ranges,
        params=params[:1] + (Param("input_hw", "hw", dims=("H", "W")),) + params[1:],
    )
    pos = (i * s + u - p) * W + j * s + v - p
    unset = sp.Integer(-1)  # the window's first entry is always taken
    yield KernelSpec(
        name="maxpool2d_forward",
        derivation="backprop.case1_max",
        doc="Max over size x size windows (stride, padding never wins); argmax = flat index "
        "h*W+w of the first maximum (a NaN wins and propagates).",
        arrays=(x4, y4, Array("argmax", ("N", "C", "Ho", "Wo"), INT64, OUT)),
        signature=("x", "size", "stride", "padding"),
        returns=("y", "argmax"),
        nests=(
            Nest(
                _names(n, c, i, j),
                (Stmt(y[n, c, i, j], "=", -sp.oo), Stmt(am[n, c, i, j], "=", unset)),
            ),
            Nest(
                _names(n, c, u, v, i, j),
                (
                    # argmax first: it compares against the running max before the update
                    Stmt(
                        am[n, c, i, j],
                        "=",
                        sp.Piecewise(
                            (
                                pos,
                                sp.Or(
                                    win > y[n, c, i, j], IsNaN(win), sp.Eq(am[n, c, i, j], unset)
                                ),
                            ),
                            (am[n, c, i, j], True),
                        ),
                    ),
                    Stmt(y[n, c, i, j], "max=", win),
                ),
                taps=("u", "v"),
                clip=True,
            ),
        ),
        derived=(("Ho", out_h), ("Wo", out_w)),
        constraints=fits,
        definition=layers.max_pool_layer,
        cases=_MAX_CASES,
        **pool,
    )
    flat_in = am[n, c, i, j]
    yield KernelSpec(
        name="maxpool2d_backward",
        derivation="backprop.case1_max",
        doc="Routes dy[n, c, i, j] to the input position argmax[n, c, i, j] = h*W + w "
        "(windows sharing a maximum add their gradients).",
        arrays=(
            Array("dy", ("N", "C", "Ho", "Wo")),
            Array("argmax", ("N", "C", "Ho", "Wo"), INT64, bounds=("H", "W")),
            Array("dx", ("N", "C", "H", "W"), role=OUT),
        ),
        params=(Param("input_hw", "hw", dims=("H", "W")),),
        signature=("dy", "argmax", "input_hw"),
        returns=("dx",),
        ranges=tuple(rng for rng in ranges if rng[0] not in "uv"),
        nests=(
            Nest(_names(n, c, h, r), (Stmt(dx[n, c, h, r], "=", sp.Integer(0)),)),
            Nest(
                _names(n, c, i, j),
                (Stmt(dx[n, c, FloorDiv(flat_in, W), sp.Mod(flat_in, W)], "+=", dy[n, c, i, j]),),
            ),
        ),
        vjp=Vjp(
            "maxpool2d_forward",
            grads=(("dx", "x"),),
            cotangent=("dy", "y"),
            saved=(("argmax", "argmax"),),
        ),
    )
    coef, bias, z, dz, dcoef, dbias = (_A(a) for a in ("coef", "bias", "z", "dz", "dcoef", "dbias"))
    sub_ranges = tuple((nm, lo, 2 if nm in "uv" else hi) for nm, lo, hi in ranges)
    two = sp.Integer(2)
    w2 = x[n, c, i * two + u, j * two + v]
    sub = dict(
        ranges=sub_ranges,
        derived=(("Ho", FloorDiv(H, 2)), ("Wo", FloorDiv(W, 2))),
        constraints=(
            (sp.Eq(sp.Mod(H, 2), 0), "input height H must be even (2x2 windows)"),
            (sp.Eq(sp.Mod(W, 2), 0), "input width W must be even (2x2 windows)"),
        ),
    )
    yield KernelSpec(
        name="subsample_forward",
        derivation="layer.pool_forward",
        doc="LeNet S2/S4: z = coef[c] * (sum of the 2x2 window) + bias[c].",
        arrays=(
            x4,
            Array("coef", ("C",)),
            Array("bias", ("C",)),
            Array("z", ("N", "C", "Ho", "Wo"), role=OUT),
        ),
        params=(),
        signature=("x", "coef", "bias"),
        returns=("z",),
        nests=(
            Nest(_names(n, c, i, j), (Stmt(z[n, c, i, j], "=", bias[c]),)),
            Nest(
                _names(n, c, u, v, i, j),
                (Stmt(z[n, c, i, j], "+=", coef[c] * w2),),
                taps=("u", "v"),
            ),
        ),
        definition=layers.subsample_layer,
        cases=_SUBSAMPLE_CASES,
        **sub,
    )
    yield KernelSpec(
        name="subsample_backward",
        derivation="backprop.case1_mean",
        doc="Gradients of subsample_forward: dx = coef up(dz), dcoef = <dz, down(x)>, "
        "dbias = sum dz.",
        arrays=(
            Array("dz", ("N", "C", "Ho", "Wo")),
            x4,
            Array("coef", ("C",)),
            Array("dx", ("N", "C", "H", "W"), role=OUT),
            Array("dcoef", ("C",), role=OUT),
            Array("dbias", ("C",), role=OUT),
        ),
        params=(),
        signature=("dz", "x", "coef"),
        returns=("dx", "dcoef", "dbias"),
        nests=(
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
        vjp=Vjp(
            "subsample_forward",
            grads=(("dx", "x"), ("dcoef", "coef"), ("dbias", "bias")),
            cotangent=("dz", "z"),
        ),
        **sub,
    )


# --- activations -------------------------------------------------------------------

_ELEMENTWISE_CASES = (dict(E=4),)


def _activation_pair(name, derivation, doc, params, rhs, backward, definition):
    """A forward ``y = rhs(z)`` and its backward ``dz = backward(dy, z) = dy * f'(z)`` over
    flat arrays; ``definition`` is the derivation's function ``f(z, *params)``."""
    e = _I["e"]
    z, dy = _A("z")[e], _A("dy")[e]
    flat = dict(ranges=(("e", 0, "E"),))
    pnames = tuple(p.name for p in params)
    symbols = tuple(p.symbol for p in params)
    yield KernelSpec(
        name=f"{name}_forward",
        derivation=derivation,
        doc=doc,
        arrays=(Array("z", ("E",), flat=True), Array("y", ("E",), role=OUT, flat=True)),
        params=params,
        signature=("z",) + pnames,
        returns=("y",),
        nests=(Nest(("e",), (Stmt(_A("y")[e], "=", rhs(z, *symbols)),)),),
        definition=_entrywise(definition, ("z",) + pnames),
        cases=_ELEMENTWISE_CASES,
        **flat,
    )
    yield KernelSpec(
        name=f"{name}_backward",
        derivation=derivation,
        doc=f"Gradient of {name}_forward: dz = dy * f'(z).",
        arrays=(
            Array("dy", ("E",), flat=True),
            Array("z", ("E",), flat=True),
            Array("dz", ("E",), role=OUT, flat=True),
        ),
        params=params,
        signature=("dy", "z") + pnames,
        returns=("dz",),
        nests=(Nest(("e",), (Stmt(_A("dz")[e], "=", backward(dy, z, *symbols)),)),),
        vjp=Vjp(f"{name}_forward", grads=(("dz", "z"),), cotangent=("dy", "y")),
        **flat,
    )


def _tanh_sigmoid(z, beta):
    # 1/(1+exp(-t)) == (1 + tanh(t/2))/2 exactly; the tanh form never overflows.
    return (1 + sp.tanh(beta * z / 2)) / 2


def _activation_specs():
    squash = (Param("A", "float", 1.7159), Param("S", "float", 2 / 3))
    yield from _activation_pair(
        "scaled_tanh",
        "act.scaled_tanh",
        "LeNet's squashing function y = A tanh(S z).",
        squash,
        activations.scaled_tanh,
        lambda dy, z, A, S: dy * A * S * (1 - sp.tanh(S * z) ** 2),
        activations.scaled_tanh,
    )

    # f' = (S/A)(A^2 - f^2) (act.scaled_tanh, step 2): back-propagation through a squashed
    # layer can reuse its output instead of evaluating tanh again (the costliest op there).
    e = _I["e"]
    dy, y = _A("dy")[e], _A("y")[e]
    A, S = fsym("A"), fsym("S")
    yield KernelSpec(
        name="scaled_tanh_backward_from_output",
        derivation="act.scaled_tanh",
        doc="Gradient of scaled_tanh_forward from its output y = A tanh(S z): "
        "dz = dy * (S/A) * (A**2 - y**2).",
        arrays=(
            Array("dy", ("E",), flat=True),
            Array("y", ("E",), flat=True),
            Array("dz", ("E",), role=OUT, flat=True),
        ),
        params=squash,
        signature=("dy", "y", "A", "S"),
        returns=("dz",),
        ranges=(("e", 0, "E"),),
        nests=(Nest(("e",), (Stmt(_A("dz")[e], "=", dy * S / A * (A**2 - y**2)),)),),
        vjp=Vjp(
            "scaled_tanh_forward",
            grads=(("dz", "z"),),
            cotangent=("dy", "y"),
            saved=(("y", "y"),),
        ),
    )
    yield from _activation_pair(
        "sigmoid",
        "act.sigmoid",
        "Sigmoid with slope beta: y = 1/(1+exp(-beta z)), computed as (1+tanh(beta z/2))/2.",
        (Param("beta", "float", 1.0),),
        _tanh_sigmoid,
        lambda dy, z, beta: dy * beta * _tanh_sigmoid(z, beta) * (1 - _tanh_sigmoid(z, beta)),
        activations.sigmoid,
    )
    yield from _activation_pair(
        "relu",
        "act.relu",
        "Rectifier y = max(z, 0); its gradient passes dy where z > 0.",
        (),
        activations.relu,
        lambda dy, z: sp.Piecewise((dy, z > 0), (0, True)),
        activations.relu,
    )
    yield from _activation_pair(
        "leaky_relu",
        "act.leaky_relu",
        "Leaky rectifier y = z if z > 0 else slope * z (NaN propagates).",
        (Param("slope", "float", 0.01),),
        lambda z, slope: sp.Piecewise((z, z > 0), (slope * z, True)),
        lambda dy, z, slope: sp.Piecewise((dy, z > 0), (slope * dy, True)),
        activations.leaky_relu,
    )


# --- dense layers and the RBF output ---------------------------------------------------

_DENSE_CASES = (dict(N=2, I=3, O=2), dict(N=1, I=1, O=3))


def _dense_specs():
    n, o, i = _I["n"], _I["o"], _I["i"]
    x, w, b, y, dy, dx, dw, db = (_A(a) for a in ("x", "w", "b", "y", "dy", "dx", "dw", "db"))
    cen, dcen = _A("centers"), _A("dcenters")
    ranges = (("n", 0, "N"), ("o", 0, "O"), ("i", 0, "I"))
    x2, w2 = Array("x", ("N", "I")), Array("w", ("O", "I"))
    dy2 = Array("dy", ("N", "O"))
    yield KernelSpec(
        name="dense_forward",
        derivation="lenet5.layers",
        doc="Fully connected layer y = x @ w.T + b.",
        arrays=(x2, w2, Array("b", ("O",)), Array("y", ("N", "O"), role=OUT)),
        params=(),
        signature=("x", "w", "b"),
        returns=("y",),
        ranges=ranges,
        nests=(
            Nest(("n", "o"), (Stmt(y[n, o], "=", b[o]),)),
            Nest(("n", "o", "i"), (Stmt(y[n, o], "+=", x[n, i] * w[o, i]),)),
        ),
        definition=layers.dense_layer,
        cases=_DENSE_CASES,
    )
    yield KernelSpec(
        name="dense_backward",
        derivation="lenet5.layers",
        doc="Gradients of dense_forward: dx = dy @ w, dw = dy.T @ x, db = sum_n dy.",
        arrays=(
            dy2,
            x2,
            w2,
            Array("dx", ("N", "I"), role=OUT),
            Array("dw", ("O", "I"), role=OUT),
            Array("db", ("O",), role=OUT),
        ),
        params=(),
        signature=("dy", "x", "w"),
        returns=("dx", "dw", "db"),
        ranges=ranges,
        nests=(
            Nest(("n", "i"), (Stmt(dx[n, i], "=", sp.Integer(0)),)),
            Nest(("n", "o", "i"), (Stmt(dx[n, i], "+=", dy[n, o] * w[o, i]),)),
            Nest(("o", "i"), (Stmt(dw[o, i], "=", sp.Integer(0)),)),
            Nest(("o", "n", "i"), (Stmt(dw[o, i], "+=", dy[n, o] * x[n, i]),)),
            Nest(("o",), (Stmt(db[o], "=", sp.Integer(0)),)),
            Nest(("o", "n"), (Stmt(db[o], "+=", dy[n, o]),)),
        ),
        vjp=Vjp(
            "dense_forward", grads=(("dx", "x"), ("dw", "w"), ("db", "b")), cotangent=("dy", "y")
        ),
    )
    cen2 = Array("centers", ("O", "I"))
    diff = x[n, i] - cen[o, i]
    yield KernelSpec(
        name="rbf_forward",
        derivation="lenet5.rbf",
        doc="Euclidean RBF units y[n, o] = sum_i (x[n, i] - centers[o, i])**2.",
        arrays=(x2, cen2, Array("y", ("N", "O"), role=OUT)),
        params=(),
        signature=("x", "centers"),
        returns=("y",),
        ranges=ranges,
        nests=(
            Nest(("n", "o"), (Stmt(y[n, o], "=", sp.Integer(0)),)),
            Nest(("n", "o", "i"), (Stmt(y[n, o], "+=", diff**2),)),
        ),
        definition=lenet.rbf_layer,
        cases=_DENSE_CASES,
    )
    yield KernelSpec(
        name="rbf_backward",
        derivation="lenet5.rbf",
        doc="Gradients of rbf_forward with respect to x and the centers.",
        arrays=(
            dy2,
            x2,
            cen2,
            Array("dx", ("N", "I"), role=OUT),
            Array("dcenters", ("O", "I"), role=OUT),
        ),
        params=(),
        signature=("dy", "x", "centers"),
        returns=("dx", "dcenters"),
        ranges=ranges,
        nests=(
            Nest(("n", "i"), (Stmt(dx[n, i], "=", sp.Integer(0)),)),
            Nest(("n", "o", "i"), (Stmt(dx[n, i], "+=", 2 * dy[n, o] * diff),)),
            Nest(("o", "i"), (Stmt(dcen[o, i], "=", sp.Integer(0)),)),
            Nest(("o", "n", "i"), (Stmt(dcen[o, i], "+=", -2 * dy[n, o] * diff),)),
        ),
        vjp=Vjp("rbf_forward", grads=(("dx", "x"), ("dcenters", "centers")), cotangent=("dy", "y")),
    )


# --- losses --------------------------------------------------------------------------

_LOSS_CASES = (dict(P=2, O=3),)


def _per_sample(f, args):
    """The definition of a per-sample loss: ``f(row, label or target row, *params)``,
    its arguments named by ``args``."""

    def definition(**kw):
        rows, other, *params = (kw[a] for a in args)
        pairs = zip(rows, other, strict=True)
        return np.array([f(a, b, *params) for a, b in pairs], dtype=object)

    definition.__qualname__ = f"per_sample({f.__module__}.{f.__qualname__})"
    return definition


def _squared_error(y, t):
    return sum((tk - yk) ** 2 for tk, yk in zip(t, y, strict=True)) / 2


def _loss_specs():
    p, o = _I["p"], _I["o"]
    jj = fsym("j")
    y, t, lab, E, g, m, ssum = (_A(a) for a in ("y", "t", "labels", "E", "g", "m", "ssum"))
    ranges = (("p", 0, "P"), ("o", 0, "O"))
    y2 = Array("y", ("P", "O"))
    labels = Array("labels", ("P",), INT64, bounds=("O",))
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
        name="map_loss_forward",
        derivation="loss.map",
        doc="LeNet-5's MAP criterion per sample: y[p, label] + log(exp(-j) + sum_i exp(-y[p, i])).",
        arrays=(y2, labels, E1) + tmps,
        params=(jparam,),
        signature=("y", "labels", "j"),
        returns=("E",),
        ranges=ranges,
        nests=map_prologue
        + (Nest(("p",), (Stmt(E[p], "=", y[p, lab[p]] - m[p] + sp.log(ssum[p])),)),),
        definition=_per_sample(activations.map_criterion, ("y", "labels", "j")),
        cases=_LOSS_CASES,
    )
    yield KernelSpec(
        name="map_loss_backward",
        derivation="loss.map",
        doc="d(sum of MAP losses)/dy = onehot(label) - exp(-y) / (exp(-j) + sum_i exp(-y_i)).",
        arrays=(y2, labels, g2) + tmps,
        params=(jparam,),
        signature=("y", "labels", "j"),
        returns=("g",),
        ranges=ranges,
        nests=map_prologue
        + (
            Nest(("p", "o"), (Stmt(g[p, o], "=", -sp.exp(m[p] - y[p, o]) / ssum[p]),)),
            Nest(("p",), (Stmt(g[p, lab[p]], "+=", sp.Integer(1)),)),
        ),
        vjp=Vjp("map_loss_forward", grads=(("g", "y"),)),
    )
    yield KernelSpec(
        name="squared_error_forward",
        derivation="loss.squared_error",
        doc="Per-sample squared error 0.5 * sum_o (t - y)**2.",
        arrays=(y2, Array("t", ("P", "O")), E1),
        params=(),
        signature=("y", "t"),
        returns=("E",),
        ranges=ranges,
        nests=(
            Nest(("p",), (Stmt(E[p], "=", sp.Integer(0)),)),
            Nest(("p", "o"), (Stmt(E[p], "+=", (t[p, o] - y[p, o]) ** 2 / 2),)),
        ),
        definition=_per_sample(_squared_error, ("y", "t")),
        cases=_LOSS_CASES,
    )
    yield KernelSpec(
        name="squared_error_backward",
        derivation="loss.squared_error",
        doc="d(sum of squared errors)/dy = y - t.",
        arrays=(y2, Array("t", ("P", "O")), g2),
        params=(),
        signature=("y", "t"),
        returns=("g",),
        ranges=ranges,
        nests=(Nest(("p", "o"), (Stmt(g[p, o], "=", y[p, o] - t[p, o]),)),),
        vjp=Vjp("squared_error_forward", grads=(("g", "y"),)),
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
        name="softmax_xent_forward",
        derivation="loss.softmax_xent",
        doc="Per-sample softmax cross-entropy -log softmax(logits)[label].",
        arrays=(z2, labels, E1) + tmps,
        params=(),
        signature=("logits", "labels"),
        returns=("E",),
        ranges=ranges,
        nests=xent_prologue
        + (Nest(("p",), (Stmt(E[p], "=", m[p] + sp.log(ssum[p]) - z[p, lab[p]]),)),),
        definition=_per_sample(activations.softmax_xent, ("logits", "labels")),
        cases=_LOSS_CASES,
    )
    yield KernelSpec(
        name="softmax_xent_backward",
        derivation="loss.softmax_xent",
        doc="d(sum of cross-entropies)/dlogits = softmax(logits) - onehot(label).",
        arrays=(z2, labels, g2) + tmps,
        params=(),
        signature=("logits", "labels"),
        returns=("g",),
        ranges=ranges,
        nests=xent_prologue
        + (
            Nest(("p", "o"), (Stmt(g[p, o], "=", sp.exp(z[p, o] - m[p]) / ssum[p]),)),
            Nest(("p",), (Stmt(g[p, lab[p]], "+=", sp.Integer(-1)),)),
        ),
        vjp=Vjp("softmax_xent_forward", grads=(("g", "logits"),)),
    )


# --- resampling ---------------------------------------------------------------------------

#: theta per image: scale 1/2 (fractional positions), a shear and a shift (partly outside,
#: negative positions), the identity (pixel centres), a rotation by a quarter turn (reads
#: along columns), a map wholly outside the image.
_RESAMPLE_CASES = (
    dict(N=2, H=3, W=4, theta=((("1/2", 0, "1/3"), ("-1/4", "1/2", "-1/2")),
                               ((1, 0, 0), (0, 1, 0)))),
    dict(N=2, H=2, W=3, theta=(((0, 1, "-1/2"), (-1, 0, "5/2")), ((1, 2, 5), (0, 1, -7)))),
)  # fmt: skip


def _resample_specs():
    n, i, j = _ix("n", "i", "j")
    x, theta, rows, cols = (_A(a) for a in ("x", "theta", "src_r", "src_c"))
    r, c = resample.source([[theta[n, k, m] for m in range(3)] for k in range(2)], i, j)
    pixel = ("N", "H", "W")
    yield KernelSpec(
        name="affine_resample",
        derivation="resample.affine_bilinear",
        doc="Bilinear resampling at the affine source positions theta[n] (i, j, 1), 0 outside "
        "the image: y[n, i, j] = x[n] interpolated at (theta[n, 0] . (i, j, 1), "
        "theta[n, 1] . (i, j, 1)).",
        arrays=(
            Array("x", pixel),
            Array("theta", ("N", "two", "three")),
            Array("y", pixel, role=OUT),
            Array("src_r", pixel, role=TMP),
            Array("src_c", pixel, role=TMP),
        ),
        params=(),
        signature=("x", "theta"),
        returns=("y",),
        ranges=(("n", 0, "N"), ("i", 0, "H"), ("j", 0, "W")),
        derived=(("two", 2), ("three", 3)),
        nests=(
            Nest(("n", "i", "j"), (Stmt(rows[n, i, j], "=", r), Stmt(cols[n, i, j], "=", c))),
            Nest(
                ("n", "i", "j"),
                (
                    Stmt(
                        _A("y")[n, i, j],
                        "=",
                        resample.bilinear_taps(
                            lambda p, q: x[n, p, q], rows[n, i, j], cols[n, i, j]
                        ),
                    ),
                ),
            ),
        ),
        definition=resample.affine_resample,
        cases=_RESAMPLE_CASES,
    )


# --- parameter updates ------------------------------------------------------------------


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
        name="sdlm_update",
        derivation="opt.sdlm",
        doc="Stochastic diagonal Levenberg-Marquardt: w_new = w - eta g / (mu + h).",
        arrays=(flat["w"], flat["g"], flat["h"], out["w_new"]),
        params=(Param("eta", "float"), Param("mu", "float")),
        signature=("w", "g", "h", "eta", "mu"),
        returns=("w_new",),
        ranges=ranges,
        nests=(Nest(("e",), (Stmt(w_new[e], "=", w - eta * g / (mu + hh)),)),),
        definition=_entrywise(optim.sdlm_step, ("w", "eta", "g", "h", "mu")),
        cases=_ELEMENTWISE_CASES,
    )
    yield KernelSpec(
        name="sgd_momentum_update",
        derivation="opt.sgd_momentum",
        doc="SGD with momentum: v_new = momentum v - rate g, w_new = w + v_new.",
        arrays=(flat["w"], flat["v"], flat["g"], out["w_new"], out["v_new"]),
        params=(Param("rate", "float"), Param("momentum", "float")),
        signature=("w", "v", "g", "rate", "momentum"),
        returns=("w_new", "v_new"),
        ranges=ranges,
        nests=(
            Nest(
                ("e",),
                (
                    Stmt(v_new[e], "=", momentum * v - rate * g),
                    Stmt(w_new[e], "=", w + v_new[e]),
                ),
            ),
        ),
        definition=_entrywise(optim.momentum_step, ("w", "v", "g", "rate", "momentum")),
        cases=_ELEMENTWISE_CASES,
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
        *_resample_specs(),
    )


def load_table() -> dict[str, KernelSpec]:
    """The validated kernel table, by kernel name (every cited derivation must exist).

    >>> len(load_table())
    32
    """
    return validate_table(kernel_specs(), core.ids())
