"""Training LeNet-5: stochastic diagonal Levenberg-Marquardt (the paper's), or SGD + momentum.

SDLM (LeCun et al. 1998, Appendix C): before each pass, the diagonal Gauss-Newton
second derivatives h_k are averaged over ``HESSIAN_SAMPLES`` (500) random training
digits; during the pass every parameter moves by ``-eta / (mu + h_k) * g_k`` with
mu = 0.02 and eta from the paper's schedule (0.0005 x2, 0.0002 x3, 0.0001 x3,
0.00005 x4, 0.00001 x8 passes), capped at ``SDLM_RATE_CAP`` (see there why), times the
factor ``lr`` (default ``SDLM_RATE_FACTOR``, 0.5).  The paper updates after every digit;
with a mini-batch of B digits ``g_k`` is the *sum* of the B per-digit gradients and eta is
divided by at most sqrt(B)/2 in the first pass and sqrt(B)/8 after it (``sdlm_rate``).
SGD (option) uses the batch-mean gradient with classical momentum.

Determinism and resume: every random choice of pass ``e`` (the order of the digits, the
500 Hessian digits) comes from ``default_rng([seed, e])`` and the distortion of batch
``b`` from ``default_rng([seed, e, b])``.  The RNG state is therefore the position
(epoch, step) stored in each checkpoint together with the parameters, the pass's
Hessian diagonal and the momentum, so ``--resume`` continues bit for bit.

RUNDIR receives ``checkpoint-epochNN.npz`` after every pass and ``checkpoint-last.npz``
(after every pass and on Ctrl-C), ``summary.json`` and the pictures (see ``plots``).

Run-folder integrity: a run holds an exclusive lock on ``RUNDIR/.lock`` (``flock``: the
kernel releases it when the process dies, so a killed run never blocks the next one);
a second run into the same RUNDIR is refused.  The folder is checked before any
training (a file, a read-only folder, a ``summary.json`` that is not a file are
``RunDirError``).  Temporaries a killed run left behind are removed; ``overwrite``
removes every file of the earlier run.  ``--resume`` continues from the most advanced
checkpoint that loads (``checkpoint-last.npz`` or, if that is missing or damaged, the
newest ``checkpoint-epochNN.npz``).  Ctrl-C anywhere in the loop (batches, Hessian
estimate, evaluation, checkpoint writes, pictures) stops within a step or an
evaluation chunk with a consistent ``checkpoint-last.npz``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen.writer import stale_temporaries, write_atomic
from lenet5 import checkpoint, plots, spec
from lenet5.data import MNIST, to_input
from lenet5.distort import distort as distort_images
from lenet5.network import EVAL_CHUNK, LeNet5, check_params

LAST = "checkpoint-last.npz"
LOCK = ".lock"
#: Files a run writes into RUNDIR (besides its temporaries): removed by ``overwrite``.
RUN_FILES = ("summary.json", "learning_curve.png", "confusion_matrix.png", "misclassified.png")
_EPOCH_FILE = re.compile(r"checkpoint-epoch(\d+)\.npz")
#: train_error and loss after each pass are measured, with the pass's final weights, on a
#: fixed random subset of this many training digits (all of them when fewer): a full
#: evaluation of the 60,000 MNIST digits would add about a fifth to every pass.
TRAIN_EVAL_DIGITS = 10000
#: Default factor on the capped SDLM schedule: half of it throughout.  At the cap itself a
#: single digit's step is large enough that the test error after 20 passes varies more and
#: ends higher over seeds; halving both phases (the capped passes 1-12 and the paper's
#: passes 13-20) ends lower, halving only one of them does not (README, "Deviation from
#: the paper").
SDLM_RATE_FACTOR = 0.5
#: The largest global SDLM rate this implementation trains at stably (0.05 x the paper's
#: first rate).  Above it the step of a single digit overshoots the minimum of that digit's
#: own loss: the layers' weights all move at once and their effects on the next layer add
#: up, a coupling the diagonal curvature estimate cannot see, and units whose curvature
#: falls below mu (saturated ones) take the largest step eta/mu.  Capping instead of
#: scaling the whole schedule down to it keeps the late passes (13-20) near the paper's
#: rates instead of 20 times below them.  README, "LeNet-5",
#: and bench/sdlm_curvature.py have the measurements.
SDLM_RATE_CAP = 2.5e-5
#: Default SGD rate (batch-mean gradient, momentum 0.9); measured on MNIST in batches of
#: 16: 0.001 trains smoothly, 0.003 is noisier, 0.01 saturates the tanh units at once.
SGD_DEFAULT_LR = 0.001
OPTIMIZERS = ("sdlm", "sgd")
#: With ``distort``, every pass trains on the original digits plus this many randomly
#: distorted copies of each (drawn anew every pass), in one shuffled order: the paper
#: augmented the 60,000 digits with 540,000 distorted ones (9 copies).  Adding copies
#: rather than distorting the originals in place keeps every clean digit in each pass.
DISTORT_COPIES = 9
#: Training digits put through ``to_input`` (and distorted) at a time, whole batches:
#: one conversion per block instead of one per batch.
INPUT_BLOCK = 1024
#: Configuration entries that determine the trajectory: a resumed run must match them.
TRAJECTORY_KEYS = (
    "batch_size",
    "seed",
    "optimizer",
    "lr",
    "momentum",
    "distort",
    "distort_copies",
    "dtype",
    "limit",
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(RuntimeError):
    """Ctrl-C: a checkpoint was saved and the run stopped cleanly."""


class RunDirError(ValueError):
    """RUNDIR cannot hold this run: not a folder, not writable, in use, or a write failed."""


@dataclass
class Config:
    """A training run.  ``lr`` multiplies the SDLM schedule, or is the SGD rate.

    ``lr=None`` selects the default of the optimizer (SDLM_RATE_FACTOR or SGD_DEFAULT_LR).
    """

    out: str
    epochs: int = 20
    batch_size: int = 1
    backend: str = "c"
    seed: int = 0
    optimizer: str = "sdlm"
    lr: float | None = None
    momentum: float = 0.9
    distort: bool = False
    distort_copies: int = DISTORT_COPIES
    dtype: str = "float32"
    limit: int | None = None
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "distort_copies"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr is None:
            self.lr = SDLM_RATE_FACTOR if self.optimizer == "sdlm" else SGD_DEFAULT_LR
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive integer, got {self.limit!r}")


@dataclass
class State:
    """Everything a checkpoint restores."""

    params: dict
    epoch: int = 0  # the pass in progress (= passes completed when step == 0)
    step: int = 0  # batches of that pass already applied
    hess: dict | None = None  # SDLM diagonal of the pass in progress
    velocity: dict | None = None  # SGD momentum
    partial: dict = field(default_factory=lambda: {"loss": 0.0, "errors": 0, "seen": 0, "s": 0.0})
    history: list = field(default_factory=list)
    kernels: list = field(default_factory=list)  # each kernel library trained on, in order


# ----------------------------------------------------------------------------- pieces


def evaluate(net: LeNet5, params: dict, images: np.ndarray, labels: np.ndarray, chunk=EVAL_CHUNK):
    """(error fraction, mean MAP loss, predicted digits) on uint8 ``images``."""
    losses, predicted = [], []
    for i in range(0, len(images), chunk):
        y = net.penalties(params, to_input(images[i : i + chunk], net.dtype), chunk)
        losses.append(net.loss(y, labels[i : i + chunk]))
        predicted.append(np.argmin(y, axis=1))
    predicted = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
    loss = float(np.concatenate(losses).mean()) if losses else float("nan")
    return float(np.mean(predicted != labels)), loss, predicted


def hessian_estimate(net, params, images, labels, chunk=250) -> dict:
    """Mean over the given digits of the per-digit Gauss-Newton diagonal."""
    total = None
    for i in range(0, len(images), chunk):
        x = to_input(images[i : i + chunk], net.dtype)
        h = net.hessian_diagonal(params, x, labels[i : i + chunk])
        total = h if total is None else {n: total[n] + h[n] for n in h}
    return {n: (v / len(images)).astype(net.dtype) for n, v in total.items()}


#: The largest batch for which ``sdlm_rate`` was measured to train on MNIST (16 and 64
#: did; 256 did not within a pass at 1/sqrt(B), 8/B or 1/B: it collapses to one class or
#: barely moves).  ``python -m lenet5 train`` warns above it.
MEASURED_SDLM_BATCH = 64
#: In the first pass a batch of B digits moves at this many times 1/sqrt(B) of the
#: per-digit rate (never above it).  From the initial weights almost every parameter has
#: the largest step eta/mu and a batch's summed gradient moves them all the same way: twice
#: this collapses B = 64 to one class.
SDLM_FIRST_PASS_BOOST = 2.0
#: After the first pass, the same with this factor: the curvature has grown, and B = 64
#: takes the per-digit rate itself, as single digits do (README, "Mini-batches").
SDLM_BATCH_BOOST = 8.0


def sdlm_rate(epoch: int, factor: float, batch: int) -> float:
    """The SDLM global rate applied to the *summed* gradient of a batch of ``batch`` digits.

    The paper's schedule capped at ``SDLM_RATE_CAP``, times ``factor``, is the rate r for
    one digit per update.  A batch of B digits gets min(r, ``SDLM_FIRST_PASS_BOOST``
    r / sqrt(B)) in the first pass (the square-root rule: the summed gradient has B times
    the mean's drift but only sqrt(B) times its noise) and min(r, ``SDLM_BATCH_BOOST``
    r / sqrt(B)) after it.  Measured on MNIST (README, "LeNet-5", "Mini-batches"): B = 64
    collapses to one class in the first pass at 4 r / sqrt(B) (the default factor), trains
    in the second at 8 r / sqrt(B).

    >>> sdlm_rate(0, 1.0, 1), sdlm_rate(19, 1.0, 1), sdlm_rate(0, 0.5, 1), sdlm_rate(19, 0.5, 1)
    (2.5e-05, 1e-05, 1.25e-05, 5e-06)
    >>> sdlm_rate(0, 0.5, 64), sdlm_rate(1, 0.5, 64), sdlm_rate(0, 0.5, 4)
    (3.125e-06, 1.25e-05, 1.25e-05)
    """
    rate = min(spec.rate_for_epoch(epoch), SDLM_RATE_CAP) * factor
    boost = SDLM_FIRST_PASS_BOOST if epoch == 0 else SDLM_BATCH_BOOST
    return min(rate, boost * rate / math.sqrt(batch))


def training_subset(data: MNIST, limit: int | None):
    """The training digits used: all, or ``limit`` of them drawn once with a fixed seed.

    A fixed random subset, not the first ``limit`` digits: IDX files may be sorted by class.
    """
    if limit is None or limit >= len(data.train_images):
        return data.train_images, data.train_labels
    keep = np.sort(np.random.default_rng(0).permutation(len(data.train_images))[:limit])
    return data.train_images[keep], data.train_labels[keep]


def _epoch_rng(seed, epoch, *more):
    return np.random.default_rng([seed, epoch, *more])


def _meta(cfg: Config, state: State, data: MNIST) -> dict:
    return {
        "config": {k: getattr(cfg, k) for k in TRAJECTORY_KEYS} | {"backend": cfg.backend},
        "epoch": state.epoch,
        "step": state.step,
        "partial": state.partial,
        "history": state.history,
        "kernels": state.kernels,
        "data_md5": data.md5,
    }


def save_state(path, cfg, state, data) -> None:
    meta = _meta(cfg, state, data)
    _write(path, lambda: checkpoint.save(path, state.params, meta, state.hess, state.velocity))


def restore(path, cfg: Config, data: MNIST) -> State:
    """State from ``path``; CheckpointError when it belongs to another run configuration."""
    ck = checkpoint.load(path)
    saved = ck.meta.get("config", {})
    for key in TRAJECTORY_KEYS:
        if saved.get(key) != getattr(cfg, key):
            raise checkpoint.CheckpointError(
                f"checkpoint {path} was made with {key}={saved.get(key)!r}, this run has "
                f"{key}={getattr(cfg, key)!r} (resume with the same settings)"
            )
    if ck.meta.get("data_md5") != data.md5:
        raise checkpoint.CheckpointError(f"checkpoint {path} was trained on other data files")
    check_params(ck.params, np.dtype(cfg.dtype))
    return State(
        params=ck.params,
        epoch=int(ck.meta["epoch"]),
        step=int(ck.meta.get("step", 0)),
        hess=ck.hess,
        velocity=ck.velocity,
        partial=ck.meta.get("partial") or State(params={}).partial,
        history=ck.meta.get("history", []),
        kernels=ck.meta.get("kernels", []),
    )


def _finite_or_none(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _write(path: Path, write) -> None:
    """Run ``write()``; a failed write (disk full, permissions): RunDirError naming ``path``."""
    try:
        write()
    except OSError as exc:
        raise RunDirError(f"cannot write {path}: {exc.strerror or exc}") from exc


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB (not its children's: a C
    compiler run for a cold kernel cache is not training)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def write_summary(path: Path, cfg: Config, state: State, data: MNIST, status: str) -> dict:
    """Write RUNDIR/summary.json (strict JSON: a non-finite number becomes null); returns it."""
    summary = {
        "epochs": state.history,
        "backend": cfg.backend,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "data_md5": data.md5,
        "data": data.source,
        "optimizer": cfg.optimizer,
        "dtype": cfg.dtype,
        "distort": cfg.distort,
        "distort_copies": cfg.distort_copies if cfg.distort else 0,
        "train_images": len(training_subset(data, cfg.limit)[1]),
        "test_images": len(data.test_images),
        "status": status,
        "kernels": state.kernels,
        "peak_rss_mb": peak_rss_mb(),
    }
    text = json.dumps(_finite_or_none(summary), indent=2, allow_nan=False) + "\n"
    _write(path, lambda: write_atomic(path, text.encode()))
    return summary


class _SigintFlag:
    """Ctrl-C during training.

    Where the loop has safe points of its own (the batch loop, which checks ``raised``
    after every step, and the checkpoint writes, checked by ``check`` after them) the
    first Ctrl-C only sets ``raised``.  Inside ``immediate()`` (the Hessian estimate,
    the evaluation, the pictures: phases that do not change the saved state) it raises
    ``Interrupted`` at once.  A second Ctrl-C raises KeyboardInterrupt.
    """

    def __init__(self):
        self.raised = False
        self.phase = None  # set inside immediate(): Ctrl-C raises Interrupted at once
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave the default handler
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.raised:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.raised = True
        if self.phase is not None:
            raise Interrupted(f"interrupted during {self.phase}")

    def check(self, where: str) -> None:
        """Interrupted if Ctrl-C was pressed (a safe point)."""
        if self.raised:
            raise Interrupted(f"interrupted {where}")

    @contextlib.contextmanager
    def immediate(self, phase: str):
        """A phase in which Ctrl-C raises Interrupted at once."""
        self.check(f"before {phase}")
        self.phase = phase
        try:
            yield
        finally:
            self.phase = None

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# ----------------------------------------------------------------------------- the loop


def train_step(net, state, cfg, x, labels, eta):
    """One update (in place); returns the per-digit losses and penalties of the batch.

    On the C backend the whole step is one generated C call (``LeNet5.sdlm_step``), so
    the losses are checked after the update: a diverged step is never saved.
    """
    if cfg.optimizer == "sdlm":
        losses, y = net.sdlm_step(state.params, state.hess, x, labels, eta)
    else:
        losses, y = net.sgd_step(state.params, state.velocity, x, labels, eta, cfg.momentum)
    # The sum is finite exactly when every loss is (the losses are far below overflow).
    if not math.isfinite(losses.sum()):
        raise TrainingDiverged(
            f"the loss became {'NaN' if np.isnan(losses).any() else 'infinite'} in pass "
            f"{state.epoch + 1}, batch {state.step + 1}"
        )
    return losses, y


def pass_length(cfg: Config, n: int) -> int:
    """Digits in one pass over ``n`` training digits: with ``distort``, plus the copies."""
    return n * (1 + cfg.distort_copies) if cfg.distort else n


def _block(cfg, epoch, images, entries, first, net):
    """Network input (``net.dtype``) and digit indices of the pass entries ``entries``, the
    batches ``first``, ``first + 1``, ... of pass ``epoch``: each distorted copy is drawn
    with its batch's generator, as if the batches were prepared one by one."""
    n, size = len(images), cfg.batch_size
    idx, copy = entries % n, entries >= n
    block = images[idx]
    for start in np.unique(np.flatnonzero(copy) // size * size):
        rows, moved = block[start : start + size], copy[start : start + size]
        rng_b = _epoch_rng(cfg.seed, epoch, first + start // size)
        rows[moved] = distort_images(rows[moved], rng_b, net.k)
    return to_input(block, net.dtype), idx


def _run_pass(net, state, cfg, data, images, labels, flag, bar):
    rng = _epoch_rng(cfg.seed, state.epoch)
    n = len(images)
    order = rng.permutation(pass_length(cfg, n))
    pick = rng.choice(n, min(spec.HESSIAN_SAMPLES, n), replace=False)
    p = state.partial
    if cfg.optimizer == "sdlm":
        eta = sdlm_rate(state.epoch, cfg.lr, cfg.batch_size)
        if state.step == 0:
            t0 = time.perf_counter()
            with flag.immediate("the Hessian estimate"):
                hess = hessian_estimate(net, state.params, images[pick], labels[pick])
            state.hess = hess
            p["h"] = p.get("h", 0.0) + time.perf_counter() - t0
    else:
        eta = cfg.lr
    train_entries(net, state, cfg, images, labels, order, eta, flag, bar)


def train_entries(net, state, cfg, images, labels, order, eta, flag, bar=None) -> None:
    """The batch loop of a pass: train on the pass entries ``order`` from batch
    ``state.step`` on, at the rate ``eta`` (with ``state.hess`` for SDLM), adding the
    steps' losses, errors, digits and seconds to ``state.partial``.

    Entry i is training digit i mod n of the uint8 ``images``; i >= n marks a distorted
    copy of it. ``flag`` is the run's SIGINT flag (checked after every step); ``bar`` a
    progress bar or None. ``bench/lenet5.py`` times this loop beside a bare step.
    """
    p = state.partial
    size = cfg.batch_size
    batches = -(-len(order) // size)
    while state.step < batches:
        first = state.step
        last = min(batches, first + max(1, INPUT_BLOCK // size))
        t0 = time.perf_counter()
        entries = order[first * size : last * size]
        x, idx = _block(cfg, state.epoch, images, entries, first, net)
        truth = np.ascontiguousarray(labels[idx], np.int64)
        block_losses = np.zeros(len(idx))
        penalties = np.zeros((len(idx), spec.RBF_CENTERS.shape[0]), net.dtype)
        try:
            for step in range(first, last):
                if flag.raised:
                    raise Interrupted("interrupted")
                at = slice((step - first) * size, (step - first + 1) * size)
                losses, y = train_step(net, state, cfg, x[at], truth[at], eta)
                state.step += 1
                block_losses[at], penalties[at] = losses, y
        finally:  # the steps taken, also when one raised
            done = min((state.step - first) * size, len(idx))
            p["loss"] += float(block_losses[:done].sum())
            p["errors"] += int((np.argmin(penalties[:done], axis=1) != truth[:done]).sum())
            p["seen"] += done
            p["s"] += time.perf_counter() - t0
        if bar is not None:
            bar.update(done)
            bar.set_postfix(
                loss=f"{p['loss'] / p['seen']:.4f}",
                err=f"{100 * p['errors'] / p['seen']:.2f}%",
                refresh=False,
            )


def train(
    cfg: Config, data: MNIST, resume: bool = False, overwrite: bool = False, log=print
) -> dict:
    """Run (or resume) training; returns the summary dict written to RUNDIR/summary.json.

    A RUNDIR that already holds a run is continued only with ``resume`` and replaced
    only with ``overwrite`` (which first removes every file of the earlier run): a new
    run never silently destroys an earlier one.  RUNDIR is locked for the whole run.
    """
    out = Path(cfg.out)
    if resume and not out.is_dir():
        raise checkpoint.CheckpointError(f"--resume: {out}: no such file or directory")
    with run_folder(out, log):
        if not resume and not overwrite and _holds_run(out):
            raise RunDirError(
                f"{out} already holds a run ({LAST}); pass --resume to continue it, "
                "--overwrite to start over, or choose another --out"
            )
        if overwrite and not resume:
            _remove_run(out, log)
        return _train_locked(cfg, data, resume, out, log)


def _train_locked(cfg, data, resume, out, log) -> dict:
    net = LeNet5(cfg.backend, np.dtype(cfg.dtype))
    images, labels = training_subset(data, cfg.limit)
    if resume:
        path = resume_checkpoint(out, log)
        state = restore(path, cfg, data)
        log(f"resuming from {path}: pass {state.epoch + 1}, batch {state.step}")
        if path.name != LAST:  # LAST is missing or behind: it is the run's position again
            save_state(out / LAST, cfg, state, data)
    else:
        state = State(params=net.init_params(np.random.default_rng([cfg.seed])))
    if state.epoch < cfg.epochs:
        _record_kernels(state, net.kernels(), log)
    if cfg.optimizer == "sgd" and state.velocity is None:
        state.velocity = {n: np.zeros_like(a) for n, a in state.params.items()}
    last_good = out / LAST
    summary = None
    with _SigintFlag() as flag:
        try:
            while state.epoch < cfg.epochs:
                bar = _progress(cfg, state, pass_length(cfg, len(images)))
                try:
                    _run_pass(net, state, cfg, data, images, labels, flag, bar)
                except TrainingDiverged as exc:
                    write_summary(out / "summary.json", cfg, state, data, "diverged")
                    kept = (
                        f"last good checkpoint: {last_good}"
                        if last_good.exists()
                        else "no checkpoint"
                    )
                    raise TrainingDiverged(f"{exc}; stopped ({kept})") from None
                finally:
                    if bar is not None:
                        bar.close()
                summary = _finish_pass(net, state, cfg, data, images, labels, out, log, flag)
        except Interrupted as exc:
            # Every phase leaves ``state`` consistent: mid-pass after a whole step, after
            # the last step before the pass's evaluation, or after a finished pass.
            flag.phase = None
            save_state(out / LAST, cfg, state, data)
            write_summary(out / "summary.json", cfg, state, data, "interrupted")
            where = f"pass {state.epoch + 1}" if state.epoch < cfg.epochs else "the last pass"
            raise Interrupted(
                f"{exc} in {where} at batch {state.step}; checkpoint saved to {out / LAST}"
            ) from None
    if summary is None:  # nothing left to train: the summary of the run as it stands
        status = "complete" if state.epoch >= cfg.epochs else "running"
        summary = write_summary(out / "summary.json", cfg, state, data, status)
        if state.history and not all((out / name).is_file() for name in RUN_FILES[1:]):
            # The run stopped between its last checkpoint and its pictures.
            _, _, predicted = evaluate(net, state.params, data.test_images, data.test_labels)
            _write_pictures(out, state, data, predicted, net)
    return summary


def _record_kernels(state: State, kernels: dict, log) -> None:
    """Append ``kernels`` to the run's record when they are not the ones it last trained on.

    A resumed run is bit for bit the uninterrupted one only on the same kernel library;
    on another (new sources, other compiler flags, another compiler, the other backend)
    it trains on, with a warning, and the record keeps both.
    """
    if state.kernels and state.kernels[-1] == kernels:
        return
    if state.kernels:
        log(
            f"warning: this run trained on {_kernels_name(state.kernels[-1])} until now and "
            f"continues on {_kernels_name(kernels)}: another library may round differently, "
            "so the run is no longer bit for bit the uninterrupted one"
        )
    state.kernels.append(kernels)


def _kernels_name(kernels: dict) -> str:
    return kernels.get("library") or f"the {kernels.get('backend')} backend"


def _write_pictures(out, state, data, predicted, net) -> None:
    images, labels = data.test_images, data.test_labels

    def penalties(x):
        return net.penalties(state.params, to_input(x, net.dtype))

    def write():
        plots.write_all(out, state.history, images, labels, predicted, penalties=penalties)

    _write(out, write)


@contextlib.contextmanager
def run_folder(out: Path, log=print):
    """Hold the exclusive lock of the run folder ``out`` (created if needed).

    Checks first that ``out`` is (or can be made) a writable folder whose ``summary.json``,
    if any, is a file; removes the temporaries a killed run left behind.  RunDirError
    names the problem; a folder locked by a live run is refused with its process id.
    """
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot write to this folder ({exc.strerror})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(
                f"--out {out}: another training run (pid {owner}) is using this folder; "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        summary = out / "summary.json"
        if summary.exists() and not summary.is_file():
            raise RunDirError(f"{summary} is not a file (remove it)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise RunDirError(f"--out {out}: cannot write to this folder (read-only)")
        for tmp in stale_temporaries(out):
            tmp.unlink()
            log(f"removed {tmp.name}, a temporary file of an interrupted write")
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _holds_run(out: Path) -> bool:
    return (out / LAST).exists() or any(_epoch_files(out))


def _epoch_files(out: Path) -> list[Path]:
    """The ``checkpoint-epochNN.npz`` files of ``out``, newest pass first."""
    found = [
        (int(m[1]), p)
        for p in out.glob("checkpoint-epoch*.npz")
        if (m := _EPOCH_FILE.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def _remove_run(out: Path, log) -> None:
    """Remove every file an earlier run wrote into ``out`` (for ``overwrite``)."""
    old = [out / LAST, *_epoch_files(out), *(out / n for n in RUN_FILES)]
    removed = 0
    for path in old:
        if path.is_file():
            path.unlink()
            removed += 1
    if removed:
        log(f"--overwrite: removed the {removed} files of the earlier run in {out}")


def resume_checkpoint(out, log=print) -> Path:
    """The checkpoint ``--resume`` continues from: of ``checkpoint-last.npz`` and the
    ``checkpoint-epochNN.npz`` files, the one that loads and is furthest along (a
    write that failed, e.g. on a full disk, can leave the last one missing or older).

    CheckpointError (naming each file tried) when none loads.
    """
    out = Path(out)
    best, problems = None, []
    for path in (out / LAST, *_epoch_files(out)):
        try:
            meta = checkpoint.load(path).meta
        except checkpoint.CheckpointError as exc:
            problems.append(str(exc))
            continue
        position = (meta["epoch"], meta.get("step", 0))
        if best is None or position > best[0]:
            best = (position, path)
    if best is None:
        tried = "\n  ".join(problems)
        raise checkpoint.CheckpointError(f"{out}: no checkpoint to resume from:\n  {tried}")
    if best[1].name != LAST:
        log(f"{out / LAST} is missing, damaged or older; resuming from {best[1].name}")
    return best[1]


def _progress(cfg, state, n):
    import sys

    # Off a terminal (CI, `| tee`, a log file) a bar is hundreds of carriage-return updates;
    # there the pass's own log line is the one line per pass.
    if not cfg.progress or not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    done = min(state.step * cfg.batch_size, n)
    desc = f"pass {state.epoch + 1}/{cfg.epochs}"
    return tqdm(total=n, initial=done, unit="img", desc=desc, mininterval=0.5)


def _finish_pass(net, state, cfg, data, images, labels, out, log, flag) -> dict:
    """Evaluate, record and save a finished pass (and draw the pictures after the last
    one); returns the summary."""
    p = state.partial
    t0 = time.perf_counter()
    keep = np.random.default_rng(1).permutation(len(images))[:TRAIN_EVAL_DIGITS]
    with flag.immediate("the evaluation"):
        train_error, train_loss, _ = evaluate(net, state.params, images[keep], labels[keep])
        test_error, _, predicted = evaluate(net, state.params, data.test_images, data.test_labels)
    record = {
        "epoch": state.epoch + 1,
        "train_error": train_error,
        "test_error": test_error,
        "loss": train_loss,
        "seconds": p["s"],
        "train_images_per_s": p["seen"] / p["s"] if p["s"] > 0 else 0.0,
        "hessian_seconds": p.get("h", 0.0),
        "eval_seconds": time.perf_counter() - t0,
    }
    # From here to the end of the writes Ctrl-C only sets the flag (checked after them):
    # the state and the files on disk change together.
    state.history.append(record)
    state.epoch += 1
    state.step = 0
    state.hess = None
    state.partial = State(params={}).partial
    save_state(out / f"checkpoint-epoch{state.epoch:02d}.npz", cfg, state, data)
    save_state(out / LAST, cfg, state, data)
    status = "running" if state.epoch < cfg.epochs else "complete"
    summary = write_summary(out / "summary.json", cfg, state, data, status)
    flag.check("while saving")
    overhead = record["hessian_seconds"] + time.perf_counter() - t0
    log(
        f"pass {record['epoch']:2d}: train error {100 * train_error:.2f}%  "
        f"test error {100 * test_error:.2f}%  loss {train_loss:.4f}  "
        f"{record['seconds']:.1f} s  {record['train_images_per_s']:.0f} images/s "
        f"(running error during the pass {100 * p['errors'] / max(p['seen'], 1):.2f}%; "
        f"Hessian estimate, evaluation and checkpoints {overhead:.1f} s)"
    )
    if status == "complete":
        # The pictures cost seconds of matplotlib: drawn once, for the finished run.
        with flag.immediate("the pictures"):
            _write_pictures(out, state, data, predicted, net)
    return summary
