"""Random planar distortions of MNIST digits for training (numpy only, seeded).

The paper's distorted-data experiment (LeCun et al. 1998, Sec. III-C) trains on digits
moved by random planar affine maps: horizontal and vertical translation, scaling,
squeezing (compressing one axis while stretching the other) and horizontal shearing.
Optionally an elastic displacement field (Simard, Steinkraus, Platt 2003: uniform random
displacements smoothed by a Gaussian of width ``sigma``, scaled by ``alpha``) is added.
Pixels are resampled bilinearly with a white (0) outside.

>>> import numpy as np
>>> img = np.zeros((1, 28, 28), np.uint8); img[0, 10:18, 12:16] = 255
>>> out = distort(img, np.random.default_rng(0))
>>> out.shape, out.dtype, bool(out.any())
((1, 28, 28), dtype('uint8'), True)
>>> bool((distort(img, np.random.default_rng(1), **NO_DISTORTION) == img).all())
True
"""

from __future__ import annotations

import numpy as np

#: Parameter ranges (uniform draws): shift in pixels, relative scale, squeeze, shear.
DEFAULTS = dict(shift=2.0, scale=0.1, squeeze=0.1, shear=0.2, alpha=0.0, sigma=4.0)
NO_DISTORTION = dict(shift=0.0, scale=0.0, squeeze=0.0, shear=0.0, alpha=0.0)


def _gaussian_smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian smoothing of (N, H, W) fields along H and W (zero outside)."""
    radius = int(np.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1)
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    along_w = np.apply_along_axis(np.convolve, 2, field, g, mode="same")
    return np.apply_along_axis(np.convolve, 1, along_w, g, mode="same")


def _bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample (N, H, W) images at real coordinates (N, H, W); 0 outside the image."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), np.float64)
    padded[:, 1:-1, 1:-1] = images
    r = np.clip(rows + 1, 0, h + 1 - 1e-9)
    c = np.clip(cols + 1, 0, w + 1 - 1e-9)
    r0, c0 = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, h + 1), np.minimum(c0 + 1, w + 1)
    fr, fc = r - r0, c - c0
    idx = np.arange(n)[:, None, None]
    top = padded[idx, r0, c0] * (1 - fc) + padded[idx, r0, c1] * fc
    bottom = padded[idx, r1, c0] * (1 - fc) + padded[idx, r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def distort(
    images: np.ndarray,
    rng: np.random.Generator,
    shift=DEFAULTS["shift"],
    scale=DEFAULTS["scale"],
    squeeze=DEFAULTS["squeeze"],
    shear=DEFAULTS["shear"],
    alpha=DEFAULTS["alpha"],
    sigma=DEFAULTS["sigma"],
) -> np.ndarray:
    """Randomly distorted copies of uint8 digits (N, H, W); one random map per digit."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise TypeError(
            f"distort: images must be uint8 (N, H, W), got {images.dtype} {images.shape}"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"distort: rng must be a numpy Generator, got {type(rng).__name__}")
    n, h, w = images.shape
    u = rng.uniform(-1.0, 1.0, (n, 5))
    s = 1 + scale * u[:, 0]  # overall scale
    q = 1 + squeeze * u[:, 1]  # squeeze: x scaled by q, y by 1/q
    k = shear * u[:, 2]  # horizontal shear
    ty, tx = shift * u[:, 3], shift * u[:, 4]
    # Output pixel (y, x) relative to the centre samples the input at the inverse map:
    # forward map  x' = s*q*x + k*y,  y' = s*y/q  (then shifted by (tx, ty)).
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    y0 = yy[None] - ty[:, None, None]
    x0 = xx[None] - tx[:, None, None]
    src_y = y0 * (q / s)[:, None, None]
    src_x = (x0 - k[:, None, None] * src_y * (s / q)[:, None, None]) / (s * q)[:, None, None]
    rows, cols = src_y + (h - 1) / 2, src_x + (w - 1) / 2
    if alpha > 0:
        rows = rows + alpha * _gaussian_smooth(rng.uniform(-1, 1, (n, h, w)), sigma)
        cols = cols + alpha * _gaussian_smooth(rng.uniform(-1, 1, (n, h, w)), sigma)
    out = _bilinear(images.astype(np.float64), rows, cols)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
