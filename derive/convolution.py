"""Convolution derivations: continuous, discrete 1-D and 2-D, the cross-correlation
rewrite, output sizes with stride and padding, and the edge kernels.

Also the exact reference operations on finite arrays (SymPy matrices or lists of
exact numbers) that these derivations check against:

>>> conv1d([1, 2], [1, 1])
[1, 3, 2]
>>> xcorr2d([[1, 2], [3, 4]], [[1]])
Matrix([
[1, 2],
[3, 4]])
>>> output_size(5, 3, padding=1)
5

Array convention: ``A[r, c]`` with row index first; a kernel ``K`` of shape
``kh x kw`` is indexed ``K[0..kh-1, 0..kw-1]``.
"""

from __future__ import annotations

import itertools

import sympy as sp

from derive.core import EXHAUSTIVE, Derivation, Step, derivation

LECTURE = "Deep Learning Technology and Application (Ge Li), slide"

# ---------------------------------------------------------------------------
# Exact reference operations on finite arrays
# ---------------------------------------------------------------------------


def conv1d(f, w) -> list:
    """Full discrete convolution ``s(t) = sum_x f(x) w(t - x)`` of finite sequences.

    ``f`` and ``w`` are zero outside ``0..len-1``, so ``s`` is non-zero only on
    ``0..len(f)+len(w)-2``.

    >>> conv1d([1, 0, -1], [2, 3])
    [2, 3, -2, -3]
    >>> conv1d([], [1])
    Traceback (most recent call last):
    ...
    ValueError: conv1d: f must be a non-empty sequence
    """
    f, w = _seq(f, "f"), _seq(w, "w")
    return [
        sum((f[x] * w[t - x] for x in range(len(f)) if 0 <= t - x < len(w)), sp.Integer(0))
        for t in range(len(f) + len(w) - 1)
    ]


def conv2d(image, kernel) -> sp.Matrix:
    """Full 2-D convolution ``S(i,j) = sum_m sum_n I(m,n) K(i-m, j-n)``.

    Output shape ``(H + kh - 1) x (W + kw - 1)`` (every ``(i, j)`` where a term
    can be non-zero).

    >>> conv2d([[1, 2]], [[1], [1]])
    Matrix([
    [1, 2],
    [1, 2]])
    """
    img, ker = _mat(image, "image"), _mat(kernel, "kernel")
    rows, cols = img.rows + ker.rows - 1, img.cols + ker.cols - 1

    def entry(i, j):
        return sum(
            (
                img[m, n] * ker[i - m, j - n]
                for m in range(img.rows)
                for n in range(img.cols)
                if 0 <= i - m < ker.rows and 0 <= j - n < ker.cols
            ),
            sp.Integer(0),
        )

    return sp.Matrix(rows, cols, entry)


def xcorr2d(image, kernel, stride: int = 1, padding: int = 0, dilation: int = 1) -> sp.Matrix:
    """Cross-correlation ``S(i,j) = sum_m sum_n I(s*i + d*m, s*j + d*n) K(m,n)``.

    The image is zero-padded by ``padding`` on every side; only positions where
    the kernel, its taps ``dilation`` apart, lies inside the padded image are kept
    ("valid"). This is what deep-learning libraries call convolution.

    >>> xcorr2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, 1]])
    Matrix([
    [ 6,  8],
    [12, 14]])
    >>> xcorr2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 1]], dilation=2)
    Matrix([
    [ 4],
    [10],
    [16]])
    >>> xcorr2d([[1]], [[1, 1]])
    Traceback (most recent call last):
    ...
    ValueError: xcorr2d: kernel 1x2 (dilation 1) larger than padded image 1x1
    """
    img, ker = _mat(image, "image"), _mat(kernel, "kernel")
    stride, padding = _positive(stride, "stride"), _nonnegative(padding, "padding")
    dilation = _positive(dilation, "dilation")
    padded = sp.zeros(img.rows + 2 * padding, img.cols + 2 * padding)
    padded[padding : padding + img.rows, padding : padding + img.cols] = img
    span_r, span_c = dilation * (ker.rows - 1) + 1, dilation * (ker.cols - 1) + 1
    if span_r > padded.rows or span_c > padded.cols:
        raise ValueError(
            f"xcorr2d: kernel {ker.rows}x{ker.cols} (dilation {dilation}) larger than padded "
            f"image {padded.rows}x{padded.cols}"
        )
    rows = (padded.rows - span_r) // stride + 1
    cols = (padded.cols - span_c) // stride + 1

    def entry(i, j):
        taps = itertools.product(range(ker.rows), range(ker.cols))
        reads = (padded[stride * i + dilation * m, stride * j + dilation * n] for m, n in taps)
        weights = (ker[m, n] for m in range(ker.rows) for n in range(ker.cols))
        return sum((r * k for r, k in zip(reads, weights, strict=True)), 0)

    return sp.Matrix(rows, cols, entry)


