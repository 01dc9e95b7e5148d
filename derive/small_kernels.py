"""Convolution gradients by ``sympy.diff`` on explicit small layers.

For concrete small sizes the layer ``S = conv(x, w) + b`` is written out entry
by entry with SymPy symbols (:func:`derive.layers.conv2d_explicit`), the loss is
``J = Σ g·S`` with symbolic upstream gradient ``g = ∂J/∂S``, and ``sympy.diff``
gives ``∂J/∂w``, ``∂J/∂x`` and ``∂J/∂b`` for every entry (:func:`gradients`).
The derivation ``grad.small_kernels`` proves each equal to the structural
formulas the kernels implement:

* kernel gradient: ``∂J/∂w[k,c] = xcorr(pad(x_c, p), dilate(g_k, s))``, cropped to
  ``KH x KW`` (a valid cross-correlation);
* input gradient: ``∂J/∂x_c = Σ_k conv_full(dilate(g_k, s), w[k,c])``, zero-extended
  to the padded size and cropped by ``p`` (a full convolution; equivalently the
  padded dilated ``g`` cross-correlated with the kernel rotated 180°);
* bias gradient: ``∂J/∂b[k] = Σ g_k``.

These explicit expressions are what kernels are specialized from, so they stay
reachable from code: :func:`conv2d_explicit` (re-exported) and :func:`gradients`.

Examples
--------
>>> gr = gradients(1, 1, 3, 3, 2, 2)
>>> gr.dw[0, 0, 0, 0]
g_{0,0,0}*x_{0,0,0} + g_{0,0,1}*x_{0,0,1} + g_{0,1,0}*x_{0,1,0} + g_{0,1,1}*x_{0,1,1}
>>> gr.db[0]
g_{0,0,0} + g_{0,0,1} + g_{0,1,0} + g_{0,1,1}
>>> gr.dx.shape, gr.dw.shape
((1, 3, 3), (1, 1, 2, 2))
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import sympy as sp

from derive.convolution import conv2d, same, xcorr2d
from derive.core import EXHAUSTIVE, Derivation, Step, derivation
from derive.layers import compact_latex, conv2d_explicit, dilate, plane, symbol_array, two_lines

__all__ = [
    "ConvGradients",
    "check_bias_grad",
    "check_input_grad",
    "check_kernel_grad",
    "conv2d_explicit",
    "gradients",
    "input_grad_structural",
    "kernel_grad_structural",
    "DEFAULT_CASES",
    "SWEEP_CASES",
]


@dataclass(frozen=True)
class ConvGradients:
    """The explicit layer and its ``sympy.diff`` gradients (all SymPy ``Array``).

    ``x`` (C,H,W), ``w`` (K,C,KH,KW), ``b`` (K,) symbols; ``S`` (K,Ho,Wo) the
    output expressions; ``g`` (K,Ho,Wo) symbols standing for ∂J/∂S; ``J = Σ g·S``;
    ``dw``, ``dx``, ``db`` the derivatives of ``J`` (same shapes as w, x, b).
    """

    stride: int
    padding: int
    x: sp.Array
    w: sp.Array
    b: sp.Array
    S: sp.Array
    g: sp.Array
    J: sp.Expr
    dw: sp.Array
    dx: sp.Array
    db: sp.Array


def _indices(shape):
    return itertools.product(*map(range, shape))


@functools.lru_cache(maxsize=64, typed=True)  # typed: 2.0 must not hit the cache of 2
def gradients(n_in, n_out, h, w, kh, kw, stride=1, padding=0) -> ConvGradients:
    """``sympy.diff`` of ``J = Σ g·S`` w.r.t. every kernel, input and bias entry.

    Arguments as for :func:`conv2d_explicit` (validated there). Results are
    cached: the arguments are small ints and the result is immutable.

    >>> gradients(1, 1, 2, 2, 2, 2, padding=1).dx[0, 0, 0]
    g_{0,0,0}*w_{0,0,1,1} + g_{0,0,1}*w_{0,0,1,0} + g_{0,1,0}*w_{0,0,0,1} + g_{0,1,1}*w_{0,0,0,0}
    """
    x, wt, b, s = conv2d_explicit(n_in, n_out, h, w, kh, kw, stride, padding)
    g = symbol_array("g", s.shape)
    big_j = sp.Add(*(g[i] * s[i] for i in _indices(s.shape)))

    def diff_all(arr):
        return sp.Array([sp.diff(big_j, arr[i]) for i in _indices(arr.shape)], arr.shape)

    return ConvGradients(
        stride, padding, x, wt, b, s, g, big_j, diff_all(wt), diff_all(x), diff_all(b)
    )


def kernel_grad_structural(x, g, kh, kw, stride, padding) -> list[list[sp.Matrix]]:
    """``dw[k][c] = xcorr(pad(x_c, p), dilate(g_k, s))[:KH, :KW]``.

    The dilated ``g`` spans ``(Ho-1)s+1 <= H+2p-KH+1`` rows, so the valid
    cross-correlation has at least ``KH`` rows; rows past ``KH`` would pair
    ``g`` with input the stride never reached, and are cropped.
    """
    return [
        [
            xcorr2d(plane(x, c), dilate(plane(g, k), stride), 1, padding)[:kh, :kw]
            for c in range(x.shape[0])
        ]
        for k in range(g.shape[0])
    ]


def input_grad_structural(g, wt, h, w, stride, padding) -> list[sp.Matrix]:
    """``dx[c] = crop_p(Σ_k conv_full(dilate(g_k, s), w[k, c]))``.

    The full convolution covers ``(Ho-1)s + KH`` rows of the padded input; the
    rows after it (input the stride never reached) get zero gradient; cropping
    ``p`` from every side drops the padding.
    """
    out = []
    for c in range(wt.shape[1]):
        padded = sp.zeros(h + 2 * padding, w + 2 * padding)
        for k in range(wt.shape[0]):
            full = conv2d(dilate(plane(g, k), stride), plane(wt, k, c))
            padded[: full.rows, : full.cols] += full
        out.append(padded[padding : padding + h, padding : padding + w])
    return out


def check_kernel_grad(case) -> bool:
    gr = gradients(*case)
    expected = kernel_grad_structural(gr.x, gr.g, case[4], case[5], gr.stride, gr.padding)
    return all(
        same(plane(gr.dw, k, c), expected[k][c])
        for k in range(gr.w.shape[0])
        for c in range(gr.w.shape[1])
    )


def check_input_grad(case) -> bool:
    gr = gradients(*case)
    expected = input_grad_structural(gr.g, gr.w, case[2], case[3], gr.stride, gr.padding)
    return all(same(plane(gr.dx, c), expected[c]) for c in range(gr.x.shape[0]))


def check_bias_grad(case) -> bool:
    gr = gradients(*case)
    return all(same(gr.db[k], sum(plane(gr.g, k))) for k in range(gr.b.shape[0]))


#: (n_in, n_out, h, w, kh, kw, stride, padding): the book's set, two channels in and out.
DEFAULT_CASES = (
    (2, 2, 3, 3, 2, 2, 1, 0),
    (2, 2, 4, 4, 3, 3, 1, 1),
    (2, 2, 5, 5, 3, 3, 2, 1),
    (2, 2, 5, 4, 2, 3, 2, 0),
    (2, 2, 4, 5, 2, 2, 2, 1),
)

#: The extended sweep (slow test): every input 3..5 x 3..5, kernel 2 or 3 per axis,
#: stride 1 or 2, padding 0 or 1, two channels in and out.
SWEEP_CASES = tuple(
    (2, 2, h, w, kh, kw, s, p)
    for h, w, kh, kw, s, p in itertools.product(
        (3, 4, 5), (3, 4, 5), (2, 3), (2, 3), (1, 2), (0, 1)
    )
)


@derivation("grad.small_kernels", "Small-kernel convolution gradients by sympy.diff")
def _small_kernels() -> Derivation:
    gr = gradients(1, 1, 3, 3, 2, 2)
    dw_shown = plane(gr.dw, 0, 0)
    dw_formula = xcorr2d(plane(gr.x, 0), plane(gr.g, 0))
    dx_shown = plane(gr.dx, 0)
    dx_formula = conv2d(plane(gr.g, 0), plane(gr.w, 0, 0))
    cases_note = "cases: (n_in, n_out, h, w, kh, kw, stride, padding)"
    steps = (
        Step(
            dw_shown,
            dw_formula,
            "One 3×3 input, one 2×2 kernel: sympy.diff of $J = \\sum g S$ with respect to each "
            "kernel entry is the valid cross-correlation of the input with $g$.",
            check=lambda: same(dw_shown, dw_formula),
            note="expansion of both sides",
            latex=two_lines(
                r"\frac{\partial J}{\partial w} = x \star g", compact_latex(dw_shown, keep=2)
            ),
        ),
        Step(
            dx_shown,
            dx_formula,
            "... and w.r.t. each input entry, the full convolution of g with the kernel.",
            check=lambda: same(dx_shown, dx_formula),
            note="expansion of both sides",
            latex=two_lines(
                r"\frac{\partial J}{\partial x} = (g * w)_{\mathrm{full}}",
                compact_latex(dx_shown, keep=2),
            ),
        ),
        Step(
            sp.Symbol("dJ/dw[k,c]"),
            sp.Symbol("xcorr(pad(x_c,p), dilate(g_k,s))[:KH,:KW]"),
            "Kernel gradient with stride s and padding p, every entry, two channels in and out.",
            method=EXHAUSTIVE,
            check=check_kernel_grad,
            cases=DEFAULT_CASES,
            note=cases_note,
            latex=(
                r"\frac{\partial J}{\partial w_{kc}} = \left(\mathrm{pad}_p(x_c) \star "
                r"\mathrm{dilate}_s(g_k)\right)_{[0,K_H) \times [0,K_W)}"
            ),
        ),
        Step(
            sp.Symbol("dJ/dx[c]"),
            sp.Symbol("crop_p(sum_k conv_full(dilate(g_k,s), w[k,c]))"),
            "Input gradient: the full convolution of the dilated $g$ with the kernel (equal to the "
            "padded dilated $g$ cross-correlated with the kernel rotated 180°, see "
            "backprop.case2), summed over output channels, cropped by the padding.",
            method=EXHAUSTIVE,
            check=check_input_grad,
            cases=DEFAULT_CASES,
            note=cases_note,
            latex=(
                r"\frac{\partial J}{\partial x_c} = \mathrm{crop}_p\left(\sum_k "
                r"\left(\mathrm{dilate}_s(g_k) * w_{kc}\right)_{\mathrm{full}}\right)"
            ),
        ),
        Step(
            sp.Symbol("dJ/db[k]"),
            sp.Symbol("sum(g_k)"),
            "Bias gradient: the sum of $g$ over the output map.",
            method=EXHAUSTIVE,
            check=check_bias_grad,
            cases=DEFAULT_CASES,
            note=cases_note,
            latex=r"\frac{\partial J}{\partial b_k} = \sum_{i,j} g_{k,i,j}",
        ),
    )
    return Derivation(
        "grad.small_kernels",
        "Small-kernel convolution gradients by sympy.diff",
        r"卷积网络的权重计算 ("
        r"$\frac{\partial J}{\partial k} = "
        r"\frac{\partial J}{\partial z} \frac{\partial z}{\partial k}$, "
        r"weight sharing sums over positions)",
        steps,
        summary=(
            "For concrete small layers written entry by entry, sympy.diff of $J = \\sum g S$ ($g = "
            "\\partial J/\\partial S$) with respect to every kernel, input and bias entry equals "
            "the structural formulas the kernels implement, with stride ($g$ dilated) and padding "
            "(input padded / gradient cropped), for two input and two output channels."
        ),
        data={"gradients": gradients, "cases": DEFAULT_CASES},
    )
