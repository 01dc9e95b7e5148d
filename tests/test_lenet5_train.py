"""lenet5.train and the CLI: end to end on the bundled sample, resume, checkpoints, NaN stop,
Ctrl-C, summary.json, bad input; full MNIST (slow)."""

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("generated.lenet5_spec")
pytest.importorskip("generated.np_kernels")

from lenet5 import checkpoint, cli, spec, train  # noqa: E402
from lenet5.cli import main  # noqa: E402
from lenet5.data import load_mnist, to_input  # noqa: E402
from lenet5.distort import distort as distort_images  # noqa: E402
from lenet5.network import BackendError, LeNet5, load_backend  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def fastest_backend():
    try:
        load_backend("c")
    except (BackendError, ImportError):
        return "numpy"
    return "c"


BACKEND = fastest_backend()
# Small, quick runs for the mechanics (resume, checkpoints): 300 digits, batches of 10.
QUICK = dict(backend=BACKEND, batch_size=10, limit=300, progress=False)


@pytest.fixture(scope="module")
def sample():
    return load_mnist("sample")


@pytest.fixture(scope="module")
def few_tests(sample):
    """The sample with 20 test digits (two per class; the sample is sorted by class), for
    tests of training itself: each pass evaluates the test set and draws its misclassified
    digits, which costs far more than training."""
    return dataclasses.replace(
        sample, test_images=sample.test_images[::50], test_labels=sample.test_labels[::50]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample):
    """A short end-to-end run on the whole bundled sample (4,000 training digits)."""
    out = tmp_path_factory.mktemp("run")
    cfg = train.Config(out=str(out), epochs=3, backend=BACKEND, batch_size=1, progress=False)
    summary = train.train(cfg, sample, log=lambda *a: None)
    return out, summary


@pytest.mark.xdist_group("trained")  # the fixture is built once
def test_end_to_end_on_the_sample(trained):
    out, summary = trained
    # Measured: 3 passes over the 4,000 sample digits reach ~5% on its 1,000 test digits;
    # 12% leaves room for other seeds/backends while failing any run that does not learn
    # (chance is 90%).
    assert summary["epochs"][-1]["test_error"] < 0.12
    assert summary["epochs"][-1]["train_error"] < summary["epochs"][0]["train_error"] + 0.01
    for name in ("learning_curve.png", "confusion_matrix.png", "misclassified.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(p.name for p in out.glob("checkpoint-*.npz")) == [
        "checkpoint-epoch01.npz",
        "checkpoint-epoch02.npz",
        "checkpoint-epoch03.npz",
        "checkpoint-last.npz",
    ]


@pytest.mark.xdist_group("trained")  # the fixture is built once
def test_summary_schema(trained, sample):
    out, summary = trained
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert {"epochs", "backend", "batch_size", "seed", "data_md5"} <= set(summary)
    assert summary["backend"] == BACKEND and summary["batch_size"] == 1 and summary["seed"] == 0
    assert summary["data_md5"] == sample.md5 and summary["status"] == "complete"
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3]
    for e in summary["epochs"]:
        assert set(e) == {
            "epoch",
            "train_error",
            "test_error",
            "loss",
            "seconds",
            "train_images_per_s",
            "hessian_seconds",
            "eval_seconds",
        }
        assert 0 <= e["train_error"] <= 1 and 0 <= e["test_error"] <= 1
        assert e["seconds"] > 0 and e["train_images_per_s"] > 0 and np.isfinite(e["loss"])
        # images/s counts the training steps alone: 4,000 digits in `seconds`
        assert e["train_images_per_s"] == pytest.approx(4000 / e["seconds"])
        assert e["hessian_seconds"] > 0 and e["eval_seconds"] > 0


def test_pictures_are_drawn_once_after_the_last_pass(tmp_path, sample, monkeypatch):
    drawn = []
    monkeypatch.setattr(train, "_write_pictures", lambda out, state, *a: drawn.append(state.epoch))
    cfg = train.Config(out=str(tmp_path), epochs=3, **QUICK)
    train.train(cfg, sample, log=lambda *a: None)
    assert drawn == [3]


