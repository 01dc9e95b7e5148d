"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), faithful spec as plain data.

The module-level constants are the single source of truth for the network's
shape and training set-up; codegen emits them (without SymPy) into
``generated/lenet5_spec.py`` for the runtime. Exact values are SymPy
``Rational``; everything else is plain ``int``/``float``/``str``/``tuple``.

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

from dataclasses import dataclass

from sympy import Rational

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
