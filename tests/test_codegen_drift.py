"""Drift: generated/ is exactly what codegen emits, deterministically."""

import subprocess
import sys
from pathlib import Path

import pytest

from codegen import __main__ as cli
from codegen import pipeline, writer

# `make test` runs --dist loadgroup: one worker takes the group and builds the fixture once.
pytestmark = pytest.mark.xdist_group("drift")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files():
    return pipeline.generate()


def test_regenerating_matches_generated_byte_for_byte(files, tmp_path):
    assert writer.write_files(files, tmp_path) == sorted(files)
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (ROOT / "generated" / rel).read_bytes(), rel


def test_two_regenerations_are_identical(files):
    assert pipeline.generate() == files


def test_regeneration_in_a_fresh_process_is_identical(files, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "codegen", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"{len(files)} of {len(files)} files changed" in out.stdout
    assert all((tmp_path / rel).read_text() == text for rel, text in files.items())


def test_check_mode_reports_drift(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "generate", lambda: files)  # the CLI, not the pipeline
    writer.write_files(files, tmp_path)
    assert cli.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "np_kernels.py").write_text("# edited by hand\n")
    assert cli.main(["--out", str(tmp_path), "--check"]) == 1
    assert "drifted" in capsys.readouterr().out
    assert cli.main(["--out", str(tmp_path)]) == 0  # rewrites only what changed
    assert "1 of" in capsys.readouterr().out


def test_no_timestamps_or_versions(files):
    import re

    for rel, text in files.items():
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\d\d:\d\d:\d\d", text), rel
        assert not re.search(r"(?i)version|sympy \d|numpy \d", text), rel
