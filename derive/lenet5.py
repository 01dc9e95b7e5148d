"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), faithful spec as plain data.

The module-level constants are the single source of truth for the network's
shape and training set-up; codegen emits them (without SymPy) into
``generated/lenet5_spec.py`` for the runtime. Exact values are SymPy
``Rational``; everything else is plain ``int``/``float``/``str``/``tuple``.

The derivations ``lenet5.*`` check the spec: layer sizes from the output-size
formula, parameter and connection counts computed from the layer table against
the paper's figures (and the lecture's S2 slip), the C3 table's structure, the
Euclidean RBF output and its gradient, the squashing constants, and the input
normalisation.

Examples
--------
>>> [layer.name for layer in LAYERS]
['C1', 'S2', 'C3', 'S4', 'C5', 'F6', 'OUTPUT']
>>> C3_TABLE[0], len(C3_TABLE)
((0, 1, 2), 16)
>>> sum(layer_params(layer) for layer in LAYERS)
60000
>>> len(rbf_centers()), len(rbf_centers()[0])
(10, 84)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy import Rational

from derive.activations import map_criterion
from derive.convolution import output_size, same
from derive.core import EXHAUSTIVE, UNVERIFIED, Derivation, Step, derivation

# --- input -------------------------------------------------------------------

#: The network's input plane is INPUT_SIZE x INPUT_SIZE ...
INPUT_SIZE = 32
#: ... an MNIST digit (MNIST_SIZE x MNIST_SIZE) zero-background padded by PAD on each side.
MNIST_SIZE = 28
PAD = 2
#: Pixel value of the white background and of the black ink (paper, section II-B).
WHITE = Rational(-1, 10)
BLACK = Rational(47, 40)

# --- squashing function f(a) = A tanh(S a) (paper, appendix A) ----------------

SQUASH_A = Rational(17159, 10000)
SQUASH_S = Rational(2, 3)

# --- C3 connection table (paper, Table I): C3 map k -> the S2 maps it reads ----

C3_TABLE: tuple[tuple[int, ...], ...] = (
    # maps 0-5: three contiguous S2 maps (cyclically)
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (4, 5, 0),
    (5, 0, 1),
    # maps 6-11: four contiguous S2 maps
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (3, 4, 5, 0),
    (4, 5, 0, 1),
    (5, 0, 1, 2),
    # maps 12-14: four non-contiguous S2 maps
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    # map 15: all six
    (0, 1, 2, 3, 4, 5),
)

# --- output RBF parameter vectors ---------------------------------------------

#: Digit bitmaps, 12 rows of 7 characters, '#' = +1, '.' = -1, for digits 0..9.
#: The paper's Fig. 3 shows its stylized 7x12 bitmaps only as a picture; they are
#: not published as data. These were drawn by hand in the same style (a one-pixel
#: blank border top and bottom, two-pixel strokes) and are NOT the paper's exact
#: bitmaps. Any 10 distinct +-1 codes of length 84 serve the RBF layer.
RBF_BITMAPS: tuple[tuple[str, ...], ...] = (
    # 0
    (".......", "..###..", ".##.##.", "##...##", "##...##", "##...##",
     "##...##", "##...##", "##...##", ".##.##.", "..###..", "......."),
    # 1
    (".......", "...##..", "..###..", ".####..", "...##..", "...##..",
     "...##..", "...##..", "...##..", "...##..", ".######", "......."),
    # 2
    (".......", ".#####.", "##...##", ".....##", "....##.", "...##..",
     "..##...", ".##....", "##.....", "##.....", "#######", "......."),
    # 3
    (".......", ".#####.", "##...##", ".....##", ".....##", "..####.",
     ".....##", ".....##", ".....##", "##...##", ".#####.", "......."),
    # 4
    (".......", "....##.", "...###.", "..####.", ".##.##.", "##..##.",
     "#######", "....##.", "....##.", "....##.", "....##.", "......."),
    # 5
    (".......", "#######", "##.....", "##.....", "######.", ".....##",
     ".....##", ".....##", ".....##", "##...##", ".#####.", "......."),
    # 6
    (".......", "..####.", ".##....", "##.....", "##.....", "######.",
     "##...##", "##...##", "##...##", "##...##", ".#####.", "......."),
    # 7
    (".......", "#######", ".....##", "....##.", "....##.", "...##..",
     "...##..", "..##...", "..##...", "..##...", "..##...", "......."),
    # 8
    (".......", ".#####.", "##...##", "##...##", "##...##", ".#####.",
     "##...##", "##...##", "##...##", "##...##", ".#####.", "......."),
    # 9
    (".......", ".#####.", "##...##", "##...##", "##...##", "##...##",
     ".######", ".....##", ".....##", "....##.", ".####..", "......."),
)  # fmt: skip
RBF_ROWS = 12
RBF_COLS = 7


