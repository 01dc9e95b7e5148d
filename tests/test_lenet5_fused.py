"""The fused LeNet-5 training step (one generated C call per batch, ``symconv_lenet5_*``):
equal to the composed kernel path, gradients equal to finite differences, deterministic
and independent of the OpenMP thread count, and every bad argument rejected by name.

Tolerances (batch > 1).  Both paths add the same products; only the order differs (the
fused step sums each of up to 8 slices of the batch, then the slices in order).  For a
sum of n products the rounding difference is, in the usual random-rounding regime,
~ sqrt(n) u sum|terms|; the largest sums here are C1's weight gradients, n = B * 784 <=
15,680 with B = 20, and sum|terms| stays within ~10x the largest gradient entry of the
array, hence ~ 125 * u * 10 relative to that entry: 7e-5 in float32 (u = 6e-8), 1.4e-13
in float64 (u = 1.1e-16).  The bounds below, GRAD_RTOL, are those rounded up (measured:
2.6e-6 and 2.4e-15).  At batch 1 both paths perform the same calls: bits are equal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("generated.lenet5_spec")

from lenet5 import spec  # noqa: E402
from lenet5.data import load_mnist, to_input  # noqa: E402
from lenet5.network import PARAM_SHAPES, BackendError, LeNet5, load_backend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GRAD_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-12}
EPS = {np.dtype(np.float32): 2.0**-23, np.dtype(np.float64): 2.0**-52}
DTYPES = (np.float32, np.float64)


def _c_available():
    try:
        load_backend("c")
    except (BackendError, ImportError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _c_available(), reason="C backend unavailable")


@pytest.fixture(scope="module")
def digits():
    d = load_mnist("sample")
    return d.train_images[::150][:20], d.train_labels[::150][:20]  # every class


def _setup(dtype, batch, digits, seed=0):
    """(fused net, composed net, params, hess, velocity, x, labels) for one step."""
    fused, composed = LeNet5("c", dtype), LeNet5("c", dtype, fused=False)
    rng = np.random.default_rng(seed)
    params = fused.init_params(rng)
    # A Gauss-Newton-like diagonal (>= 0) and a velocity of the size of a few steps.
    hess = {n: rng.uniform(0, 2, s).astype(dtype) for n, s in PARAM_SHAPES.items()}
    velocity = {n: rng.uniform(-1e-4, 1e-4, s).astype(dtype) for n, s in PARAM_SHAPES.items()}
    x, labels = to_input(digits[0][:batch], dtype), digits[1][:batch]
    return fused, composed, params, hess, velocity, x, labels


def _copy(arrays):
    return {n: a.copy() for n, a in arrays.items()}


def _step(net, optimizer, params, hess, velocity, x, labels):
    """One step on copies; returns (losses, y, params after, velocity after)."""
    params, velocity = _copy(params), _copy(velocity)
    if optimizer == "sdlm":
        losses, y = net.sdlm_step(params, hess, x, labels, 0.0005 * 0.05)
    else:
        losses, y = net.sgd_step(params, velocity, x, labels, 0.001, 0.9)
    return losses, y, params, velocity


def _assert_moves_agree(after, reference, before, dtype, what):
    """The updates w' - w agree to GRAD_RTOL of the largest update of each array, plus
    the rounding of w' itself (a few ulp of the largest weight)."""
    for name in PARAM_SHAPES:
        move, ref_move = after[name] - before[name], reference[name] - before[name]
        assert np.abs(ref_move).max() > 0, (what, name)  # the step moved this array
        atol = (
            GRAD_RTOL[dtype] * np.abs(ref_move).max() + 4 * EPS[dtype] * np.abs(before[name]).max()
        )
        np.testing.assert_allclose(move, ref_move, rtol=0, atol=atol, err_msg=f"{what} {name}")


