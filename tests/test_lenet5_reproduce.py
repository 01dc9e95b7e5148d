"""lenet5.reproduce and ``python -m lenet5 reproduce``: seeds as parallel processes on the
bundled sample (tiny settings), the report, resuming, bad input."""

import json

import numpy as np
import pytest

pytest.importorskip("generated.lenet5_spec")

from lenet5 import checkpoint, reproduce  # noqa: E402
from lenet5.cli import main  # noqa: E402
from lenet5.data import load_mnist, write_idx  # noqa: E402

# `make test` runs --dist loadgroup: one worker takes the group and builds the fixture once.
pytestmark = pytest.mark.xdist_group("reproduce")

# Two passes over 200 sample digits in batches of 10: a few seconds per seed. Each pass
# also evaluates the test set and draws its misclassified digits, which for an untrained
# network costs far more than the training: the data folder keeps 20 test digits.
TRAIN = ["--limit", "200", "--batch-size", "10", "--no-progress"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The arguments of a tiny run: the sample's first 200 training digits, and two test
    digits of each class (the sample is sorted by class)."""
    data, sample = tmp_path_factory.mktemp("mnist"), load_mnist("sample")
    arrays = {
        "train-images-idx3-ubyte": sample.train_images[:200],
        "train-labels-idx1-ubyte": sample.train_labels[:200].astype("u1"),
        "t10k-images-idx3-ubyte": sample.test_images[::50],
        "t10k-labels-idx1-ubyte": sample.test_labels[::50].astype("u1"),
    }
    for name, array in arrays.items():
        write_idx(data / f"{name}.gz", array)
    return ["--data", str(data), *TRAIN]


def test_parse_seeds():
    assert reproduce.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert reproduce.parse_seeds("3, 1,7") == [3, 1, 7]
    assert reproduce.parse_seeds("5-5") == [5]
    for bad in ("", "a", "4-2", "-1", "1,1", "0-2,2"):
        with pytest.raises(ValueError, match="--seeds"):
            reproduce.parse_seeds(bad)


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("study")
    argv = ["reproduce", "--out", str(out), "--seeds", "0-2", "--epochs", "2", "--jobs", "2"]
    assert main(argv + tiny) == 0
    return out


def test_every_seed_is_its_own_run(study):
    for seed in (0, 1, 2):
        run = study / f"seed-{seed}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["seed"] == seed and summary["status"] == "complete"
        assert summary["batch_size"] == 10 and summary["train_images"] == 200
        assert len(summary["epochs"]) == 2 and (run / "checkpoint-last.npz").exists()
        assert "pass  2:" in (run / reproduce.LOG).read_text()
        record = json.loads((run / reproduce.SEED_RECORD).read_text())
        assert record["returncodes"] == [0] and record["peak_rss_mb"] > 10
        assert record["peak_rss_mb"] == summary["peak_rss_mb"]  # the process's own peak
    weights = [checkpoint.load(study / f"seed-{s}" / "checkpoint-last.npz").params for s in (0, 1)]
    assert not np.array_equal(weights[0]["C1.w"], weights[1]["C1.w"])  # other seeds, other runs


def test_report(study):
    result = json.loads((study / "reproduce.json").read_text())
    assert [r["seed"] for r in result["seeds"]] == [0, 1, 2]
    assert result["finished_seeds"] == [0, 1, 2] and result["paper_test_error"] == 0.95
    final = [r["test_error_by_pass"][-1] for r in result["seeds"]]
    assert result["final_mean"] == pytest.approx(np.mean(final))
    assert result["final_std"] == pytest.approx(np.std(final, ddof=1))
    assert result["final_max"] == max(final)
    for r in result["seeds"]:
        assert r["best_test_error"] == min(r["test_error_by_pass"])
        assert r["test_error_by_pass"][r["best_pass"] - 1] == r["best_test_error"]
        assert r["train_images_per_s"] > 0 and r["wall_seconds"] > 0
    assert [b["pass"] for b in result["by_pass"]] == [1, 2]
    assert all(b["seeds"] == 3 for b in result["by_pass"])
    table = (study / "reproduce.md").read_text()
    assert table.count("\n| ") == 3 + 1  # 3 seeds, the mean
    assert f"**{result['final_mean']:.2f}% +- {result['final_std']:.2f}**" in table
    # The seeds trained on one kernel library (one process each, the same build): the
    # report names it once, under the table.
    kernels = [
        json.loads((study / f"seed-{s}" / "summary.json").read_text())["kernels"] for s in (0, 1, 2)
    ]
    assert kernels[0] == kernels[1] == kernels[2] and len(kernels[0]) == 1
    assert result["kernels"] == kernels[0] and all(
        r["kernels"] == kernels[0] for r in result["seeds"]
    )
    (k,) = kernels[0]
    assert f"Kernels:\n- `{k.get('library') or k['backend']}`" in table
    assert (study / "reproduce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_flags_seeds_on_other_kernels():
    """Seeds (or a resumed seed) on more than one library round differently: the report
    lists each library once and says so."""
    a = {"backend": "c", "library": "symconv-a.so", "compiler": "cc 12", "flags": ["-O3"]}
    b = a | {"library": "symconv-b.so", "flags": ["-O3", "-ffp-contract=fast"]}
    lines = reproduce._kernels_lines([a, b])
    assert lines[1].startswith("Kernels (more than one")
    assert lines[2:] == [
        "- `symconv-a.so` cc 12 -O3",
        "- `symconv-b.so` cc 12 -O3 -ffp-contract=fast",
    ]
    assert reproduce._kernels_lines([]) == []


def test_rerun_skips_finished_seeds_and_resumes_the_others(study, capsys, tiny):
    before = {s: (study / f"seed-{s}" / "checkpoint-last.npz").read_bytes() for s in (0, 1, 2)}
    argv = ["reproduce", "--out", str(study), "--seeds", "0-2", "--epochs", "2", "--jobs", "1"]
    assert main(argv + tiny) == 0
    assert capsys.readouterr().out.count("complete in") == 3
    for s in (0, 1, 2):  # untouched
        assert (study / f"seed-{s}" / "checkpoint-last.npz").read_bytes() == before[s]
    # Asking for a third pass resumes every seed from its checkpoint (train --resume).
    assert main(["reproduce", "--out", str(study), "--seeds", "0", "--epochs", "3"] + tiny) == 0
    log = (study / "seed-0" / reproduce.LOG).read_text()
    assert "resuming from" in log and "pass  3:" in log
    assert len(json.loads((study / "seed-0" / "summary.json").read_text())["epochs"]) == 3
    record = json.loads((study / "seed-0" / reproduce.SEED_RECORD).read_text())
    assert record["returncodes"] == [0, 0]


def test_a_failed_seed_is_reported(tmp_path, capsys, tiny):
    # A seed folder holding a run with other settings cannot be resumed: the child exits 2.
    argv = ["reproduce", "--out", str(tmp_path), "--seeds", "0", "--epochs", "1"]
    assert main(argv + tiny) == 0
    other = [a if a != "10" else "20" for a in tiny]  # another batch size
    assert main(argv[:-1] + ["2"] + other) == 3
    assert "failed (exit status 2)" in capsys.readouterr().out
    assert "batch_size=10" in (tmp_path / "seed-0" / reproduce.LOG).read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "3-1"], "empty range"),
        (["--epochs", "0"], "must be positive"),
        (["--jobs", "0"], "must be positive"),
        (["--data", "/nonexistent/mnist"], "not a directory"),
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, argv, message):
    base = ["reproduce", "--out", str(tmp_path / "r"), "--data", "sample", "--no-progress"]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err