def rot180(kernel) -> sp.Matrix:
    """The kernel rotated by 180 degrees: ``rot180(K)[m, n] = K[kh-1-m, kw-1-n]``.

    >>> rot180([[1, 2], [3, 4]])
    Matrix([
    [4, 3],
    [2, 1]])
    """
    ker = _mat(kernel, "kernel")
    return sp.Matrix(ker.rows, ker.cols, lambda m, n: ker[ker.rows - 1 - m, ker.cols - 1 - n])


def output_size(i, k, padding=0, stride=1):
    """Output length ``o = floor((i + 2p - k) / s) + 1`` (works on symbols too).

    >>> output_size(4, 3), output_size(5, 4, padding=2), output_size(5, 3, padding=2)
    (2, 6, 7)
    >>> output_size(7, 3, stride=2)
    3
    """
    return sp.floor(sp.sympify(i + 2 * padding - k) / stride) + 1


def symbol_matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    """A ``rows x cols`` matrix of independent symbols ``name_r_c``.

    Checking an identity on it proves the identity for every value of the
    entries (it is a polynomial identity in them).

    >>> symbol_matrix("K", 1, 2)
    Matrix([[K_0_0, K_0_1]])
    """
    _positive(rows, "rows"), _positive(cols, "cols")
    return sp.Matrix(rows, cols, lambda r, c: sp.Symbol(f"{name}_{r}_{c}"))


def same(a, b) -> bool:
    """Exact equality of two arrays (or scalars) after expansion, shape included.

    >>> a, b = sp.symbols("a b")
    >>> same(sp.Matrix([(a + b) ** 2]), sp.Matrix([a**2 + 2*a*b + b**2]))
    True
    >>> same(sp.Matrix([1, 2]), sp.Matrix([[1, 2]]))
    False
    """
    if isinstance(a, sp.MatrixBase) or isinstance(b, sp.MatrixBase):
        a, b = sp.Matrix(a), sp.Matrix(b)
        return a.shape == b.shape and all(sp.expand(x - y) == 0 for x, y in zip(a, b, strict=True))
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return len(a) == len(b) and all(sp.expand(x - y) == 0 for x, y in zip(a, b, strict=True))
    return sp.expand(a - b) == 0


def _seq(values, name) -> list:
    if isinstance(values, str) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"conv1d: {name} must be a non-empty sequence")
    return [sp.sympify(v) for v in values]


def _mat(values, name) -> sp.Matrix:
    try:
        m = sp.Matrix(values)
    except (TypeError, ValueError, sp.SympifyError) as exc:
        raise TypeError(f"{name} must be a 2-D array of numbers or symbols: {exc}") from None
    if m.rows == 0 or m.cols == 0:
        raise ValueError(f"{name} must be non-empty, got shape {m.shape}")
    return m


def _positive(v, name) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _nonnegative(v, name) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return v


# Symbols shared by the derivations (integers for array indices).
_i, _j, _m, _n, _u, _v = sp.symbols("i j m n u v", integer=True)
_I, _K, _f, _w = (sp.Function(s) for s in ("I", "K", "f", "w"))
_INF = sp.oo


def _bi_infinite_sum(expr, *indices):
    return sp.Sum(expr, *((idx, -_INF, _INF) for idx in indices))


# ---------------------------------------------------------------------------
# conv.continuous
# ---------------------------------------------------------------------------

#: The compound-interest table of the lecture: row tau (the deposit made in year
#: tau, tau = 0 is the principal), column t (the year, 0 = principal .. 5); each
#: cell is the exponent k of the printed entry 100 x 1.05^k ("+100" is k = 0);
#: None is an empty cell (the deposit has not been made yet).
COMPOUND_TABLE_EXPONENTS = (
    (0, 1, 2, 3, 4, 5),
    (None, 0, 1, 2, 3, 4),
    (None, None, 0, 1, 2, 3),
    (None, None, None, 0, 1, 2),
    (None, None, None, None, 0, 1),
    (None, None, None, None, None, 0),
)
RATE = sp.Rational(21, 20)  # 1 + 5%, exact
DEPOSIT = sp.Integer(100)


def compound_table(evaluate: bool = True) -> sp.Matrix:
    """The lecture's table: ``100 * (21/20)**k`` per cell, 0 when empty.

    With ``evaluate=False`` the cells stay in the printed form ``100 (21/20)^k``.

    >>> compound_table()[0, 2]
    441/4
    >>> compound_table(evaluate=False)[0, 2]
    100*(21/20)**2
    """
    rows = len(COMPOUND_TABLE_EXPONENTS)
    return sp.Matrix(
        rows,
        rows,
        lambda r, c: 0 if (k := COMPOUND_TABLE_EXPONENTS[r][c]) is None else _interest(k, evaluate),
    )


def _interest(exponent, evaluate: bool):
    # 100 * (21/20)**exponent, optionally kept unevaluated for display
    if evaluate:
        return DEPOSIT * RATE**exponent
    return sp.Mul(DEPOSIT, sp.Pow(RATE, exponent, evaluate=False), evaluate=False)