@pytest.mark.parametrize("optimizer", ["sdlm", "sgd"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 5, 20])
def test_fused_step_equals_composed_step(optimizer, dtype, batch, digits):
    fused, composed, params, hess, velocity, x, labels = _setup(dtype, batch, digits)
    f = _step(fused, optimizer, params, hess, velocity, x, labels)
    c = _step(composed, optimizer, params, hess, velocity, x, labels)
    if batch == 1:  # one lane, no reduction: the very same kernel calls
        for a, b in zip(f[:2], c[:2], strict=True):
            assert np.array_equal(a, b)
        for name in PARAM_SHAPES:
            assert np.array_equal(f[2][name], c[2][name]), name
            assert np.array_equal(f[3][name], c[3][name]), name
        return
    # The forward of an image does the same operations in both paths; only the squashing's
    # last elements of a call may take libm's scalar tanh instead of the SIMD one (both
    # within 2.5 ulp): losses and penalties agree to a few ulp.
    ulp = 4 * EPS[np.dtype(dtype)]
    np.testing.assert_allclose(f[0], c[0], rtol=ulp)
    np.testing.assert_allclose(f[1], c[1], rtol=ulp)
    _assert_moves_agree(f[2], c[2], params, np.dtype(dtype), optimizer)
    if optimizer == "sgd":
        _assert_moves_agree(f[3], c[3], velocity, np.dtype(dtype), "velocity")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gradients_equal_composed_gradients(dtype, digits):
    fused, composed, params, _, _, x, labels = _setup(dtype, 13, digits, seed=1)
    lf, yf, gf = fused.gradients(params, x, labels)
    lc, yc, gc = composed.gradients(params, x, labels)
    np.testing.assert_allclose(lf, lc, rtol=4 * EPS[np.dtype(dtype)])
    for name in PARAM_SHAPES:
        scale = np.abs(gc[name]).max()
        assert scale > 1e-6, name  # non-vacuous
        np.testing.assert_allclose(
            gf[name], gc[name], rtol=0, atol=GRAD_RTOL[np.dtype(dtype)] * scale
        )


def test_fused_gradients_match_finite_differences(digits):
    """float64, batch 11 (8 uneven slices): two entries of every array, central differences."""
    net = LeNet5("c", np.float64)
    params = net.init_params(np.random.default_rng(2))
    x, labels = to_input(digits[0][:11], np.float64), digits[1][:11]
    _, _, grads = net.gradients(params, x, labels)

    def total_loss(p):
        return float(net.loss(net.forward(p, x)["y"], labels).sum())

    eps = 1e-5  # truncation O(eps^2) ~ 1e-10; rounding of the summed loss (~700 over 11
    # images, its forward sums ~1e4 in absolute terms) ~ 1e-12 / (2 eps) = 5e-8
    for name in PARAM_SHAPES:
        g = grads[name]
        assert np.abs(g).max() > 1e-6, name  # every array gets a gradient
        for idx in (np.unravel_index(np.argmax(np.abs(g)), g.shape), (0,) * g.ndim):
            plus, minus = _copy(params), _copy(params)
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd = (total_loss(plus) - total_loss(minus)) / (2 * eps)
            assert g[idx] == pytest.approx(fd, rel=1e-5, abs=1e-7), (name, idx)


@pytest.mark.parametrize("optimizer", ["sdlm", "sgd"])
def test_fused_step_is_deterministic(optimizer, digits):
    fused, _, params, hess, velocity, x, labels = _setup(np.float32, 20, digits)
    a = _step(fused, optimizer, params, hess, velocity, x, labels)
    b = _step(fused, optimizer, params, hess, velocity, x, labels)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for name in PARAM_SHAPES:
        assert np.array_equal(a[2][name], b[2][name]) and np.array_equal(a[3][name], b[3][name])


