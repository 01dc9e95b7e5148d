"""The run folder: lock, overwrite, stale temporaries, durable writes, failed writes, resume
fallback, Ctrl-C in every phase of a pass (exit 130, then a bit-identical resume)."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hardening_support import tiny_mnist

from codegen import writer
from lenet5 import checkpoint, plots, train
from lenet5.cli import main
from lenet5.data import load_mnist
from lenet5.network import BackendError, load_backend


def _backend():
    try:
        load_backend("c")
    except (BackendError, ImportError):
        return "numpy"
    return "c"


BACKEND = _backend()
TINY = dict(backend=BACKEND, batch_size=10, progress=False)
quiet = lambda *a: None  # noqa: E731


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """100 training and 50 test digits of the bundled sample: runs of a second or so."""
    return tiny_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def sample(data_dir):
    return load_mnist(data_dir)


@pytest.fixture(scope="module")
def ARGV(data_dir):  # noqa: N802
    return [
        "train",
        "--data",
        str(data_dir),
        "--batch-size",
        "10",
        "--no-progress",
        "--backend",
        BACKEND,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample):
    """An uninterrupted 1-pass run: its checkpoint parameters."""
    out = tmp_path_factory.mktemp("ref")
    train.train(train.Config(out=str(out), epochs=1, **TINY), sample, log=quiet)
    return checkpoint.load(out / train.LAST).params


def _same(params, reference):
    return all(np.array_equal(params[n], reference[n]) for n in reference)


# ----------------------------------------------------------------------------- lock


def test_second_run_into_a_locked_folder_is_refused(tmp_path, capsys, ARGV):
    out = tmp_path / "run"
    with train.run_folder(out, quiet):  # another run holds the folder
        assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "another training run" in err
    assert not (out / train.LAST).exists()


def test_stale_lock_of_a_killed_run_is_ignored(tmp_path, ARGV):
    out = tmp_path / "run"
    out.mkdir()
    (out / train.LOCK).write_text("999999999\n")  # its process is gone: no flock held
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 0


def test_stale_temporaries_are_removed(tmp_path, capsys, ARGV):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint-last.npz.k2j4abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 0
    assert not stale.exists() and not writer.stale_temporaries(out)
    assert "removed .checkpoint-last.npz.k2j4abcd.tmp" in capsys.readouterr().out


def test_overwrite_removes_the_earlier_run(tmp_path, sample):
    out = tmp_path / "run"
    train.train(train.Config(out=str(out), epochs=1, **TINY), sample, log=quiet)
    last = (out / train.LAST).read_bytes()
    for k in range(2, 6):  # as if the earlier run had 5 passes
        (out / f"checkpoint-epoch{k:02d}.npz").write_bytes(last)
    (out / "notes.txt").write_text("the user's own file")
    train.train(train.Config(out=str(out), epochs=1, **TINY), sample, overwrite=True, log=quiet)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == [
        "checkpoint-epoch01.npz",
        "checkpoint-last.npz",
        "confusion_matrix.png",
        "learning_curve.png",
        "misclassified.png",
        "notes.txt",
        "summary.json",
    ]


# ----------------------------------------------------------------------------- writes


def test_write_atomic_fsyncs_before_replacing(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(writer.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        writer.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))
    )
    writer.write_atomic(tmp_path / "f.bin", b"data")
    assert events[:2] == ["fsync", "replace"] and events.count("fsync") == 2  # file, folder
    assert (tmp_path / "f.bin").read_bytes() == b"data"


@pytest.mark.parametrize("what", ["file", "summary-dir"])
def test_unusable_out_is_refused_before_training(tmp_path, capsys, monkeypatch, what, ARGV):
    out = tmp_path / "run"
    if what == "file":
        out.write_text("a file")
    else:
        (out / "summary.json").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(train, "hessian_estimate", lambda *a: calls.append(1))
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert ("not a folder" in err) if what == "file" else ("summary.json is not a file" in err)
    assert not calls


def test_read_only_folder_is_refused_before_training(tmp_path, capsys, monkeypatch, ARGV):
    out = tmp_path / "run"
    out.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: the check is what is tested
        monkeypatch.setattr(train.os, "access", lambda path, mode: False)
    else:
        out.chmod(0o555)
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 2
    assert "cannot write to this folder" in capsys.readouterr().err
    out.chmod(0o755)


def test_codegen_out_file_is_exit_2(tmp_path, capsys):
    from codegen.__main__ import main as codegen_main

    target = tmp_path / "file"
    target.write_text("x")
    assert codegen_main(["--out", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_disk_full_then_resume_from_the_newest_valid_checkpoint(
    tmp_path, sample, reference, capsys, monkeypatch, ARGV
):
    """checkpoint-epoch01.npz is written, then checkpoint-last.npz fails (ENOSPC)."""
    out = tmp_path / "run"
    real = checkpoint.write_atomic

    def full_disk(path, data):
        if Path(path).name == train.LAST:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(checkpoint, "write_atomic", full_disk)
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out / train.LAST}: No space left on device" in err
    assert (out / "checkpoint-epoch01.npz").exists() and not (out / train.LAST).exists()
    monkeypatch.setattr(checkpoint, "write_atomic", real)
    assert main([*ARGV, "--out", str(out), "--epochs", "1", "--resume"]) == 0
    assert "resuming from checkpoint-epoch01.npz" in capsys.readouterr().out
    assert _same(checkpoint.load(out / train.LAST).params, reference)


@pytest.mark.parametrize("summary", ["missing", "garbage", "nan"])
def test_resume_with_a_damaged_summary(tmp_path, sample, summary):
    out = tmp_path / "run"
    cfg = train.Config(out=str(out), epochs=1, **TINY)
    train.train(cfg, sample, log=quiet)
    path = out / "summary.json"
    if summary == "missing":
        path.unlink()
    else:
        path.write_text("{not json" if summary == "garbage" else '{"epochs": NaN}')
    got = train.train(cfg, sample, resume=True, log=quiet)
    strict = json.loads(path.read_text(), parse_constant=pytest.fail)
    assert strict["status"] == got["status"] == "complete"


def test_summary_is_strict_json(tmp_path, sample):
    cfg = train.Config(out=str(tmp_path), epochs=1, **TINY)
    state = train.State(params={}, history=[{"epoch": 1, "test_error": float("nan")}])
    train.write_summary(tmp_path / "summary.json", cfg, state, sample, "complete")
    text = (tmp_path / "summary.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail)["epochs"][0]["test_error"] is None


def test_resume_without_any_checkpoint_names_what_it_tried(tmp_path, capsys, ARGV):
    out = tmp_path / "run"
    out.mkdir()
    (out / train.LAST).write_bytes(b"garbage")
    assert main([*ARGV, "--out", str(out), "--epochs", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint to resume from" in err and "corrupt or not a checkpoint" in err


# ----------------------------------------------------------------------------- Ctrl-C


def _ctrl_c_at_start_of(monkeypatch, module, name):
    real = getattr(module, name)
    calls = []

    def interrupted(*args, **kwargs):
        if not calls:
            calls.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)
    return real


@pytest.mark.parametrize(
    "module,name,phase",
    [
        (train, "hessian_estimate", "during the Hessian estimate"),
        (train, "evaluate", "during the evaluation"),
        (checkpoint, "save", "while saving"),
        (plots, "write_all", "during the pictures"),
    ],
)
def test_ctrl_c_in_every_phase(tmp_path, reference, capsys, monkeypatch, module, name, phase, ARGV):
    """Exit 130 with a resumable folder; the resumed run equals an uninterrupted one."""
    out = tmp_path / "run"
    real = _ctrl_c_at_start_of(monkeypatch, module, name)
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted {phase}" in err and "continue with --resume" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(module, name, real)
    assert main([*ARGV, "--out", str(out), "--epochs", "1", "--resume"]) == 0
    assert _same(checkpoint.load(out / train.LAST).params, reference)
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    assert all((out / n).is_file() for n in train.RUN_FILES)


def test_resume_refuses_an_infinite_bias(tmp_path, sample, capsys, ARGV):
    """--resume from a checkpoint with an inf bias used to train on and save it."""
    out = tmp_path / "run"
    assert main([*ARGV, "--out", str(out), "--epochs", "1"]) == 0
    for path in (out / train.LAST, out / "checkpoint-epoch01.npz"):
        ck = checkpoint.load(path)
        ck.params["C1.b"][0] = np.inf
        checkpoint.save(path, ck.params, ck.meta, ck.hess, ck.velocity)
    before = (out / train.LAST).read_bytes()
    assert main([*ARGV, "--out", str(out), "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "member param/C1.b.npy holds NaN or infinite values" in err
    assert (out / train.LAST).read_bytes() == before
