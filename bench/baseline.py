"""A plain NumPy baseline for the kernel benchmark: im2col + BLAS convolution.

This is the textbook way to convolve in NumPy: unfold every receptive field
into a row (``im2col``), multiply by the filter matrix with one BLAS GEMM, and
for the data gradient fold the rows back (``col2im``). The other LeNet-5 layers
are written the plain NumPy way (reshape-and-sum pooling, ``@`` for dense).
It exists only to put the generated kernels' timings in context; the
connection table is applied the usual way, by zeroing absent filters.

>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> conv2d_forward(x, np.ones((1, 1, 2, 2)), np.zeros(1))[0, 0]
array([[10., 14., 18.],
       [26., 30., 34.],
       [42., 46., 50.]])
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad(x: np.ndarray, p: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Receptive fields as rows: shape ``(N*Ho*Wo, C*kh*kw)`` (a copy)."""
    win = sliding_window_view(_pad(x, padding), (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def col2im(cols: np.ndarray, x_shape, kh: int, kw: int, stride: int, padding: int, out_hw):
    """Adjoint of :func:`im2col`: scatter-add the rows back into an input-shaped array."""
    n, c, h, w = x_shape
    ho, wo = out_hw
    cols = cols.reshape(n, ho, wo, c, kh, kw)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), cols.dtype)
    for u in range(kh):
        for v in range(kw):
            rows = slice(u, u + stride * (ho - 1) + 1, stride)
            cols_ = slice(v, v + stride * (wo - 1) + 1, stride)
            xp[:, :, rows, cols_] += cols[:, :, :, :, u, v].transpose(0, 3, 1, 2)
    return xp[:, :, padding : padding + h, padding : padding + w]


def _out_hw(x_shape, kh, kw, stride, padding):
    return (
        (x_shape[2] + 2 * padding - kh) // stride + 1,
        (x_shape[3] + 2 * padding - kw) // stride + 1,
    )


def conv2d_forward(x, w, b, stride=1, padding=0):
    """``y = im2col(x) @ w_mat.T + b`` reshaped to NCHW."""
    k, _, kh, kw = w.shape
    ho, wo = _out_hw(x.shape, kh, kw, stride, padding)
    y = im2col(x, kh, kw, stride, padding) @ w.reshape(k, -1).T + b
    return np.ascontiguousarray(y.reshape(x.shape[0], ho, wo, k).transpose(0, 3, 1, 2))


def conv2d_backward(x, w, dy, stride=1, padding=0):
    """``(dx, dw, db)``: ``dw = dy_mat.T @ cols``, ``dx = col2im(dy_mat @ w_mat)``."""
    k, _, kh, kw = w.shape
    ho, wo = dy.shape[2:]
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, k)
    cols = im2col(x, kh, kw, stride, padding)
    dw = (dy_mat.T @ cols).reshape(w.shape)
    dx = col2im(dy_mat @ w.reshape(k, -1), x.shape, kh, kw, stride, padding, (ho, wo))
    return np.ascontiguousarray(dx), dw, dy.sum(axis=(0, 2, 3))


def subsample_forward(x, coef, bias):
    """``coef * (2x2 window sum) + bias`` by reshaping into windows."""
    n, c, h, w = x.shape
    s = x.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))
    return s * coef[:, None, None] + bias[:, None, None]


def subsample_backward(dz, x, coef):
    n, c, h, w = x.shape
    s = x.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))
    dx = np.repeat(np.repeat(dz * coef[:, None, None], 2, axis=2), 2, axis=3)
    return dx, (dz * s).sum(axis=(0, 2, 3)), dz.sum(axis=(0, 2, 3))


def dense_forward(x, w, b):
    return x @ w.T + b


def dense_backward(dy, x, w):
    return dy @ w, dy.T @ x, dy.sum(axis=0)


def rbf_forward(x, centers):
    """``|x|^2 - 2 x c^T + |c|^2`` (the BLAS way to get all squared distances)."""
    return (x * x).sum(1)[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]


def rbf_backward(dy, x, centers):
    dx = 2 * (dy.sum(1)[:, None] * x - dy @ centers)
    dc = 2 * (dy.sum(0)[:, None] * centers - dy.T @ x)
    return dx, dc
