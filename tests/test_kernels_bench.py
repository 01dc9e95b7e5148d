"""Smoke test of ``bench/kernels.py`` (so the benchmark does not rot). No timing is asserted."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kernel_support import load_backend

from generated import lenet5_spec as spec

ROOT = Path(__file__).resolve().parent.parent


def _build_c_library_if_any() -> bool:
    """Build (or load from the cache) the C library in this process, outside the child's
    timeout. False when the C backend is missing or fails: the bench then reports it."""
    try:
        import generated.c_kernels as ck

        ck.relu_forward(np.ones(2))
    except Exception:  # any failure is the bench's to report, in its notes
        return False
    return True


def test_bench_kernels_runs_and_writes_json(tmp_path):
    """One round, batch 1, a conv layer with the C3 table and a dense one, as `make` runs it."""
    load_backend("np")  # the NumPy backend is every row's reference
    has_c = _build_c_library_if_any()
    out = tmp_path / "sub" / "bench.json"
    cmd = [sys.executable, "bench/kernels.py", "--repeats", "1", "--batches", "1"]
    cmd += ["--layers", "C3", "F6", "--no-torch", "--checked", "--json", str(out)]
    cmd += ["--roof-seconds", "0.01"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "C/torch" in proc.stdout and "C3" in proc.stdout
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["layer"], r["pass"]) for r in rows] == [
        ("C3", "forward"),
        ("C3", "backward"),
        ("F6", "forward"),
        ("F6", "backward"),
    ]
    for r in rows:
        assert r["seconds"]["baseline"] > 0 and r["seconds"]["NumPy"] > 0
        assert not has_c or r["seconds"]["C"] > 0, "the C backend works but was not timed"
        assert not has_c or r["seconds"]["C checked"] > 0, "--checked was not timed"
        assert all(r["agrees_with_numpy"].values()), r  # every candidate did the same work
        assert r["flops"] == sum(
            n for k, n in spec.LAYER_FLOPS[r["layer"]].items()
            if k.endswith("_forward") == (r["pass"] == "forward")
        )  # fmt: skip
        if has_c:
            assert r["C GFLOP/s"] == pytest.approx(r["flops"] / r["seconds"]["C"] / 1e9)
            assert r["C/roof"] == pytest.approx(r["C GFLOP/s"] / result["meta"]["roof"]["gflops"])
    assert result["meta"]["cpu"]["model"] in proc.stdout and "roof:" in proc.stdout
    assert not list(out.parent.glob(".*.tmp")), "atomic write left a temp file"


def test_baseline_equals_generated_numpy():
    """The im2col baseline computes what the kernels compute (C3 table by zeroed filters)."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench import baseline
    finally:
        sys.path.remove(str(ROOT))
    np_kernels = load_backend("np")
    assert doctest.testmod(baseline).failed == 0
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), np.ones(4)
    dy = rng.standard_normal((2, 4, 4, 4))  # Ho = (7 + 2 - 3)//2 + 1, Wo = (6 + 2 - 2)//2 + 1
    table = rng.integers(0, 2, size=(4, 3)).astype(np.uint8)
    wm = w * table[:, :, None, None]
    kw = dict(stride=2, padding=1, table=table)
    np.testing.assert_allclose(
        baseline.conv2d_forward(x, wm, b, 2, 1), np_kernels.conv2d_forward(x, w, b, **kw)
    )
    dx, dw, db = baseline.conv2d_backward(x, wm, dy, 2, 1)
    np.testing.assert_allclose(dx, np_kernels.conv2d_backward_data(dy, w, (7, 6), **kw))
    np.testing.assert_allclose(
        dw * table[:, :, None, None], np_kernels.conv2d_backward_filter(x, dy, (3, 2), **kw)
    )
    np.testing.assert_allclose(db, np_kernels.conv2d_backward_bias(dy))
