"""Back-propagating δ through a layer (lecture: 情况一 / 情况二).

Case 1: the next layer is a pooling layer. Mean pooling distributes
``β δ_k f'(z_j)`` evenly through ``up(x) = x ⊗ 1_{n×n} / n²``; max pooling routes
it to the recorded maximum. Both keep the sum of the distributed δ equal to δ_k.
Case 2: the next layer is a convolution layer; δ_j is the sum over next-layer
maps K of the full convolution of δ_K with the kernel k_Kj, times f'(z_j).

Every structural formula is proven equal to the chain rule applied by
``sympy.diff`` to explicitly written small layers, for several concrete sizes,
in exact arithmetic; and the lecture's worked tables are reproduced to the
printed digits. The tables are exposed as data (``Derivation.data["example"]``,
in the kernel API's NCHW shapes, nested lists of exact numbers) so the generated
kernels can be run on them.

Examples
--------
>>> from derive import core
>>> ex = core.get("backprop.case2").data["example"]
>>> [str(v) for v in ex["expected"]["dx"][0][0][2]]
['1/2', '3/2', '1']
"""

from __future__ import annotations

import itertools

import sympy as sp

from derive.convolution import conv2d, rot180, same, xcorr2d
from derive.core import EXHAUSTIVE, Derivation, Step, derivation
from derive.layers import (
    conv2d_explicit,
    down_max,
    pad,
    plane,
    route_max,
    symbol_array,
    up_mean,
)

f = sp.Function("f")


def printed(rows) -> sp.Matrix:
    """A table as printed in the lecture (decimal strings) as exact Rationals.

    >>> printed([["0.25", "1"]])
    Matrix([[1/4, 1]])
    """
    return sp.Matrix([[sp.Rational(v) for v in row] for row in rows])


def decimal_latex(m: sp.Matrix) -> str:
    r"""LaTeX of a matrix with terminating fractions written as decimals, as printed.

    >>> print(decimal_latex(sp.Matrix([[sp.Rational(1, 4), 1], [sp.Rational(-3, 10), 2]])))
    \left[\begin{matrix}0.25 & 1\\-0.3 & 2\end{matrix}\right]
    """

    def cell(v) -> str:
        for digits in range(7):
            scaled = v * 10**digits
            if scaled.is_integer:
                sign, mag = (
                    ("-" if scaled < 0 else ""),
                    str(abs(int(scaled))).rjust(digits + 1, "0"),
                )
                return sign + (mag[:-digits] + "." + mag[-digits:] if digits else mag)
        return sp.latex(v)

    rows = [" & ".join(cell(v) for v in m.row(i)) for i in range(m.rows)]
    return r"\left[\begin{matrix}" + r"\\".join(rows) + r"\end{matrix}\right]"


def nested(m) -> list:
    """A Matrix as nested lists of SymPy numbers (the ``data["example"]`` format)."""
    return [list(m.row(i)) for i in range(m.rows)]


def _fprime_plane(z: sp.Matrix) -> sp.Matrix:
    """Element-wise f'(z) as SymPy derivatives."""
    return z.applyfunc(lambda e: sp.Derivative(f(e), e).doit())


def _z_plane(h: int, w: int) -> sp.Matrix:
    return plane(symbol_array("z", (1, h, w)), 0)


def _d_plane(h: int, w: int, stem: str = "d") -> sp.Matrix:
    return plane(symbol_array(stem, (1, h, w)), 0)


# --- case 1: pooling -----------------------------------------------------------


def _pool_scalar_chain_rule() -> Step:
    """δ_j = δ_k (∂z_k/∂a_j) f'(z_j) on one 2x2 mean-pooling window, J arbitrary."""
    zs = sp.symbols("z_1:5")
    beta, bias, big_j = sp.Symbol("beta"), sp.Symbol("b"), sp.Function("J")
    z_k = beta * sum(f(z) for z in zs) / 4 + bias
    lhs = sp.diff(big_j(z_k), zs[0])
    delta_k = sp.Subs(sp.Derivative(big_j(sp.Symbol("u")), sp.Symbol("u")), sp.Symbol("u"), z_k)
    rhs = delta_k * (beta / 4) * sp.Derivative(f(zs[0]), zs[0])
    return Step(
        lhs,
        rhs,
        "Chain rule through one mean-pooling window ($J$ any function of $z_k$): $\\delta_j = "
        "\\frac{\\partial J}{\\partial z_k} \\frac{\\partial z_k}{\\partial a_j} f'(z_j)$ with "
        "$\\frac{\\partial z_k}{\\partial a_j} = \\beta_k / n^2$.",
        check=lambda: sp.simplify(lhs.doit() - rhs.doit()) == 0,
        note="sympy.diff of J(z_k(f(z_1), ..., f(z_4))) minus the product, simplified",
        latex=(
            r"\delta_j = \frac{\partial J}{\partial z_k}\frac{\partial z_k}{\partial a_j}"
            r"f'(z_j) = \delta_k \frac{\beta_k}{n^2} f'(z_j)"
        ),
    )


