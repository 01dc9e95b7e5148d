"""Parameter-count derivations: fully vs locally connected vs weight-shared layers.

Each count is a general formula, proven by building the explicit layer for small
sizes (outputs as SymPy expressions with one symbol per weight) and counting its
distinct weight symbols, then substituted to the lecture's numbers.

>>> len(layer_weights(full_layer(2, 3, units=4)))
24
>>> len(layer_weights(shared_layer(5, 3, kernels=1)))
9
"""

from __future__ import annotations

import itertools

import sympy as sp

from derive.convolution import LECTURE, output_size, symbol_matrix
from derive.core import EXHAUSTIVE, Derivation, Step, derivation

# ---------------------------------------------------------------------------
# Explicit layers: lists of output expressions, one symbol per weight
# ---------------------------------------------------------------------------


def full_layer(h: int, w: int, units: int) -> list:
    """Fully connected: every unit ``u`` weighs every pixel with its own ``w_u_m_n``.

    >>> full_layer(1, 2, units=1)
    [I_0_0*w_0_0_0 + I_0_1*w_0_0_1]
    """
    img = symbol_matrix("I", h, w)
    return [
        sum(img[m, n] * sp.Symbol(f"w_{u}_{m}_{n}") for m in range(h) for n in range(w))
        for u in range(_count(units, "units"))
    ]


def local_layer(size: int, k: int) -> list:
    """Locally connected, unshared: one unit per valid ``k x k`` window (stride 1),
    each with its own weights ``w_r_c_a_b``.

    >>> len(local_layer(3, 2))
    4
    """
    img = symbol_matrix("I", size, size)
    return [
        _window(img, r, c, k, lambda a, b, r=r, c=c: sp.Symbol(f"w_{r}_{c}_{a}_{b}"))
        for r, c in _positions(size, k)
    ]


def shared_layer(size: int, k: int, kernels: int, channels: int = 1) -> list:
    """Convolutional: each of ``kernels`` kernels (``k x k`` over ``channels`` input
    maps) is shared by all windows: weights ``w_f_ch_a_b``.

    >>> len(shared_layer(3, 2, kernels=2))
    8
    """
    maps = [symbol_matrix(f"I{ch}", size, size) for ch in range(_count(channels, "channels"))]
    return [
        sum(
            _window(maps[ch], r, c, k, lambda a, b, f=f, ch=ch: sp.Symbol(f"w_{f}_{ch}_{a}_{b}"))
            for ch in range(channels)
        )
        for f in range(_count(kernels, "kernels"))
        for r, c in _positions(size, k)
    ]


def layer_weights(outputs) -> set:
    """The distinct weight symbols (names starting with ``w_``) a layer uses."""
    return {s for e in outputs for s in e.free_symbols if s.name.startswith("w_")}


def _window(img, r, c, k, weight):
    return sum(img[r + a, c + b] * weight(a, b) for a in range(k) for b in range(k))


def _positions(size, k):
    if not 1 <= _count(k, "k") <= _count(size, "size"):
        raise ValueError(f"kernel size k={k} must be between 1 and the image size {size}")
    o = size - k + 1
    return list(itertools.product(range(o), range(o)))


def _count(v, name) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


# ---------------------------------------------------------------------------
# The general formulas and their exhaustive proofs
# ---------------------------------------------------------------------------

H, W, N, K, F, C = sp.symbols("H W N k F C", integer=True, positive=True)
P_FULL = H * W * N  # every one of N units sees all H*W pixels
P_LOCAL = K**2 * N  # every unit sees its own k x k window
P_SHARED = K**2 * C * F  # F kernels of k x k x C, shared by all windows

FULL_CASES = tuple(itertools.product(range(1, 4), range(1, 4), range(1, 4)))  # (h, w, units)
CONV_CASES = tuple((s, k) for s in range(1, 6) for k in range(1, s + 1))  # (size, k)
SHARED_CASES = tuple(
    (s, k, f, ch) for s, k in CONV_CASES if s <= 4 for f in (1, 2, 3) for ch in (1, 2)
)


def _full_count_holds(case) -> bool:
    h, w, units = case
    return len(layer_weights(full_layer(h, w, units))) == P_FULL.subs({H: h, W: w, N: units})


def _local_count_holds(case) -> bool:
    size, k = case
    units = output_size(size, k) ** 2  # one unit per window
    return len(layer_weights(local_layer(size, k))) == P_LOCAL.subs({K: k, N: units})


def _shared_count_holds(case) -> bool:
    size, k, f, ch = case
    got = len(layer_weights(shared_layer(size, k, f, ch)))
    return got == P_SHARED.subs({K: k, F: f, C: ch})