def _formula_table(evaluate: bool) -> sp.Matrix:
    # f(tau) g(t - tau) for deposit year tau (row) and year t (column); 0 before the deposit
    return sp.Matrix(
        6,
        6,
        lambda tau, t: _interest(sp.Add(t, -tau, evaluate=False), evaluate) if t >= tau else 0,
    )


def _continuous_commutes_for(f_expr, w_expr, x, t) -> bool:
    y = sp.Dummy("y")
    lhs = sp.integrate(f_expr * w_expr.subs(x, t - x), (x, 0, t))
    rhs = sp.integrate(f_expr.subs(x, t - y) * w_expr.subs(x, y), (y, 0, t))
    return sp.simplify(lhs - rhs) == 0


@derivation("conv.continuous", "Continuous convolution and the compound-interest example")
def _continuous() -> Derivation:
    t = sp.Symbol("t", positive=True)
    x, y, tau = sp.symbols("x y tau", real=True)
    a, b, c, lam = sp.symbols("a b c lambda", real=True)
    definition = sp.Integral(_f(x) * _w(t - x), (x, 0, t))
    swapped = sp.Integral(_f(t - y) * _w(y), (y, 0, t))

    k, d = sp.symbols("t tau", integer=True, nonnegative=True)
    discrete = sp.Sum(DEPOSIT * RATE ** (k - d), (d, 0, k))
    closed = 2000 * (RATE ** (k + 1) - 1)
    table = compound_table()
    # Year totals t = 0..5 as a column: the sum of the table's column t, term by term.
    year_sums = sp.Matrix([sp.Add(*table[: t + 1, t], evaluate=False) for t in range(6)])
    year_closed = sp.Matrix([closed.subs(k, t) for t in range(6)])

    integral = sp.Integral(DEPOSIT * RATE ** (t - tau), (tau, 0, t))
    integral_value = DEPOSIT * (RATE**t - 1) / sp.log(RATE)

    polys_exps = [
        (a * x**2 + b * x + c, sp.exp(lam * x)),
        (sp.exp(lam * x), x**3),
        (a * x + b, c * x**2),
    ]
    steps = [
        Step(
            definition,
            swapped,
            "Commutativity $(f * w)(t) = (w * f)(t)$: substitute $x = t - y$, $dx = -dy$; the "
            "limits $0..t$ become $t..0$, and reversing them absorbs the sign.",
            check=lambda: definition.transform(x, (t - y, y)) == swapped,
            note="SymPy's Integral.transform performs the substitution for generic f, w",
        ),
        Step(
            definition,
            swapped,
            "Commutativity checked by evaluating both integrals for concrete function families "
            "with free parameters: $f = a x^2 + b x + c$ with $w = e^{\\lambda x}$; $f = "
            "e^{\\lambda x}$ with $w = x^3$; $f = a x + b$ with $w = c x^2$.",
            method=EXHAUSTIVE,
            check=lambda fw: _continuous_commutes_for(fw[0], fw[1], x, t),
            cases=polys_exps,
            note="each case symbolic in its parameters a, b, c, lambda and in t",
            latex=r"\int_0^t f(x) w(t-x)\,dx = \int_0^t f(t-y) w(y)\,dy"
            r"\quad\text{for } (f,w) \in \{(ax^2+bx+c, e^{\lambda x}),"
            r" (e^{\lambda x}, x^3), (ax+b, cx^2)\}",
        ),
        Step(
            _formula_table(evaluate=False),
            compound_table(evaluate=False),
            "Compound interest (lecture's Zhihu example, 100 deposited every year at 5%): the term "
            "$f(\\tau) g(t - \\tau) = 100 \\cdot (21/20)^{t - \\tau}$ for deposit year $\\tau$ "
            "(row) and year $t$ (column) reproduces every entry of the lecture's table exactly "
            "($1.05 = 21/20$).",
            check=lambda: same(_formula_table(evaluate=True), compound_table()),
            note="exact rational comparison of all 36 cells",
            # The computed side named, the lecture's table once (two 6 x 6 tables side by
            # side would have to shrink below reading size).
            latex=r"\left(f(\tau)\, g(t - \tau)\right)_{\tau, t = 0}^{5} = "
            + sp.latex(compound_table(evaluate=False)),
        ),
        Step(
            discrete,
            closed,
            "The money after year $t$ is the discrete convolution $s(t) = \\sum_\\tau f(\\tau) g(t "
            "- \\tau)$, a geometric sum.",
            check=lambda: sp.simplify(discrete.doit() - closed) == 0,
            note="sympy.summation, then SymPy simplifies lhs − rhs to 0",
        ),
        Step(
            year_sums,
            year_closed,
            "Each column sum of the lecture's table equals the closed form at $t = 0..5$ (year 5: "
            "$2000\\,(1.05^6 - 1) = 680.19128125$).",
            check=lambda: same(year_sums.doit(), year_closed),
            note="exact rationals",
        ),
        Step(
            integral,
            integral_value,
            "Continuous deposits at rate $f = 100$ per year: the lecture's integral $\\int_0^t "
            "f(\\tau) (1 + 5\\%)^{t - \\tau}\\,d\\tau$, evaluated by SymPy.",
            check=lambda: sp.simplify(integral.doit() - integral_value) == 0,
            note="sympy.integrate, then SymPy simplifies lhs − rhs to 0",
        ),
    ]
    return Derivation(
        "conv.continuous",
        "Continuous convolution and the compound-interest example",
        f"{LECTURE} 卷积函数 (convolution function; Zhihu compound-interest example)",
        steps,
        summary="$s(t) = (f * w)(t) = \\int_0^t f(x) w(t - x)\\,dx$: $w(t - x)$ weights the value "
        "$f(x)$ by the distance $t - x$. Deposits $f(\\tau)$ growing at 5% a year, $g(t - "
        "\\tau) = 1.05^{t - \\tau}$, are a convolution: the money at time $t$ is the sum "
        "(discrete) or integral (continuous) of $f(\\tau) g(t - \\tau)$.",
        data={"table": compound_table(), "closed_form": closed, "integral": integral_value},
    )


