"""Distortion throughput: the generated ``affine_resample`` kernel vs direct NumPy resampling.

``lenet5.distort.distort`` draws each digit's map and resamples it with the generated
kernel (C or NumPy). :func:`direct_distort` is the same computation written directly in
NumPy (the source position of every pixel from the same draws, then bilinear
interpolation on a zero-padded copy): the way the runtime resampled before the kernel
existed, kept as the baseline and as the tests' reference. Printed: digits per second
of each, per call size (training at batch 1 distorts one digit per call), the best of
interleaved rounds.

    python bench/distort.py [--digits 3000] [--sizes 1 10 100] [--rounds 3]

>>> imgs = np.zeros((2, 28, 28), np.uint8); imgs[:, 10:18, 12:16] = 255
>>> direct_distort(imgs, np.random.default_rng(0)).shape
(2, 28, 28)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: the repository root before bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lenet5.data import load_mnist  # noqa: E402
from lenet5.distort import DEFAULTS, distort  # noqa: E402
from lenet5.network import load_backend  # noqa: E402


def direct_distort(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The distortions of ``lenet5.distort`` (same draws) resampled directly in NumPy."""
    n, h, w = images.shape
    u = rng.uniform(-1.0, 1.0, (n, 5))
    s, q = 1 + DEFAULTS["scale"] * u[:, 0], 1 + DEFAULTS["squeeze"] * u[:, 1]
    k = DEFAULTS["shear"] * u[:, 2]
    ty, tx = DEFAULTS["shift"] * u[:, 3], DEFAULTS["shift"] * u[:, 4]
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    e = (slice(None), None, None)
    src_y = (yy[None] - ty[e]) * (q / s)[e]
    src_x = (xx[None] - tx[e] - k[e] * src_y * (s / q)[e]) / (s * q)[e]
    rows, cols = src_y + (h - 1) / 2, src_x + (w - 1) / 2
    padded = np.zeros((n, h + 2, w + 2))
    padded[:, 1:-1, 1:-1] = images
    r = np.clip(rows + 1, 0, h + 1 - 1e-9)
    c = np.clip(cols + 1, 0, w + 1 - 1e-9)
    r0, c0 = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, h + 1), np.minimum(c0 + 1, w + 1)
    fr, fc = r - r0, c - c0
    idx = np.arange(n)[:, None, None]
    top = padded[idx, r0, c0] * (1 - fc) + padded[idx, r0, c1] * fc
    bottom = padded[idx, r1, c0] * (1 - fc) + padded[idx, r1, c1] * fc
    return np.clip(np.rint(top * (1 - fr) + bottom * fr), 0, 255).astype(np.uint8)


def _rate(fn, images: np.ndarray, size: int) -> float:
    """Digits per second of ``fn(batch, rng)`` over ``images`` in calls of ``size`` digits."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for b in range(0, len(images) - size + 1, size):
        fn(images[b : b + size], rng)
    return (len(images) // size * size) / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", type=int, default=3000, help="digits distorted per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100], help="digits per call")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best is printed)")
    args = ap.parse_args(argv)
    images = load_mnist("sample").train_images
    images = np.resize(images, (args.digits, *images.shape[1:]))
    c, npk = load_backend("c"), load_backend("numpy")
    ways = {
        "direct NumPy": direct_distort,
        "kernel, NumPy": lambda x, rng: distort(x, rng, npk),
        "kernel, C": lambda x, rng: distort(x, rng, c),
    }
    print(f"{'digits per call':>16} " + " ".join(f"{name:>14}" for name in ways) + "  (digits/s)")
    for size in args.sizes:
        # Rounds interleave the ways, so a busy moment of a shared machine hits them alike;
        # each way's best round is printed.
        rounds = [[_rate(fn, images, size) for fn in ways.values()] for _ in range(args.rounds)]
        print(f"{size:>16} " + " ".join(f"{r:>14,.0f}" for r in np.max(rounds, axis=0)))


if __name__ == "__main__":
    main()