_THREADS_SCRIPT = """
import json, sys
import numpy as np
from lenet5.data import load_mnist, to_input
from lenet5.network import LeNet5
d = load_mnist("sample")
net = LeNet5("c", np.float32)
params = net.init_params(np.random.default_rng(0))
# The composed Hessian estimate at 250 digits (the size train.hessian_estimate uses): S2's
# 250 x 1,176 outputs pass the elementwise kernels' threshold for threads (2**18), and two
# equal shares of them (147,000) are no whole number of 16-float vectors: SIMD tails move.
# Weights x2: pre-activations of order 1, where the vector and scalar tanh can differ.
big = {n: 2 * p for n, p in params.items()}
h = net.hessian_diagonal(big, to_input(d.train_images[:250], np.float32), d.train_labels[:250])
hess = {n: np.full_like(p, 0.5) for n, p in params.items()}
x, labels = to_input(d.train_images[::150][:20], np.float32), d.train_labels[::150][:20]
for _ in range(3):
    losses, y = net.sdlm_step(params, hess, x, labels, 1e-4)
# Batches of 1 and 3 (a single lane; more lanes than two threads), SGD too.
velocity = {n: np.zeros_like(p) for n, p in params.items()}
for b in (1, 3):
    net.sgd_step(params, velocity, x[:b], labels[:b], 1e-3, 0.9)
    losses, y1 = net.sdlm_step(params, hess, x[:b], labels[:b], 1e-4)
out = {n: p.tobytes().hex() for n, p in params.items()} | {"y": y.tobytes().hex()}
out |= {"y1": y1.tobytes().hex(), "losses": losses.tobytes().hex()}
print(json.dumps(out | {"h " + n: v.tobytes().hex() for n, v in h.items()}))
"""


def test_fused_step_is_independent_of_the_thread_count():
    """A composed Hessian estimate, three SDLM steps at batch 20 (8 lanes), then SGD and
    SDLM steps at batch 1 and 3, with 1, 2 and 3 OpenMP threads: same bits (the
    full-MNIST test's result relies on it)."""
    results = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    assert results[0] == results[1] == results[2]


def test_c3_absent_connections_stay_zero_under_fused_steps(digits):
    net = LeNet5("c", np.float64)
    params = net.init_params(np.random.default_rng(7))
    hess = {n: np.zeros_like(p) for n, p in params.items()}
    velocity = {n: np.zeros_like(p) for n, p in params.items()}
    x, labels = to_input(digits[0][:9], np.float64), digits[1][:9]
    before = params["C3.w"].copy()
    for _ in range(2):
        net.sdlm_step(params, hess, x, labels, 1e-4)
        net.sgd_step(params, velocity, x, labels, 1e-3, 0.9)
    assert (params["C3.w"][spec.C3_MASK == 0] == 0).all()
    assert not np.array_equal(params["C3.w"], before)


def test_workspace_size_is_what_codegen_planned():
    from codegen import lenet5_step
    from generated import c_kernels as K

    for batch in (1, 2, 7, 8, 9, 64, 100):
        work = K.lenet5_workspace(batch, np.float32)
        assert work.size == lenet5_step.workspace_size(batch), batch
    assert K.LENET5_PARAMS == tuple(PARAM_SHAPES.items())


# ----------------------------------------------------------------------------- bad input


@pytest.fixture()
def call(digits):
    """A valid SDLM step's arguments and the binding, to break one argument at a time."""
    from generated import c_kernels as K

    _, _, params, hess, _, x, labels = _setup(np.float32, 3, digits)
    args = dict(
        params=params,
        hess=hess,
        x=x,
        labels=np.ascontiguousarray(labels, np.int64),
        eta=1e-4,
        mu=0.02,
        work=K.lenet5_workspace(3, np.float32),
    )
    return K, args


def _read_only(a):
    a.flags.writeable = False
    return a


def _broken(params, name, value):
    out = dict(params)
    out[name] = value
    return out