def rbf_centers() -> tuple[tuple[int, ...], ...]:
    """The 10 fixed RBF parameter vectors: each bitmap read row by row as +-1.

    Returns
    -------
    tuple of 10 tuples of 84 ints in {-1, +1}; ``'#'`` (ink) -> +1, ``'.'`` -> -1.

    Examples
    --------
    >>> c = rbf_centers()
    >>> c[1][:7]
    (-1, -1, -1, -1, -1, -1, -1)
    >>> c[1][7:14]
    (-1, -1, -1, 1, 1, -1, -1)
    """
    return tuple(
        tuple(1 if ch == "#" else -1 for row in bitmap for ch in row) for bitmap in RBF_BITMAPS
    )


# --- loss and training ---------------------------------------------------------

#: The MAP criterion's constant j in E = y_D + log(e^{-j} + sum_i e^{-y_i}) (paper eq. 9).
#: The paper calls j "a positive constant" and gives no value. We take j = 1: the
#: "rubbish class" penalty e^{-j} then equals the likelihood of an output whose RBF
#: distance is 1, small against the typical squared distance between two codes
#: (tens), so the term only stops the collapse of all penalties to 0.
MAP_J = Rational(1)
#: Weights and biases start uniform in (-INIT_NUMERATOR/F_i, +INIT_NUMERATOR/F_i), F_i = fan-in.
INIT_NUMERATOR = Rational(12, 5)
#: Stochastic diagonal Levenberg-Marquardt: step = rate / (mu + h_kk) (paper, appendix C).
SDLM_MU = Rational(1, 50)
#: Samples used to re-estimate the diagonal Hessian before each pass.
HESSIAN_SAMPLES = 500
#: (passes, global learning rate): 2+3+3+4+8 = 20 passes.
SCHEDULE: tuple[tuple[int, float], ...] = (
    (2, 0.0005),
    (3, 0.0002),
    (3, 0.0001),
    (4, 0.00005),
    (8, 0.00001),
)

# --- layer table -----------------------------------------------------------------

KINDS = ("conv", "subsample", "dense", "rbf")


@dataclass(frozen=True)
class Layer:
    """One LeNet-5 layer.

    ``in_size``/``out_size`` are the side of the square maps (1 for the vector
    layers F6 and OUTPUT). ``kernel`` is the side of the receptive field (5 for the
    convolutions, 2 for subsampling, 1 for the vector layers). ``table`` is the
    connection table (out map -> input maps) or None for "all connected".
    """

    name: str
    kind: str
    in_maps: int
    out_maps: int
    in_size: int
    out_size: int
    kernel: int
    table: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Layer {self.name}: kind must be one of {KINDS}, got {self.kind!r}")


LAYERS: tuple[Layer, ...] = (
    Layer("C1", "conv", 1, 6, 32, 28, 5),
    Layer("S2", "subsample", 6, 6, 28, 14, 2),
    Layer("C3", "conv", 6, 16, 14, 10, 5, C3_TABLE),
    Layer("S4", "subsample", 16, 16, 10, 5, 2),
    Layer("C5", "conv", 16, 120, 5, 1, 5),
    Layer("F6", "dense", 120, 84, 1, 1, 1),
    Layer("OUTPUT", "rbf", 84, 10, 1, 1, 1),
)