# ---------------------------------------------------------------------------
# conv.discrete_1d / conv.discrete_2d
# ---------------------------------------------------------------------------

#: Concrete sizes on which the finite-array identities are checked. Entries are
#: free symbols, so each size is a polynomial identity valid for all values.
SIZES_1D = tuple(itertools.product(range(1, 5), range(1, 5)))
SIZES_2D = tuple(itertools.product(range(1, 4), repeat=4))  # (h, w, kh, kw)


def _commutes_1d(case) -> bool:
    nf, nw = case
    f = [sp.Symbol(f"f_{x}") for x in range(nf)]
    w = [sp.Symbol(f"w_{x}") for x in range(nw)]
    return same(conv1d(f, w), conv1d(w, f))


def _commutes_2d(case) -> bool:
    h, w, kh, kw = case
    img, ker = symbol_matrix("I", h, w), symbol_matrix("K", kh, kw)
    return same(conv2d(img, ker), conv2d(ker, img))


@derivation("conv.discrete_1d", "Discrete 1-D convolution and its commutativity")
def _discrete_1d() -> Derivation:
    t, x, y = _i, _m, _u
    definition = _bi_infinite_sum(_f(x) * _w(t - x), x)
    swapped = _bi_infinite_sum(_f(t - y) * _w(y), y)
    f_ex = [sp.Integer(1), sp.Rational(1, 2), sp.Rational(-1, 3)]
    w_ex = [sp.Integer(2), sp.Rational(-3, 4)]
    products = {  # s(t) = sum of f(x) w(t - x), written out unevaluated
        t: [sp.Mul(f_ex[x], w_ex[t - x], evaluate=False) for x in range(3) if 0 <= t - x < 2]
        for t in range(4)
    }
    by_hand = [sp.Add(*products[t], evaluate=False) for t in range(4)]
    return Derivation(
        "conv.discrete_1d",
        "Discrete 1-D convolution and its commutativity",
        f"{LECTURE} 卷积函数 (discrete case)",
        [
            Step(
                definition,
                swapped,
                "Commutativity: substitute $x = t - y$; $y$ runs over all integers as $x$ does.",
                check=lambda: definition.change_index(x, t - x, y) == swapped,
                note="SymPy's Sum.change_index performs the substitution for generic f, w",
            ),
            Step(
                definition,
                _bi_infinite_sum(_w(x) * _f(t - x), x),
                "For finite sequences (zero outside $0..n-1$) the full convolutions $f * w$ and $w "
                "* f$ agree entry by entry, for every pair of lengths 1..4.",
                method=EXHAUSTIVE,
                check=_commutes_1d,
                cases=SIZES_1D,
                note="entries are free symbols: each case is a polynomial identity",
            ),
            Step(
                sp.Matrix([conv1d(f_ex, w_ex)]),
                sp.Matrix([by_hand]),
                "A worked example in exact rationals: $f = (1, \\frac12, -\\frac13)$, $w = (2, "
                "-\\frac34)$; $s(0) = 1 \\cdot 2$, $s(1) = 1 \\cdot (-\\frac34) + \\frac12 \\cdot "
                "2$, $s(2) = \\frac12 (-\\frac34) + (-\\frac13) \\cdot 2$, $s(3) = "
                "(-\\frac13)(-\\frac34)$.",
                check=lambda: same(conv1d(f_ex, w_ex), [e.doit() for e in by_hand]),
                note="exact rationals",
            ),
        ],
        summary="$s(t) = (f * w)(t) = \\sum_x f(x) w(t - x)$, the sum over all integers $x$; "
        "finite sequences are zero outside their support.",
    )


