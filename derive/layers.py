"""Layer forward formulas (lecture: 卷积层的前向计算, Pooling 层的前向计算).

The structural 2-D operations used by the layer and gradient derivations are
SymPy matrices in exact arithmetic. Valid cross-correlation, full
convolution, 180-degree rotation and output size come from
:mod:`derive.convolution`; here are zero padding, stride dilation, the lecture's
``down()`` (mean / max) and ``up()`` (Kronecker up-sampling). Next to them,
:func:`conv2d_explicit` builds a multi-channel convolution layer entry by entry
straight from the index definition, with SymPy symbols, so that derivations can
prove the structural forms equal to the definition.

Conventions follow the kernel API: forward "convolution" is cross-correlation,

    y[k, i, j] = b[k] + sum_{c in M_k} sum_{u, v} xp[c, i*s + u, j*s + v] * w[k, c, u, v],

with ``xp`` the input zero-padded by ``p``.

Examples
--------
>>> import sympy as sp
>>> up_mean(sp.Matrix([[1, 3], [2, 4]]), 2)[0, :]
Matrix([[1/4, 1/4, 3/4, 3/4]])
>>> down_mean(up_mean(sp.Matrix([[1, 3], [2, 4]]), 2), 2)
Matrix([
[1/4, 3/4],
[1/2,   1]])
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import sympy as sp

from derive.convolution import output_size, same, xcorr2d
from derive.core import EXHAUSTIVE, Derivation, Step, derivation

# --- structural 2-D operations ------------------------------------------------


def _check_matrix(name: str, m) -> sp.Matrix:
    if not isinstance(m, sp.MatrixBase):
        raise TypeError(f"{name} must be a sympy Matrix, got {type(m).__name__}")
    return m


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def pad(a, p: int) -> sp.Matrix:
    """Zero-pad ``a`` by ``p`` on every side.

    >>> pad(sp.Matrix([[7]]), 1)
    Matrix([
    [0, 0, 0],
    [0, 7, 0],
    [0, 0, 0]])
    """
    a, p = _check_matrix("a", a), _check_int("p", p, 0)
    out = sp.zeros(a.rows + 2 * p, a.cols + 2 * p)
    out[p : p + a.rows, p : p + a.cols] = a
    return out


def dilate(a, s: int) -> sp.Matrix:
    """Insert ``s - 1`` zeros between neighbouring entries (the stride's adjoint).

    >>> dilate(sp.Matrix([[1, 2]]), 2)
    Matrix([[1, 0, 2]])
    """
    a, s = _check_matrix("a", a), _check_int("s", s, 1)
    out = sp.zeros((a.rows - 1) * s + 1, (a.cols - 1) * s + 1)
    for i, j in itertools.product(range(a.rows), range(a.cols)):
        out[i * s, j * s] = a[i, j]
    return out


def up_mean(d, n: int) -> sp.Matrix:
    """The lecture's ``up(x) = x ⊗ 1_{n×n} / n²`` (mean-pooling back-propagation).

    >>> up_mean(sp.Matrix([[4]]), 2)
    Matrix([
    [1, 1],
    [1, 1]])
    """
    d, n = _check_matrix("d", d), _check_int("n", n, 1)
    return sp.kronecker_product(d, sp.ones(n, n)) / n**2


def _check_divisible(a: sp.Matrix, n: int) -> None:
    """The lecture's ``down()`` tiles the map with non-overlapping n x n windows."""
    a, n = _check_matrix("a", a), _check_int("n", n, 1)
    if a.rows % n or a.cols % n:
        raise ValueError(f"pooling: shape {a.shape} is not divisible by n={n}")


def pool_windows(a, size: int, stride: int | None = None, padding: int = 0):
    """Yield ``(i, j, entries)`` for every pooling window of ``a`` (floor mode).

    Window ``(i, j)`` covers rows ``i*stride - padding ...`` (``size`` of them) and the
    same columns; ``entries`` are its in-bounds ``(r, c, a[r, c])`` in row-major
    order (the padding holds no entry). ``stride`` None means ``size``.

    >>> [[(r, c) for r, c, _ in e] for _, _, e in pool_windows(sp.ones(2, 3), 2, 1, 1)][:2]
    [[(0, 0)], [(0, 0), (0, 1)]]
    """
    a, size = _check_matrix("a", a), _check_int("size", size, 1)
    stride = size if stride is None else _check_int("stride", stride, 1)
    padding = _check_int("padding", padding, 0)
    rows = (a.rows + 2 * padding - size) // stride + 1
    cols = (a.cols + 2 * padding - size) // stride + 1
    for i, j in itertools.product(range(rows), range(cols)):
        taps = itertools.product(range(size), range(size))
        at = [(i * stride + u - padding, j * stride + v - padding) for u, v in taps]
        yield i, j, [(r, c, a[r, c]) for r, c in at if 0 <= r < a.rows and 0 <= c < a.cols]


def _pooled(a, size, stride, padding, value) -> sp.Matrix:
    windows = list(pool_windows(a, size, stride, padding))
    rows, cols = (windows[-1][0] + 1, windows[-1][1] + 1) if windows else (0, 0)
    out = sp.zeros(rows, cols)
    for i, j, entries in windows:
        out[i, j] = value(entries)
    return out


def pool_mean(a, size: int, stride: int | None = None, padding: int = 0) -> sp.Matrix:
    """Mean pooling: the sum of each window's entries over ``size**2`` (padding counts
    as zeros, PyTorch's ``count_include_pad=True``).

    >>> pool_mean(sp.Matrix([[4, 8, 1]]), 1, 2)
    Matrix([[4, 1]])
    """
    return _pooled(a, size, stride, padding, lambda e: sum((v for *_, v in e), 0) / size**2)


def pool_max(a, size: int, stride: int | None = None, padding: int = 0):
    """Max pooling and the position ``(r, c)`` of each window's first maximum in
    row-major order (the padding never wins). Entries must be comparable numbers.

    >>> pool_max(sp.Matrix([[1, 9], [9, 2]]), 2)
    (Matrix([[9]]), {(0, 0): (0, 1)})
    """
    where = {}

    def first_max(entries):
        best = max(range(len(entries)), key=lambda t: (entries[t][2], -t))
        return entries[best]

    for i, j, entries in pool_windows(a, size, stride, padding):
        where[(i, j)] = first_max(entries)[:2]
    return _pooled(a, size, stride, padding, lambda e: first_max(e)[2]), where


def down_mean(a, n: int) -> sp.Matrix:
    """Mean over non-overlapping ``n x n`` windows (the lecture's mean ``down()``).

    >>> down_mean(sp.Matrix([[1, 3], [5, 7]]), 2)
    Matrix([[4]])
    """
    _check_divisible(a, n)
    return pool_mean(a, n)


def down_max(a, n: int) -> tuple[sp.Matrix, dict]:
    """Max over ``n x n`` windows, and the recorded source of each maximum.

    Returns ``(pooled, argmax)`` with ``argmax[(i, j)] = (r, c)`` the position in
    ``a`` of the first maximum in row-major order (the kernel API's tie rule).
    Entries must be comparable numbers.

    >>> down_max(sp.Matrix([[1, 9], [9, 2]]), 2)
    (Matrix([[9]]), {(0, 0): (0, 1)})
    """
    _check_divisible(a, n)
    return pool_max(a, n)


def route_max(d, argmax: dict, shape: tuple[int, int]) -> sp.Matrix:
    """Max-pooling back-propagation: ``d[i, j]`` goes to ``argmax[(i, j)]``, 0 elsewhere.

    >>> route_max(sp.Matrix([[5]]), {(0, 0): (1, 0)}, (2, 2))
    Matrix([
    [0, 0],
    [5, 0]])
    """
    d = _check_matrix("d", d)
    out = sp.zeros(*shape)
    for (i, j), (r, c) in argmax.items():
        out[r, c] += d[i, j]
    return out


# --- the explicit convolution layer ---------------------------------------------


def conv2d_explicit(n_in, n_out, h, w, kh, kw, stride=1, padding=0, table=None):
    """A convolution layer written entry by entry from the index definition.

    ``S[k, i, j] = b[k] + sum_{c in M_k} sum_{u<kh, v<kw} x[c, i*s+u-p, j*s+v-p] w[k, c, u, v]``
    where out-of-range input indices (the zero padding) contribute nothing.

    Parameters
    ----------
    n_in, n_out, h, w, kh, kw : int
        Input / output channels, input height and width, kernel height and width.
    stride, padding : int
        ``s >= 1``, ``p >= 0``.
    table : sequence of sequences of int, optional
        ``table[k]`` lists the input channels output channel ``k`` reads
        (LeNet's C3); None connects all.

    Returns
    -------
    (x, w, b, S)
        SymPy ``Array`` of symbols ``x_{c,i,j}`` shape (n_in, h, w), ``w_{k,c,u,v}``
        shape (n_out, n_in, kh, kw), ``b_{k}`` shape (n_out,), and the output
        expressions ``S`` shape (n_out, Ho, Wo).

    Examples
    --------
    >>> x, wt, b, S = conv2d_explicit(1, 1, 2, 2, 2, 2)
    >>> S.shape
    (1, 1, 1)
    >>> S[0, 0, 0] - b[0] == sum(x[0, u, v] * wt[0, 0, u, v] for u in (0, 1) for v in (0, 1))
    True
    >>> conv2d_explicit(1, 1, 2, 2, 3, 3)
    Traceback (most recent call last):
    ...
    ValueError: conv2d_explicit: output would be 0x0 (h=2, w=2, kh=3, kw=3, stride=1, padding=0)
    """
    for name, v in (("n_in", n_in), ("n_out", n_out), ("h", h), ("w", w), ("kh", kh), ("kw", kw)):
        _check_int(name, v, 1)
    _check_int("stride", stride, 1)
    _check_int("padding", padding, 0)
    ho, wo = int(output_size(h, kh, padding, stride)), int(output_size(w, kw, padding, stride))
    if ho < 1 or wo < 1:
        raise ValueError(
            f"conv2d_explicit: output would be {max(ho, 0)}x{max(wo, 0)} "
            f"(h={h}, w={w}, kh={kh}, kw={kw}, stride={stride}, padding={padding})"
        )
    links = _table_links(table, n_in, n_out)
    x = symbol_array("x", (n_in, h, w))
    wt = symbol_array("w", (n_out, n_in, kh, kw))
    b = symbol_array("b", (n_out,))

    def entry(k, i, j):
        terms = [
            x[c, i * stride + u - padding, j * stride + v - padding] * wt[k, c, u, v]
            for c in links[k]
            for u in range(kh)
            for v in range(kw)
            if 0 <= i * stride + u - padding < h and 0 <= j * stride + v - padding < w
        ]
        return b[k] + sp.Add(*terms)

    s = [[[entry(k, i, j) for j in range(wo)] for i in range(ho)] for k in range(n_out)]
    return x, wt, b, sp.Array(s)


def symbol_array(stem: str, shape: tuple[int, ...]) -> sp.Array:
    """A SymPy Array of symbols ``stem_{i,j,...}`` of the given shape.

    >>> symbol_array("g", (1, 2))
    [[g_{0,0}, g_{0,1}]]
    """
    cells = [
        sp.Symbol(f"{stem}_{{{','.join(map(str, idx))}}}")
        for idx in itertools.product(*map(range, shape))
    ]
    return sp.Array(cells, shape)


def _table_links(table, n_in: int, n_out: int) -> tuple[tuple[int, ...], ...]:
    if table is None:
        return (tuple(range(n_in)),) * n_out
    links = tuple(tuple(row) for row in table)
    if (
        len(links) != n_out
        or not all(links)
        or any(not 0 <= c < n_in for row in links for c in row)
    ):
        raise ValueError(
            f"table must list, for each of the {n_out} outputs, at least one input < {n_in}"
        )
    return links


def compact_latex(obj, keep: int | None = None) -> str:
    """LaTeX with indexed symbols written compactly: ``x_{0,1,2}`` becomes ``x_{012}``.

    ``keep`` keeps only the last ``keep`` indices (for single-channel displays,
    where the leading channel indices are all 0). Display only: the checks use
    the symbols themselves.

    >>> compact_latex(symbol_array("x", (1, 1, 2))[0, 0, 1] + 1)
    'x_{001} + 1'
    >>> compact_latex(symbol_array("w", (1, 1, 2, 2))[0, 0, 1, 0], keep=2)
    'w_{10}'
    """

    def short(name: str) -> str:
        m = re.fullmatch(r"(.+)_\{([\d,]+)\}", name)
        if not m:
            return name
        idx = m.group(2).split(",")
        return f"{m.group(1)}_{{{''.join(idx[-keep:] if keep else idx)}}}"

    return sp.latex(obj.xreplace({s: sp.Symbol(short(s.name)) for s in obj.free_symbols}))


def two_lines(lhs: str, rhs: str) -> str:
    r"""``lhs`` on one line and ``= rhs`` on the next (for wide displays).

    >>> two_lines("a", "b")
    '\\begin{aligned} & a \\\\ & = b \\end{aligned}'
    """
    return rf"\begin{{aligned}} & {lhs} \\ & = {rhs} \end{{aligned}}"


def plane(arr, *idx) -> sp.Matrix:
    """The 2-D plane ``arr[idx..., :, :]`` of a SymPy Array as a Matrix.

    >>> plane(symbol_array("x", (2, 1, 2)), 1)
    Matrix([[x_{1,0,0}, x_{1,0,1}]])
    """
    sub = arr[idx] if idx else arr
    return sp.Matrix(sub.tolist())


def structural_conv(x, wt, b, stride, padding, table=None) -> list[sp.Matrix]:
    """``S_k = b_k + sum_{c in M_k} xcorr2d(x_c, w_kc, stride, padding)`` (one Matrix per k)."""
    n_out, n_in = wt.shape[0], wt.shape[1]
    links = _table_links(table, n_in, n_out)
    xs = [plane(x, c) for c in range(n_in)]
    ws = [[plane(wt, k, c) for c in range(n_in)] for k in range(n_out)]
    return _conv_maps(xs, ws, b, links, stride, padding)


def _conv_maps(xs, ws, b, links, stride, padding, dilation=1) -> list[sp.Matrix]:
    """``b_k + sum_{c in links[k]} xcorr2d(xs[c], ws[k][c])`` for every output k.

    ``xs`` are the input planes and ``ws[k][c]`` the kernels, all Matrices; an output with no
    connected input is its bias alone.
    """
    out = []
    for k, row in enumerate(links):
        maps = [xcorr2d(xs[c], ws[k][c], stride, padding, dilation) for c in row]
        if not maps:
            maps = [sp.zeros(*xcorr2d(xs[0], ws[k][0], stride, padding, dilation).shape)]
        total = sum(maps[1:], maps[0])
        out.append(total + b[k] * sp.ones(*total.shape))
    return out


# --- whole layers on a batch: the definitions the kernel table is proven against -----
#
# NCHW NumPy object arrays of exact SymPy values in and out; each applies the
# structural form above to every sample and map (``kernel.*`` proves the kernel
# specs of derive.kernels equal to these).


def conv2d_layer(x, w, b, stride=1, padding=0, dilation=1, table=None) -> np.ndarray:
    """The lecture's ``z_k = sum_{c in M_k} x_c * w_kc + b_k`` on a batch (NCHW).

    ``*`` is :func:`~derive.convolution.xcorr2d` with ``stride``, ``padding`` and
    ``dilation``; ``table`` is the kernels' ``K x C`` 0/1 connection mask (None: all
    connected); an output map with no connected input is its bias.

    >>> x = np.array(sp.symbols("x:4"), dtype=object).reshape(1, 1, 2, 2)
    >>> conv2d_layer(x, np.ones((1, 1, 2, 2), dtype=object), np.zeros(1, dtype=object))
    array([[[[x0 + x1 + x2 + x3]]]], dtype=object)
    """
    x, w = np.asarray(x, dtype=object), np.asarray(w, dtype=object)
    n_out, n_in = w.shape[:2]
    mask = np.ones((n_out, n_in), bool) if table is None else np.asarray(table).astype(bool)
    links = [np.flatnonzero(row) for row in mask]
    ws = [[sp.Matrix(w[k, c]) for c in range(n_in)] for k in range(n_out)]
    samples = []
    for xs in x:
        maps = _conv_maps([sp.Matrix(p) for p in xs], ws, b, links, stride, padding, dilation)
        samples.append([z.tolist() for z in maps])
    return np.array(samples, dtype=object)


def _per_plane(x, f) -> np.ndarray:
    """``f`` (Matrix -> Matrix) applied to every plane of an NCHW object array."""
    x = np.asarray(x, dtype=object)
    out = [[f(sp.Matrix(x[n, c])).tolist() for c in range(x.shape[1])] for n in range(x.shape[0])]
    return np.array(out, dtype=object)


def mean_pool_layer(x, size=2, stride=None, padding=0) -> np.ndarray:
    """:func:`pool_mean` on every plane of a batch."""
    return _per_plane(x, lambda a: pool_mean(a, size, stride, padding))


def max_pool_layer(x, size=2, stride=None, padding=0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pool_max` on every plane, and the flat index ``h*W + w`` of each maximum."""
    x = np.asarray(x, dtype=object)
    width = x.shape[3]

    def flat(a):
        pooled, where = pool_max(a, size, stride, padding)
        return sp.Matrix(*pooled.shape, lambda i, j: _flat(where[(i, j)], width))

    return _per_plane(x, lambda a: pool_max(a, size, stride, padding)[0]), _per_plane(x, flat)


def _flat(pos, width):
    return pos[0] * width + pos[1]


def subsample_layer(x, coef, bias) -> np.ndarray:
    """LeNet-5's S2/S4: ``z_k = c_k sum(2x2 window of a_k) + b_k`` (= ``beta_k down(a)``
    with ``beta_k = 4 c_k``)."""
    x = np.asarray(x, dtype=object)
    out = _per_plane(x, lambda a: 4 * down_mean(a, 2))
    for c in range(x.shape[1]):
        out[:, c] = out[:, c] * coef[c] + bias[c]
    return out


def dense_layer(x, w, b) -> np.ndarray:
    """A fully connected layer ``y = W x + b`` on every row of ``x`` (N x I)."""
    y = (
        sp.Matrix(np.asarray(x, dtype=object).tolist())
        * sp.Matrix(np.asarray(w, dtype=object).tolist()).T
    )
    return np.array(y.tolist(), dtype=object).reshape(len(x), len(w)) + np.asarray(b, dtype=object)


# --- derivations ---------------------------------------------------------------------

#: (n_in, n_out, h, w, kh, kw, stride, padding, table) cases of the forward check.
_FORWARD_CASES = (
    (1, 1, 3, 3, 2, 2, 1, 0, None),
    (2, 2, 4, 4, 3, 3, 1, 0, None),
    (2, 2, 5, 4, 3, 2, 2, 1, None),
    (3, 2, 4, 4, 2, 2, 1, 0, ((0, 2), (1,))),  # a C3-like partial table
    (1, 2, 5, 5, 3, 3, 2, 0, None),
)


def _forward_matches(case) -> bool:
    *sizes, table = case
    x, wt, b, s = conv2d_explicit(*sizes, table=table)
    structural = structural_conv(x, wt, b, sizes[6], sizes[7], table)
    return all(same(plane(s, k), structural[k]) for k in range(len(structural)))


@derivation("layer.conv_forward", "Convolution layer forward pass")
def _conv_forward() -> Derivation:
    x, wt, b, s = conv2d_explicit(2, 1, 3, 3, 2, 2)
    structural = structural_conv(x, wt, b, 1, 0)[0]
    # Display: two input maps a_0, a_1 of a 3x3 layer, one output map, 2x2 kernels.
    a0, a1, k0, k1 = plane(x, 0), plane(x, 1), plane(wt, 0, 0), plane(wt, 0, 1)
    steps = (
        Step(
            sp.Matrix(s[0].tolist()),
            structural,
            "The lecture's $z_j = \\sum_{i \\in M_j} a_i * k_{ji} + b_j$, written entry by entry "
            "from $S(i,j) = \\sum_m \\sum_n I(i+m, j+n) K(m, n)$, equals the sum over connected "
            "input maps of the valid cross-correlations plus the bias (2 input maps, 3×3, 2×2 "
            "kernels).",
            check=lambda: same(sp.Matrix(s[0].tolist()), structural),
            note="expansion of both sides",
            latex=two_lines(
                r"z_0 = \sum_{i \in M_0} a_i \star k_{0i} + b_0, \quad z_0(0,0)",
                compact_latex((xcorr2d(a0, k0) + xcorr2d(a1, k1))[0, 0] + b[0]),
            ),
        ),
        Step(
            sp.Symbol("z_k[i,j]"),
            sp.Symbol("S_k[i,j]"),
            "With stride $s$, zero padding $p$ and a connection table $M_k$, the explicit "
            "definition equals $b_k$ plus the strided, padded cross-correlations "
            "$\\sum_{c \\in M_k} \\mathrm{xcorr}(x_c, w_{kc}, s, p)$ (cases: input and output "
            "maps, h, w, kh, kw, s, p, table).",
            method=EXHAUSTIVE,
            check=_forward_matches,
            cases=_FORWARD_CASES,
            latex=(
                r"z_k[i,j] = b_k + \sum_{c \in M_k} \sum_{u,v} "
                r"x^{(p)}_c[i s + u, j s + v]\, w_{kc}[u,v]"
            ),
        ),
    )
    return Derivation(
        "layer.conv_forward",
        "Convolution layer forward pass",
        r"卷积层的前向计算 ($z_j = \sum_{i \in M_j} a_i * k_{ji} + b_j$, $a_j = f(z_j)$)",
        steps,
        summary=(
            "A convolution layer sums, over the input maps $M_j$ connected to output map $j$, the "
            "valid cross-correlation of each input map with its kernel, adds one bias per map and "
            "applies $f$ element-wise ($a_j = f(z_j)$). The structural form is proven equal to the "
            "index definition, including stride, padding and a partial connection table."
        ),
        data={"explicit": s, "structural": structural},
    )


def _pool_matrix(size: int, n: int) -> sp.Matrix:
    """``P = I_{size/n} ⊗ 1_{1×n}``: ``P a Pᵀ`` sums every n x n window of ``a``."""
    return sp.kronecker_product(sp.eye(size // n), sp.ones(1, n))


def _mean_pool_cases_ok(case) -> bool:
    h, w, n = case
    a = plane(symbol_array("a", (1, h, w)), 0)
    d = plane(symbol_array("d", (1, h // n, w // n)), 0)
    as_matrix = _pool_matrix(h, n) * a * _pool_matrix(w, n).T / n**2
    # <down(a), d> = <a, up(d)>: up() is the adjoint of mean down().
    adjoint = same(
        sum(down_mean(a, n).multiply_elementwise(d)), sum(a.multiply_elementwise(up_mean(d, n)))
    )
    return same(down_mean(a, n), as_matrix) and adjoint


#: Concrete planes (and window size) for the max-pooling check; includes ties.
_MAX_CASES = (
    (((3, 1), (2, 0)), 2),
    (((1, 2, 0, 7), (5, 1, 3, 3), (0, 0, 2, 1), (4, -1, 6, 6)), 2),
    (((1, 1), (1, 1)), 2),
    (((0, 5, 1), (2, 9, 9), (3, 4, 8)), 3),
)


def _max_pool_ok(case) -> bool:
    rows, n = case
    a = sp.Matrix(rows)
    pooled, argmax = down_max(a, n)
    for i, j in argmax:
        win = a[i * n : (i + 1) * n, j * n : (j + 1) * n]
        r, c = argmax[(i, j)]
        first = next(t for t in range(n * n) if win[t] == sp.Max(*win))
        if pooled[i, j] != sp.Max(*win) or (r - i * n) * n + (c - j * n) != first:
            return False
    return True


@derivation("layer.pool_forward", "Pooling layer forward pass")
def _pool_forward() -> Derivation:
    beta, bias, coef = sp.symbols("beta_k b_k c_k")
    a = plane(symbol_array("a", (1, 4, 4)), 0)
    p4 = _pool_matrix(4, 2)
    mean_z = beta * down_mean(a, 2) + bias * sp.ones(2, 2)
    lenet_z = sp.Matrix(2, 2, lambda i, j: coef * sum(a[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]))
    steps = (
        Step(
            mean_z,
            beta * p4 * a * p4.T / 4 + bias * sp.ones(2, 2),
            "Mean pooling: $z_k = \\beta_k \\mathrm{down}(a_j) + b_k$ with $\\mathrm{down}$ the "
            "mean of each 2×2 window; as matrices $\\mathrm{down}(a) = P a P^T / n^2$ with $P = I "
            "\\otimes 1_{1 \\times n}$ (4×4 input).",
            check=lambda: same(mean_z, beta * p4 * a * p4.T / 4 + bias * sp.ones(2, 2)),
            note="expansion of both sides",
            latex=two_lines(
                r"\beta_k\,\mathrm{down}(a) + b_k = \frac{\beta_k}{4} P a P^{T} + b_k",
                compact_latex(mean_z, keep=2),
            ),
        ),
        Step(
            sp.Symbol("<down(a),d>"),
            sp.Symbol("<a,up(d)>"),
            "For every size $(h, w, n)$: $\\mathrm{down}(a) = P_h a P_w^T / n^2$, and the "
            "lecture's $\\mathrm{up}(x) = x \\otimes 1_{n \\times n} / n^2$ is its adjoint: "
            "$\\langle \\mathrm{down}(a), d \\rangle = \\langle a, \\mathrm{up}(d) \\rangle$.",
            method=EXHAUSTIVE,
            check=_mean_pool_cases_ok,
            cases=((2, 2, 2), (4, 4, 2), (4, 6, 2), (6, 6, 3), (6, 4, 2)),
            latex=(
                r"\langle \mathrm{down}(a), d \rangle = \langle a, \mathrm{up}(d) \rangle, "
                r"\quad \mathrm{up}(d) = \frac{d \otimes 1_{n \times n}}{n^2}"
            ),
        ),
        Step(
            sp.Symbol("down_max(a)[i,j]"),
            sp.Symbol("Max(window_ij)"),
            "Max pooling: down() takes the maximum of each window; the recorded source is the "
            "first maximum in row-major order (ties included in the cases).",
            method=EXHAUSTIVE,
            check=_max_pool_ok,
            cases=_MAX_CASES,
            latex=r"\mathrm{down}_{\max}(a)_{ij} = \max_{(r,c) \in M_{ij}} a_{rc}",
        ),
        Step(
            lenet_z + bias * sp.ones(2, 2),
            (4 * coef) * down_mean(a, 2) + bias * sp.ones(2, 2),
            "LeNet-5's S2/S4 subsampling (the four inputs summed, times a trainable coefficient, "
            "plus a trainable bias) is mean pooling with $\\beta_k = n^2 c_k$.",
            check=lambda: same(
                lenet_z + bias * sp.ones(2, 2), 4 * coef * down_mean(a, 2) + bias * sp.ones(2, 2)
            ),
            note="expansion of both sides",
            latex=(
                r"c_k \sum_{(r,c) \in M_{ij}} a_{rc} + b_k = "
                r"(n^2 c_k)\, \mathrm{down}_{\mathrm{mean}}(a)_{ij} + b_k"
            ),
        ),
    )
    return Derivation(
        "layer.pool_forward",
        "Pooling layer forward pass",
        r"Pooling 层的前向计算 ($z_k = \beta_k \mathrm{down}(a_j) + b_k$)",
        steps,
        summary=(
            "A pooling layer maps each non-overlapping $n \\times n$ window to one value, scales "
            "it by $\\beta_k$ and adds $b_k$ (the lecture notes $\\beta$ may be 1 and $b$ 0). Mean "
            "$\\mathrm{down}$ is a linear map whose adjoint is the lecture's $\\mathrm{up}$; max "
            "$\\mathrm{down}$ selects and records the window's maximum. LeNet-5's trainable "
            "subsampling is the mean case with $\\beta_k = n^2 c_k$."
        ),
    )