def _inputs_per_map(layer: Layer) -> tuple[int, ...]:
    """For each output map, how many input maps feed it."""
    if layer.table is None:
        return (layer.in_maps,) * layer.out_maps
    return tuple(len(row) for row in layer.table)


def layer_params(layer: Layer) -> int:
    """Trainable parameters of ``layer``, computed from its spec.

    conv/dense: per output map, one weight per connected input map per kernel
    entry plus one bias. subsample: one coefficient and one bias per map. rbf:
    the centers are fixed, so 0.

    >>> layer_params(LAYERS[0]), layer_params(LAYERS[1]), layer_params(LAYERS[2])
    (156, 12, 1516)
    """
    if layer.kind in ("conv", "dense"):
        return sum(n * layer.kernel**2 + 1 for n in _inputs_per_map(layer))
    if layer.kind == "subsample":
        return 2 * layer.out_maps
    return 0


def layer_connections(layer: Layer) -> int:
    """Connections of ``layer`` (a bias counts as one connection), from its spec.

    Each output unit has (fan-in + 1) connections: conv/dense fan-in is
    (connected input maps) x kernel^2, subsampling fan-in is kernel^2 (one map),
    an RBF unit reads its in_maps inputs (no bias).

    >>> [layer_connections(x) for x in LAYERS]
    [122304, 5880, 151600, 2000, 48120, 10164, 840]
    """
    units_per_map = layer.out_size**2
    if layer.kind in ("conv", "dense"):
        return sum((n * layer.kernel**2 + 1) * units_per_map for n in _inputs_per_map(layer))
    if layer.kind == "subsample":
        return (layer.kernel**2 + 1) * units_per_map * layer.out_maps
    return layer.in_maps * layer.out_maps


# --- derivations ---------------------------------------------------------------------


def _stride(layer: Layer) -> int:
    """Subsampling windows do not overlap (stride = window); convolutions slide by 1."""
    return layer.kernel if layer.kind == "subsample" else 1


def _size_follows(layer: Layer) -> bool:
    return output_size(layer.in_size, layer.kernel, 0, _stride(layer)) == layer.out_size


def _chained(pair) -> bool:
    before, after = pair
    return before.out_maps == after.in_maps and before.out_size == after.in_size


@derivation("lenet5.layers", "LeNet-5 layer table")
def _layers() -> Derivation:
    shapes = [r"\mathrm{INPUT}\,1@32\times32"] + [
        rf"\mathrm{{{x.name}}}\,{x.out_maps}@{x.out_size}\times{x.out_size}" for x in LAYERS
    ]
    chain = (
        r"\begin{aligned} o &= \left\lfloor \frac{i + 2p - k}{s} \right\rfloor + 1: \\ & "
        + r" \to ".join(shapes[:4])
        + r" \\ & \to "
        + r" \to ".join(shapes[4:])
        + r" \end{aligned}"
    )
    steps = (
        Step(
            sp.Symbol("o"),
            sp.Symbol("floor((i + 2p - k)/s) + 1"),
            "Every layer's output side follows from conv.output_size: convolutions ($k = 5$, "
            "$s = 1$, $p = 0$), subsampling ($k = s = 2$), vector layers ($k = 1$).",
            method=EXHAUSTIVE,
            check=_size_follows,
            cases=LAYERS,
            latex=chain,
        ),
        Step(
            sp.Symbol("next.in"),
            sp.Symbol("previous.out"),
            "Each layer reads exactly what the previous one produces (maps and side).",
            method=EXHAUSTIVE,
            check=_chained,
            cases=tuple(itertools.pairwise(LAYERS)),
            latex=r"(\text{maps}, \text{side})_{\mathrm{in}}^{(l+1)} = "
            r"(\text{maps}, \text{side})_{\mathrm{out}}^{(l)}",
        ),
        Step(
            sp.Add(LAYERS[0].out_size, LAYERS[0].kernel, -1, evaluate=False),
            sp.Integer(INPUT_SIZE),
            "C1's 28×28 outputs of a 5×5 kernel read a plane of side $o + k - 1$: the 32×32 "
            "input plane, as the layer table says.",
            check=lambda: (
                LAYERS[0].in_size == INPUT_SIZE == LAYERS[0].out_size + LAYERS[0].kernel - 1
            ),
            note="the layer table's C1 input side and the valid-convolution size agree",
        ),
    )
    return Derivation(
        "lenet5.layers",
        "LeNet-5 layer table",
        "CNN示例: LeNet-5 (C1 ... OUTPUT); LeCun et al. 1998, section II-B",
        steps,
        summary=(
            "LeNet-5: C1 6@28×28 (5×5 conv), S2 6@14×14, C3 16@10×10 (5×5 conv with the C3 "
            "table), S4 16@5×5, C5 120 (5×5 conv over all 16 maps, i.e. fully connected), "
            "F6 84, OUTPUT 10 Euclidean RBF units."
        ),
        data={"layers": LAYERS},
    )


