"""The ``symconv`` console command, the progress output off a terminal, ``predict --json``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet5 import console, train

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_installs_symconv_and_states_the_license_as_spdx():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"] == {"symconv": "lenet5.console:run"}
    assert meta["project"]["license"] == "MIT"  # a string: no setuptools deprecation warning


@pytest.mark.parametrize(
    "argv, module, passed",
    [
        (["derive", "show", "conv.output_size"], "derive.__main__", ["show", "conv.output_size"]),
        (["codegen", "--check"], "codegen.__main__", ["--check"]),
        (["train", "--out", "r"], "lenet5.cli", ["train", "--out", "r"]),
        (["evaluate", "--checkpoint", "f"], "lenet5.cli", ["evaluate", "--checkpoint", "f"]),
        (["predict", "--json", "a.png"], "lenet5.cli", ["predict", "--json", "a.png"]),
    ],
)
def test_each_command_reaches_its_module_main_with_its_arguments(argv, module, passed, monkeypatch):
    calls = []

    class Fake:
        @staticmethod
        def main(args):
            calls.append(list(args))
            return 7

    real = console.importlib.import_module
    monkeypatch.setattr(
        console.importlib, "import_module", lambda name: Fake if name == module else real(name)
    )
    assert console.main(argv) == 7  # the module's exit status is the command's
    assert calls == [passed]


def test_usage_and_unknown_commands(capsys):
    assert console.main(["--help"]) == 0
    assert "symconv derive list" in capsys.readouterr().out
    assert console.main([]) == 2
    assert console.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def _symconv():
    script = Path(sys.executable).parent / "symconv"
    if not script.exists():
        pytest.skip("the symconv script is installed by `make install` (pip install -e)")
    return str(script)


def test_installed_script_runs_derive_show():
    proc = subprocess.run(
        [_symconv(), "derive", "show", "conv.output_size"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("conv.output_size: Output size")
    bad = subprocess.run([_symconv(), "derive", "show", "conv.nope"], capture_output=True)
    assert bad.returncode == 2


# --- progress off a terminal, predict ------------------------------------------------


def test_no_progress_bar_off_a_terminal(monkeypatch):
    cfg = train.Config(out="unused", epochs=1, progress=True)
    state = train.State(params={})
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert train._progress(cfg, state, 100) is None
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    bar = train._progress(cfg, state, 100)  # both on a terminal: the bar
    try:
        assert bar is not None and bar.total == 100
    finally:
        bar.close()


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """Two short passes of `python -m lenet5 train` with output into pipes (not a TTY)."""
    out = tmp_path_factory.mktemp("run")
    proc = subprocess.run(
        [sys.executable, "-m", "lenet5", "train", "--data", "sample", "--limit", "64",
         "--batch-size", "16", "--epochs", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_training_off_a_terminal_prints_one_line_per_pass(logged_run):
    _, proc = logged_run
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    passes = [line for line in proc.stdout.splitlines() if line.startswith("pass ")]
    assert [line.split(":")[0] for line in passes] == ["pass  1", "pass  2"]


def test_predict_json_gives_class_probability_and_runner_up(logged_run, tmp_path, capsys):
    from PIL import Image

    from lenet5.cli import main
    from lenet5.data import load_mnist

    out, _ = logged_run
    digits = load_mnist("sample").test_images[:3]
    paths = []
    for k, image in enumerate(digits):
        paths.append(str(tmp_path / f"d{k}.png"))
        Image.fromarray(image).save(paths[-1])
    ck = str(out / train.LAST)
    assert main(["predict", "--checkpoint", ck, "--json", *paths]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in records] == paths
    for r in records:
        p = np.array(r["probabilities"])
        assert p.shape == (10,) and abs(p.sum() - 1) < 1e-9
        assert r["class"] == int(np.argmax(p)) and r["probability"] == p.max()
        assert r["runner_up"] != r["class"]
        assert r["runner_up_probability"] == np.sort(p)[-2]
    assert main(["predict", "--checkpoint", ck, *paths[:1]]) == 0
    line = capsys.readouterr().out.strip()
    first = records[0]
    assert line.startswith(f"{paths[0]}: {first['class']} (probability ")
    assert f"runner-up {first['runner_up']}, " in line


def test_probabilities_are_the_softmax_of_the_negative_penalties():
    from lenet5.posterior import class_probabilities

    y = np.array([[3.0, 1.0, 2.0] + [50.0] * 7])
    p = class_probabilities(y)[0]
    expected = np.exp(-y[0]) / np.exp(-y[0]).sum()
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert np.argmax(p) == np.argmin(y[0])
