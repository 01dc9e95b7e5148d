"""The faithful LeNet-5 (LeCun et al. 1998), composed from symconv's generated kernels.

Every layer computation is a call into ``generated.c_kernels`` or ``generated.np_kernels``
(the same API, see the kernel table); this module only wires them together::

    x0 (N,1,32,32) -C1 conv 5x5-> a1 -f-> x1 (N,6,28,28) -S2 subsample-> a2 -f-> x2 (N,6,14,14)
    -C3 conv 5x5, Table I-> a3 -f-> x3 (N,16,10,10) -S4-> a4 -f-> x4 (N,16,5,5)
    -C5 conv 5x5-> a5 -f-> x5 (N,120) -F6 dense-> a6 -f-> x6 (N,84) -RBF-> y (N,10)

with f(a) = A tanh(S a), y[n, i] = sum_k (x6[n, k] - c[i, k])^2 the Euclidean RBF
penalties against fixed +-1 codes, and the MAP criterion on y.  The predicted digit is
the one with the smallest penalty.

On the C backend the training step is *fused* by default: ``sdlm_step``, ``sgd_step``
and ``gradients`` make one call into generated C (``symconv_lenet5_*``, see
``codegen/lenet5_step.py``) that runs forward, loss, backward and update for the whole
batch, instead of ~45 validated kernel calls; ``fused=False`` keeps the composition
below (the NumPy backend always composes).  Both compute the same sums; at batch 1
they agree bit for bit, at batch B > 1 within rounding (the fused path adds the
gradients of up to 8 slices of the batch).

Three passes share one backward routine:

* the gradient of the summed loss (``gradients``);
* the diagonal Gauss-Newton second derivatives for stochastic diagonal
  Levenberg-Marquardt (``hessian_diagonal``; paper, Appendix C): the same backward
  kernels run on squared weights and squared inputs, and each activation multiplies
  by f'(a)^2 instead of f'(a) (two applications of ``scaled_tanh_backward_from_output``,
  which takes f' = (S/A)(A^2 - f^2) from the layer's output: no tanh is evaluated twice).  It
  starts from the *exact* second derivative of the loss with respect to F6's outputs
  x6 (the RBF layer has no trainable parameters), see ``loss_curvature``.

>>> import numpy as np
>>> net = LeNet5("numpy", np.float64)
>>> params = net.init_params(np.random.default_rng(0))
>>> parameter_count(params)
60000
>>> net.penalties(params, np.zeros((3, 1, 32, 32))).shape
(3, 10)
"""

from __future__ import annotations

import importlib

import numpy as np

from lenet5 import spec

#: Trainable arrays, in a fixed order, with their shapes.  C3.w is stored dense
#: (16, 6, 5, 5); the entries of absent connections (Table I) are zero and stay zero
#: because the kernels give them zero gradient and zero curvature.
PARAM_SHAPES = {
    "C1.w": (6, 1, 5, 5),
    "C1.b": (6,),
    "S2.coef": (6,),
    "S2.bias": (6,),
    "C3.w": (16, 6, 5, 5),
    "C3.b": (16,),
    "S4.coef": (16,),
    "S4.bias": (16,),
    "C5.w": (120, 16, 5, 5),
    "C5.b": (120,),
    "F6.w": (84, 120),
    "F6.b": (84,),
}
BACKENDS = {"c": "generated.c_kernels", "numpy": "generated.np_kernels"}
INPUT_SHAPE = (1, 32, 32)


class BackendError(RuntimeError):
    """The requested kernel backend cannot be loaded (e.g. the C library does not build)."""


def load_backend(name: str):
    """The generated kernel module for ``name`` ("c" or "numpy")."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    try:
        module = importlib.import_module(BACKENDS[name])
        if name == "c":  # build/load the shared library now, not in the middle of a run
            module.relu_forward(np.zeros(1))
    except Exception as exc:
        hint = " (use --backend numpy)" if name == "c" else ""
        raise BackendError(f"the {name} kernel backend is unavailable{hint}: {exc}") from exc
    return module


def fan_in(name: str) -> np.ndarray:
    """Inputs F_i of the unit each entry of parameter ``name`` feeds (bias: same unit).

    C3 units read 25 x (number of S2 maps in their row of Table I) inputs.

    >>> fan_in("C1.w").shape, float(fan_in("C1.w").max()), float(fan_in("S2.bias")[0])
    ((6, 1, 5, 5), 25.0, 4.0)
    >>> sorted(set(fan_in("C3.b").tolist()))
    [75.0, 100.0, 150.0]
    """
    layer, _ = name.split(".")
    shape = PARAM_SHAPES[name]
    per_unit = {"C1": 25.0, "S2": 4.0, "S4": 4.0, "C5": 400.0, "F6": 120.0}
    if layer == "C3":
        per_map = 25.0 * spec.C3_MASK.sum(axis=1)
        return np.broadcast_to(per_map.reshape((16,) + (1,) * (len(shape) - 1)), shape)
    return np.full(shape, per_unit[layer])


def trainable_mask(name: str) -> np.ndarray:
    """1 where the entry of ``name`` is a parameter, 0 for C3's absent connections."""
    if name == "C3.w":
        return np.broadcast_to(spec.C3_MASK[:, :, None, None], PARAM_SHAPES[name])
    return np.ones(PARAM_SHAPES[name], np.uint8)


