"""Smoke test of ``bench/lenet5.py`` (``make bench``): it runs, writes its JSON, and the
PyTorch network it times is the same function as symconv's.  No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet5.network import BackendError

ROOT = Path(__file__).resolve().parent.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _bench_module():
    sys.path.insert(0, str(ROOT))
    try:
        from bench import lenet5 as bench
    finally:
        sys.path.remove(str(ROOT))
    return bench


def test_bench_lenet5_runs_and_writes_json(tmp_path):
    """Batch 1 and 2, one short round each, as `make bench ARGS=...` runs it."""
    out = tmp_path / "sub" / "bench.json"
    cmd = [sys.executable, "bench/lenet5.py", "--rounds", "1", "--seconds", "0.005"]
    cmd += ["--batches", "1", "2", "--json", str(out), "--roof-seconds", "0.01"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "C/torch" in proc.stdout and "train-sdlm" in proc.stdout
    result = json.loads(out.read_text())
    bench = _bench_module()
    assert set(result) == {"meta", "agreement", "rows"}
    rows = result["rows"]
    modes = ["inference", "train-sgd", "train-sdlm"]
    assert [(r["mode"], r["batch"]) for r in rows] == [(m, b) for b in (1, 2) for m in modes]
    for r in rows:
        ips = r["images_per_s"]
        assert set(ips) == {"C", "C contracted", "C composed", "C loop", "NumPy", "torch"}
        assert ips["NumPy"] > 0
        assert ips["C contracted"] is None and r["contracted/C"] is None  # no --contracted
        if ips["C"] is not None:  # the composed C path is timed in every mode, the loop
            assert ips["C composed"] is not None  # beside the SDLM step
            assert (ips["C loop"] is not None) == (r["mode"] == "train-sdlm")
        if ips["C loop"] is not None:
            assert r["loop/C"] == pytest.approx(ips["C loop"] / ips["C"])
        has_torch_column = HAS_TORCH and r["mode"] != "train-sdlm"
        assert (ips["torch"] is not None) == has_torch_column
        rounds = r["images_per_s_by_round"]
        assert set(rounds) == {e for e, v in ips.items() if v is not None}
        assert all(len(v) == 1 for v in rounds.values())  # --rounds 1
        if ips["C"] is not None:
            assert r["C/NumPy"] == pytest.approx(ips["C"] / ips["NumPy"])
        if ips["C composed"] is not None:
            assert r["C/composed"] == pytest.approx(ips["C"] / ips["C composed"])
    assert result["agreement"]["ok"] is True
    meta = result["meta"]
    assert "roof:" in proc.stdout and meta["cpu"]["model"] in proc.stdout
    for r in rows:
        per_image = bench.roof.flops_per_image(r["mode"], r["batch"])
        assert r["flops_per_image"] == per_image
        for engine, ips in r["images_per_s"].items():
            if ips is not None:
                assert r["gflops"][engine] == pytest.approx(ips * per_image / 1e9)
                want = r["gflops"][engine] / meta["roof"]["gflops"]
                assert r["roof_fraction"][engine] == pytest.approx(want)
    if not HAS_TORCH:
        assert "torch not installed" in " ".join(result["meta"]["notes"])
        assert "n/a" in proc.stdout
    assert not list(out.parent.glob(".*.tmp")), "atomic write left a temp file"


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed (the optional bench extra)")
def test_torch_network_equals_symconv():
    """Same penalties and gradients as the generated NumPy backend, on real digits, within
    the bench's stated float32 tolerances; and a wrong C3 mask would be caught."""
    import torch

    from lenet5.network import LeNet5

    bench = _bench_module()
    net = LeNet5("numpy", np.float32)
    params = net.init_params(np.random.default_rng(3))
    digits = bench.sample_digits()
    x, labels = digits.x[:8], digits.labels[:8]
    tnet = bench.TorchLeNet5(torch, params)
    agree = bench.agreement({"NumPy": net}, tnet, params, x, labels)
    assert agree["ok"], agree
    assert agree["torch"]["forward_rel_diff"] <= bench.FORWARD_RTOL
    assert agree["torch"]["grad_rel_diff"] <= bench.GRAD_RTOL
    # The check can fail: without Table I (a full C3) the penalties move far beyond it.
    tnet.mask = torch.ones_like(tnet.mask)
    params["C3.w"][:] = np.random.default_rng(4).uniform(-0.1, 0.1, params["C3.w"].shape)
    tnet.p["C3.w"].data = torch.from_numpy(params["C3.w"].copy())
    assert not bench.agreement({"NumPy": net}, tnet, params, x, labels)["ok"]