@derivation("conv.discrete_2d", "Discrete 2-D convolution")
def _discrete_2d() -> Derivation:
    i, j, m, n, u, v = _i, _j, _m, _n, _u, _v
    definition = _bi_infinite_sum(_I(m, n) * _K(i - m, j - n), m, n)
    swapped = _bi_infinite_sum(_I(i - u, j - v) * _K(u, v), u, v)
    img = sp.Matrix([[1, 2], [3, 4]])
    ker = sp.Matrix([[0, 1], [sp.Rational(1, 2), -1]])
    by_hand = sp.Matrix(
        [
            [0, 1, 2],
            [sp.Rational(1, 2), 3, 2],
            [sp.Rational(3, 2), -1, -4],
        ]
    )
    return Derivation(
        "conv.discrete_2d",
        "Discrete 2-D convolution",
        f"{LECTURE} 卷积函数 (two-dimensional data, grey-level image)",
        [
            Step(
                definition,
                swapped,
                "Commutativity in 2-D: substitute $m = i - u$ and $n = j - v$.",
                check=lambda: (
                    definition.change_index(m, i - m, u).change_index(n, j - n, v) == swapped
                ),
                note="SymPy's Sum.change_index on both indices, generic I, K",
            ),
            Step(
                definition,
                _bi_infinite_sum(_K(m, n) * _I(i - m, j - n), m, n),
                "For finite arrays (zero outside their support) $I * K = K * I$ entry by entry, on "
                "a spread of image sizes $1..3 \\times 1..3$ and kernel sizes $1..3 \\times 1..3$.",
                method=EXHAUSTIVE,
                check=_commutes_2d,
                cases=SIZES_2D,
                note="entries are free symbols: each case is a polynomial identity",
            ),
            Step(
                conv2d(img, ker),
                by_hand,
                "A worked example in exact rationals (full convolution, output $(2+2-1) \\times "
                "(2+2-1)$): $S(1,1) = 1 \\cdot (-1) + 2 \\cdot \\frac12 + 3 \\cdot 1 + 4 \\cdot 0 "
                "= 3$.",
                check=lambda: same(conv2d(img, ker), by_hand),
                note="exact rationals",
                latex=rf"{sp.latex(img)} * {sp.latex(ker)} = {sp.latex(by_hand)}",
            ),
        ],
        summary="$S(i,j) = (I * K)(i,j) = \\sum_m \\sum_n I(m,n) K(i - m, j - n)$: $I(m,n)$ is the "
        "grey value at $(m,n)$ and $K(i - m, j - n)$ its weight, a function of the "
        "distance from $(m,n)$ to $(i,j)$.",
    )


# ---------------------------------------------------------------------------
# conv.xcorr_rewrite
# ---------------------------------------------------------------------------

#: The lecture's "Convolved Feature" example: 5x5 binary image, 3x3 kernel.
FEATURE_IMAGE = (
    (1, 1, 1, 0, 0),
    (0, 1, 1, 1, 0),
    (0, 0, 1, 1, 1),
    (0, 0, 1, 1, 0),
    (0, 1, 1, 0, 0),
)
FEATURE_KERNEL = ((1, 0, 1), (0, 1, 0), (1, 0, 1))
FEATURE_RESULT = ((4, 3, 4), (2, 4, 3), (2, 3, 4))  # as printed on the slide

#: The lecture's horizontal edge kernel (K_horizontal_high_magnitude); the
#: vertical one is its transpose.
EDGE_HORIZONTAL = ((1, 2, 1), (0, 0, 0), (-1, -2, -1))

#: (h, w, kh, kw) with the kernel no larger than the image.
SIZES_VALID = tuple(
    (h, w, kh, kw)
    for h, w, kh, kw in itertools.product(range(1, 5), repeat=4)
    if kh <= h and kw <= w
)


def _xcorr_is_rotated_conv(case) -> bool:
    # valid cross-correlation at (i, j) == full convolution with rot180(K) at (i+kh-1, j+kw-1)
    h, w, kh, kw = case
    img, ker = symbol_matrix("I", h, w), symbol_matrix("K", kh, kw)
    full = conv2d(img, rot180(ker))
    return same(xcorr2d(img, ker), full[kh - 1 : h, kw - 1 : w])