def _full_step() -> Step:
    return Step(
        sp.Symbol("P_full"),
        P_FULL,
        "Fully connected: each of $N$ hidden units has one weight per pixel of an $H \\times W$ "
        "image. Proven by counting the distinct weights of the explicit layer for $H, W, N = "
        "1..3$.",
        method=EXHAUSTIVE,
        check=_full_count_holds,
        cases=FULL_CASES,
        note="distinct weight symbols of the explicit layer counted",
    )


def _local_step() -> Step:
    return Step(
        sp.Symbol("P_loc"),  # not "P_local": SymPy's LaTeX prints a "cal" suffix as mathcal
        P_LOCAL,
        "Locally connected, no sharing: each of $N$ hidden units has its own $k \\times k$ window "
        "of weights. Proven on the explicit layer (one unit per window, stride 1) for images 1..5 "
        "and every kernel size that fits.",
        method=EXHAUSTIVE,
        check=_local_count_holds,
        cases=CONV_CASES,
        note="distinct weight symbols of the explicit layer counted",
    )


def _shared_step() -> Step:
    return Step(
        sp.Symbol("P_shared"),
        P_SHARED,
        "Weight sharing: all windows use the same kernel, so only the $F$ kernels of $k \\times k "
        "\\times C$ weights are parameters, whatever the number of hidden units. Proven on the "
        "explicit layer for images 1..4, every $k$ that fits, $F = 1..3$, $C = 1..2$.",
        method=EXHAUSTIVE,
        check=_shared_count_holds,
        cases=SHARED_CASES,
        note="distinct weight symbols of the explicit layer counted",
    )


def _at(formula, values: dict, result: int, why: str) -> Step:
    """The general ``formula`` substituted to the lecture's numbers."""
    return Step(sp.Subs(formula, tuple(values), tuple(values.values())), sp.Integer(result), why)


MILLION = 10**6


@derivation("params.fully_vs_local", "Parameters: fully vs locally connected")
def _fully_vs_local() -> Derivation:
    return Derivation(
        "params.fully_vs_local",
        "Parameters: fully vs locally connected",
        f"{LECTURE} Problems for Fully Connected Neural Networks (96×96 images); "
        "Locally Connected Networks (1000×1000 image, 1M hidden units)",
        [
            _full_step(),
            _local_step(),
            _at(
                P_FULL,
                {H: 1000, W: 1000, N: MILLION},
                10**12,
                "$1000 \\times 1000 \\times 10^6 = 10^{12}$.",
            ),
            _at(
                P_LOCAL,
                {K: 10, N: MILLION},
                10**8,
                "$10 \\times 10 \\times 10^6 = 10^8$ with 10×10 windows.",
            ),
            _at(
                P_FULL,
                {H: 96, W: 96, N: 100},
                921_600,
                "The lecture's opening example: a 96×96 image has 9,216 (about $10^4$) input "
                "units; 100 fully connected features need 921,600, 'on the order of $10^6$', "
                "parameters.",
            ),
        ],
        summary="Connecting each of 1M hidden units to a whole 1000×1000 image costs $10^{12}$ "
        "weights; restricting each to a local 10×10 window costs $10^8$.",
    )


@derivation("params.weight_sharing", "Parameters: weight sharing and multiple kernels")
def _weight_sharing() -> Derivation:
    connections = K**2 * sp.Symbol("o") ** 2 * F  # k*k inputs for each of o*o windows, F maps
    o_100 = output_size(100, 10, stride=10)  # non-overlapping 10x10 windows of 100x100
    return Derivation(
        "params.weight_sharing",
        "Parameters: weight sharing and multiple kernels",
        f"{LECTURE} Weights Sharing; Multiple Kernels Convolution",
        [
            _shared_step(),
            _at(
                P_SHARED,
                {K: 10, C: 1, F: 1},
                10**2,
                "One shared 10×10 kernel: $10 \\times 10 \\times 1$.",
            ),
            _at(
                P_SHARED,
                {K: 10, C: 1, F: 100},
                10**4,
                "Multiple kernels: 100 features of 10×10 each, $10 \\times 10 \\times 100 = 10^4$ "
                "(against $10 \\times 10 \\times 10^6 = 10^8$ unshared).",
            ),
            Step(
                sp.Symbol("o"),
                o_100,
                "'For a 100×100 image, one kernel: 10 × 10 × 100': read consistently as a 10×10 "
                "kernel at non-overlapping positions (stride 10), $o = \\lfloor (100 - 10)/10 "
                "\\rfloor + 1 = 10$ positions per side, i.e. 100 windows (the slide does not state "
                "the stride; this is the reading that gives its numbers).",
                check=lambda: o_100 == 10,
                note="conv.output_size formula",
            ),
            _at(
                connections,
                {K: 10, sp.Symbol("o"): 10, F: 1},
                10**4,
                "One kernel: $10 \\times 10$ connections in each of 100 windows $= 10^4$ "
                "connections.",
            ),
            _at(
                connections,
                {K: 10, sp.Symbol("o"): 10, F: 4},
                4 * 10**4,
                "4 kernels: $10^4 \\times 4$.",
            ),
            _at(
                P_SHARED,
                {K: 2, C: 4, F: 2},
                32,
                "2nd convolution: 2 kernels of 2×2, each spanning the 4 maps produced by the 4 "
                "first-layer kernels: $2 \\times 2 \\times 4 \\times 2 = 32$ weights.",
            ),
        ],
        summary="With weight sharing a kernel's $k \\times k$ weights are reused at every "
        "position, so the parameter count does not depend on the number of hidden units: "
        "$10^2$ for one 10×10 kernel, $10^4$ for 100 kernels; a second convolution over "
        "$C$ maps with $F$ kernels has $k \\times k \\times C \\times F$ weights.",
    )