@pytest.mark.parametrize("batch", [1, 3])
def test_the_timed_training_loop_is_lenet5_train(batch):
    """Each call of the bench's loop trains on the next LOOP_DIGITS digits (whole batches,
    wrapping around) exactly as ``lenet5.train`` would: the same parameters as SDLM steps
    on those batches, in place."""
    from lenet5.network import LeNet5
    from lenet5.train import SDLM_RATE_FACTOR, sdlm_rate

    bench = _bench_module()
    net = LeNet5("c" if _c_backend() else "numpy", np.float32)
    params = net.init_params(np.random.default_rng(5))
    hess = {n: np.full_like(v, 0.5) for n, v in params.items()}
    d = bench.sample_digits()
    small = bench.Digits(d.images[:10], d.x[:10], d.labels[:10])
    loop = {n: v.copy() for n, v in params.items()}
    call, count = bench.training_loop(net, loop, hess, small, batch)
    assert count == bench.LOOP_DIGITS // batch * batch
    for _ in range(2):
        call()
    eta = sdlm_rate(0, SDLM_RATE_FACTOR, batch)
    order = np.arange(2 * count) % 10
    for i in range(0, 2 * count, batch):
        at = order[i : i + batch]
        net.sdlm_step(params, hess, small.x[at], small.labels[at], eta)
    for name in params:
        assert np.array_equal(loop[name], params[name]), name
    assert not np.array_equal(loop["C1.w"], net.init_params(np.random.default_rng(5))["C1.w"])


def _c_backend():
    from lenet5.network import BackendError, load_backend

    try:
        load_backend("c")
    except (BackendError, ImportError):
        return False
    return True


def test_ratios_pair_the_engines_round_by_round():
    """A slow phase that lasts one round slows every engine timed in it: the ratio of the
    same round's samples cancels it, the ratio of the medians does not."""
    bench = _bench_module()
    fast = [1.0, 1.0, 3.0, 3.0, 3.0]  # seconds per call, a slow phase from round 2 on
    slow = [2.0, 2.0, 6.0, 6.0, 2.0]  # the same phase, and a quiet last round
    assert bench.paired_ratio(fast, slow) == 0.5
    assert np.median(fast) / np.median(slow) == 1.5


def test_batches_wrap_around():
    bench = _bench_module()
    b = bench.Batches(np.arange(7), np.arange(7), 3)
    assert [b.next()[1].tolist() for _ in range(3)] == [[0, 1, 2], [3, 4, 5], [0, 1, 2]]


def test_bad_arguments_are_rejected():
    bench = _bench_module()
    for argv in (["--rounds", "0"], ["--batches", "0"], ["--batches", "5000"], ["--seconds", "0"]):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(argv)
        assert exc.value.code == 2


def test_bench_lenet5_without_torch(tmp_path):
    """With torch not importable the bench still runs and its torch columns say n/a;
    --contracted adds the contracted build's column."""
    out = tmp_path / "bench.json"
    script = (
        "import sys; sys.modules['torch'] = None; sys.path.insert(0, '.');"
        "from bench import lenet5;"
        f"sys.exit(lenet5.main(['--rounds', '1', '--seconds', '0.005', '--batches', '1',"
        f" '--modes', 'inference', '--contracted', '--json', {str(out)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["images_per_s"]["torch"] is None and row["C/torch"] is None
    assert row["images_per_s"]["NumPy"] > 0
    assert "torch not installed" in proc.stdout and "n/a" in proc.stdout
    if row["images_per_s"]["C"] is not None:
        assert row["images_per_s"]["C contracted"] > 0
        assert row["contracted/C"] == pytest.approx(
            row["images_per_s"]["C contracted"] / row["images_per_s"]["C"]
        )
        assert "C contracted vs C" in proc.stdout


def test_the_contracted_engine_is_another_build_beside_the_default():
    """``--contracted`` times a second library (the same C, -ffp-contract=fast): its results
    differ from the default build's at the rounding level only, and loading it beside the
    default leaves the default's results (and its fast path) as they were."""
    bench = _bench_module()
    try:
        c = bench.LeNet5("c", np.float32)
    except BackendError:  # no C compiler
        pytest.skip("no C backend")
    contracted = bench.contracted_net()
    mine, other = c.kernels(), contracted.kernels()
    if "-ffp-contract=fast" in mine["flags"]:
        pytest.skip("the default build is contracted already ($SYMCONV_CFLAGS)")
    assert other["flags"] == [*mine["flags"], "-ffp-contract=fast"]
    assert other["library"] != mine["library"]
    rng = np.random.default_rng(3)
    params = c.init_params(rng)
    x = rng.uniform(-0.1, 1.175, (9, 1, 32, 32)).astype(np.float32)
    before = c.penalties(params, x)
    y = contracted.penalties(params, x)
    assert not np.array_equal(y, before)  # a*b + c fused: another rounding
    # float32 sums of at most 400 terms: ~1e-6 relative; 1e-5 of the largest penalty
    np.testing.assert_allclose(y, before, rtol=0, atol=1e-5 * np.abs(before).max())
    assert np.array_equal(c.penalties(params, x), before)
    labels = np.arange(9) % 10
    hess = {n: np.full_like(v, 0.5) for n, v in params.items()}
    steps = []
    for net in (c, contracted):
        own = {n: v.copy() for n, v in params.items()}
        net.sdlm_step(own, hess, x, labels, 1e-4)
        steps.append(own)
    for name in params:
        moved = np.abs(steps[0][name] - params[name]).max()
        assert moved > 0, name  # the step trains this parameter
        # the two builds' steps agree to within a thousandth of the step itself, plus the
        # rounding of w - step to float32 (an ulp of the largest weight, twice)
        ulp = np.spacing(np.abs(params[name]).max())
        atol = 1e-3 * moved + 2 * ulp
        np.testing.assert_allclose(steps[1][name], steps[0][name], rtol=0, atol=atol)
