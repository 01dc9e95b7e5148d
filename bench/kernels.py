"""Benchmark the generated LeNet-5 layer kernels (``make bench-kernels``).

For every LeNet-5 layer (C1, S2, C3, S4, C5, F6, the output RBF), forward and
backward, at batch 1 and 64, this times side by side in one run:

``C``       the generated C backend (``generated.c_kernels``)
``C checked`` with ``--checked``: the same C kernels with every call through the
            bindings' Python checks and ctypes (``_checked_<kernel>``: what every
            call paid before the C fast path, and what the calls it declines pay)
``NumPy``   the generated NumPy backend (``generated.np_kernels``)
``baseline`` plain NumPy (``bench/baseline.py``): im2col + one BLAS GEMM for the
            convolutions, reshape-and-sum pooling and ``@`` for the others
``torch``   PyTorch's CPU kernels, when torch is importable (``pip install -e '.[bench]'``)

"backward" is every gradient the layer has: data, parameters and bias (for C1
too, so that every layer does the same work for every candidate). The C3
connection table is applied by the generated kernels natively and by the
baselines the usual way, by zeroing absent filters.

Each row also gives the generated C kernels' FLOP rate (the FLOPs ``make codegen``
counted from the kernel specs, at the row's batch, over C's time per call) and its
fraction of the roof, the machine's float32 sgemm rate measured in the same run
(``bench/roof.py``; the header names the CPU, its vector flags and the load).

Method: each candidate is warmed up, checked against the generated NumPy result
(so all candidates do the same work), and calibrated to ``n`` calls per sample
(>= 2 ms). Then ``--repeats`` rounds run the candidates interleaved, in a
rotating order, so that machine noise hits all of them alike; the reported time
is the median per call, and a ratio the median over the rounds of the two
candidates' times in the same round. Ratios below 1 mean the generated C is faster.

Usage::

    python bench/kernels.py [--repeats 15] [--batches 1 64] [--layers C1 C3]
                            [--dtype float32] [--no-torch] [--checked] [--json PATH]
                            [--roof-seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import baseline, roof  # noqa: E402
from codegen.writer import write_atomic  # noqa: E402
from generated import lenet5_spec as spec  # noqa: E402

LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT")
CANDIDATES = ("C", "C checked", "NumPy", "baseline", "torch")
MIN_SAMPLE_SECONDS = 2e-3


@dataclass
class Bench:
    """One timed operation: a layer's forward or backward at one batch size."""

    layer: str
    direction: str
    batch: int
    calls: dict[str, Callable[[], object]]
    notes: list[str] = field(default_factory=list)


def c3_mask() -> np.ndarray:
    """The C3 table (16, 6) as uint8 0/1, from the generated LeNet-5 spec."""
    return np.array([[int(c in maps) for c in range(6)] for maps in spec.C3_TABLE], np.uint8)


# --------------------------------------------------------------------------- candidates


def _conv_ops(m, x, w, b, dy, table):
    hw, khw = x.shape[2:], w.shape[2:]
    fwd = lambda: m.conv2d_forward(x, w, b, table=table)  # noqa: E731
    bwd = lambda: (  # noqa: E731
        m.conv2d_backward_data(dy, w, hw, table=table),
        m.conv2d_backward_filter(x, dy, khw, table=table),
        m.conv2d_backward_bias(dy),
    )
    return fwd, bwd


def _baseline_conv_ops(x, w, b, dy, mask):
    wm = w * mask[:, :, None, None]
    fwd = lambda: baseline.conv2d_forward(x, wm, b)  # noqa: E731

    def bwd():
        dx, dw, db = baseline.conv2d_backward(x, wm, dy)
        return dx, dw * mask[:, :, None, None], db

    return fwd, bwd


def _torch_conv_ops(torch, x, w, b, dy, mask):
    F = torch.nn.functional
    xt, bt, dyt = (torch.from_numpy(a) for a in (x, b, dy))
    mt = torch.from_numpy(mask.astype(x.dtype))[:, :, None, None]
    wm = torch.from_numpy(w) * mt
    fwd = lambda: F.conv2d(xt, wm, bt)  # noqa: E731
    bwd = lambda: (  # noqa: E731
        torch.nn.grad.conv2d_input(xt.shape, wm, dyt),
        torch.nn.grad.conv2d_weight(xt, wm.shape, dyt) * mt,
        dyt.sum(dim=(0, 2, 3)),
    )
    return fwd, bwd