BAD = {
    "params missing an array": (
        lambda a: {"params": {k: v for k, v in a["params"].items() if k != "F6.b"}},
        ValueError,
        r"params must be a dict of the arrays",
    ),
    "params of another dtype": (
        lambda a: {"params": _broken(a["params"], "C5.w", a["params"]["C5.w"].astype(np.float64))},
        TypeError,
        r"params\['C5.w'\] has dtype float64",
    ),
    "params of the wrong shape": (
        lambda a: {"params": _broken(a["params"], "C1.w", np.zeros((6, 1, 5, 4), np.float32))},
        ValueError,
        r"params\['C1.w'\] must have shape \(6, 1, 5, 5\)",
    ),
    "params not contiguous": (
        lambda a: {"params": _broken(a["params"], "F6.w", np.zeros((120, 84), np.float32).T)},
        ValueError,
        r"params\['F6.w'\] must be C-contiguous",
    ),
    "params read-only": (
        lambda a: {"params": _broken(a["params"], "C1.b", _read_only(np.zeros(6, np.float32)))},
        ValueError,
        r"params\['C1.b'\] is updated in place and must be writeable",
    ),
    "hess not an array": (
        lambda a: {"hess": _broken(a["hess"], "S2.coef", [0.0] * 6)},
        TypeError,
        r"hess\['S2.coef'\] must be a numpy.ndarray",
    ),
    "x of the wrong shape": (
        lambda a: {"x": np.zeros((3, 1, 28, 28), np.float32)},
        ValueError,
        r"x must have shape \(B, 1, 32, 32\)",
    ),
    "x float64 with float32 params": (
        lambda a: {"x": a["x"].astype(np.float64), "work": np.zeros(a["work"].size, np.float64)},
        TypeError,
        r"params\['C1.w'\] has dtype float32 but x has float64",
    ),
    "x not contiguous": (
        lambda a: {"x": np.zeros((3, 1, 32, 64), np.float32)[..., ::2]},
        ValueError,
        r"x must be C-contiguous",
    ),
    "label 10": (
        lambda a: {"labels": np.array([1, 10, 2])},
        ValueError,
        r"labels values must lie in \[0, classes=10\)",
    ),
    "label -1": (
        lambda a: {"labels": np.array([-1, 0, 2])},
        ValueError,
        r"labels values must lie in",
    ),
    "labels not int64": (
        lambda a: {"labels": np.array([1, 2, 3], np.int32)},
        TypeError,
        r"labels must have dtype int64",
    ),
    "one label too few": (
        lambda a: {"labels": np.array([1, 2])},
        ValueError,
        r"labels must have shape \(B\) with B=3",
    ),
    "eta NaN": (lambda a: {"eta": float("nan")}, ValueError, r"eta must be finite"),
    "mu infinite": (lambda a: {"mu": float("inf")}, ValueError, r"mu must be finite"),
    "eta a string": (lambda a: {"eta": "0.1"}, TypeError, r"eta must be a real number"),
    "workspace too small": (
        lambda a: {"work": a["work"][:-1]},
        ValueError,
        r"work must be writeable, C-contiguous and hold \d+ elements for B=3",
    ),
    "workspace float64": (
        lambda a: {"work": np.zeros(a["work"].size, np.float64)},
        TypeError,
        r"work must be a 1-d float32 array",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_argument(call, case):
    K, args = call
    change, exc, message = BAD[case]
    bad = args | change(args)
    with pytest.raises(exc, match=message):
        K.lenet5_sdlm_step(**bad)
    order = ("params", "hess", "x", "labels", "eta", "mu", "work")
    assert K.LIBRARY.fast.lenet5_sdlm_step(*[bad[k] for k in order]) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 5])
def test_the_fast_path_takes_valid_steps_bit_for_bit_as_the_checked_path(digits, dtype, batch):
    """The C fast path (checks in C) and the checked path (checks in Python) call the same
    step: the same losses, penalties and updated arrays, bit for bit."""
    from generated import c_kernels as K

    _, _, params, hess, _, x, labels = _setup(dtype, batch, digits)
    labels = np.ascontiguousarray(labels, np.int64)
    velocity = {n: np.full(s, 0.01, dtype) for n, s in PARAM_SHAPES.items()}
    work = K.lenet5_workspace(batch, dtype)
    steps = {
        "sdlm_step": (hess, ("eta", 1e-3), ("mu", 0.02)),
        "sgd_step": (velocity, ("rate", 1e-2), ("momentum", 0.9)),
    }
    for entry, (state, a, b) in steps.items():
        fast_params = {k: v.copy() for k, v in params.items()}
        fast_state = {k: v.copy() for k, v in state.items()}
        fast = getattr(K.LIBRARY.fast, f"lenet5_{entry}")
        out = fast(fast_params, fast_state, x, labels, a[1], b[1], work)
        assert out is not None, f"{entry}: the fast path declined a valid step"
        mine = {k: v.copy() for k, v in params.items()}
        mine_state = {k: v.copy() for k, v in state.items()}
        E, y = K.LENET5_STEP._update(entry, mine, mine_state, x, labels, (a, b), work)
        assert np.array_equal(out[0], E) and np.array_equal(out[1], y), entry
        for name in params:
            assert np.array_equal(fast_params[name], mine[name]), (entry, name)
            assert np.array_equal(fast_state[name], mine_state[name]), (entry, name)
        assert not np.array_equal(fast_params["C1.w"], params["C1.w"])  # it did train


