"""Random planar distortions of MNIST digits for training (seeded).

The paper's distorted-data experiment (LeCun et al. 1998, Sec. III-C) trains on digits
moved by random planar affine maps: horizontal and vertical translation, scaling,
squeezing (compressing one axis while stretching the other) and horizontal shearing.
Each digit's map is drawn here; the resampling (bilinear, 0 outside the digit) is the
generated kernel ``affine_resample`` (derivation ``resample.affine_bilinear``), which
takes per digit the 2x3 matrix ``theta`` of the map's inverse: output pixel (i, j)
reads the input at ``theta (i, j, 1)``.

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

from lenet5.network import load_backend

#: Parameter ranges (uniform draws): shift in pixels, relative scale, squeeze, shear.
DEFAULTS = dict(shift=2.0, scale=0.1, squeeze=0.1, shear=0.2)
NO_DISTORTION = dict(shift=0.0, scale=0.0, squeeze=0.0, shear=0.0)


def distortion_theta(u: np.ndarray, shape: tuple[int, int], shift, scale, squeeze, shear):
    """``theta`` (N, 2, 3) of the distortions drawn as ``u`` (N, 5), uniform in [-1, 1].

    Per digit: scale ``s = 1 + scale u0``, squeeze ``q = 1 + squeeze u1`` (columns by q,
    rows by 1/q), shear ``k = shear u2`` of the scaled rows, shift ``(ty, tx) = shift
    (u3, u4)``, about the centre of an image of ``shape`` (H, W); ``theta`` is the inverse
    map, as derived in ``resample.affine_bilinear`` (step 3).

    >>> theta = distortion_theta(np.array([[0, 0, 0, 1, -1]]), (28, 28), 2.0, 0.1, 0.1, 0.2)
    >>> theta[0].tolist()  # a shift by (2, -2): reads 2 rows up, 2 columns right
    [[1.0, 0.0, -2.0], [-0.0, 1.0, 2.0]]
    """
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2

    def inverse(u0, u1, u2, u3, u4):
        # Python floats: a training batch distorts a digit or a few, where NumPy's
        # per-operation overhead would cost more than the resampling itself.
        s, q, k = 1 + scale * u0, 1 + squeeze * u1, shear * u2
        ty, tx = shift * u3, shift * u4
        a, b = q / s, 1 / (s * q)
        return (a, 0.0, cy - a * (cy + ty)), (-k * b, b, cx - b * (cx + tx) + k * b * (cy + ty))

    return np.array([inverse(*row) for row in u.tolist()]).reshape(len(u), 2, 3)


def distort(
    images: np.ndarray,
    rng: np.random.Generator,
    kernels=None,
    shift=DEFAULTS["shift"],
    scale=DEFAULTS["scale"],
    squeeze=DEFAULTS["squeeze"],
    shear=DEFAULTS["shear"],
) -> np.ndarray:
    """Randomly distorted copies of uint8 digits (N, H, W); one random map per digit.

    ``kernels`` is the generated kernel module that resamples (``LeNet5.k``: C or NumPy);
    None: the C backend. The maps are drawn from ``rng`` (5 uniform numbers per digit);
    the digits are resampled in float64 and rounded to the nearest uint8.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise TypeError(
            f"distort: images must be uint8 (N, H, W), got {images.dtype} {images.shape}"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"distort: rng must be a numpy Generator, got {type(rng).__name__}")
    kernels = load_backend("c") if kernels is None else kernels
    u = rng.uniform(-1.0, 1.0, (len(images), 5))
    theta = distortion_theta(u, images.shape[1:], shift, scale, squeeze, shear)
    out = kernels.affine_resample(images.astype(np.float64), theta)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
