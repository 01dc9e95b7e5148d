"""Kernel and bias gradients and the update rule (lecture: 卷积网络的权重计算).

The lecture first differentiates one unshared weight, ``∂J/∂k_ji = δ_j a_i``,
then notes the kernel is shared by every output position: the gradient sums
``δ_j(u,v) a_i(u+m, v+n)`` over positions, i.e. the valid cross-correlation of
``a_i`` with ``δ_j``. The bias gradient sums ``δ_j``. Gradient descent updates
``k ← k − α ∂J/∂k``; for a fully-connected layer ``w_ji ← w_ji − α δ_j a_i`` with
``δ_j = (Σ_k δ_k w_kj) f'(z_j)`` back-propagated from the next layer.

Examples
--------
>>> from derive import core
>>> all(r.ok for r in core.get("grad.bias").verify())
True
"""

from __future__ import annotations

import sympy as sp

from derive.convolution import same, xcorr2d
from derive.core import EXHAUSTIVE, Derivation, Step, derivation
from derive.layers import compact_latex, plane, symbol_array, two_lines
from derive.small_kernels import check_bias_grad, check_kernel_grad, gradients

f = sp.Function("f")
_u = sp.Symbol("u")

#: Stride 1, no padding (the lecture's setting), two input and two output maps.
_LECTURE_CASES = (
    (1, 1, 3, 3, 2, 2, 1, 0),
    (2, 2, 3, 3, 2, 2, 1, 0),
    (2, 2, 4, 4, 3, 3, 1, 0),
    (2, 2, 5, 4, 3, 2, 1, 0),
)


def _unshared_step() -> Step:
    a_i, k_ji, b_j, rest = sp.symbols("a_i k_ji b_j r")
    big_j = sp.Function("J")
    z_j = k_ji * a_i + rest + b_j  # rest: the other inputs' terms, independent of k_ji
    lhs = sp.diff(big_j(z_j), k_ji)
    u = sp.Symbol("u")
    delta_j = sp.Subs(sp.Derivative(big_j(u), u), u, z_j)
    return Step(
        lhs,
        delta_j * a_i,
        "Without weight sharing (the lecture's first step): $\\frac{\\partial J}{\\partial "
        "k_{ji}} = \\frac{\\partial J}{\\partial z_j} \\frac{\\partial z_j}{\\partial k_{ji}}$ $= "
        "\\delta_j a_i$, for $J$ any function of $z_j = k_{ji} a_i + (\\text{other terms}) + b_j$.",
        check=lambda: sp.simplify(lhs.doit() - (delta_j * a_i).doit()) == 0,
        note="sympy.diff of J(z_j) minus δ_j a_i, simplified",
        latex=(
            r"\frac{\partial J}{\partial k_{ji}} = \frac{\partial J}{\partial z_j}"
            r"\frac{\partial z_j}{\partial k_{ji}} = \delta_j a_i"
        ),
    )


@derivation("grad.kernel", r"Kernel gradient: valid cross-correlation of $a_i$ with $\delta_j$")
def _kernel() -> Derivation:
    gr = gradients(1, 1, 3, 3, 2, 2)
    shown, formula = plane(gr.dw, 0, 0), xcorr2d(plane(gr.x, 0), plane(gr.g, 0))
    steps = (
        _unshared_step(),
        Step(
            shown,
            formula,
            "With weight sharing every output position uses $k_{ji}$, so the contributions "
            "$\\delta_j(u,v)\\, a_i(u+m, v+n)$ add up: sympy.diff on a 3×3 map ($a = x$, $\\delta "
            "= g$) with a 2×2 kernel is the valid cross-correlation of $a_i$ with $\\delta_j$.",
            check=lambda: same(shown, formula),
            note="expansion of both sides",
            latex=two_lines(
                r"\frac{\partial J}{\partial k_{ji}} = a_i \star \delta_j",
                compact_latex(shown, keep=2),
            ),
        ),
        Step(
            sp.Symbol("dJ/dk_ji"),
            sp.Symbol("xcorr_valid(a_i, delta_j)"),
            "Every entry, for several sizes with two input and two output maps (cases: input and "
            "output maps, h, w, kh, kw; stride 1, padding 0).",
            method=EXHAUSTIVE,
            check=check_kernel_grad,
            cases=_LECTURE_CASES,
            latex=(
                r"\frac{\partial J}{\partial k_{ji}}(m,n) = \sum_{u,v} \delta_j(u,v)\, "
                r"a_i(u+m, v+n)"
            ),
        ),
    )
    return Derivation(
        "grad.kernel",
        r"Kernel gradient: valid cross-correlation of $a_i$ with $\delta_j$",
        r"卷积网络的权重计算 ("
        r"$k_{ji} \leftarrow k_{ji} - \alpha "
        r"\frac{\partial J}{\partial z_j} \frac{\partial z_j}{\partial k_{ji}}$)",
        steps,
        summary=(
            "The gradient of a shared kernel is the sum, over the output positions that used it, "
            "of $\\delta$ times the input under the kernel: the valid cross-correlation of the "
            "input map with the $\\delta$ map (with stride and padding see grad.small_kernels)."
        ),
    )


