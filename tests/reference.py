"""The kernel oracle: layer definitions evaluated directly in SymPy, exactly.

Every function here takes concrete NumPy arrays (float32 or float64), converts
each entry to the exact rational it represents (``sympy.Rational(float(v))`` is
exact for binary floats) and evaluates the lecture's formula in exact
arithmetic. Transcendental layers (tanh, exp, log) are evaluated by SymPy at
``DIGITS`` significant digits, far beyond float64. Results are NumPy object
arrays of SymPy numbers; :func:`to_float` rounds them once to float64.

The convolution is the lecture's cross-correlation rewrite
``S(i,j) = sum_m sum_n I(i+m, j+n) K(m, n)``, written as a ``sympy.Sum`` over
``IndexedBase`` objects and expanded once per kernel size; stride ``s`` and zero
padding ``p`` enter as ``I = x`` zero-padded by ``p`` read at ``(i*s, j*s)``,
and the optional connection table (LeNet-5's C3) selects the summed channels.

Nothing here imports the generated code or codegen: this is the independent
definition the generated kernels are proven equal to.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import sympy as sp

DIGITS = 40  # precision of transcendental evaluations (float64 needs ~17)

_I, _K = sp.IndexedBase("I"), sp.IndexedBase("K")
_i, _j, _m, _n = sp.symbols("i j m n", integer=True)


def to_exact(a) -> np.ndarray:
    """Exact SymPy rationals of a float array (object array, same shape).

    >>> to_exact(np.array([0.5, -2.0]))
    array([1/2, -2], dtype=object)
    """
    a = np.asarray(a, dtype=np.float64)  # exact for float32 input as well
    out = np.empty(a.shape, dtype=object)
    for idx, v in np.ndenumerate(a):
        out[idx] = sp.Rational(float(v))
    return out


def to_float(e) -> np.ndarray:
    """Round an object array of SymPy numbers to float64 (once, correctly rounded)."""
    e = np.asarray(e, dtype=object)
    out = np.empty(e.shape, dtype=np.float64)
    for idx, v in np.ndenumerate(e):
        out[idx] = float(v)
    return out


# --------------------------------------------------------------------------- convolution


@cache
def xcorr_formula(kh: int, kw: int) -> sp.Expr:
    """The expanded cross-correlation ``sum_{m<kh, n<kw} I[i+m, j+n] K[m, n]``.

    >>> xcorr_formula(1, 2) == _I[_i, _j] * _K[0, 0] + _I[_i, _j + 1] * _K[0, 1]
    True
    """
    s = sp.Sum(_I[_i + _m, _j + _n] * _K[_m, _n], (_m, 0, kh - 1), (_n, 0, kw - 1))
    return s.doit()


@cache
def xcorr_evaluator(kh: int, kw: int):
    """``f(I, K, i, j)``: :func:`xcorr_formula` made callable on object arrays.

    ``sympy.lambdify`` turns the expanded formula into plain Python indexing and
    ``*``/``+``; called on arrays of SymPy rationals it stays exact.

    >>> f = xcorr_evaluator(2, 2)
    >>> f(to_exact(np.arange(9.0).reshape(3, 3)), to_exact(np.ones((2, 2))), 1, 0)
    20
    """
    return sp.lambdify((_I, _K, _i, _j), xcorr_formula(kh, kw), modules="numpy")


def pad(x: np.ndarray, p: int) -> np.ndarray:
    """Zero-pad the last two axes of an object array by ``p`` on every side."""
    out = np.full(x.shape[:-2] + (x.shape[-2] + 2 * p, x.shape[-1] + 2 * p), sp.S.Zero, object)
    out[..., p : p + x.shape[-2], p : p + x.shape[-1]] = x
    return out


def conv2d(x, w, b, stride: int = 1, padding: int = 0, table=None) -> np.ndarray:
    """``y[n,k,i,j] = b[k] + sum_{c: table[k,c]} sum_{u,v} xp[n,c,i*s+u,j*s+v] w[k,c,u,v]``.

    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> conv2d(x, np.ones((1, 1, 2, 2)), np.zeros(1))
    array([[[[8, 12],
             [20, 24]]]], dtype=object)
    """
    xe, we, be = to_exact(x), to_exact(w), to_exact(b)
    n_, c_, h, wd = xe.shape
    k_, _, kh, kw = we.shape
    s, p = stride, padding
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    xp = pad(xe, p)
    conn = np.ones((k_, c_), bool) if table is None else np.asarray(table).astype(bool)
    f = xcorr_evaluator(kh, kw)
    y = np.empty((n_, k_, ho, wo), dtype=object)
    for n, k, i, j in np.ndindex(n_, k_, ho, wo):
        terms = [f(xp[n, c], we[k, c], i * s, j * s) for c in range(c_) if conn[k, c]]
        y[n, k, i, j] = sp.Add(be[k], *terms)
    return y


def conv2d_terms(x, w, stride: int = 1, padding: int = 0, table=None) -> int:
    """Number of products accumulated per conv output (for rounding-error bounds)."""
    kh, kw = np.shape(w)[2:]
    chans = np.shape(w)[1] if table is None else int(np.asarray(table).astype(bool).sum(1).max())
    return max(1, chans * kh * kw)


# --------------------------------------------------------------------------- pooling


def _windows(xe: np.ndarray, size: int):
    """Yield ``(index, window)`` over non-overlapping ``size x size`` windows."""
    n_, c_, h, w = xe.shape
    for n, c, i, j in np.ndindex(n_, c_, h // size, w // size):
        yield (n, c, i, j), xe[n, c, i * size : (i + 1) * size, j * size : (j + 1) * size]


def avgpool2d(x, size: int = 2) -> np.ndarray:
    """Mean pooling: ``y = (1/size^2) sum_{window} x`` (the lecture's mean ``down()``)."""
    xe = to_exact(x)
    n_, c_, h, w = xe.shape
    y = np.empty((n_, c_, h // size, w // size), dtype=object)
    for idx, win in _windows(xe, size):
        y[idx] = sp.Add(*win.ravel()) / size**2
    return y


def maxpool2d(x, size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling and its argmax (flat ``i*W+j`` in the input plane, first max wins).

    >>> y, am = maxpool2d(np.array([[[[1.0, 3.0], [3.0, 0.0]]]]))
    >>> y.tolist(), am.tolist()
    ([[[[3]]]], [[[[1]]]])
    """
    xe = to_exact(x)
    n_, c_, h, w = xe.shape
    y = np.empty((n_, c_, h // size, w // size), dtype=object)
    am = np.empty(y.shape, dtype=np.int64)
    for idx, win in _windows(xe, size):
        y[idx] = sp.Max(*win.ravel())
        u, v = next((u, v) for (u, v), val in np.ndenumerate(win) if val == y[idx])
        am[idx] = (idx[2] * size + u) * w + idx[3] * size + v
    return y, am


def subsample(x, coef, bias) -> np.ndarray:
    """LeNet S2/S4: ``z[n,c,i,j] = coef[c] * sum_{2x2 window} x + bias[c]``."""
    xe, ce, be = to_exact(x), to_exact(coef), to_exact(bias)
    n_, c_, h, w = xe.shape
    z = np.empty((n_, c_, h // 2, w // 2), dtype=object)
    for idx, win in _windows(xe, 2):
        z[idx] = ce[idx[1]] * sp.Add(*win.ravel()) + be[idx[1]]
    return z


# --------------------------------------------------------------------------- activations


def _elementwise(f, z) -> np.ndarray:
    return np.vectorize(lambda v: sp.N(f(v), DIGITS), otypes=[object])(to_exact(z))


def scaled_tanh(z, A=1.7159, S=2 / 3) -> np.ndarray:
    """``A tanh(S z)`` (LeNet-5's squashing function)."""
    a, s = sp.Rational(float(A)), sp.Rational(float(S))
    return _elementwise(lambda v: a * sp.tanh(s * v), z)


def sigmoid(z, beta=1.0) -> np.ndarray:
    """``1 / (1 + exp(-beta z))``."""
    b = sp.Rational(float(beta))
    return _elementwise(lambda v: 1 / (1 + sp.exp(-b * v)), z)


def relu(z) -> np.ndarray:
    """``max(z, 0)``."""
    return np.vectorize(lambda v: sp.Max(v, 0), otypes=[object])(to_exact(z))


# --------------------------------------------------------------------------- dense layers


def dense(x, w, b) -> np.ndarray:
    """``y[n,o] = sum_i x[n,i] w[o,i] + b[o]`` via SymPy matrices."""
    y = sp.Matrix(to_exact(x)) * sp.Matrix(to_exact(w)).T
    out = np.array(y.tolist(), dtype=object).reshape(len(x), len(w))
    return out + to_exact(b)[None, :]


def rbf(x, centers) -> np.ndarray:
    """Euclidean RBF: ``y[n,o] = sum_i (x[n,i] - centers[o,i])^2``."""
    xe, ce = to_exact(x), to_exact(centers)
    y = np.empty((xe.shape[0], ce.shape[0]), dtype=object)
    for n, o in np.ndindex(*y.shape):
        y[n, o] = sp.Add(*[(a - c) ** 2 for a, c in zip(xe[n], ce[o], strict=True)])
    return y


# --------------------------------------------------------------------------- losses


def map_loss(y, labels, j=1.0) -> np.ndarray:
    """LeNet-5's MAP criterion per sample: ``y[p,l_p] + log(exp(-j) + sum_i exp(-y[p,i]))``."""
    ye, je = to_exact(y), sp.Rational(float(j))
    out = np.empty(ye.shape[0], dtype=object)
    for p, label in enumerate(labels):
        rest = sp.exp(-je) + sp.Add(*[sp.exp(-v) for v in ye[p]])
        out[p] = sp.N(ye[p, int(label)] + sp.log(rest), DIGITS)
    return out


def squared_error(y, t) -> np.ndarray:
    """Per-sample ``0.5 * sum_k (t_k - y_k)^2`` (the lecture's E^n)."""
    ye, te = to_exact(y), to_exact(t)
    return np.array([sp.Add(*((te[p] - ye[p]) ** 2)) / 2 for p in range(ye.shape[0])], object)


def softmax_xent(logits, labels) -> np.ndarray:
    """Per-sample ``-log(exp(z_l) / sum_i exp(z_i))``."""
    ze = to_exact(logits)
    out = np.empty(ze.shape[0], dtype=object)
    for p, label in enumerate(labels):
        soft = sp.exp(ze[p, int(label)]) / sp.Add(*[sp.exp(v) for v in ze[p]])
        out[p] = sp.N(-sp.log(soft), DIGITS)
    return out
