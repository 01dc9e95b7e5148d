"""The machine's roof for the benchmarks: its sgemm throughput, its CPU, and FLOPs per image.

The roof is what the machine's BLAS reaches on its best kernel: NumPy's float32
matrix product on square matrices of a few sizes, ``THREADS`` threads (or one, when
load makes that faster: :func:`sgemm_roof`), the best of several runs per size, the
best size taken. A benchmark row's fraction of the roof
is its FLOP rate (images/s times the FLOPs per image that ``make codegen`` counted
from the kernel specs into ``generated/lenet5_spec.py``) divided by that rate.

The matrix products run in a child process: the NumPy of a benchmark may have
fixed its BLAS to one thread at import (``bench/lenet5.py`` does, for its NumPy
engine), and a thread count cannot be changed after that without threadpoolctl.

Usage (prints the measurement as JSON)::

    python bench/roof.py [--threads 2] [--sizes 256 512 1024] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generated import lenet5_spec  # noqa: E402

THREADS = 2
SIZES = (256, 512, 1024)
SECONDS = 0.5  # per size: products repeated for at least this long, the fastest kept
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: CPU flags reported with the roof (vector width and fused multiply-add set it).
FLAGS = ("avx2", "fma", "avx512f")


def cpu_info() -> dict:
    """The CPU model (``lscpu``'s "Model name", else /proc/cpuinfo) and its vector flags."""
    model = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name:")), None)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    if model is None:
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        model = found.group(1).strip() if found else "unknown"
    found = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(found.group(1).split()) if found else set()
    return {"model": model, "cpus": os.cpu_count(), **{f: f in flags for f in FLAGS}}


def _best_gflops(n: int, seconds: float) -> float:
    """GFLOP/s of the fastest ``n`` x ``n`` float32 product (2 n^3 operations) in a
    run of at least ``seconds``."""
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm-up: threads started, pages touched
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def measure(sizes=SIZES, seconds: float = SECONDS) -> dict:
    """sgemm GFLOP/s in this process (its BLAS threads as they are), per size and best."""
    by_size = {str(n): _best_gflops(n, seconds) for n in sizes}
    return {"gflops_by_size": by_size, "gflops": max(by_size.values())}


def _child(threads: int, sizes, seconds: float) -> dict:
    """:func:`measure` in a child process whose BLAS runs ``threads`` threads."""
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARIABLES}}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads)]
    cmd += ["--seconds", str(seconds), "--sizes", *map(str, sizes)]
    return json.loads(
        subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    )


def sgemm_roof(threads: int = THREADS, sizes=SIZES, seconds: float = SECONDS) -> dict:
    """The roof: the best sgemm rate on ``threads`` threads or on one.

    On a busy machine the ``threads``-thread rate can fall below one thread's
    (OpenBLAS's threads wait for each other while one of them is descheduled); a
    machine does at least what one of its cores does, so the roof is the better of
    the two. Returns both measurements, the roof ``gflops`` and the load average.
    """
    counts = sorted({1, threads})
    runs = {str(t): _child(t, sizes, seconds) for t in counts}
    return {
        "threads": threads,
        "by_threads": runs,
        "gflops": max(r["gflops"] for r in runs.values()),
        "load_average": list(os.getloadavg()),
    }


def flops_per_image(mode: str, batch: int) -> float:
    """FLOPs per image of ``bench/lenet5.py``'s mode at ``batch``: inference, or a
    training step (forward, backward and the update shared by the batch's images)."""
    image = lenet5_spec.FLOPS_PER_IMAGE
    if mode == "inference":
        return image["inference"]
    update = lenet5_spec.FLOPS_PER_UPDATE[mode.removeprefix("train-")]
    return image["forward"] + image["backward"] + update / batch


def layer_flops(layer: str, direction: str) -> int:
    """FLOPs per image of a layer's forward or backward kernels (``bench/kernels.py``'s
    rows: backward is every gradient, the first layer's input gradient included)."""
    kernels = lenet5_spec.LAYER_FLOPS[layer]
    forward = direction == "forward"
    return sum(n for k, n in kernels.items() if k.endswith("_forward") == forward)


def describe(cpu: dict, roof: dict) -> str:
    """Header lines: the CPU, its flags, the roof and what it was measured from."""
    flags = ", ".join(f"{f.upper()} {'yes' if cpu[f] else 'no'}" for f in FLAGS)
    runs = "; ".join(
        f"{t} thread{'s' if t != '1' else ''}: "
        + ", ".join(f"n={n} {g:.1f}" for n, g in r["gflops_by_size"].items())
        for t, r in roof["by_threads"].items()
    )
    load = ", ".join(f"{x:.1f}" for x in roof["load_average"])
    return (
        f"CPU: {cpu['model']} ({cpu['cpus']} CPUs; {flags}); load average {load}\n"
        f"roof: {roof['gflops']:.1f} GFLOP/s, the best numpy float32 sgemm on "
        f"{roof['threads']} threads or 1 (GFLOP/s, best of runs: {runs})"
    )


def run_meta(cpu: dict, roof: dict, notes: list) -> dict:
    """What a benchmark's JSON ``meta`` says of the run's machine, software and roof."""
    return {
        "cpu_count": os.cpu_count(),
        **{v.lower(): os.environ.get(v) for v in THREAD_VARIABLES},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "notes": notes,
        "cpu": cpu,
        "roof": roof,
    }


def header(title: str, cpu: dict, roof: dict, notes: list) -> str:
    """A benchmark's first lines: its title, the CPU and roof (:func:`describe`), the notes."""
    return "\n".join([title, describe(cpu, roof), *(f"  note: {n}" for n in notes)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--seconds", type=float, default=SECONDS)
    args = p.parse_args(argv)
    if args.threads < 1 or min(args.sizes) < 1 or not args.seconds > 0:
        p.error("--threads, --sizes and --seconds must be positive")
    if any(os.environ.get(v) != str(args.threads) for v in THREAD_VARIABLES):
        # numpy is loaded: its BLAS threads are fixed, so measure in a child set up right
        print(json.dumps(_child(args.threads, args.sizes, args.seconds)))
    else:
        print(json.dumps(measure(args.sizes, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