def test_a_block_of_batches_feeds_each_batch_its_own_digits(tmp_path, sample, monkeypatch):
    """Batches are converted to network input a block at a time: each step still gets
    exactly its batch's digits in the pass's order (the last batch short), each
    distorted copy drawn with its own batch's generator."""
    seen = []
    step = train.train_step

    def recording(net, state, cfg, x, labels, eta):
        seen.append((state.step, x.copy(), np.array(labels)))
        return step(net, state, cfg, x, labels, eta)

    monkeypatch.setattr(train, "train_step", recording)
    monkeypatch.setattr(train, "INPUT_BLOCK", 64)  # blocks of 6 batches of 10
    cfg = train.Config(
        out=str(tmp_path), epochs=1, distort=True, distort_copies=2, **{**QUICK, "limit": 145}
    )
    train.train(cfg, sample, log=lambda *a: None)
    images, truth = train.training_subset(sample, 145)
    order = train._epoch_rng(cfg.seed, 0).permutation(3 * 145)
    assert [s for s, _, _ in seen] == list(range(44))
    for s, x, labels in seen:
        entries = order[s * 10 : (s + 1) * 10]
        digits, copy = entries % 145, entries >= 145
        want = images[digits]
        want[copy] = distort_images(want[copy], train._epoch_rng(cfg.seed, 0, s))
        assert (x == to_input(want, x.dtype)).all()
        assert (labels == truth[digits]).all()


def params_of(path):
    return checkpoint.load(path).params


def test_resume_gives_the_same_weights(tmp_path, few_tests):
    full = train.Config(out=str(tmp_path / "a"), epochs=2, **QUICK)
    train.train(full, few_tests, log=lambda *a: None)
    half = train.Config(out=str(tmp_path / "b"), epochs=1, **QUICK)
    train.train(half, few_tests, log=lambda *a: None)
    rest = train.Config(out=str(tmp_path / "b"), epochs=2, **QUICK)
    summary = train.train(rest, few_tests, resume=True, log=lambda *a: None)
    a, b = params_of(tmp_path / "a" / train.LAST), params_of(tmp_path / "b" / train.LAST)
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # bit for bit
    assert [e["test_error"] for e in summary["epochs"]] == [
        e["test_error"] for e in json.loads((tmp_path / "a" / "summary.json").read_text())["epochs"]
    ]


def test_a_run_records_its_kernels(trained):
    """summary.json names the kernels the run trained on: on the C backend the library
    file the process loaded (its name is the cache key of sources, flags and compiler)."""
    out, summary = trained
    (kernels,) = summary["kernels"]
    assert kernels == LeNet5(BACKEND).kernels()
    assert checkpoint.load(out / train.LAST).meta["kernels"] == summary["kernels"]
    if BACKEND == "c":
        import generated.c_kernels as K

        assert kernels["library"] == Path(K.LIBRARY.library()._name).name
        assert "-std=c99" in kernels["flags"] and kernels["compiler"]


def test_resume_on_other_kernels_warns_and_records_both(tmp_path, few_tests, monkeypatch):
    half = train.Config(out=str(tmp_path), epochs=1, **QUICK)
    train.train(half, few_tests, log=lambda *a: None)
    rest = dataclasses.replace(half, epochs=2)
    same, other = [], []
    train.train(rest, few_tests, resume=True, log=same.append)  # same library: no warning
    assert not [m for m in same if "warning" in m]
    ours = LeNet5(BACKEND).kernels()
    assert json.loads((tmp_path / "summary.json").read_text())["kernels"] == [ours]

    rebuilt = ours | {"library": "symconv-0123456789abcdef01234567.so", "flags": ["-O1"]}
    monkeypatch.setattr(LeNet5, "kernels", lambda self: rebuilt)
    more = dataclasses.replace(half, epochs=3)
    train.train(more, few_tests, resume=True, log=other.append)
    (warning,) = [m for m in other if "warning" in m]
    assert ours.get("library", "numpy") in warning and rebuilt["library"] in warning
    assert "no longer bit for bit" in warning
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kernels"] == [ours, rebuilt] and summary["status"] == "complete"
    assert checkpoint.load(tmp_path / train.LAST).meta["kernels"] == [ours, rebuilt]