def _mean_chain_ok(case) -> bool:
    """sympy.diff of J = <δ_k, β down_mean(f(z)) + b> equals β up(δ_k) ⊙ f'(z)."""
    h, w, n = case
    z, d = _z_plane(h, w), _d_plane(h // n, w // n)
    beta, bias = sp.symbols("beta b")
    a = z.applyfunc(f)
    pooled = sp.Matrix(
        h // n, w // n, lambda i, j: sum(a[i * n : (i + 1) * n, j * n : (j + 1) * n]) / n**2
    )
    big_j = sum((beta * pooled + bias * sp.ones(*pooled.shape)).multiply_elementwise(d))
    chain = z.applyfunc(lambda e: sp.diff(big_j, e))
    return same(chain, beta * up_mean(d, n).multiply_elementwise(_fprime_plane(z)))


def _window_sums(m: sp.Matrix, n: int) -> sp.Matrix:
    return sp.Matrix(
        m.rows // n, m.cols // n, lambda i, j: sum(m[i * n : (i + 1) * n, j * n : (j + 1) * n])
    )


def _mean_conserves(case) -> bool:
    h, w, n = case
    d = _d_plane(h // n, w // n)
    return same(_window_sums(up_mean(d, n), n), d)


_CASE1_SIZES = ((2, 2, 2), (4, 4, 2), (4, 6, 2), (6, 6, 3), (6, 6, 2))

DELTA_POOL = sp.Matrix([[1, 3], [2, 4]])
#: The lecture's tables for mean pooling: δ_k ⊗ 1_{2×2}, then divided by 4.
KRON_TABLE = printed([["1", "1", "3", "3"], ["1", "1", "3", "3"],
                      ["2", "2", "4", "4"], ["2", "2", "4", "4"]])  # fmt: skip
MEAN_TABLE = printed([["0.25", "0.25", "0.75", "0.75"], ["0.25", "0.25", "0.75", "0.75"],
                      ["0.5", "0.5", "1", "1"], ["0.5", "0.5", "1", "1"]])  # fmt: skip


@derivation("backprop.case1_mean", "Backprop case 1: next layer is mean pooling")
def _case1_mean() -> Derivation:
    steps = (
        _pool_scalar_chain_rule(),
        Step(
            sp.Symbol("delta_j"),
            sp.Symbol("beta_k*up(delta_k)*fprime(z_j)"),
            "For every size $(h, w, n)$: sympy.diff of $J = \\langle \\delta_k, \\beta\\, "
            "\\mathrm{down}(f(z)) + b \\rangle$ with respect to every $z_j$ equals $\\beta\\, "
            "\\mathrm{up}(\\delta_k) \\odot f'(z_j)$, $\\mathrm{up}(x) = x \\otimes 1_{n \\times "
            "n}/n^2$.",
            method=EXHAUSTIVE,
            check=_mean_chain_ok,
            cases=_CASE1_SIZES,
            latex=(
                r"\delta_j = \beta_k\, \mathrm{up}(\delta_k) \odot f'(z_j), \quad "
                r"\mathrm{up}(x) = \frac{x \otimes 1_{n \times n}}{n^2}"
            ),
        ),
        Step(
            sp.Symbol("sum_window(up(delta_k))"),
            sp.Symbol("delta_k"),
            "The distributed deltas of each window sum to $\\delta_k$ (the lecture's requirement).",
            method=EXHAUSTIVE,
            check=_mean_conserves,
            cases=_CASE1_SIZES,
            latex=r"\sum_{j \in M_k} \mathrm{up}(\delta_k)_j = \delta_k",
        ),
        Step(
            sp.kronecker_product(DELTA_POOL, sp.ones(2, 2)),
            KRON_TABLE,
            "The lecture's example: $\\delta_k = "
            "\\left[\\begin{smallmatrix}1&3\\\\2&4\\end{smallmatrix}\\right]$, $\\delta_k "
            "\\otimes 1_{2 \\times 2}$ is its first 4×4 table.",
            check=lambda: same(sp.kronecker_product(DELTA_POOL, sp.ones(2, 2)), KRON_TABLE),
            note="exact comparison with the printed table",
            latex=sp.latex(DELTA_POOL) + r" \otimes 1_{2 \times 2} = " + sp.latex(KRON_TABLE),
        ),
        Step(
            up_mean(DELTA_POOL, 2),
            MEAN_TABLE,
            "Divided by $n^2 = 4$ it is the lecture's second table (0.25 / 0.75 / 0.5 / 1).",
            check=lambda: same(up_mean(DELTA_POOL, 2), MEAN_TABLE),
            note="exact comparison with the printed table",
            latex=r"\mathrm{up}\left("
            + sp.latex(DELTA_POOL)
            + r"\right) = "
            + decimal_latex(MEAN_TABLE),
        ),
    )
    return Derivation(
        "backprop.case1_mean",
        "Backprop case 1: next layer is mean pooling",
        r"情况一: 当前层之后为 Pooling 层 (Mean Pooling, "
        r"$\mathrm{up}(x) = \frac{x \otimes 1_{n \times n}}{n \times n}$)",
        steps,
        summary=(
            "When a mean-pooling layer follows, each pooled $\\delta_k$ is spread evenly over its "
            "$n \\times n$ window by the Kronecker up-sampling $\\mathrm{up}$, scaled by "
            "$\\beta_k$ and multiplied element-wise by $f'(z_j)$. The lecture's tables show "
            "$\\mathrm{up}$ alone ($\\beta = 1$, $f' = 1$)."
        ),
        data={
            "example": {
                "inputs": {"dy": [[nested(DELTA_POOL)]], "size": 2},
                "expected": {"dx": [[nested(MEAN_TABLE)]]},
            }
        },
    )


# --- case 1: max pooling ----------------------------------------------------------

#: An input whose 2x2 maxima sit where the lecture's routing table puts δ:
#: (1,1) in the top-left window, (0,3), (3,1) and (3,3) in the others.
MAX_INPUT = sp.Matrix([[1, 2, 5, 9], [3, 8, 4, 2], [6, 1, 0, 3], [5, 7, 2, 8]])
MAX_TABLE = printed([["0", "0", "0", "3"], ["0", "1", "0", "0"],
                     ["0", "0", "0", "0"], ["0", "2", "0", "4"]])  # fmt: skip

#: Inputs of the max-pooling chain-rule check: distinct values per window (max is
#: not differentiable at a tie, so ties are excluded here; the kernels pick the first).
_MAX_CHAIN_CASES = (
    (((3, 1), (2, 0)), 2),
    (((0, 1), (2, 3)), 2),
    (tuple(map(tuple, MAX_INPUT.tolist())), 2),
    (((9, 0, 1, 2), (3, 4, 8, 5), (7, 6, 0, 1), (2, 3, 4, 5)), 2),
    (((0, 5, 1), (2, 9, 4), (3, 6, 8)), 3),
)


def _max_chain_ok(case) -> bool:
    """sympy.diff of J = <δ, β max-pool(a) + b> at the point a equals routed β δ."""
    rows, n = case
    values = sp.Matrix(rows)
    a = _d_plane(values.rows, values.cols, "a")
    d = _d_plane(values.rows // n, values.cols // n)
    beta, bias = sp.symbols("beta b")
    pooled = sp.Matrix(
        d.rows, d.cols, lambda i, j: sp.Max(*a[i * n : (i + 1) * n, j * n : (j + 1) * n])
    )
    big_j = sum((beta * pooled + bias * sp.ones(*d.shape)).multiply_elementwise(d))
    point = dict(zip(a, values, strict=True))
    chain = a.applyfunc(lambda e: sp.diff(big_j, e).subs(point))
    _, argmax = down_max(values, n)
    return same(chain, route_max(beta * d, argmax, values.shape))


def _max_conserves(case) -> bool:
    rows, n = case
    values = sp.Matrix(rows)
    d = _d_plane(values.rows // n, values.cols // n)
    _, argmax = down_max(values, n)
    return same(_window_sums(route_max(d, argmax, values.shape), n), d)


@derivation("backprop.case1_max", "Backprop case 1: next layer is max pooling")
def _case1_max() -> Derivation:
    _, argmax = down_max(MAX_INPUT, 2)
    routed = route_max(DELTA_POOL, argmax, (4, 4))
    flat = [[argmax[(i, j)][0] * 4 + argmax[(i, j)][1] for j in range(2)] for i in range(2)]
    steps = (
        Step(
            sp.Symbol("dJ/da"),
            sp.Symbol("route(beta_k*delta_k, argmax)"),
            "For concrete inputs (distinct values in each window), sympy.diff of $J = \\langle "
            "\\delta_k, \\beta\\, \\mathrm{maxpool}(a) + b \\rangle$ at that input equals $\\beta "
            "\\delta_k$ routed to the recorded argmax of each window and 0 elsewhere; $\\delta_j$ "
            "then is that times $f'(z_j)$ (element-wise chain rule, as in the mean case).",
            method=EXHAUSTIVE,
            check=_max_chain_ok,
            cases=_MAX_CHAIN_CASES,
            latex=(
                r"\frac{\partial J}{\partial a_j} = \begin{cases} \beta_k \delta_k & "
                r"j = \arg\max_{M_k} a \\ 0 & \text{otherwise} \end{cases}"
            ),
        ),
        Step(
            sp.Symbol("sum_window(route(delta_k))"),
            sp.Symbol("delta_k"),
            "Routing conserves the sum: each window's routed deltas add up to $\\delta_k$.",
            method=EXHAUSTIVE,
            check=_max_conserves,
            cases=_MAX_CHAIN_CASES,
            latex=r"\sum_{j \in M_k} \mathrm{route}(\delta_k)_j = \delta_k",
        ),
        Step(
            routed,
            MAX_TABLE,
            "The lecture's example: $\\delta_k = \\left[\\begin{smallmatrix}1&3\\\\2&4"
            "\\end{smallmatrix}\\right]$ routed with the maxima at (1,1), (0,3), (3,1), (3,3), "
            "the positions its table implies; the input $"
            + sp.latex(MAX_INPUT).replace("matrix", "smallmatrix")
            + "$ has its window maxima exactly there.",
            check=lambda: same(routed, MAX_TABLE),
            note="exact comparison with the printed table",
            latex=r"\mathrm{route}\left("
            + sp.latex(DELTA_POOL)
            + r"\right) = "
            + sp.latex(MAX_TABLE),
        ),
    )
    return Derivation(
        "backprop.case1_max",
        "Backprop case 1: next layer is max pooling",
        "情况一: 当前层之后为 Pooling 层 (Max Pooling: 记录 Max 值的来源位置)",
        steps,
        summary=(
            "When a max-pooling layer follows, $\\mathrm{up}$ is replaced by routing: the forward "
            "pass records where each window's maximum came from, and $\\delta_k$ goes there, "
            "unchanged (times $\\beta_k$ and $f'(z_j)$); the rest of the window gets 0."
        ),
        data={
            "example": {
                "inputs": {
                    "x": [[nested(MAX_INPUT)]],
                    "dy": [[nested(DELTA_POOL)]],
                    "argmax": [[flat]],
                    "input_hw": (4, 4),
                },
                "expected": {"dx": [[nested(MAX_TABLE)]]},
            }
        },
    )


# --- case 2: convolution ---------------------------------------------------------


def _case2_chain_ok(case) -> bool:
    """d/dz_j of J = Σ_K <δ_K, z_K(f(z))> equals Σ_K conv_full(δ_K, k_Kj) ⊙ f'(z_j)."""
    n_in, n_out, h, k = case
    x, wt, b, s = conv2d_explicit(n_in, n_out, h, h, k, k)
    z = symbol_array("z", (n_in, h, h))
    a_of_z = {x[idx]: f(z[idx]) for idx in itertools.product(*map(range, x.shape))}
    deltas = symbol_array("d", s.shape)
    big_j = sum(deltas[idx] * s[idx] for idx in itertools.product(*map(range, s.shape)))
    big_j = big_j.subs(a_of_z)
    for j in range(n_in):
        zj = plane(z, j)
        chain = zj.applyfunc(lambda e, big_j=big_j: sp.diff(big_j, e))
        formula = sum(
            (conv2d(plane(deltas, kk), plane(wt, kk, j)) for kk in range(n_out)),
            sp.zeros(h, h),
        ).multiply_elementwise(_fprime_plane(zj))
        if not same(chain, formula):
            return False
    return True


def _full_is_rotated_xcorr(case) -> bool:
    dh, kh = case
    d, k = _d_plane(dh, dh), _d_plane(kh, kh, "k")
    return same(conv2d(d, k), xcorr2d(pad(d, kh - 1), rot180(k)))


DELTA_A = sp.Matrix([[1, 3], [2, 2]])
DELTA_B = sp.Matrix([[2, 1], [1, 1]])
KERNEL_A = printed([["0.1", "0.2"], ["0.2", "0.4"]])
KERNEL_B = printed([["-0.3", "0.1"], ["0.1", "0.2"]])
PADDED_A = printed([["0", "0", "0", "0"], ["0", "1", "3", "0"],
                    ["0", "2", "2", "0"], ["0", "0", "0", "0"]])  # fmt: skip
#: The lecture's 4x4 tables: the copies δ[m, n]·k laid side by side (δ ⊗ k).
BLOCKS_A = printed([["0.1", "0.2", "0.3", "0.6"], ["0.2", "0.4", "0.6", "1.2"],
                    ["0.2", "0.4", "0.2", "0.4"], ["0.4", "0.8", "0.4", "0.8"]])  # fmt: skip
BLOCKS_B = printed([["-0.6", "0.2", "-0.3", "0.1"], ["0.2", "0.4", "0.1", "0.2"],
                    ["-0.3", "0.1", "-0.3", "0.1"], ["0.1", "0.2", "0.1", "0.2"]])  # fmt: skip
FULL_A = printed([["0.1", "0.5", "0.6"], ["0.4", "1.6", "1.6"], ["0.4", "1.2", "0.8"]])
FULL_B = printed([["-0.6", "-0.1", "0.1"], ["-0.1", "0.3", "0.3"], ["0.1", "0.3", "0.2"]])
#: The padded δ_1 cross-correlated with the UNrotated k_1 (not the lecture's table).
UNROTATED_A = printed([["0.4", "1.4", "0.6"], ["1.0", "1.9", "0.7"], ["0.4", "0.6", "0.2"]])
#: The sum; the lecture prints its first two rows, the last row is garbled
#: (". 4.5 4.0") in the text and is derived here: 0.5 1.5 1.0.
FULL_SUM = printed([["-0.5", "0.4", "0.7"], ["0.3", "1.9", "1.9"], ["0.5", "1.5", "1.0"]])


def _table_step(label: str, lhs, rhs, why) -> Step:
    """``lhs`` computed by the formula equals the printed table ``rhs``; ``label`` is the
    LaTeX of the operation that produced ``lhs``."""
    return Step(
        lhs,
        rhs,
        why,
        check=lambda: same(lhs, rhs),
        note="exact comparison with the printed table",
        latex=f"{label} = {decimal_latex(rhs)}",
    )


@derivation("backprop.case2", "Backprop case 2: next layer is a convolution")
def _case2() -> Derivation:
    unrotated = xcorr2d(pad(DELTA_A, 1), KERNEL_A)
    steps = (
        Step(
            sp.Symbol("delta_j"),
            sp.Symbol("sum_K conv_full(delta_K, k_Kj)*fprime(z_j)"),
            "Chain rule, exhaustively on explicit layers (cases: input maps, output maps, input "
            "side, kernel side): sympy.diff of $J = \\sum_K \\langle \\delta_K, z_K \\rangle$ with "
            "$z_K = \\sum_j a_j \\star k_{Kj} + b_K$ and $a_j = f(z_j)$, with respect to every "
            "$z_j$, equals the sum over $K$ of the full convolution of $\\delta_K$ with $k_{Kj}$, "
            "times $f'(z_j)$.",
            method=EXHAUSTIVE,
            check=_case2_chain_ok,
            cases=((1, 1, 3, 2), (2, 2, 3, 2), (2, 2, 4, 2), (2, 2, 4, 3), (1, 2, 5, 3)),
            latex=(
                r"\delta_j = \sum_K \left(\delta_K * k_{Kj}\right)_{\mathrm{full}} \odot f'(z_j)"
            ),
        ),
        Step(
            sp.Symbol("conv_full(d, k)"),
            sp.Symbol("xcorr_valid(pad(d, K-1), rot180(k))"),
            "The full convolution is the valid cross-correlation of $\\delta$ zero-padded by $K - "
            "1$ with the kernel rotated by 180° (cases: $\\delta$ side, kernel side).",
            method=EXHAUSTIVE,
            check=_full_is_rotated_xcorr,
            cases=((2, 2), (3, 2), (2, 3), (4, 3)),
            latex=(
                r"(\delta * k)_{\mathrm{full}} = \mathrm{pad}_{K-1}(\delta) \star "
                r"\mathrm{rot}_{180}(k)"
            ),
        ),
        _table_step(
            r"\mathrm{pad}_1(\delta_1)",
            pad(DELTA_A, 1),
            PADDED_A,
            "The lecture's first map $\\delta_1$ padded by 1.",
        ),
        _table_step(
            r"\delta_1 \otimes k_1",
            sp.kronecker_product(DELTA_A, KERNEL_A),
            BLOCKS_A,
            "The lecture's 4×4 table for $\\delta_1$ and $k_1 = "
            "\\left[\\begin{smallmatrix}0.1&0.2\\\\0.2&0.4\\end{smallmatrix}\\right]$ is the "
            "copies $\\delta_1[m,n]\\, k_1$ side by side ($\\delta_1 \\otimes k_1$).",
        ),
        _table_step(
            r"(\delta_1 * k_1)_{\mathrm{full}}",
            conv2d(DELTA_A, KERNEL_A),
            FULL_A,
            "Overlap-adding those copies at offsets $(m, n)$ (the full convolution, with the "
            "kernel not rotated in this form) gives the lecture's 3×3 table.",
        ),
        _table_step(
            r"\mathrm{pad}_1(\delta_1) \star \mathrm{rot}_{180}(k_1)",
            xcorr2d(pad(DELTA_A, 1), rot180(KERNEL_A)),
            FULL_A,
            "Equivalently: the padded $\\delta_1$ cross-correlated with $k_1$ rotated by 180°.",
        ),
        Step(
            unrotated,
            UNROTATED_A,
            "Orientation check: cross-correlating the padded $\\delta_1$ with the unrotated $k_1$ "
            "gives this matrix, which is not the printed table; so the printed table is the "
            "rotated-kernel (true convolution) form.",
            check=lambda: same(unrotated, UNROTATED_A) and not same(unrotated, FULL_A),
            note="exact comparison, and inequality with the printed table",
            latex=(
                r"\mathrm{pad}_1(\delta_1) \star k_1 = "
                + decimal_latex(UNROTATED_A)
                + r" \neq (\delta_1 * k_1)_{\mathrm{full}}"
            ),
        ),
        _table_step(
            r"\delta_2 \otimes k_2",
            sp.kronecker_product(DELTA_B, KERNEL_B),
            BLOCKS_B,
            "The second map $\\delta_2 = "
            "\\left[\\begin{smallmatrix}2&1\\\\1&1\\end{smallmatrix}\\right]$ with $k_2 = "
            "\\left[\\begin{smallmatrix}-0.3&0.1\\\\0.1&0.2\\end{smallmatrix}\\right]$: the "
            "lecture's 4×4 table of copies.",
        ),
        _table_step(
            r"(\delta_2 * k_2)_{\mathrm{full}}",
            conv2d(DELTA_B, KERNEL_B),
            FULL_B,
            "Their full convolution: the 3×3 table.",
        ),
        _table_step(
            r"\sum_{K=1}^{2} (\delta_K * k_K)_{\mathrm{full}}",
            conv2d(DELTA_A, KERNEL_A) + conv2d(DELTA_B, KERNEL_B),
            FULL_SUM,
            "Summed over the two kernels: the lecture's result. Its last row is garbled in the "
            "lecture text (it reads '. 4.5 4.0'); the derived row is 0.5 1.5 1.0.",
        ),
    )
    return Derivation(
        "backprop.case2",
        "Backprop case 2: next layer is a convolution",
        r"情况二: 当前层之后为卷积层 "
        r"($\delta_j = \sum_K \sum_{k \in C_k} \delta_k k_{kj} f'(z_j)$)",
        steps,
        summary=(
            "When a convolution layer follows, each unit of map j fed every next-layer unit whose "
            "window contains it, so $\\delta_j$ gathers $\\delta_K$ times the matching kernel "
            "weight: the full convolution of $\\delta_K$ with $k_{Kj}$, summed over the "
            "next-layer maps $K$ and multiplied by $f'(z_j)$. The lecture's tables omit $f'$ ($f' "
            "= 1$)."
        ),
        data={
            "example": {
                "inputs": {
                    "dy": [[nested(DELTA_A), nested(DELTA_B)]],
                    "w": [[nested(KERNEL_A)], [nested(KERNEL_B)]],
                    "input_hw": (3, 3),
                },
                "expected": {
                    "dx": [[nested(FULL_SUM)]],
                    "per_kernel": [nested(FULL_A), nested(FULL_B)],
                },
            }
        },
    )