#: (trainable parameters, connections) as printed in the lecture / paper.
PAPER_COUNTS = {
    "C1": (156, 122_304),
    "S2": (12, 5_880),
    "C3": (1_516, 151_600),
    "S4": (32, 2_000),
    "C5": (48_120, 48_120),
    "F6": (10_164, 10_164),
}
PAPER_TOTAL = 60_000


def _by_name(name: str) -> Layer:
    return next(x for x in LAYERS if x.name == name)


def _count_step(layer: Layer) -> Step:
    params, conns = PAPER_COUNTS[layer.name]
    derived = sp.Matrix([layer_params(layer), layer_connections(layer)])
    return Step(
        derived,
        sp.Matrix([params, conns]),
        f"{layer.name} ({layer.kind}, {layer.in_maps} → {layer.out_maps} maps, "
        f"{layer.out_size}×{layer.out_size}, kernel {layer.kernel}): trainable parameters and "
        "connections computed from the layer spec equal the paper's figures.",
        latex=(
            rf"\mathrm{{{layer.name}}}: (\text{{params}}, \text{{connections}}) = "
            rf"({layer_params(layer)}, {layer_connections(layer)})"
        ),
    )


@derivation("lenet5.params", "LeNet-5 parameter and connection counts")
def _params() -> Derivation:
    s2 = _by_name("S2")
    held = {"evaluate": False}  # the lecture's arithmetic, shown as written
    lecture_s2 = sp.Mul(sp.Add(sp.Mul(2, 2, **held), 1, **held), 6, **held)
    total = sp.Add(*(layer_params(x) for x in LAYERS if x.name in PAPER_COUNTS), **held)
    steps = (
        *(_count_step(x) for x in LAYERS if x.name in PAPER_COUNTS),
        Step(
            lecture_s2,
            sp.Integer(30),
            "The lecture's S2 figure $(2 \\cdot 2+1) \\cdot 6 = 30$ counts 5 parameters per map "
            "(as if each of the 4 inputs had its own weight), contradicting its own description: "
            "the 4 inputs are summed, multiplied by ONE trainable coefficient, plus ONE trainable "
            f"bias, i.e. 2 per map and $2 \\cdot 6 = {layer_params(s2)}$ (as the lecture itself "
            "gives $2 \\cdot 16$ for S4). The spec's figure is 12.",
            check=lambda: lecture_s2.doit() == 30 and layer_params(s2) == 2 * 6 != 30,
            note="the lecture's expression evaluates to 30; the spec gives 12",
        ),
        Step(
            total,
            sp.Integer(PAPER_TOTAL),
            "Total trainable parameters: 60,000 exactly, the paper's '60,000 trainable parameters' "
            "(the RBF centres are fixed).",
        ),
    )
    return Derivation(
        "lenet5.params",
        "LeNet-5 parameter and connection counts",
        "LeNet-5 C1/S2/C3/S4/C5/F6 slides; LeCun et al. 1998, section II-B",
        steps,
        summary=(
            "Counts follow from the layer table: a convolution output map has (connected input "
            "maps $\\times\\, k^2 + 1$) parameters and each of its units that many connections; a "
            "subsampling map has 2 parameters and (4 + 1) connections per unit; F6 is dense."
        ),
        data={
            "params": {x.name: layer_params(x) for x in LAYERS},
            "connections": {x.name: layer_connections(x) for x in LAYERS},
        },  # fmt: skip
    )