def parameter_count(params: dict) -> int:
    """Trainable parameters held in ``params`` (C3's absent connections excluded)."""
    check_params(params)
    return int(sum(int(trainable_mask(n).sum()) for n in params))


def check_params(params: dict, dtype=None) -> None:
    """ValueError/TypeError naming the entry when ``params`` is not a LeNet-5 parameter set."""
    if not isinstance(params, dict) or set(params) != set(PARAM_SHAPES):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must have the entries {list(PARAM_SHAPES)}, got {got}")
    for name, shape in PARAM_SHAPES.items():
        p = params[name]
        if not isinstance(p, np.ndarray) or p.shape != shape:
            raise ValueError(f"params[{name!r}] must be an array of shape {shape}")
        if dtype is not None and p.dtype != dtype:
            raise TypeError(f"params[{name!r}] has dtype {p.dtype}, the network uses {dtype}")


#: Images per forward call of an evaluation.  The composed forward of 500 or more images
#: per call ran at about half the images/s of 64-496 (one thread or two; a sharp step, not
#: a gradual cache effect; the measurement is in the commit that set this): 256 stays well
#: clear of it.
EVAL_CHUNK = 256


def _labels(labels, n: int) -> np.ndarray:
    """Digit labels as a contiguous int64 (n,) array in 0..9 (ValueError otherwise)."""
    out = np.ascontiguousarray(labels, np.int64)
    # One reduction for both bounds: viewed unsigned, a negative label is above 9.
    if out.shape != (n,) or (n and out.view(np.uint64).max() > 9):
        raise ValueError(f"labels must be {n} digits in 0..9, got shape {out.shape}")
    return out


