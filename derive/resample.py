"""Planar affine distortion of an image by bilinear resampling (LeCun et al. 1998, Sec. III-C).

The paper's distorted training digits are the originals moved by random planar affine
maps: translation, scaling, squeezing (one axis compressed, the other stretched) and
horizontal shearing. Output pixel ``(i, j)`` takes the value of the input image, seen as
the continuous function that interpolates its pixels bilinearly and is 0 outside them,
at the source position ``(r, c) = theta (i, j, 1)``, the preimage of ``(i, j)`` under the
map; ``theta`` is a 2x3 matrix per image.

The defining formula sums over every input pixel with the tent kernel
``hat(t) = max(0, 1 - |t|)``; the kernel reads only the four pixels around the source
position, ``floor(r) + {0, 1}`` by ``floor(c) + {0, 1}``, weighted by the fractional parts.
The derivation proves the two equal and gives ``theta`` for the paper's parameters.

Examples
--------
>>> import numpy as np, sympy as sp
>>> img = np.array([[0, 4], [8, 12]], dtype=object)
>>> bilinear(img, sp.Rational(1, 2), sp.Rational(1, 4))  # between all four pixels
5
>>> bilinear(img, -1, 0)  # outside
0
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from derive.core import EXHAUSTIVE, Derivation, Step, derivation
from derive.indexing import Floor


def hat(t):
    """The tent kernel of linear interpolation, ``max(0, 1 - |t|)``.

    >>> hat(sp.Rational(1, 4)), hat(-2)
    (3/4, 0)
    """
    return sp.Max(0, 1 - sp.Abs(t))


def bilinear(image, r, c):
    """``image`` (H, W) at the real position ``(r, c)``, interpolated bilinearly, 0 outside:
    ``sum_{p, q} hat(r - p) hat(c - q) image[p, q]``."""
    h, w = np.shape(image)
    return sum(hat(r - p) * hat(c - q) * image[p][q] for p in range(h) for q in range(w))


def bilinear_taps(read, r, c):
    """The same interpolation from the four pixels around ``(r, c)``.

    ``read(p, q)`` gives pixel ``(p, q)`` (0 outside the image); with ``f = r - floor(r)``
    and ``g = c - floor(c)`` the weights are ``(1 - f, f)`` down and ``(1 - g, g)`` across.
    This is the form the kernel computes (:mod:`derive.kernels`, ``affine_resample``).
    """
    r0, c0 = Floor(r), Floor(c)
    down, across = (1 - (r - r0), r - r0), (1 - (c - c0), c - c0)
    return sum(down[u] * across[v] * read(r0 + u, c0 + v) for u in (0, 1) for v in (0, 1))


def source(theta, i, j):
    """The source position ``theta (i, j, 1)`` of output pixel ``(i, j)``."""
    return tuple(theta[k][0] * i + theta[k][1] * j + theta[k][2] for k in (0, 1))


def affine_resample(x, theta):
    """The defining formula: ``y[n, i, j] = bilinear(x[n], theta[n] (i, j, 1))``.

    ``x`` is (N, H, W), ``theta`` (N, 2, 3); ``y`` has the shape of ``x``.
    """
    x = np.asarray(x, dtype=object)
    y = np.empty(x.shape, dtype=object)
    for n, i, j in np.ndindex(*x.shape):
        y[n, i, j] = bilinear(x[n], *source(theta[n], i, j))
    return y


# --- the paper's distortions as theta -------------------------------------------------------


def distortion_map(s, q, k, ty, tx, cy, cx):
    """The forward map of a distortion about the centre ``(cy, cx)``: scale ``s``, squeeze
    ``q`` (columns by ``q``, rows by ``1/q``), horizontal shear ``k`` of the scaled rows,
    then the shift ``(ty, tx)``; a function of (row, column) giving (row, column)."""

    def forward(r, c):
        down = s * (r - cy) / q
        return cy + ty + down, cx + tx + s * q * (c - cx) + k * down

    return forward


def distortion_theta(s, q, k, ty, tx, cy, cx):
    """``theta`` (2x3) of the distortion's inverse: where output pixel ``(i, j)`` reads.

    >>> shift = (1, 1, 0, 2, -1, 0, 0)  # reads 2 rows up, 1 column right
    >>> distortion_theta(*map(sp.Integer, shift))
    Matrix([
    [1, 0, -2],
    [0, 1,  1]])
    """
    a = q / s  # rows: r = cy + (q/s)(i - cy - ty)
    b = 1 / (s * q)  # columns: c = cx + (j - cx - tx - k (i - cy - ty)) / (s q)
    return sp.Matrix(
        [
            [a, 0, cy - a * (cy + ty)],
            [-k * b, b, cx - b * (cx + tx) + k * b * (cy + ty)],
        ]
    )


# --- the derivation -------------------------------------------------------------------------

#: Fractional parts f in [0, 1) and integer offsets k of the tent-kernel step.
_FRACTIONS = (sp.Integer(0), sp.Rational(1, 7), sp.Rational(1, 2), sp.Rational(5, 6))
_OFFSETS = range(-2, 4)
#: Source positions of the four-pixel step on a 3x4 image: inside, on pixel centres, on an
#: edge, partly and wholly outside, negative (floor below the truncation toward zero).
_POSITIONS = tuple(
    (sp.Rational(r), sp.Rational(c))
    for r, c in (
        ("1/2", "5/4"),
        ("1", "2"),
        ("2", "3"),
        ("0", "0"),
        ("-1/3", "1/2"),
        ("5/2", "-2/5"),
        ("2/3", "7/2"),
        ("-1", "1"),
        ("-3/2", "-7/3"),
        ("4", "5/2"),
        ("17/7", "-1/9"),
    )
)


def _tent_ok(case) -> bool:
    f, k = case
    want = 1 - f if k == 0 else f if k == 1 else 0
    return hat(f - k) == want


def _taps_ok(position) -> bool:
    r, c = position
    image = np.array(
        [[sp.Symbol(f"x_{{{p},{q}}}", real=True) for q in range(4)] for p in range(3)],
        dtype=object,
    )

    def read(p, q):
        return image[p, q] if 0 <= p < 3 and 0 <= q < 4 else 0

    return sp.expand(bilinear(image, r, c) - bilinear_taps(read, r, c)) == 0


def _theta_ok() -> bool:
    s, q = sp.symbols("s q", positive=True)
    k, ty, tx, cy, cx, i, j = sp.symbols("k t_y t_x c_y c_x i j", real=True)
    theta = distortion_theta(s, q, k, ty, tx, cy, cx)
    image_of_source = distortion_map(s, q, k, ty, tx, cy, cx)(*source(theta.tolist(), i, j))
    return all(sp.simplify(a - b) == 0 for a, b in zip(image_of_source, (i, j), strict=True))


@derivation("resample.affine_bilinear", "Affine distortion by bilinear resampling")
def _affine_bilinear() -> Derivation:
    f, k = sp.Symbol("f", nonnegative=True), sp.Symbol("k", integer=True)
    steps = (
        Step(
            hat(f - k),
            sp.Piecewise((1 - f, sp.Eq(k, 0)), (f, sp.Eq(k, 1)), (0, True)),
            "For $0 \\le f < 1$ and an integer $k$ the tent kernel "
            "$\\Lambda(t) = \\max(0, 1 - |t|)$ at $f - k$ is $1 - f$ for $k = 0$, "
            "$f$ for $k = 1$ and 0 "
            "for every other $k$.",
            method=EXHAUSTIVE,
            check=_tent_ok,
            cases=[(fr, off) for fr in _FRACTIONS for off in _OFFSETS],
        ),
        Step(
            sp.Symbol("bilinear(x, r, c)"),
            sp.Symbol("taps(x, r, c)"),
            "So with $r = r_0 + f$, $c = c_0 + g$ ($r_0 = \\lfloor r \\rfloor$, "
            "$c_0 = \\lfloor c \\rfloor$) only four pixels of the sum over the image have "
            "non-zero weights; pixels outside the image are 0.",
            method=EXHAUSTIVE,
            check=_taps_ok,
            cases=_POSITIONS,
            note="a 3x4 image of symbols at positions inside, on pixels and edges, outside",
            latex=r"\sum_{p,q} \Lambda(r - p)\,\Lambda(c - q)\, x_{p,q} = "
            r"(1-f)(1-g)\,x_{r_0,c_0} + (1-f)\,g\,x_{r_0,c_0+1} + f(1-g)\,x_{r_0+1,c_0} "
            r"+ f g\, x_{r_0+1,c_0+1}",
        ),
        Step(
            sp.Symbol("F(theta (i, j, 1))"),
            sp.Symbol("(i, j)"),
            "Output pixel $(i, j)$ reads the input at $\\theta (i, j, 1)^T$, the preimage of "
            "$(i, j)$ under the distortion $F$: scale $s$, squeeze $q$, shear $k$, shift "
            "$(t_y, t_x)$ about the centre $(c_y, c_x)$.",
            check=_theta_ok,
            note="SymPy simplifies F(theta (i, j, 1)) - (i, j) to 0",
            latex=r"\theta = \begin{pmatrix} q/s & 0 & c_y - \frac{q}{s}(c_y + t_y) \\ "
            r"-\frac{k}{sq} & \frac{1}{sq} & c_x - \frac{c_x + t_x - k(c_y + t_y)}{sq} "
            r"\end{pmatrix},\quad F\left(\theta\,(i, j, 1)^T\right) = (i, j)",
        ),
    )
    return Derivation(
        "resample.affine_bilinear",
        "Affine distortion by bilinear resampling",
        "(not in the lecture; the distorted training digits of LeCun et al. 1998, Sec. III-C)",
        steps,
        summary="Output pixel $(i, j)$ is the input, interpolated bilinearly and 0 outside, "
        "at the source position $\\theta (i, j, 1)^T$; the sum over all pixels with tent "
        "weights reduces to the four around the source position.",
    )