#: The paper's Table I as printed: row = S2 map, column = C3 map, 'X' = connected.
#: An independent transcription, compared against C3_TABLE.
PAPER_TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)


def _c3_matrix() -> sp.Matrix:
    return sp.Matrix(6, 16, lambda s2, c3: int(s2 in C3_TABLE[c3]))


def _c3_group_ok(k: int) -> bool:
    """Maps 0-5: 3 cyclically contiguous S2 maps from k; 6-11: 4 from k-6; 12-14:
    4 maps NOT cyclically contiguous; 15: all six."""
    row = set(C3_TABLE[k])
    contiguous = [{(start + t) % 6 for t in range(len(row))} for start in range(6)]
    if k < 6:
        return row == {k % 6, (k + 1) % 6, (k + 2) % 6}
    if k < 12:
        return row == {(k - 6 + t) % 6 for t in range(4)}
    if k < 15:
        return len(row) == 4 and row not in contiguous
    return row == set(range(6))


@derivation("lenet5.c3_table", "LeNet-5 C3 connection table")
def _c3_table() -> Derivation:
    table = _c3_matrix()
    paper = sp.Matrix(6, 16, lambda r, c: int(PAPER_TABLE_I[r][c] == "X"))
    counts = sp.Matrix([[len(row) for row in C3_TABLE]])
    row_sums = sp.Matrix([[sum(table.row(r)) for r in range(6)]])
    steps = (
        Step(
            table,
            paper,
            "C3_TABLE (C3 map → S2 maps) written as the paper's Table I (rows: S2 maps, "
            "columns: C3 maps) equals an independent transcription of the printed table.",
            check=lambda: same(table, paper),
            note="exact comparison",
            # One matrix, named by both sources (they are equal); narrower columns so the
            # 16-column table fits the page.
            latex=r"\setlength{\arraycolsep}{3pt} T_{\texttt{C3\_TABLE}} = "
            r"T_{\text{Table I}} = " + sp.latex(table),
        ),
        Step(
            sp.Symbol("M_k"),
            sp.Symbol("group(k)"),
            "Maps 0–5 take 3 contiguous S2 maps, 6–11 take 4 contiguous, 12–14 take 4 "
            "non-contiguous, 15 takes all 6 (contiguous: cyclically consecutive).",
            method=EXHAUSTIVE,
            check=_c3_group_ok,
            cases=range(16),
            latex=r"|M_k| = 3\ (k<6),\ 4\ (6 \le k < 15),\ 6\ (k = 15)",
        ),
        Step(
            counts,
            sp.Matrix([[3] * 6 + [4] * 9 + [6]]),
            "Per-map counts of connected S2 maps.",
            latex=r"\setlength{\arraycolsep}{3pt} \left(|M_k|\right)_{k=0}^{15} = "
            + sp.latex(sp.Matrix([[3] * 6 + [4] * 9 + [6]])),
        ),
        Step(
            row_sums,
            sp.Matrix([[10] * 6]),
            "Every S2 map feeds exactly 10 C3 maps (the table is symmetric under rotating the "
            "S2 maps, which breaks the symmetry between C3 maps as the paper intends).",
            latex=r"\left(\sum_{k=0}^{15} T_{jk}\right)_{j=0}^{5} = " + sp.latex(row_sums),
        ),
        Step(
            sp.Add(sp.Mul(sum(counts), 25, evaluate=False), 16, evaluate=False),
            sp.Integer(1516),
            "60 connected (C3, S2) pairs of 25 weights each, and 16 biases: 1,516 trainable "
            "parameters.",
        ),
    )
    return Derivation(
        "lenet5.c3_table",
        "LeNet-5 C3 connection table",
        "C3层是一个卷积层 (例如 C3 第0张特征图与 S2 第0,1,2张相连); LeCun et al. 1998, Table I",
        steps,
        summary=(
            "C3 map $k$ reads only the S2 maps in $M_k$: fewer connections, and different C3 maps "
            "are forced to extract different features."
        ),
        data={"table": C3_TABLE, "matrix": table},
    )