class LeNet5:
    """LeNet-5 forward, gradient and Gauss-Newton passes on one kernel backend.

    Parameters
    ----------
    backend : "c" or "numpy"
    dtype : numpy float dtype used for every array (float32 or float64)
    fused : bool or None
        Training steps, gradients and penalties in one generated C call per batch (C
        backend only); None: fused on the C backend.
    """

    def __init__(self, backend: str = "c", dtype=np.float32, fused: bool | None = None):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.fused = backend == "c" if fused is None else fused
        if self.fused and backend != "c":
            raise ValueError(f"fused=True needs the C backend, got backend={backend!r}")
        self.backend = backend
        self.k = load_backend(backend)
        self._work = {}  # the fused step's workspace, per batch size
        self.centers = np.ascontiguousarray(spec.RBF_CENTERS, self.dtype)
        self.table = spec.C3_MASK
        self.A, self.S, self.j = spec.SQUASH_A, spec.SQUASH_S, spec.MAP_J

    def kernels(self) -> dict:
        """The kernels this network runs, as a training run records them: the backend and,
        on the C backend, the compiled library's file, compiler and flags (the fused
        step's library when the steps are fused). Another library can round differently,
        so a run resumed on it is no longer bit for bit the uninterrupted run.

        >>> LeNet5("numpy").kernels()["backend"]
        'numpy'
        """
        if self.backend == "c":
            library = self.k.LENET5_STEP.library if self.fused else self.k.LIBRARY
            return {"backend": "c"} | library.identity()
        return {"backend": self.backend, "numpy": np.__version__}

    # ------------------------------------------------------------------ parameters

    def init_params(self, rng: np.random.Generator, fan_in_power: float = 1.0) -> dict:
        """Uniform in (-2.4/F_i^p, 2.4/F_i^p), p = ``fan_in_power``; C3's absent entries 0.

        p = 1 is the paper's formula (Sec. III-B) and the runtime's; ``bench/sdlm_curvature.py``
        compares it with p = 1/2 (README, "The SDLM rate cap").
        """
        params = {}
        for name, shape in PARAM_SHAPES.items():
            bound = spec.INIT_NUMERATOR / fan_in(name) ** fan_in_power
            p = rng.uniform(-1.0, 1.0, shape) * bound * trainable_mask(name)
            params[name] = np.ascontiguousarray(p, self.dtype)
        return params

    # ------------------------------------------------------------------ forward

    def _f(self, a):
        return self.k.scaled_tanh_forward(a, self.A, self.S)

    def forward(self, params: dict, x: np.ndarray) -> dict:
        """All pre-activations a*, activations x* and the penalties y for input ``x``."""
        self._check_input(params, x)
        k, p = self.k, params
        c = {"x0": x}
        c["a1"] = k.conv2d_forward(x, p["C1.w"], p["C1.b"])
        c["x1"] = self._f(c["a1"])
        c["a2"] = k.subsample_forward(c["x1"], p["S2.coef"], p["S2.bias"])
        c["x2"] = self._f(c["a2"])
        c["a3"] = k.conv2d_forward(c["x2"], p["C3.w"], p["C3.b"], table=self.table)
        c["x3"] = self._f(c["a3"])
        c["a4"] = k.subsample_forward(c["x3"], p["S4.coef"], p["S4.bias"])
        c["x4"] = self._f(c["a4"])
        c["a5"] = k.conv2d_forward(c["x4"], p["C5.w"], p["C5.b"])
        c["x5"] = self._f(c["a5"]).reshape(len(x), 120)
        c["a6"] = k.dense_forward(c["x5"], p["F6.w"], p["F6.b"])
        c["x6"] = self._f(c["a6"])
        c["y"] = k.rbf_forward(c["x6"], self.centers)
        return c

    def penalties(self, params: dict, x: np.ndarray, chunk: int = EVAL_CHUNK) -> np.ndarray:
        """RBF penalties (N, 10) for ``x``, computed ``chunk`` images at a time.

        Fused: one generated C call per chunk (the training step's forward pass, in its
        lanes): the bits a training step's penalties have; :meth:`forward`'s ``y`` up to
        the squashing's rounding of a call's last elements (the same bits image by image).
        """
        if len(x) == 0:
            return np.zeros((0, 10), self.dtype)
        return np.concatenate(
            [self._penalties(params, x[i : i + chunk]) for i in range(0, len(x), chunk)]
        )

    def _penalties(self, params: dict, x: np.ndarray) -> np.ndarray:
        # The generated binding validates params and x, but only this network knows its
        # dtype (x of another would meet a workspace of this one's): that says so.
        if self.fused and getattr(x, "dtype", None) == self.dtype:
            return self.k.lenet5_penalties(params, x, self._workspace(len(x)))
        return self.forward(params, x)["y"]

    def loss(self, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-sample MAP criterion E_p = y_label + log(e^{-j} + sum_i e^{-y_i})."""
        return self.k.map_loss_forward(y, _labels(labels, len(y)), self.j)

    # ------------------------------------------------------------------ backward

    def gradients(self, params: dict, x: np.ndarray, labels: np.ndarray):
        """(per-sample losses, penalties, gradients of the summed loss wrt every parameter)."""
        labels = _labels(labels, len(x))
        if self.fused:  # the generated binding validates params and x
            return self.k.lenet5_gradients(params, x, labels, self._workspace(len(x)))
        c = self.forward(params, x)
        dy = self.k.map_loss_backward(c["y"], labels, self.j)
        dx6 = self.k.rbf_backward(dy, c["x6"], self.centers)[0]
        return self.loss(c["y"], labels), c["y"], self._backward(params, c, dx6, square=False)

    # ------------------------------------------------------------------ training steps

    def sdlm_step(self, params: dict, hess: dict, x, labels, eta: float):
        """One SDLM step in place: w -= eta / (mu + h) * (gradient of the summed loss).

        Returns the per-sample losses and the penalties of ``x`` before the update.
        """
        labels = _labels(labels, len(x))
        if self.fused:
            work = self._workspace(len(x))
            return self.k.lenet5_sdlm_step(params, hess, x, labels, eta, spec.SDLM_MU, work)
        losses, y, grads = self.gradients(params, x, labels)
        self.sdlm_update(params, grads, hess, eta)
        return losses, y

    def sgd_step(self, params: dict, velocity: dict, x, labels, lr: float, momentum: float):
        """One momentum step in place on the batch-mean gradient (v = m v - lr/B g; w += v).

        Returns the per-sample losses and the penalties of ``x`` before the update.
        """
        labels = _labels(labels, len(x))
        rate = lr / len(x)
        if self.fused:
            work = self._workspace(len(x))
            return self.k.lenet5_sgd_step(params, velocity, x, labels, rate, momentum, work)
        losses, y, grads = self.gradients(params, x, labels)
        for n, g in grads.items():
            params[n][...], velocity[n][...] = self.k.sgd_momentum_update(
                params[n], velocity[n], g, rate, momentum
            )
        return losses, y

    def sdlm_update(self, params: dict, grads: dict, hess: dict, eta: float) -> None:
        """In place, with the ``sdlm_update`` kernel: w -= eta / (mu + h) * g."""
        for n, g in grads.items():
            params[n][...] = self.k.sdlm_update(params[n], g, hess[n], eta, spec.SDLM_MU)

    def _workspace(self, batch: int) -> np.ndarray:
        """The fused step's scratch for ``batch`` images (allocated once per batch size)."""
        if batch not in self._work:
            self._work[batch] = self.k.lenet5_workspace(batch, self.dtype)
        return self._work[batch]

    # ------------------------------------------------------------------ curvature

    def hessian_diagonal(self, params: dict, x: np.ndarray, labels: np.ndarray) -> dict:
        """Sum over the batch of the per-sample Gauss-Newton diagonal d2E/dw^2 (see module doc)."""
        labels = _labels(labels, len(x))
        c = self.forward(params, x)
        d2x6 = self.loss_curvature(c["y"], c["x6"], labels)
        return self._backward(params, c, d2x6, square=True)

    def loss_curvature(self, y: np.ndarray, x6: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Exact d2E/dx6_k^2 of each sample's MAP loss through the RBF layer (all >= 0).

        With s_i = e^{-y_i} / (e^{-j} + sum_m e^{-y_m}) the MAP gradient is
        g_i = dE/dy_i = [i = label] - s_i (recovered from the kernel), its Hessian in y is
        diag(s) - s s^T, and y_i = sum_k (x_k - c_ik)^2 has J_ik = dy_i/dx_k = 2 (x_k - c_ik)
        and d2y_i/dx_k^2 = 2.  Hence
        d2E/dx_k^2 = sum_i s_i J_ik^2 - (sum_i s_i J_ik)^2 + 2 (1 - sum_i s_i),
        a variance plus a positive term (sum_i s_i < 1 because of e^{-j}).  Small numpy
        glue on (N, 10, 84) arrays.
        """
        labels = _labels(labels, len(y))
        onehot = np.zeros_like(y)
        onehot[np.arange(len(labels)), labels] = 1
        s = onehot - self.k.map_loss_backward(y, labels, self.j)
        jac = 2 * (x6[:, None, :] - self.centers[None, :, :])  # (N, 10, 84)
        mean = np.einsum("ni,nik->nk", s, jac)
        d2 = np.einsum("ni,nik->nk", s, jac * jac) - mean * mean + 2 * (1 - s.sum(1))[:, None]
        return np.ascontiguousarray(d2, self.dtype)

    def _backward(self, p: dict, c: dict, dx6: np.ndarray, square: bool) -> dict:
        """Backpropagate from dE/dx6 (or d2E/dx6^2 when ``square``) to every parameter.

        With ``square`` every weight and layer input is squared and f' is applied twice,
        so each kernel computes the Gauss-Newton diagonal term instead of the gradient.
        """
        k = self.k
        sq = (lambda a: a * a) if square else (lambda a: a)

        def act(d, x):  # d * f'(a), or d * f'(a)^2, f'(a) from the output x = f(a)
            d = k.scaled_tanh_backward_from_output(d, x, self.A, self.S)
            return k.scaled_tanh_backward_from_output(d, x, self.A, self.S) if square else d

        def conv(d, x, w, hw, table=None, need_dx=True):
            dw = k.conv2d_backward_filter(sq(x), d, (5, 5), table=table)
            dx = k.conv2d_backward_data(d, sq(w), hw, table=table) if need_dx else None
            return dw, k.conv2d_backward_bias(d), dx

        g = {}
        da6 = act(dx6, c["x6"])
        dx5, g["F6.w"], g["F6.b"] = k.dense_backward(da6, sq(c["x5"]), sq(p["F6.w"]))
        da5 = act(dx5.reshape(c["a5"].shape), c["x5"].reshape(c["a5"].shape))
        g["C5.w"], g["C5.b"], dx4 = conv(da5, c["x4"], p["C5.w"], (5, 5))
        da4 = act(dx4, c["x4"])
        dx3, g["S4.coef"], g["S4.bias"] = k.subsample_backward(da4, sq(c["x3"]), sq(p["S4.coef"]))
        da3 = act(dx3, c["x3"])
        g["C3.w"], g["C3.b"], dx2 = conv(da3, c["x2"], p["C3.w"], (14, 14), self.table)
        da2 = act(dx2, c["x2"])
        dx1, g["S2.coef"], g["S2.bias"] = k.subsample_backward(da2, sq(c["x1"]), sq(p["S2.coef"]))
        da1 = act(dx1, c["x1"])
        g["C1.w"], g["C1.b"], _ = conv(da1, c["x0"], p["C1.w"], (32, 32), need_dx=False)
        return {name: g[name] for name in PARAM_SHAPES}

    # ------------------------------------------------------------------ checks

    def _check_input(self, params, x):
        check_params(params, self.dtype)
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
            got = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"x must be an array of shape (N, 1, 32, 32), got {got}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype}, the network uses {self.dtype}")
