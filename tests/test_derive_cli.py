"""``python -m derive``: list, show, show --latex, book, unknown ids."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from derive import core, render
from derive.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
FEW = ["conv.discrete_1d", "conv.output_size", "params.pooling_features"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep the status cache of these tests away from the user's."""
    monkeypatch.setenv("SYMCONV_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def few_ids(monkeypatch):
    """Restrict the registry listing to three cheap derivations."""
    monkeypatch.setattr(core, "ids", lambda: list(FEW))


def _rows(out):
    return {line.split()[0]: line.split()[-1] for line in out.strip().splitlines()}


def test_list_shows_id_title_and_status(capsys, few_ids):
    assert main(["list", "--fresh"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == FEW
    assert all(line.endswith("  verified") for line in lines)
    assert "Output size with stride and padding" in lines[1]


def test_list_uses_statuses_recorded_for_the_same_sources(capsys, few_ids):
    assert main(["list"]) == 0
    first = capsys.readouterr().out
    record = json.loads(render.cache_file().read_text())
    assert record["key"] == render.source_key()
    assert sorted(record["status"]) == FEW
    # A recorded status is shown as recorded (proves the cache is read) ...
    record["status"]["conv.discrete_1d"] = "unverified"
    render.cache_file().write_text(json.dumps(record))
    assert main(["list"]) == 0
    assert _rows(capsys.readouterr().out)["conv.discrete_1d"] == "unverified"
    # ... but not when recorded for other sources, nor with --fresh.
    record["key"] = "0" * 64
    render.cache_file().write_text(json.dumps(record))
    assert main(["list"]) == 0
    assert capsys.readouterr().out == first
    assert main(["list", "--fresh"]) == 0
    assert capsys.readouterr().out == first


def test_list_reports_a_crashing_builder_and_exits_1(capsys, monkeypatch):
    monkeypatch.setattr(core, "ids", lambda: ["conv.discrete_1d", "zz.crash"])

    def boom():
        raise RuntimeError("builder broke")

    core.derivation("zz.crash", "Crash")(boom)
    try:
        assert main(["list"]) == 1
    finally:
        core._REGISTRY.pop("zz.crash")
    rows = capsys.readouterr().out
    assert "zz.crash" in rows and "ERROR (RuntimeError: builder broke)" in rows
    assert not render.cache_file().exists()  # a crash is never recorded


def test_show_prints_steps_with_status(capsys):
    assert main(["show", "conv.output_size"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conv.output_size: Output size")
    assert "[verified]" in out
    assert "o(4, 3, 0, 1)" in out
    assert "exhaustive: 720 cases" in out
    assert out.count(". why: ") == len(core.get("conv.output_size").steps)


def test_show_latex_prints_every_step(capsys):
    assert main(["show", "params.pooling_features", "--latex"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(r"\section{Feature count that motivates pooling}")
    assert out.count(r"\begin{equation*}") == 2
    assert "3168400" in out and r"\emph{Check:} verified" in out


def test_book_writes_both_files(tmp_path, capsys, few_ids):
    out = tmp_path / "book"
    assert main(["book", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "derivations.tex"), str(out / "derivations.md")]
    tex = (out / "derivations.tex").read_text()
    assert tex.splitlines()[0] == f"% {render.HEADER}"
    assert tex.count(r"\section{") == len(FEW)
    assert not list(out.glob(".*.tmp"))  # no temp file left behind


def test_book_refuses_a_file_as_output_directory(tmp_path, capsys, few_ids):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["book", "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "derive", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_unknown_id_exits_2_with_suggestions():
    proc = _run("show", "conv.outputsize")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "unknown derivation id 'conv.outputsize'" in proc.stderr
    assert "did you mean: conv.output_size" in proc.stderr


def test_usage_errors_exit_2():
    assert _run().returncode == 2
    assert _run("book").returncode == 2  # --out is required