def _center_distance_ok(pair) -> bool:
    a, b = pair
    centers = rbf_centers()
    dist = sum((u - v) ** 2 for u, v in zip(centers[a], centers[b], strict=True))
    hamming = sum(u != v for u, v in zip(centers[a], centers[b], strict=True))
    return dist == 4 * hamming and hamming > 0


def rbf_layer(x, centers) -> np.ndarray:
    """The Euclidean RBF units ``y_i = sum_j (x_j - w_ij)^2`` on every row of ``x``.

    >>> rbf_layer(np.array([[1, 2]], dtype=object), np.array([[0, 0], [1, 1]], dtype=object))
    array([[5, 1]], dtype=object)
    """
    x, centers = np.asarray(x, dtype=object), np.asarray(centers, dtype=object)
    return np.array(
        [
            [sum((xj - wj) ** 2 for xj, wj in zip(row, c, strict=True)) for c in centers]
            for row in x
        ],
        dtype=object,
    )


@derivation("lenet5.rbf", "LeNet-5 Euclidean RBF output")
def _rbf() -> Derivation:
    n = 3  # shown on 3 inputs; the network has 84
    xs = sp.symbols(f"x_0:{n}", real=True)
    ws = sp.symbols(f"w_0:{n}", real=True)
    sigma = sp.Symbol("sigma", positive=True)
    y = sum((xj - wj) ** 2 for xj, wj in zip(xs, ws, strict=True))
    density = sp.exp(-y / (2 * sigma**2)) / (2 * sp.pi * sigma**2) ** sp.Rational(n, 2)
    nll = sp.expand_log(-sp.log(density), force=True)
    ys = sp.symbols("y_0:2", real=True)
    j = sp.Symbol("j", positive=True)
    steps = (
        Step(
            y,
            (sp.Matrix(xs) - sp.Matrix(ws)).dot(sp.Matrix(xs) - sp.Matrix(ws)),
            "Each output unit i computes the squared Euclidean distance between its input "
            "(the F6 state $x$) and its parameter vector $w_i$: $y_i = \\sum_j (x_j - w_{ij})^2$.",
            latex=r"y_i = \sum_j (x_j - w_{ij})^2 = \lVert x - w_i \rVert^2",
        ),
        Step(
            sp.Matrix([sp.Derivative(y, v) for v in xs]),
            2 * (sp.Matrix(xs) - sp.Matrix(ws)),
            "Gradient with respect to the input: $\\partial y_i/\\partial x_j = 2 (x_j - w_{ij})$.",
        ),
        Step(
            sp.Matrix([sp.Derivative(y, v) for v in ws]),
            -2 * (sp.Matrix(xs) - sp.Matrix(ws)),
            "Gradient with respect to the centre: $\\partial y_i/\\partial w_{ij} = -2 (x_j - "
            "w_{ij})$ (LeNet-5 keeps the centres fixed; the kernels still provide it).",
        ),
        Step(
            nll,
            y / (2 * sigma**2) + sp.Rational(n, 2) * sp.log(2 * sp.pi * sigma**2),
            "The lecture's remark: $y_i$ is, up to the scale $1/(2 \\sigma^2)$ and an additive "
            "constant, the negative log-likelihood of $x$ under a Gaussian centred on $w_i$.",
            check=lambda: (
                sp.simplify(
                    nll - (y / (2 * sigma**2) + sp.Rational(n, 2) * sp.log(2 * sp.pi * sigma**2))
                )
                == 0
            ),
            note="log expanded and simplified",
            latex=r"-\log \mathcal{N}(x; w_i, \sigma^2 I) = \frac{y_i}{2\sigma^2} + "
            r"\frac{n}{2}\log(2\pi\sigma^2)",
        ),
        Step(
            sp.Symbol("||c_a - c_b||^2"),
            sp.Symbol("4 hamming(c_a, c_b) > 0"),
            "The fixed centres are the $\\pm 1$ codes of the 7×12 digit bitmaps (RBF_BITMAPS): all "
            "10 distinct, the squared distance of two codes is $4 \\times$ the number of differing "
            "pixels.",
            method=EXHAUSTIVE,
            check=_center_distance_ok,
            cases=tuple(itertools.combinations(range(10), 2)),
            latex=r"\lVert c_a - c_b \rVert^2 = 4\, d_H(c_a, c_b) > 0 \quad (a \ne b)",
        ),
        Step(
            sp.Derivative(map_criterion(ys, 0, j), ys[1]),
            -sp.exp(-ys[1]) / (sp.exp(-j) + sp.exp(-ys[0]) + sp.exp(-ys[1])),
            "Trained with the MAP criterion (loss.map): a wrong class's penalty $y_i$ gets "
            "gradient $-P(i \\mid x)$, i.e. is pushed up (2 classes, $D = 0$ shown).",
        ),
    )
    return Derivation(
        "lenet5.rbf",
        "LeNet-5 Euclidean RBF output",
        "输出层采用欧式径向基函数 (RBF 输出 $= -\\log$ likelihood); LeCun et al. 1998, eq. (7)",
        steps,
        summary=(
            "The output layer measures how far the F6 state is from each class's fixed $\\pm 1$ "
            "code; the penalty is a Gaussian negative log-likelihood, and the MAP criterion trains "
            "it. The codes are hand-drawn 7×12 bitmaps in the style of the paper's Fig. 3 (not the "
            "paper's exact bitmaps, which are not published as data)."
        ),
        data={"centers": rbf_centers()},
    )