@derivation("conv.xcorr_rewrite", "Cross-correlation = convolution with the kernel rotated 180°")
def _xcorr_rewrite() -> Derivation:
    i, j, m, n = _i, _j, _m, _n
    a, b = sp.symbols("a b", integer=True)
    rotated = sp.Function("Krot")  # Krot(m, n) = K(-m, -n): K rotated 180 deg about the origin
    unrotate = sp.Lambda((a, b), _K(-a, -b))
    h, w = sp.symbols("k_h k_w", integer=True, positive=True)
    xcorr = _bi_infinite_sum(_I(i + m, j + n) * _K(m, n), m, n)
    flipped = _bi_infinite_sum(_I(i - m, j - n) * _K(-m, -n), m, n)
    as_conv = _bi_infinite_sum(_I(m, n) * rotated(i - m, j - n), m, n)
    finite_rot = sp.Function("R")  # R(a, b) = K(k_h-1-a, k_w-1-b), the array rot180(K)
    finite = _bi_infinite_sum(_I(m, n) * finite_rot(i + h - 1 - m, j + w - 1 - n), m, n)
    feature, edge = sp.Matrix(FEATURE_KERNEL), sp.Matrix(EDGE_HORIZONTAL)
    return Derivation(
        "conv.xcorr_rewrite",
        "Cross-correlation = convolution with the kernel rotated 180°",
        f"{LECTURE} 卷积函数 (近似等价重写: the cross-correlation rewrite)",
        [
            Step(
                xcorr,
                flipped,
                "Substitute $m \\mapsto -m$ and $n \\mapsto -n$ (both run over all integers).",
                check=lambda: xcorr.change_index(m, -m).change_index(n, -n) == flipped,
                note="SymPy's Sum.change_index, generic I, K",
            ),
            Step(
                flipped,
                as_conv,
                "Name the rotated kernel $\\operatorname{Krot}(m, n) = K(-m, -n)$ and substitute "
                "$m \\mapsto i - m$, $n \\mapsto j - n$: the result is the convolution $(I * "
                "\\operatorname{Krot})(i, j)$.",
                check=lambda: (
                    flipped.change_index(m, i - m).change_index(n, j - n)
                    == as_conv.replace(rotated, unrotate)
                ),
                note="SymPy's Sum.change_index, then Krot replaced by its definition",
            ),
            Step(
                xcorr,
                finite,
                "For a finite $k_h \\times k_w$ kernel stored from index 0, the rotation about the "
                "origin is the array $R = \\mathrm{rot}_{180}(K)$, $R(a, b) = K(k_h-1-a, "
                "k_w-1-b)$, shifted by $(k_h-1, k_w-1)$: the valid cross-correlation equals the "
                "full convolution with $\\mathrm{rot}_{180}(K)$ read at $(i+k_h-1, j+k_w-1)$. "
                "Checked for every image 1..4 × 1..4 and every kernel that fits.",
                method=EXHAUSTIVE,
                check=_xcorr_is_rotated_conv,
                cases=SIZES_VALID,
                note="entries are free symbols: each case is a polynomial identity",
            ),
            Step(
                rot180(feature),
                feature,
                "The lecture calls the rewrite only 'approximately equivalent': the two agree "
                "exactly when the kernel is symmetric under rotation, as the Convolved Feature "
                "kernel is.",
                check=lambda: same(rot180(feature), feature),
                note="exact integers",
                latex=rf"\operatorname{{rot}}_{{180}}{sp.latex(feature)} = {sp.latex(feature)}",
            ),
            Step(
                rot180(edge),
                -edge,
                "The horizontal edge kernel is antisymmetric under rotation, so convolving "
                "with it gives the negated cross-correlation (same edges, opposite sign).",
                check=lambda: same(rot180(edge), -edge),
                note="exact integers",
                latex=rf"\operatorname{{rot}}_{{180}}{sp.latex(edge)} = -{sp.latex(edge)}",
            ),
        ],
        summary="$S(i,j) = \\sum_m \\sum_n I(i+m, j+n) K(m,n)$, the cross-correlation that "
        "deep-learning code calls convolution, is the convolution of $I$ with the kernel "
        "rotated by 180°. Learning $K$ or its rotation is the same problem, hence the "
        "rewrite.",
    )


# ---------------------------------------------------------------------------
# conv.output_size
# ---------------------------------------------------------------------------

#: The lecture's padding figures (Dumoulin & Visin): (i, k, p, s) -> printed size.
PADDING_FIGURES = {
    "no padding (Fig. 2.1)": ((4, 3, 0, 1), 2),
    "arbitrary padding (Fig. 2.2)": ((5, 4, 2, 1), 6),
    "half padding (Fig. 2.3)": ((5, 3, 1, 1), 5),
    "full padding (Fig. 2.4)": ((5, 3, 2, 1), 7),
}

#: (i, k, p, s): input 1..8, padding 0..3, kernel up to the padded input, stride 1..3.
SIZE_CASES = tuple(
    (i, k, p, s)
    for i in range(1, 9)
    for p in range(4)
    for k in range(1, i + 2 * p + 1)
    for s in range(1, 4)
)


def count_positions(i: int, k: int, p: int, s: int) -> int:
    """Count kernel positions ``q*s`` (q = 0, 1, ...) that fit in the padded input.

    The direct count that :func:`output_size` is proven equal to.

    >>> count_positions(5, 3, 2, 1)
    7
    """
    return sum(1 for q in range(i + 2 * p + 1) if q * s + k <= i + 2 * p)


def _formula_counts(case) -> bool:
    return output_size(*case[:2], padding=case[2], stride=case[3]) == count_positions(*case)


def _figure_sizes_hold(_figure) -> bool:
    (i, k, p, s), printed = PADDING_FIGURES[_figure]
    return output_size(i, k, padding=p, stride=s) == printed == count_positions(i, k, p, s)