def _torch_subsample_ops(torch, x, coef, bias, dz):
    F = torch.nn.functional
    xt, ct, bt, dzt = (torch.from_numpy(a) for a in (x, coef, bias, dz))
    c4, b4 = ct[None, :, None, None], bt[None, :, None, None]
    fwd = lambda: F.avg_pool2d(xt, 2) * (4 * c4) + b4  # noqa: E731
    bwd = lambda: (  # noqa: E731
        (dzt * c4).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3),
        (dzt * F.avg_pool2d(xt, 2) * 4).sum(dim=(0, 2, 3)),
        dzt.sum(dim=(0, 2, 3)),
    )
    return fwd, bwd


def _torch_dense_ops(torch, x, w, b, dy):
    xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
    fwd = lambda: torch.nn.functional.linear(xt, wt, bt)  # noqa: E731
    bwd = lambda: (dyt @ wt, dyt.T @ xt, dyt.sum(dim=0))  # noqa: E731
    return fwd, bwd


def _torch_rbf_ops(torch, x, c, dy):
    xt, ct, dyt = (torch.from_numpy(a) for a in (x, c, dy))
    fwd = lambda: (xt * xt).sum(1)[:, None] - 2 * xt @ ct.T + (ct * ct).sum(1)[None, :]  # noqa: E731
    bwd = lambda: (  # noqa: E731
        2 * (dyt.sum(1)[:, None] * xt - dyt @ ct),
        2 * (dyt.sum(0)[:, None] * ct - dyt.T @ xt),
    )
    return fwd, bwd


# --------------------------------------------------------------------------- the layers


