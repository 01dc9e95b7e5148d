"""Fault injection: ``kill -9`` and Ctrl-C at chosen and at random points of a short run.

A child process runs ``python -m lenet5 train`` with one fault injected at the n-th
occurrence of a point: before a training step, inside a checkpoint/summary/picture
write (the temporary half written, complete but not renamed, renamed but the folder
not yet synced), or a SIGINT there.  The run is then resumed until it completes, and
its checkpoint must equal an uninterrupted run's bit for bit, with no temporary left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hardening_support import tiny_mnist

from lenet5 import checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2
STEPS = 10 * EPOCHS  # 100 digits in batches of 10
#: Writes per pass, in order: checkpoint-epochNN.npz, checkpoint-last.npz, summary.json;
#: after the last pass, the three pictures.
WRITES = 3 * EPOCHS + 3

# The child: the CLI with one fault at the n-th hit of a point (env SYMCONV_FAULT).
CHILD = r"""
import os, signal, stat, sys
point, n, sig = os.environ["SYMCONV_FAULT"].split(":")
n, sig = int(n), getattr(signal, sig)
hits = [0]

def hit():
    hits[0] += 1
    return hits[0] == n

from codegen import writer
from lenet5 import train
if point == "step":
    real_step = train.train_step
    def step(*args):
        if hit():
            os.kill(os.getpid(), sig)
        return real_step(*args)
    train.train_step = step
elif point == "partial":  # a write's temporary half on disk
    real_fsync = os.fsync
    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode) and hit():
            if sig == signal.SIGKILL:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), sig)
        return real_fsync(fd)
    os.fsync = fsync
elif point == "replace":  # complete temporary, not yet renamed
    real_replace = os.replace
    def replace(a, b):
        if hit():
            os.kill(os.getpid(), sig)
        return real_replace(a, b)
    os.replace = replace
elif point == "synced":  # renamed, the folder not yet synced
    real_dir = writer._fsync_dir
    def fsync_dir(d):
        if hit():
            os.kill(os.getpid(), sig)
        return real_dir(d)
    writer._fsync_dir = fsync_dir
from lenet5.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tiny_mnist(tmp_path_factory.mktemp("mnist"))


def _argv(data_dir, out):
    argv = ["--data", str(data_dir), "--out", str(out), "--epochs", str(EPOCHS)]
    return ["train", *argv, "--batch-size", "10", "--no-progress", "--seed", "0"]


def _env(fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SYMCONV_FAULT", None)
    if fault:
        env["SYMCONV_FAULT"] = fault
    return env


def _run(data_dir, out, fault=None, resume=False, **kw):
    argv = _argv(data_dir, out) + (["--resume"] if resume else [])
    code = CHILD if fault else "import sys; from lenet5.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env=_env(fault),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def _has_checkpoint(out: Path) -> bool:
    return (out / train.LAST).exists() or any(out.glob("checkpoint-epoch*.npz"))


def _finish(data_dir, out) -> None:
    """Resume (or start, when nothing was saved) until the run completes."""
    for _ in range(3):
        proc = _run(data_dir, out, resume=_has_checkpoint(out))
        if proc.returncode == 0:
            return
        assert proc.returncode == 130, proc.stderr[-2000:]
    raise AssertionError("the run did not complete after three resumes")


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    proc = _run(data_dir, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return checkpoint.load(out / train.LAST).params, _errors(out)


def _errors(out):
    return [e["test_error"] for e in json.loads((out / "summary.json").read_text())["epochs"]]


def _check_same(out: Path, reference) -> None:
    params, errors = reference
    got = checkpoint.load(out / train.LAST).params
    for name in params:
        assert np.array_equal(got[name], params[name]), name  # bit for bit
    assert _errors(out) == errors
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    assert all((out / n).is_file() for n in train.RUN_FILES)


def _inject(data_dir, out, fault, reference):
    sig = fault.rsplit(":", 1)[1]
    proc = _run(data_dir, out, fault=fault)
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
    else:
        assert proc.returncode == 130, (fault, proc.returncode, proc.stderr[-2000:])
        assert "continue with --resume" in proc.stderr
    _finish(data_dir, out)
    _check_same(out, reference)


@pytest.mark.parametrize(
    "fault",
    [
        "step:13:SIGKILL",  # mid pass 2
        "partial:4:SIGKILL",  # pass 2's checkpoint-epoch02.npz half written
        "replace:5:SIGKILL",  # pass 2's checkpoint-last.npz complete, not renamed
        "partial:8:SIGKILL",  # the second picture half written
        "partial:2:SIGINT",  # Ctrl-C inside pass 1's checkpoint-last.npz write
    ],
)
def test_fault_then_resume_is_bit_identical(data_dir, tmp_path, reference, fault):
    _inject(data_dir, tmp_path / "run", fault, reference)


@pytest.mark.slow
def test_random_faults_then_resume_are_bit_identical(data_dir, tmp_path, reference):
    """Random points (seeded): kill -9 and Ctrl-C at a drawn hit, and at a drawn time."""
    rng = np.random.default_rng(11)
    for k in range(16):
        point = rng.choice(["step", "partial", "replace", "synced"])
        n = int(rng.integers(1, (STEPS if point == "step" else WRITES) + 1))
        sig = rng.choice(["SIGKILL", "SIGINT"])
        _inject(data_dir, tmp_path / f"run{k}", f"{point}:{n}:{sig}", reference)
    for k in range(6):  # at a random moment: anywhere, also during start-up
        out = tmp_path / f"timed{k}"
        child = subprocess.Popen(
            [sys.executable, "-m", "lenet5", *_argv(data_dir, out)],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(float(rng.uniform(0.5, 4.0)))
        child.send_signal(signal.SIGKILL if k % 2 else signal.SIGINT)
        assert child.wait(timeout=60) in (0, 130, -signal.SIGKILL, -signal.SIGINT)
        _finish(data_dir, out)
        _check_same(out, reference)