@derivation("params.small_example", "Parameters of the 5x5 image with 9 features")
def _small_example() -> Derivation:
    o = output_size(5, 3)  # 3x3 windows of a 5x5 image, stride 1
    counts = sp.Matrix(
        [
            len(layer_weights(full_layer(5, 5, units=9))),
            len(layer_weights(local_layer(5, 3))),
            len(layer_weights(shared_layer(5, 3, kernels=1))),
        ]
    )
    return Derivation(
        "params.small_example",
        "Parameters of the 5x5 image with 9 features",
        f"{LECTURE} Convolutions (learn 9 features from a 5×5 image)",
        [
            Step(
                sp.Symbol("o") ** 2,
                o**2,
                "A 3×3 window fits at $o = 5 - 3 + 1 = 3$ positions per side: the 9 features are "
                "the 9 windows.",
                check=lambda: o**2 == 9,
                note="conv.output_size formula",
            ),
            _full_step(),
            _at(P_FULL, {H: 5, W: 5, N: 9}, 225, "Fully connected: $5 \\times 5 \\times 9 = 225$."),
            _local_step(),
            _at(P_LOCAL, {K: 3, N: 9}, 81, "Locally connected: $3 \\times 3 \\times 9 = 81$."),
            _shared_step(),
            _at(P_SHARED, {K: 3, C: 1, F: 1}, 9, "Weight sharing: $3 \\times 3 \\times 1 = 9$."),
            Step(
                counts,
                sp.Matrix([225, 81, 9]),
                "The three explicit layers on the 5×5 image, their distinct weights counted "
                "directly, give the lecture's three figures.",
                check=lambda: list(counts) == [225, 81, 9],
                note="distinct weight symbols of each explicit layer",
                latex=(
                    r"\left(|W_{\mathrm{full}}|, |W_{\mathrm{local}}|, "
                    r"|W_{\mathrm{shared}}|\right)_{5 \times 5,\ 9\ \mathrm{features}} = "
                    f"({', '.join(str(c) for c in counts)})"
                ),
            ),
        ],
        summary="Nine features from a 5×5 image: 225 weights fully connected, 81 locally "
        "connected (3×3 windows), 9 with weight sharing.",
    )


@derivation("params.pooling_features", "Feature count that motivates pooling")
def _pooling_features() -> Derivation:
    i, k = sp.symbols("i k", integer=True, positive=True)
    p, s = sp.symbols("p s", integer=True)
    # o x o map per feature: the general output size at no padding and stride 1
    features = sp.Subs(F * output_size(i, k, padding=p, stride=s) ** 2, (p, s), (0, 1))
    return Derivation(
        "params.pooling_features",
        "Feature count that motivates pooling",
        f"{LECTURE} Pooling (96×96 images, 400 features over 8×8 inputs)",
        [
            Step(
                features,
                (i - k + 1) ** 2 * F,
                "Each of $F$ features convolved (valid: $p = 0$, stride $s = 1$) over an "
                "$i \\times i$ image gives an $o \\times o$ map, $o = i - k + 1$.",
            ),
            _at(
                (i - k + 1) ** 2 * F,
                {i: 96, k: 8, F: 400},
                3_168_400,
                "$(96 - 8 + 1) \\times (96 - 8 + 1) \\times 400 = 89^2 \\times 400 = "
                "3{,}168{,}400$ features.",
            ),
        ],
        summary="Convolving 400 learned 8×8 features over a 96×96 image gives over 3 million "
        "features, too many for a classifier: hence pooling.",
    )