def layer_benches(layer: str, batch: int, dtype, backends: dict, torch) -> list[Bench]:
    """Forward and backward :class:`Bench` of one LeNet-5 layer at one batch size."""
    rng = np.random.default_rng(1000 * LAYERS.index(layer) + batch)  # same data every run
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    ops: dict[str, tuple] = {}
    if layer in ("C1", "C3", "C5"):
        c, k, side = {"C1": (1, 6, 32), "C3": (6, 16, 14), "C5": (16, 120, 5)}[layer]
        x, w, b, dy = r(batch, c, side, side), r(k, c, 5, 5), r(k), r(batch, k, side - 4, side - 4)
        table = c3_mask() if layer == "C3" else None
        mask = table if table is not None else np.ones((k, c), np.uint8)
        for name, m in backends.items():
            ops[name] = _conv_ops(m, x, w, b, dy, table)
        ops["baseline"] = _baseline_conv_ops(x, w, b, dy, mask)
        if torch is not None:
            ops["torch"] = _torch_conv_ops(torch, x, w, b, dy, mask)
    elif layer in ("S2", "S4"):
        c, side = {"S2": (6, 28), "S4": (16, 10)}[layer]
        x, coef, bias, dz = r(batch, c, side, side), r(c), r(c), r(batch, c, side // 2, side // 2)
        for name, m in backends.items():
            ops[name] = (
                lambda m=m: m.subsample_forward(x, coef, bias),
                lambda m=m: m.subsample_backward(dz, x, coef),
            )
        ops["baseline"] = (
            lambda: baseline.subsample_forward(x, coef, bias),
            lambda: baseline.subsample_backward(dz, x, coef),
        )
        if torch is not None:
            ops["torch"] = _torch_subsample_ops(torch, x, coef, bias, dz)
    elif layer == "F6":
        x, w, b, dy = r(batch, 120), r(84, 120), r(84), r(batch, 84)
        for name, m in backends.items():
            ops[name] = (
                lambda m=m: m.dense_forward(x, w, b),
                lambda m=m: m.dense_backward(dy, x, w),
            )
        ops["baseline"] = (
            lambda: baseline.dense_forward(x, w, b),
            lambda: baseline.dense_backward(dy, x, w),
        )
        if torch is not None:
            ops["torch"] = _torch_dense_ops(torch, x, w, b, dy)
    elif layer == "OUTPUT":
        x, dy = r(batch, 84), r(batch, 10)
        centers = np.array(spec.RBF_CENTERS, dtype=dtype)
        for name, m in backends.items():
            ops[name] = (
                lambda m=m: m.rbf_forward(x, centers),
                lambda m=m: m.rbf_backward(dy, x, centers),
            )
        ops["baseline"] = (
            lambda: baseline.rbf_forward(x, centers),
            lambda: baseline.rbf_backward(dy, x, centers),
        )
        if torch is not None:
            ops["torch"] = _torch_rbf_ops(torch, x, centers, dy)
    else:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
    return [
        Bench(layer, direction, batch, {name: pair[i] for name, pair in ops.items()})
        for i, direction in enumerate(("forward", "backward"))
    ]


# --------------------------------------------------------------------------- timing


def _as_arrays(out) -> list[np.ndarray]:
    outs = out if isinstance(out, tuple) else (out,)
    return [np.asarray(o.numpy() if hasattr(o, "numpy") else o, dtype=np.float64) for o in outs]


def agrees(out, ref, dtype) -> bool:
    """Same results as the generated NumPy kernel (loose: the inputs are O(1) normals,
    sums of <= 2400 terms; 1e-3 relative to the largest entry in float32, 1e-9 in float64)."""
    rtol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-9
    a, b = _as_arrays(out), _as_arrays(ref)
    return len(a) == len(b) and all(
        x.size == y.size
        and np.allclose(x.ravel(), y.ravel(), rtol=0, atol=rtol * (1 + np.abs(y).max()))
        for x, y in zip(a, b, strict=False)
    )


def calibrate(f: Callable[[], object], seconds: float = MIN_SAMPLE_SECONDS) -> int:
    """Calls per sample so that one sample lasts at least ``seconds`` (after a warm-up)."""
    f()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        if time.perf_counter() - t0 >= seconds or n >= 1 << 16:
            return n
        n *= 2


def interleaved_samples(
    calls: dict[str, Callable], repeats: int, seconds: float = MIN_SAMPLE_SECONDS
) -> dict[str, list[float]]:
    """Seconds per call of each candidate in each of ``repeats`` rounds, the candidates
    interleaved in a rotating order: sample r of every candidate was taken in round r."""
    names = list(calls)
    numbers = {name: calibrate(calls[name], seconds) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f, n = calls[name], numbers[name]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over the rounds of a[r] / b[r]: a ratio of two candidates' samples taken in
    the same round, so a slow phase of the machine that lasts a round cancels out (the
    ratio of the medians takes each median from whichever rounds it falls in).

    >>> paired_ratio([1, 3, 1, 3, 3], [2, 6, 2, 6, 2])  # medians 3 and 2
    0.5
    """
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def run_bench(b: Bench, dtype, repeats: int, gflops: float) -> dict:
    """Time one :class:`Bench`; a row of the result table, with the generated C
    kernels' GFLOP/s and fraction of the roof ``gflops`` (the machine's sgemm)."""
    ref = b.calls["NumPy"]() if "NumPy" in b.calls else None
    agree = {name: (ref is None or agrees(f(), ref, dtype)) for name, f in b.calls.items()}
    samples = interleaved_samples(b.calls, repeats)
    times = {name: statistics.median(s) for name, s in samples.items()}
    row = {"layer": b.layer, "pass": b.direction, "batch": b.batch}
    row["seconds"] = {name: times.get(name) for name in CANDIDATES if name in times}
    row["agrees_with_numpy"] = agree
    c = times.get("C")
    for other in ("torch", "NumPy"):  # C's time over the other's, round by round
        both = c and other in samples
        row[f"C/{other}"] = paired_ratio(samples["C"], samples[other]) if both else None
    row["flops"] = b.batch * roof.layer_flops(b.layer, b.direction)
    row["C GFLOP/s"] = row["flops"] / c / 1e9 if c else None
    row["C/roof"] = row["C GFLOP/s"] / gflops if c else None
    return row


# --------------------------------------------------------------------------- output


def load_backends() -> tuple[dict, list[str]]:
    """The generated backends that import and run, and notes on those that do not."""
    backends, notes = {}, []
    for name, modname in (("C", "generated.c_kernels"), ("NumPy", "generated.np_kernels")):
        try:
            mod = __import__(modname, fromlist=["_"])
            mod.relu_forward(np.zeros(2))  # the C library is built/loaded on first use
            backends[name] = mod
        except Exception as exc:  # report and go on: a benchmark shows what is there
            notes.append(f"{name} backend unavailable: {type(exc).__name__}: {exc}")
    return backends, notes


def checked_backend(c_kernels) -> SimpleNamespace:
    """The C backend's kernels as its checked path alone (``_checked_<kernel>``)."""
    prefix = "_checked_"
    names = [n for n in vars(c_kernels) if n.startswith(prefix)]
    return SimpleNamespace(**{n[len(prefix) :]: getattr(c_kernels, n) for n in names})


def load_torch(enabled: bool):
    if not enabled:
        return None, "torch disabled (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "torch not installed (pip install -e '.[bench]')"
    return torch, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def _fmt_us(s) -> str:
    return "—" if s is None else f"{s * 1e6:,.1f}"


def _fmt_ratio(r) -> str:
    return "—" if r is None else f"{r:.2f}"


def _fmt_rate(r) -> str:
    return "—" if r is None else f"{r:.1f}"


def _fmt_fraction(r) -> str:
    return "—" if r is None else f"{r:.1%}"


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table: times in microseconds per call, then the ratios."""
    shown = [c for c in CANDIDATES if c != "C checked" or any(c in r["seconds"] for r in rows)]
    head = ["layer", "pass", "batch"] + [f"{c} µs" for c in shown] + ["C/torch", "C/NumPy"]
    head += ["C GFLOP/s", "C/roof"]
    lines = []
    for r in rows:
        bad = [n for n, ok in r["agrees_with_numpy"].items() if not ok]
        cells = [r["layer"], r["pass"], str(r["batch"])]
        cells += [_fmt_us(r["seconds"].get(c)) + ("!" if c in bad else "") for c in shown]
        cells += [_fmt_ratio(r["C/torch"]), _fmt_ratio(r["C/NumPy"])]
        cells += [_fmt_rate(r["C GFLOP/s"]), _fmt_fraction(r["C/roof"])]
        lines.append(cells)
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), sep] + [fmt(c) for c in lines])


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as sorted, indented JSON, atomically."""
    write_atomic(Path(path), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds (median taken)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument(
        "--checked", action="store_true", help="also time the C kernels through the Python checks"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    p.add_argument(
        "--roof-seconds", type=float, default=roof.SECONDS, help="sgemm time per matrix size"
    )
    args = p.parse_args(argv)
    if args.repeats < 1 or min(args.batches) < 1:
        p.error("--repeats and --batches must be >= 1")
    if not args.roof_seconds > 0:
        p.error("--roof-seconds must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    backends, notes = load_backends()
    if args.checked and "C" in backends:
        backends["C checked"] = checked_backend(backends["C"])
    torch, torch_note = load_torch(not args.no_torch)
    notes.append(torch_note)
    cpu, sgemm = roof.cpu_info(), roof.sgemm_roof(seconds=args.roof_seconds)
    rows = []
    for batch in args.batches:
        for layer in args.layers:
            for b in layer_benches(layer, batch, dtype, backends, torch):
                rows.append(run_bench(b, dtype, args.repeats, sgemm["gflops"]))
    meta = {
        "dtype": args.dtype,
        "repeats": args.repeats,
        "min_sample_seconds": MIN_SAMPLE_SECONDS,
        **roof.run_meta(cpu, sgemm, notes),
    }
    title = f"LeNet-5 layer kernels, {args.dtype}, median of {args.repeats} interleaved rounds"
    print(roof.header(title, cpu, sgemm, notes))
    print(format_table(rows))
    print("µs per call; ratios < 1: generated C faster; '!' = result differs from NumPy's")
    print("C GFLOP/s: FLOPs counted from the kernel specs over C's time; C/roof: over the roof")
    if args.json:
        write_json_atomic(args.json, {"meta": meta, "rows": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