@derivation("conv.output_size", "Output size with stride and padding; the padding regimes")
def _output_size() -> Derivation:
    i, k, s, r = sp.symbols("i k s r", integer=True, positive=True)
    p = sp.Symbol("p", integer=True, nonnegative=True)
    o = sp.Function("o")
    formula = output_size(i, k, padding=p, stride=s)
    figures = sp.Matrix([o(*args) for args, _ in PADDING_FIGURES.values()])
    printed = sp.Matrix([size for _, size in PADDING_FIGURES.values()])
    image, kernel = sp.Matrix(FEATURE_IMAGE), sp.Matrix(FEATURE_KERNEL)
    return Derivation(
        "conv.output_size",
        "Output size with stride and padding; the padding regimes",
        f"{LECTURE} Figures 2.1-2.4 (padding regimes) and the Convolved Feature example",
        [
            Step(
                o(i, k, p, s),
                formula,
                "The kernel (size $k$) starts at positions $0, s, 2s, \\dots$ of the input padded "
                "to $i + 2p$; position $q s$ fits while $q s + k \\le i + 2p$, so there are "
                "$\\lfloor (i + 2p - k)/s \\rfloor + 1$ positions. Checked against the direct "
                "count for $i = 1..8$, $p = 0..3$, every $k$ up to $i + 2p$, $s = 1..3$.",
                method=EXHAUSTIVE,
                check=_formula_counts,
                cases=SIZE_CASES,
                note="integer arithmetic",
            ),
            Step(
                figures,
                printed,
                "The lecture's four figures: $i=4, k=3, p=0$ (no padding) gives 2; $i=5, k=4, "
                "p=2$ (arbitrary) 6; $i=5, k=3, p=1$ (half) 5; $i=5, k=3, p=2$ (full) 7; all with "
                "$s=1$.",
                method=EXHAUSTIVE,
                check=_figure_sizes_hold,
                cases=tuple(PADDING_FIGURES),
                note="formula and direct count both equal the printed size",
            ),
            Step(
                sp.Subs(formula, (p, s), (0, 1)),
                i - k + 1,
                "No padding, unit stride ('valid'): the output shrinks by $k - 1$.",
            ),
            Step(
                sp.Subs(formula, (k, p, s), (2 * r + 1, r, 1)),
                i,
                "Half ('same') padding: odd $k = 2r + 1$, $p = \\lfloor k/2 \\rfloor = r$, $s = 1$ "
                "keeps the size.",
            ),
            Step(
                sp.Subs(formula, (k, p, s), (2 * r, r, 1)),
                i + 1,
                "Half padding $p = \\lfloor k/2 \\rfloor$ with an even kernel $k = 2r$ grows the "
                "output by one: 'same' needs an odd kernel.",
            ),
            Step(
                sp.Subs(formula, (p, s), (k - 1, 1)),
                i + k - 1,
                "Full padding $p = k - 1$, $s = 1$: every partial overlap counts, $o = i + k - 1$ "
                "(the size of the full convolution).",
            ),
            Step(
                xcorr2d(image, kernel),
                sp.Matrix(FEATURE_RESULT),
                "The Convolved Feature example: the slide's 5×5 binary image and 3×3 kernel "
                "$\\left[\\begin{smallmatrix}1&0&1\\\\0&1&0\\\\1&0&1\\end{smallmatrix}\\right]$; "
                "$o = \\lfloor (5 - 3)/1 \\rfloor + 1 = 3$, and the first entry is $1+1+1+1 = 4$. "
                "The kernel is symmetric under rotation, so convolution and cross-correlation "
                "agree here.",
                check=lambda: same(xcorr2d(image, kernel), sp.Matrix(FEATURE_RESULT)),
                note="exact integers",
                latex=rf"{sp.latex(image)} \star {sp.latex(kernel)} = "
                + sp.latex(sp.Matrix(FEATURE_RESULT)),
            ),
        ],
        summary="$o = \\lfloor (i + 2p - k)/s \\rfloor + 1$ for input size $i$, kernel $k$, zero "
        "padding $p$ and stride $s$ (per dimension). The lecture's figures show the four "
        "regimes: no padding, arbitrary padding, half padding (output = input) and full "
        "padding (output $= i + k - 1$). $I \\star K$ denotes the valid cross-correlation.",
        data={"formula": formula},
    )


# ---------------------------------------------------------------------------
# conv.edge_kernels
# ---------------------------------------------------------------------------

#: Step images of height 3..7 and width 3..6 with the edge after row r, 1 <= r < height.
STEP_CASES = tuple((h, w, r) for h in range(3, 8) for w in range(3, 7) for r in range(1, h))
_A, _B = sp.symbols("a b")  # grey level above / below the edge


def step_image(h: int, w: int, r: int, top=_A, bottom=_B) -> sp.Matrix:
    """An ``h x w`` image equal to ``top`` on rows ``< r`` and ``bottom`` below.

    >>> step_image(3, 2, 1, 0, 1)
    Matrix([
    [0, 0],
    [1, 1],
    [1, 1]])
    """
    return sp.Matrix(h, w, lambda m, n: top if m < r else bottom)


def _edge_response_expected(case) -> sp.Matrix:
    # Window rows i..i+2 straddle the edge iff i < r <= i + 2; there the kernel's row
    # weights (1+2+1, 0, -(1+2+1)) give 4*(a - b); in flat windows the response is 0.
    h, w, r = case
    return sp.Matrix(h - 2, w - 2, lambda i, j: 4 * (_A - _B) if i < r <= i + 2 else 0)