@derivation("lenet5.squash", "LeNet-5 squashing function A·tanh(S·a)")
def _squash() -> Derivation:
    a = sp.Symbol("a", real=True)
    f = SQUASH_A * sp.tanh(SQUASH_S * a)
    f1 = f.subs(a, 1)
    a_star = sp.atanh(1 / sp.sqrt(3)) / SQUASH_S
    steps = (
        Step(
            sp.StrictLessThan(sp.Abs(f1 - 1), Rational(3, 10**6), evaluate=False),
            sp.true,
            f"$f(1) = A \\tanh(2/3) = {sp.N(f1, 12)}$: equal to 1 to within $3 \\cdot 10^{{-6}}$, "
            "not exactly ($A = 1.7159$ is $1/\\tanh(2/3)$ rounded to 4 decimals).",
            check=lambda: 0 < abs(sp.N(f1 - 1, 30)) < Rational(3, 10**6),
            note="30-digit evaluation: 0 < |A tanh(2/3) - 1| < 3e-6",
            latex=r"\left|1.7159 \tanh\left(\tfrac{2}{3}\right) - 1\right| < 3 \cdot 10^{-6}",
        ),
        Step(
            SQUASH_A * sp.tanh(-SQUASH_S, evaluate=False),
            -f1,
            "$f$ is odd, so $f(-1) = -f(1) \\approx -1$.",
        ),
        Step(
            sp.Derivative(f, a),
            SQUASH_A * SQUASH_S * (1 - sp.tanh(SQUASH_S * a) ** 2),
            "Derivative (act.scaled_tanh with $A = 1.7159$, $S = 2/3$); the gain at 0 is "
            "$A S = 1.14393\\ldots$",
        ),
        Step(
            sp.diff(f, a, 3).subs(a, a_star),
            sp.Integer(0),
            "The paper says the second derivative is maximal at $a = \\pm 1$. SymPy: $|f''|$ is "
            "maximal where $\\tanh^2(S a) = 1/3$, i.e. "
            f"$a = \\operatorname{{atanh}}(1/\\sqrt{{3}})/S = {sp.N(a_star, 6)}$: "
            "close to 1, not exactly 1.",
            latex=r"f'''(a^*) = 0, \quad a^* = \frac{3}{2}\operatorname{atanh}"
            r"\left(\frac{1}{\sqrt{3}}\right) \approx 0.98772",
        ),
    )
    return Derivation(
        "lenet5.squash",
        "LeNet-5 squashing function A·tanh(S·a)",
        r"CNN前向传播 ($f(x) = a \tanh(bx)$); LeCun et al. 1998, appendix A",
        steps,
        summary=(
            "LeNet-5 squashes with $f(a) = 1.7159 \\tanh(2a/3)$: $f(\\pm 1) = \\pm 1$ to 6 "
            "digits, so the $\\pm 1$ RBF codes are reachable without saturating."
        ),
    )