def test_the_fast_path_declines_a_read_only_velocity(call):
    K, args = call
    velocity = {n: _read_only(np.zeros(s, np.float32)) for n, s in PARAM_SHAPES.items()}
    common = [args[k] for k in ("params",)] + [velocity] + [args[k] for k in ("x", "labels")]
    assert K.LIBRARY.fast.lenet5_sgd_step(*common, 0.1, 0.9, args["work"]) is None
    with pytest.raises(ValueError, match=r"velocity\['C1.w'\] is updated in place"):
        K.lenet5_sgd_step(
            args["params"], velocity, args["x"], args["labels"], 0.1, 0.9, args["work"]
        )


def test_arrays_a_step_only_reads_may_be_read_only(call):
    """The Hessian of an SDLM step and the parameters of a gradient evaluation are read,
    not written: read-only arrays are taken by both paths (and left as they were)."""
    K, args = call
    hess = {n: _read_only(v.copy()) for n, v in args["hess"].items()}
    common = (args["x"], args["labels"], args["eta"], args["mu"], args["work"])
    before = {n: v.copy() for n, v in args["params"].items()}
    assert K.LIBRARY.fast.lenet5_sdlm_step(args["params"], hess, *common) is not None
    scalars = (("eta", args["eta"]), ("mu", args["mu"]))
    K.LENET5_STEP._update("sdlm_step", args["params"], hess, *common[:2], scalars, args["work"])
    assert all(np.array_equal(hess[n], args["hess"][n]) for n in hess)
    assert not np.array_equal(before["C1.w"], args["params"]["C1.w"])  # the params did move
    frozen = {n: _read_only(v.copy()) for n, v in args["params"].items()}
    E, _, grads = K.lenet5_gradients(frozen, args["x"], args["labels"], args["work"])
    assert np.all(np.isfinite(E)) and np.any(grads["C1.w"] != 0)


def test_bad_velocity_and_gradient_arguments(call):
    K, args = call
    velocity = {n: np.zeros(s, np.float32) for n, s in PARAM_SHAPES.items()}
    common = {k: args[k] for k in ("params", "x", "labels", "work")}
    with pytest.raises(ValueError, match=r"momentum must be finite"):
        K.lenet5_sgd_step(velocity=velocity, rate=0.1, momentum=float("nan"), **common)
    with pytest.raises(TypeError, match=r"velocity\['F6.b'\] must be a numpy.ndarray"):
        K.lenet5_sgd_step(
            velocity=_broken(velocity, "F6.b", None), rate=0.1, momentum=0.9, **common
        )
    with pytest.raises(ValueError, match=r"lenet5_workspace: batch must be >= 1"):
        K.lenet5_workspace(0, np.float32)
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64"):
        K.lenet5_workspace(3, np.int32)
    with pytest.raises(ValueError, match=r"x must not be empty"):
        K.lenet5_gradients(args["params"], args["x"][:0], args["labels"][:0], args["work"])


def test_fused_needs_the_c_backend():
    with pytest.raises(ValueError, match=r"fused=True needs the C backend"):
        LeNet5("numpy", np.float64, fused=True)