def _horizontal_detects(case) -> bool:
    return same(xcorr2d(step_image(*case), EDGE_HORIZONTAL), _edge_response_expected(case))


def _vertical_detects(case) -> bool:
    vertical = sp.Matrix(EDGE_HORIZONTAL).T
    image = step_image(*case).T  # the edge now runs vertically, after column r
    return same(xcorr2d(image, vertical), _edge_response_expected(case).T)


def _vertical_ignores_horizontal(case) -> bool:
    h, w, _ = case
    vertical = sp.Matrix(EDGE_HORIZONTAL).T
    return same(xcorr2d(step_image(*case), vertical), sp.zeros(h - 2, w - 2))


@derivation("conv.edge_kernels", "Edge kernels respond exactly at edges")
def _edge_kernels() -> Derivation:
    horizontal = sp.Matrix(EDGE_HORIZONTAL)
    vertical = sp.Matrix([[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    c = sp.Symbol("c")
    flat = sp.ones(5, 5) * c
    example = step_image(6, 5, 3, 0, 1)
    example_response = sp.Matrix([[0, 0, 0], [-4, -4, -4], [-4, -4, -4], [0, 0, 0]])
    return Derivation(
        "conv.edge_kernels",
        "Edge kernels respond exactly at edges",
        f"{LECTURE} 卷积运算的物理含义 (physical meaning: Lenna, horizontal and vertical edges)",
        [
            Step(
                vertical,
                horizontal.T,
                "The vertical edge kernel is the transpose of the lecture's horizontal one.",
                check=lambda: same(vertical, horizontal.T),
                note="exact integers",
                latex=rf"K_v = {sp.latex(vertical)} = {sp.latex(horizontal)}^{{T}} = K_h^{{T}}",
            ),
            Step(
                sp.Matrix.hstack(xcorr2d(flat, horizontal), xcorr2d(flat, vertical)),
                sp.zeros(3, 6),
                "Flat regions give zero: both kernels' entries sum to 0, so a constant image $c$ "
                "responds $c \\cdot 0$ everywhere.",
                check=lambda: same(
                    sp.Matrix.hstack(xcorr2d(flat, horizontal), xcorr2d(flat, vertical)),
                    sp.zeros(3, 6),
                ),
                note="c symbolic",
                latex=r"c\,\mathbf{1}_{5 \times 5} \star K_h = c\,\mathbf{1}_{5 \times 5} \star K_v"
                r" = 0_{3 \times 3}",
            ),
            Step(
                sp.Function("S_h")(_i, _j),
                sp.Piecewise(
                    (4 * (_A - _B), (_i < sp.Symbol("r")) & (sp.Symbol("r") <= _i + 2)), (0, True)
                ),
                "Horizontal step image (grey $a$ on rows $< r$, $b$ from row $r$ on): the "
                "horizontal kernel responds $4(a - b)$ exactly on the windows that straddle the "
                "edge ($i < r \\le i + 2$) and 0 elsewhere. Checked for heights 3..7, widths 3..6, "
                "every edge row.",
                method=EXHAUSTIVE,
                check=_horizontal_detects,
                cases=STEP_CASES,
                note="a, b symbolic: non-zero exactly at the edge whenever a ≠ b",
            ),
            Step(
                sp.Function("S_v")(_i, _j),
                sp.Piecewise(
                    (4 * (_A - _B), (_j < sp.Symbol("r")) & (sp.Symbol("r") <= _j + 2)), (0, True)
                ),
                "The transposed situation: a vertical edge after column r and the vertical "
                "kernel, same sizes.",
                method=EXHAUSTIVE,
                check=_vertical_detects,
                cases=STEP_CASES,
                note="a, b symbolic",
            ),
            Step(
                sp.Function("S_vh")(_i, _j),
                sp.Integer(0),
                "The vertical kernel does not see a horizontal edge: along each row the "
                "image is constant and the kernel's rows sum to 0.",
                method=EXHAUSTIVE,
                check=_vertical_ignores_horizontal,
                cases=STEP_CASES,
                note="a, b symbolic",
            ),
            Step(
                xcorr2d(example, horizontal),
                example_response,
                "A concrete 6×5 image, 0 above row 3 and 1 from it: the response is -4 on the "
                "two rows of windows that contain the edge and 0 on the flat ones.",
                check=lambda: same(xcorr2d(example, horizontal), example_response),
                note="exact integers",
                latex=rf"{sp.latex(example)} \star {sp.latex(horizontal)} = "
                + sp.latex(example_response),
            ),
        ],
        summary="$K_h = "
        "\\left[\\begin{smallmatrix}1&2&1\\\\0&0&0\\\\-1&-2&-1\\end{smallmatrix}\\right]$ "
        "weighs the row above against the row below: it responds to horizontal edges and, "
        "having zero sum, not to flat regions; its transpose does the same for vertical "
        "edges (the lecture's Lenna figures). $I \\star K$ denotes the valid "
        "cross-correlation $S(i,j) = \\sum_m \\sum_n I(i+m, j+n) K(m,n)$.",
    )