@derivation("lenet5.input", "LeNet-5 input normalisation")
def _input() -> Derivation:
    q = sp.Symbol("q", nonnegative=True)  # fraction of ink (black) pixels
    mean = WHITE + (BLACK - WHITE) * q
    var = (BLACK - WHITE) ** 2 * q * (1 - q)
    q0 = sp.solve(sp.Eq(mean, 0), q)[0]
    q_max = sp.solve(sp.diff(var, q), q)[0]
    steps = (
        Step(
            sp.Add(MNIST_SIZE, sp.Mul(2, PAD, evaluate=False), evaluate=False),
            sp.Integer(INPUT_SIZE),
            "A 28×28 MNIST digit padded by 2 on each side fills the 32×32 input.",
        ),
        Step(
            sp.Subs(mean, q, Rational(4, 51)),
            sp.Integer(0),
            "For a two-level image (white -0.1, black 1.175) with a fraction q of black "
            "pixels, the mean $-0.1 + 1.275 q$ is 0 exactly when $q = 4/51 \\approx 7.8\\%$ "
            "(the only root: the mean is linear in $q$).",
            check=lambda: sp.Subs(mean, q, Rational(4, 51)).doit() == 0 and q0 == Rational(4, 51),
            note="the substitution gives 0, and sympy.solve finds the root 4/51",
        ),
        Step(
            sp.Subs(var, q, q0),
            Rational(47, 400),
            "At that $q$ the variance $(B - W)^2 q (1 - q)$ is $47/400 = 0.1175$.",
        ),
        Step(
            sp.Subs(var, q, q_max),
            Rational(2601, 6400),
            "Its maximum over $q$ (at $q = 1/2$) is $(B - W)^2/4 = 2601/6400 \\approx 0.406 < 1$: "
            "for two-level pixels the paper's 'variance roughly 1' cannot hold.",
        ),
        Step(
            sp.Symbol("mean_var_MNIST"),
            sp.Tuple(0, 1),
            "The paper's claim for the real (grey-level) data: mean roughly 0, variance roughly 1.",
            method=UNVERIFIED,
            latex=r"(\mathrm{mean}, \mathrm{var})_{\mathrm{MNIST}} \approx (0, 1)",
            note=(
                "needs the MNIST pixels, which derive/ does not read; the two-level bound above "
                "limits the variance to ≤ 0.41, so 'roughly 1' is at best loose. The runtime "
                "(lenet5/) can measure both on the training set."
            ),
        ),
    )
    return Derivation(
        "lenet5.input",
        "LeNet-5 input normalisation",
        "LeCun et al. 1998, section II-B (white -0.1, black 1.175)",
        steps,
        summary=(
            "Pixels are mapped linearly so that white is -0.1 and black 1.175. What SymPy can "
            "check: the mean of a two-level image is 0 at 7.8% ink, and its variance never "
            "exceeds 0.41; the paper's 'mean roughly 0, variance roughly 1' for MNIST itself "
            "is not checked here."
        ),
    )