def test_sgd_training_resumes_bit_for_bit_through_the_fused_step(tmp_path):
    """The fused momentum step continues from a checkpoint's velocity exactly."""
    from lenet5 import checkpoint, train

    full = load_mnist("sample")
    # Resuming involves no test digit: two per class (the sample is sorted by class) keep
    # each pass's evaluation and pictures short.
    sample = dataclasses.replace(
        full, test_images=full.test_images[::50], test_labels=full.test_labels[::50]
    )
    quick = dict(backend="c", batch_size=10, limit=200, progress=False, optimizer="sgd")
    train.train(train.Config(out=str(tmp_path / "a"), epochs=2, **quick), sample, log=print)
    train.train(train.Config(out=str(tmp_path / "b"), epochs=1, **quick), sample, log=print)
    rest = train.Config(out=str(tmp_path / "b"), epochs=2, **quick)
    train.train(rest, sample, resume=True, log=print)
    a, b = (checkpoint.load(tmp_path / run / train.LAST) for run in ("a", "b"))
    assert not np.array_equal(a.velocity["F6.w"], 0 * a.velocity["F6.w"])  # momentum is live
    for name in PARAM_SHAPES:
        assert np.array_equal(a.params[name], b.params[name]), name
        assert np.array_equal(a.velocity[name], b.velocity[name]), name


# ----------------------------------------------------------------------------- the forward pass


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 5, 9, 20])
def test_fused_penalties_are_the_training_steps_forward_pass(dtype, batch, digits):
    """One call per batch, in the step's lanes: the penalties a training step returns,
    bit for bit (the same kernel calls on the same slices); the composed forward's bit for
    bit image by image, and within the squashing's rounding on a whole batch (its last
    elements may take libm's scalar tanh in one path and the SIMD one in the other, both
    within 2.5 ulp; see test_fused_step_equals_composed_step)."""
    fused, composed, params, hess, _, x, labels = _setup(dtype, batch, digits)
    y = fused.penalties(params, x)
    assert y.shape == (batch, 10) and y.dtype == dtype and np.all(y > 0)
    assert np.array_equal(y, fused.sdlm_step(_copy(params), hess, x, labels, 1e-3)[1])
    one_by_one = [composed.forward(params, x[i : i + 1])["y"] for i in range(batch)]
    assert np.array_equal(fused.penalties(params, x, chunk=1), np.concatenate(one_by_one))
    np.testing.assert_allclose(y, composed.forward(params, x)["y"], rtol=4 * EPS[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_fast_path_takes_the_forward_pass_bit_for_bit_as_the_checked_path(dtype, digits):
    from generated import c_kernels as K

    _, _, params, _, _, x, _ = _setup(dtype, 7, digits)
    work = K.lenet5_workspace(7, dtype)
    frozen = {n: _read_only(v.copy()) for n, v in params.items()}  # only read
    fast = K.LIBRARY.fast.lenet5_penalties(frozen, x, work)
    assert fast is not None, "the fast path declined a valid call"
    assert np.array_equal(fast, K.LENET5_STEP._forward(frozen, x, work))
    assert all(np.array_equal(frozen[n], params[n]) for n in params)


#: The step's bad arguments that the forward pass takes too, and its own.
PENALTIES_BAD = {
    case: BAD[case]
    for case in (
        "params missing an array",
        "params of another dtype",
        "params of the wrong shape",
        "x of the wrong shape",
        "x not contiguous",
        "workspace too small",
        "workspace float64",
    )
} | {
    "x empty": (lambda a: {"x": a["x"][:0]}, ValueError, r"x must not be empty"),
    "x not an array": (lambda a: {"x": a["x"].tolist()}, TypeError, r"x must be a numpy"),
    "workspace read-only": (
        lambda a: {"work": _read_only(a["work"].copy())},
        ValueError,
        r"work must be writeable",
    ),
}


@pytest.mark.parametrize("case", sorted(PENALTIES_BAD))
def test_bad_forward_input_names_the_argument(call, case):
    K, args = call
    change, exc, message = PENALTIES_BAD[case]
    bad = {k: args[k] for k in ("params", "x", "work")}
    bad |= change(bad)
    with pytest.raises(exc, match=message):
        K.lenet5_penalties(**bad)
    assert K.LIBRARY.fast.lenet5_penalties(bad["params"], bad["x"], bad["work"]) is None


def test_a_network_names_an_input_of_another_dtype(digits):
    net = LeNet5("c", np.float32)
    params = net.init_params(np.random.default_rng(0))
    x = to_input(digits[0][:2], np.float64)
    with pytest.raises(TypeError, match=r"x has dtype float64, the network uses float32"):
        net.penalties(params, x)
    assert net.penalties(params, x[:0].astype(np.float32)).shape == (0, 10)