@derivation("grad.bias", r"Bias gradient: the sum of $\delta_j$")
def _bias() -> Derivation:
    gr = gradients(1, 1, 3, 3, 2, 2)
    shown = gr.db[0]
    total = sum(plane(gr.g, 0))
    steps = (
        Step(
            shown,
            total,
            "The bias $b_j$ enters every entry of $z_j$ with coefficient 1, so $\\partial "
            "J/\\partial b_j$ is the sum of $\\delta_j$ over the map (one 2×2 output map shown).",
            check=lambda: same(shown, total),
            note="expansion of both sides",
            latex=r"\frac{\partial J}{\partial b_j} = \sum_{u,v} \delta_j(u,v) = "
            + sp.latex(total),
        ),
        Step(
            sp.Symbol("dJ/db_j"),
            sp.Symbol("sum(delta_j)"),
            "For several sizes with two input and two output maps.",
            method=EXHAUSTIVE,
            check=check_bias_grad,
            cases=_LECTURE_CASES,
            latex=r"\frac{\partial J}{\partial b_j} = \sum_{u,v} \delta_j(u,v)",
        ),
    )
    return Derivation(
        "grad.bias",
        r"Bias gradient: the sum of $\delta_j$",
        "卷积网络的权重计算",
        steps,
        summary="One bias per output map, shared by all positions: its gradient sums $\\delta$.",
    )


def _dense_backprop_ok(case) -> bool:
    """Two dense layers: sympy.diff of J = <δ^(l+1), z^(l+1)> w.r.t. w_ji equals the formula."""
    n_in, n_hid, n_out = case
    a, b1, b2, d = (
        sp.Matrix(symbol_array(stem, (n,)).tolist())
        for stem, n in (("a", n_in), ("b", n_hid), ("c", n_out), ("d", n_out))
    )
    w1 = sp.Matrix(symbol_array("w", (n_hid, n_in)).tolist())
    w2 = sp.Matrix(symbol_array("v", (n_out, n_hid)).tolist())
    z = w1 * a + b1
    big_j = (d.T * (w2 * z.applyfunc(f) + b2))[0]
    # f'(z_j): the derivative of f evaluated at z_j (z_j is an expression, not a symbol).
    fprime = z.applyfunc(lambda e: sp.Subs(sp.Derivative(f(_u), _u), _u, e))
    delta = (w2.T * d).multiply_elementwise(fprime)
    grads = sp.Matrix(n_hid, n_in, lambda j, i: sp.diff(big_j, w1[j, i]))
    return same(grads.doit(), (delta * a.T).doit())


@derivation("grad.update", r"Gradient-descent update; dense-layer $\delta$ back-propagation")
def _update() -> Derivation:
    k, alpha = sp.symbols("k alpha")
    big_j = sp.Function("J")
    slope = sp.diff(big_j(k), k)
    after = big_j(k - alpha * slope)
    rate = sp.diff(after, alpha).subs(alpha, 0)
    steps = (
        Step(
            rate,
            -(slope**2),
            "The update $k \\leftarrow k - \\alpha\\, \\partial J/\\partial k$: the loss after the "
            "step, as a function of $\\alpha$, starts with slope $-(\\partial J/\\partial k)^2 "
            "\\le 0$, so a small enough $\\alpha$ never increases $J$.",
            check=lambda: sp.simplify(rate.doit() + (slope**2).doit()) == 0,
            note="d/dα J(k − α J′(k)) at α = 0, simplified",
            latex=(
                r"\left.\frac{d}{d\alpha} J\!\left(k - \alpha \frac{\partial J}{\partial k}"
                r"\right)\right|_{\alpha=0} = -\left(\frac{\partial J}{\partial k}\right)^2"
            ),
        ),
        Step(
            sp.Symbol("dJ/dw_ji"),
            sp.Symbol("(sum_k delta_k w_kj fprime(z_j)) a_i"),
            "The fully-connected update of the slide: $w_{ji} \\leftarrow w_{ji} - \\alpha "
            "\\delta_j a_i$ with $\\delta_j = (\\sum_k \\delta_k w_{kj}) f'(z_j)$; sympy.diff "
            "through two explicit dense layers (cases: inputs, hidden units, outputs).",
            method=EXHAUSTIVE,
            check=_dense_backprop_ok,
            cases=((1, 1, 1), (2, 3, 2), (3, 2, 4)),
            latex=(
                r"w_{ji} \leftarrow w_{ji} - \alpha \left(\sum_{k} \delta_k^{(l+1)} "
                r"w_{kj}^{(l+1)} f'(z_j^{(l)})\right) a_i^{(l-1)}"
            ),
        ),
    )
    return Derivation(
        "grad.update",
        r"Gradient-descent update; dense-layer $\delta$ back-propagation",
        r"卷积网络的权重计算 ($w_{ji} \leftarrow w_{ji} - \alpha \delta_j a_i$)",
        steps,
        summary=(
            "Gradient descent moves every parameter against its gradient, scaled by the learning "
            "rate $\\alpha$; the kernels use $k \\leftarrow k - \\alpha\\, \\partial J/\\partial "
            "k$ with $\\partial J/\\partial k$ from grad.kernel, and the dense layers the slide's "
            "$w_{ji}$ update."
        ),
    )