def test_a_new_run_never_overwrites_an_earlier_one(tmp_path, sample, capsys):
    cfg = train.Config(out=str(tmp_path), epochs=1, **QUICK)
    train.train(cfg, sample, log=lambda *a: None)
    before = (tmp_path / train.LAST).read_bytes()
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        train.train(cfg, sample, log=lambda *a: None)
    assert (tmp_path / train.LAST).read_bytes() == before
    argv = ["train", "--data", "sample", "--out", str(tmp_path), "--limit", "300"]
    assert main(argv + ["--epochs", "1", "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / train.LAST).read_bytes() == before
    train.train(cfg, sample, overwrite=True, log=lambda *a: None)  # explicit: allowed


def test_ctrl_c_saves_and_resume_is_exact(tmp_path, sample, monkeypatch):
    reference = train.Config(out=str(tmp_path / "ref"), epochs=1, **QUICK)
    train.train(reference, sample, log=lambda *a: None)

    real_step, calls = train.train_step, []

    def step_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the handler: finish step, stop
        return real_step(*args)

    monkeypatch.setattr(train, "train_step", step_then_ctrl_c)
    cfg = train.Config(out=str(tmp_path / "int"), epochs=1, **QUICK)
    with pytest.raises(train.Interrupted, match="checkpoint saved"):
        train.train(cfg, sample, log=lambda *a: None)
    ck = checkpoint.load(tmp_path / "int" / train.LAST)
    assert (ck.meta["epoch"], ck.meta["step"]) == (0, 7) and ck.hess is not None
    assert json.loads((tmp_path / "int" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(train, "train_step", real_step)
    train.train(cfg, sample, resume=True, log=lambda *a: None)
    a, b = params_of(tmp_path / "ref" / train.LAST), params_of(tmp_path / "int" / train.LAST)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, sample, monkeypatch):
    cfg = train.Config(out=str(tmp_path), epochs=1, **QUICK)
    train.train(cfg, sample, log=lambda *a: None)
    good = (tmp_path / train.LAST).read_bytes()
    real, calls = LeNet5.sdlm_step, []

    def poisoned(self, params, hess, x, labels, eta):
        losses, y = real(self, params, hess, x, labels, eta)
        calls.append(1)
        return (losses * np.nan if len(calls) == 3 else losses), y

    monkeypatch.setattr(LeNet5, "sdlm_step", poisoned)
    more = train.Config(out=str(tmp_path), epochs=2, **QUICK)
    with pytest.raises(train.TrainingDiverged, match="loss became NaN in pass 2, batch 3"):
        train.train(more, sample, resume=True, log=lambda *a: None)
    assert (tmp_path / train.LAST).read_bytes() == good
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_distorted_training_is_seeded(tmp_path, few_tests):
    runs = {}
    for name, distort in (("a", True), ("b", True), ("plain", False)):
        cfg = train.Config(out=str(tmp_path / name), epochs=1, distort=distort, **QUICK)
        train.train(cfg, few_tests, log=lambda *a: None)
        runs[name] = params_of(tmp_path / name / train.LAST)
    assert all(np.array_equal(runs["a"][n], runs["b"][n]) for n in runs["a"])
    assert not np.array_equal(runs["a"]["C1.w"], runs["plain"]["C1.w"])


def test_cli_divergence_exit_code(tmp_path, capsys, monkeypatch):
    real = LeNet5.sdlm_step

    def poisoned(self, params, hess, x, labels, eta):
        losses, y = real(self, params, hess, x, labels, eta)
        return losses * np.inf, y

    monkeypatch.setattr(LeNet5, "sdlm_step", poisoned)
    argv = ["train", "--data", "sample", "--out", str(tmp_path), "--limit", "50"]
    assert main([*argv, "--backend", BACKEND, "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "loss became infinite in pass 1, batch 1" in err and "no checkpoint" in err
    assert not (tmp_path / train.LAST).exists()


def test_corrupt_and_mismatched_checkpoints(tmp_path, sample):
    cfg = train.Config(out=str(tmp_path), epochs=1, **QUICK)
    train.train(cfg, sample, log=lambda *a: None)
    last = tmp_path / train.LAST
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or not a checkpoint"):
        checkpoint.load(last)
    last.write_bytes(b"not a zip at all")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(last)
    last.write_bytes(good)
    ck = checkpoint.load(last)
    meta = {k: v for k, v in ck.meta.items() if k not in ("format_version", "spec_hash")}
    other = tmp_path / "other.npz"
    checkpoint.save(other, ck.params, meta)
    with np.load(other) as z:
        arrays = dict(z)
    for key, value, message in (
        ("spec_hash", "0" * 64, "other LeNet-5 constants"),
        ("format_version", 99, "format version 99"),
    ):
        bad = dict(
            arrays, meta=np.array(json.dumps({**json.loads(str(arrays["meta"])), key: value}))
        )
        np.savez(other, **bad)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.load(other)
    np.savez(other, **{**arrays, "param/F6.w": np.zeros((3, 3))})
    with pytest.raises(
        checkpoint.CheckpointError, match=r"member param/F6.w.npy has shape \(3, 3\)"
    ):
        checkpoint.load(other)
    different = train.Config(out=str(tmp_path), epochs=2, **{**QUICK, "batch_size": 20})
    with pytest.raises(
        checkpoint.CheckpointError, match="batch_size=10, this run has batch_size=20"
    ):
        train.train(different, sample, resume=True)
    with pytest.raises(checkpoint.CheckpointError, match="no such file"):
        checkpoint.load(tmp_path / "absent.npz")


def test_cli_warns_about_sdlm_batches_beyond_the_measured(tmp_path, capsys, monkeypatch):
    # The warning is the CLI's, before training: a stand-in for the run keeps this fast.
    ran = []

    def run(cfg, data, **kwargs):
        ran.append(cfg.batch_size)
        return {"epochs": [{"epoch": 1, "test_error": 0.5}]}

    monkeypatch.setattr(cli, "train", run)
    argv = ["train", "--data", "sample", "--limit", "128", "--epochs", "1", "--no-progress"]
    argv += ["--backend", BACKEND]
    assert main(argv + ["--out", str(tmp_path / "a"), "--batch-size", "128"]) == 0
    assert "SDLM in batches above 64 is untested" in capsys.readouterr().err
    assert main(argv + ["--out", str(tmp_path / "b"), "--batch-size", "64"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(argv + ["--out", str(tmp_path / "c"), "--batch-size", "128", "--lr", "1e-3"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert ran == [128, 64, 128]


def test_sdlm_rate_is_the_capped_schedule_scaled_for_the_batch():
    cap, factor = train.SDLM_RATE_CAP, train.SDLM_RATE_FACTOR
    first, boost = train.SDLM_FIRST_PASS_BOOST, train.SDLM_BATCH_BOOST
    assert spec.rate_for_epoch(0) > cap > spec.rate_for_epoch(19)  # the cap bites early only
    # The default per-digit rate: half the capped schedule, in both of its phases.
    online = [train.sdlm_rate(e, factor, 1) for e in (0, 2, 8, 11, 12, 19)]
    assert online == [cap / 2] * 4 + [5e-6, 5e-6]
    assert [train.sdlm_rate(e, 1.0, 1) for e in (0, 11, 12)] == [cap, cap, 1e-5]
    assert train.sdlm_rate(3, 0.05, 1) == pytest.approx(cap * 0.05)  # the factor after the cap
    # First pass: first/sqrt(B) of the per-digit rate, never above it.
    assert train.sdlm_rate(0, factor, 64) == pytest.approx(cap / 8)
    assert 64 * train.sdlm_rate(0, factor, 64) == pytest.approx(first * 8 * cap / 2)
    assert train.sdlm_rate(0, factor, 16) == pytest.approx(cap / 4)
    assert train.sdlm_rate(0, factor, 4) == train.sdlm_rate(0, factor, 1)
    # Later passes: boost/sqrt(B), never above the per-digit rate: B <= 64 takes it itself.
    assert train.sdlm_rate(5, factor, 64) == train.sdlm_rate(5, factor, 16) == cap / 2
    assert train.sdlm_rate(19, 1.0, 256) == pytest.approx(1e-5 * boost / 16)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "batch_size must be a positive integer"),
        (["--epochs", "-1"], "epochs must be a positive integer"),
        (["--seed", "-5"], "seed must be a non-negative integer"),
        (["--lr", "nan"], "lr must be a positive finite number"),
        (["--data", "/nonexistent/mnist"], "not a directory"),
        (["--resume"], "no such file"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, argv, message):
    base = ["train", "--out", str(tmp_path / "r"), "--no-progress", "--data", "sample"]
    assert main([*base, *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_argparse_rejects_unknown_backend(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", "x", "--backend", "fortran"])
    assert info.value.code == 2


@pytest.mark.xdist_group("trained")  # the fixture is built once
def test_cli_evaluate_and_predict(trained, sample, tmp_path, capsys):
    from PIL import Image

    out, summary = trained
    ck = str(out / train.LAST)
    assert main(["evaluate", "--checkpoint", ck, "--data", "sample", "--backend", BACKEND]) == 0
    printed = capsys.readouterr().out
    assert f"test error {100 * summary['epochs'][-1]['test_error']:.2f}%" in printed
    paths = []
    for i in range(0, 1000, 100):  # one test digit of each class
        white_on_black = tmp_path / f"d{i}.png"
        Image.fromarray(sample.test_images[i]).save(white_on_black)
        black_on_white = tmp_path / f"d{i}-inverted.png"
        Image.fromarray(255 - sample.test_images[i]).save(black_on_white)
        paths += [str(white_on_black), str(black_on_white)]
    assert main(["predict", "--checkpoint", ck, "--backend", BACKEND, *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    predicted = [int(line.rsplit(": ", 1)[1].split()[0]) for line in lines]
    assert predicted[0::2] == predicted[1::2]  # both ink conventions read the same
    truth = [int(sample.test_labels[i]) for i in range(0, 1000, 100)]
    assert sum(p == t for p, t in zip(predicted[0::2], truth, strict=True)) >= 7
    (tmp_path / "junk.png").write_bytes(b"junk")
    assert main(["predict", "--checkpoint", ck, str(tmp_path / "junk.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "bad.npz"), "--data", "sample"]) == 2


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")
def test_one_pass_on_full_mnist(tmp_path):
    """One default SDLM pass over all 60,000 digits (about 1-2 min): the real files, end to end."""
    data = load_mnist(SHARED)
    assert (len(data.train_labels), len(data.test_labels)) == (60000, 10000)
    cfg = train.Config(out=str(tmp_path), epochs=1, backend=BACKEND, batch_size=1, progress=False)
    summary = train.train(cfg, data, log=lambda *a: None)
    # Measured after pass 1: 2.22% (C backend, seed 0; deterministic); other seeds 2.40-2.90%
    # (1, 3, 4).  3% fails a run that learns clearly worse (an untrained network errs on ~90%).
    assert summary["epochs"][0]["test_error"] <= 0.03


@pytest.mark.slow
@pytest.mark.longest
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")
def test_full_mnist(tmp_path):
    """The default run: 20 SDLM passes, batch 1, seed 0 (about 4 min here; CI runs it)."""
    data = load_mnist(SHARED)
    cfg = train.Config(out=str(tmp_path), epochs=20, backend=BACKEND, batch_size=1, progress=False)
    summary = train.train(cfg, data)
    # Measured with the C backend: 0.95% after 20 passes (seed 0), the paper's figure; the
    # five seeds of `make reproduce` end at 0.85-1.01% (mean 0.95%; README).  The run is
    # deterministic (thread-count independent kernels), but another CPU's vector widths can
    # change the rounding, and a change of summation order moves a seed's result by up to
    # ~0.1%: the bound is the worst a seed may end at, not seed 0's figure.
    assert summary["epochs"][-1]["test_error"] <= 0.0105


def test_distorted_pass_is_the_originals_plus_distorted_copies(tmp_path, sample, monkeypatch):
    """--distort: each digit once as it is and ``distort_copies`` times distorted, per pass."""
    seen_x, seen_labels = [], []
    step = train.train_step

    def recording(net, state, cfg, x, labels, eta):
        seen_x.append(x.copy())
        seen_labels.append(np.array(labels))
        return step(net, state, cfg, x, labels, eta)

    monkeypatch.setattr(train, "train_step", recording)
    cfg = train.Config(out=str(tmp_path), epochs=1, distort=True, **{**QUICK, "limit": 40})
    assert cfg.distort_copies == train.DISTORT_COPIES == 9  # the paper's 540,000 digits
    train.train(cfg, sample, log=lambda *a: None)
    x, labels = np.concatenate(seen_x), np.concatenate(seen_labels)
    images, truth = train.training_subset(sample, 40)
    assert len(x) == train.pass_length(cfg, 40) == 400
    assert (np.bincount(labels, minlength=10) == 10 * np.bincount(truth, minlength=10)).all()
    originals = to_input(images, x.dtype)
    as_is = [np.flatnonzero((x == o).all(axis=(1, 2, 3))) for o in originals]
    assert all(len(hits) >= 1 for hits in as_is)  # every digit once undistorted
    assert sum(len(hits) for hits in as_is) == 40  # and the other 360 inputs are all moved


@pytest.mark.slow
@pytest.mark.longest
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")
def test_full_mnist_distorted(tmp_path):
    """20 passes with --distort, 2 distorted copies of each digit (the configuration this
    bound was measured with; the default is 9), seed 0 (~12 min here)."""
    data = load_mnist(SHARED)
    cfg = train.Config(
        out=str(tmp_path),
        epochs=20,
        backend=BACKEND,
        batch_size=1,
        distort=True,
        distort_copies=2,
        progress=False,
    )
    summary = train.train(cfg, data)
    # Measured with the C backend: 0.61% after 20 passes (0.56-0.74% over passes 14-20), the
    # paper's 0.8% with distortions reached; deterministic like test_full_mnist.
    assert summary["epochs"][-1]["test_error"] <= 0.008
