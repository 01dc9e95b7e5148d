"""Whole-network LeNet-5 throughput: generated C vs generated NumPy vs PyTorch (``make bench``).

The same faithful network (LeCun et al. 1998) runs on three engines:

``C``      ``lenet5.network.LeNet5("c")``: the generated C kernels; a training step,
           or a forward pass, is one call of the generated fused step
           (``symconv_lenet5_*``)
``C contracted``  with ``--contracted``: the C engine's fused calls on the same generated
           C compiled with ``CONTRACT`` too (``-ffp-contract=fast``: the compiler fuses
           ``a*b + c`` into one rounding; the default build is ISO C99, which does not),
           loaded beside it; contracted/C is its throughput over the C engine's
``C composed``  ``LeNet5("c", fused=False)``: the same kernels called one by one from
           Python (~45 validated calls per training step, 13 per forward pass)
``NumPy``  ``lenet5.network.LeNet5("numpy")``: the generated NumPy kernels
``C loop``  ``lenet5 train``'s batch loop (``lenet5.train.train_entries``: uint8 digits
           converted a block at a time, the fused SDLM step, the losses and errors
           kept) on the same digits, ``LOOP_DIGITS`` per timed call; train-sdlm rows
           only. loop/C, its throughput over the bare step's, is what ``lenet5 train``
           delivers of the kernels' speed (the once-per-pass Hessian estimate, the
           evaluation and checkpoints aside)
``torch``  PyTorch eager, written here layer by layer (C1 conv, S2 trainable
           coefficient + bias subsampling, C3 conv whose weight is multiplied by
           the fixed Table I mask, S4, C5, F6, Euclidean RBF against the same fixed
           +-1 centers, f(a) = A tanh(S a) after every layer, MAP loss), with its
           parameters copied from the symconv initialization; absent when torch
           is not importable (``pip install -e '.[bench]'``): its columns say n/a.

Before timing, one forward pass of each engine on the same digits must give the
same RBF penalties as the C backend within ``FORWARD_RTOL`` (and the same
gradients within ``GRAD_RTOL``), so all engines do the same work.

Timed, at each batch size, images per second of:

``inference``   one forward pass to the RBF penalties (``LeNet5.penalties``; torch under
                ``torch.inference_mode``)
``train-sgd``   forward + backward + plain SGD update (w -= lr/B * grad of the
                summed MAP loss; symconv: ``LeNet5.sgd_step`` with momentum 0;
                ``torch.optim.SGD`` without momentum)
``train-sdlm``  symconv's default step, stochastic diagonal Levenberg-Marquardt
                with a fixed Hessian diagonal (its re-estimation on 500 digits once
                per pass of 60,000 is not included); torch: n/a

Method: each (mode, batch, engine) is warmed up and calibrated to ``n`` calls per
sample (>= ``--seconds``); ``--rounds`` rounds then run the engines interleaved
in a rotating order so machine noise hits all alike; the median sample is
reported. Ratios are throughput ratios, each the median over the rounds of the two
engines' ratio in that round (samples taken side by side, so the VM's slow phases
cancel): C/torch = 20 means C is 20x faster;
C/composed is the gain of the fused step over the composed C path; loop/C is the
training loop's share of the bare step's throughput.

The roof (``bench/roof.py``), measured in the same run before the timings: the
machine's float32 sgemm rate. Each row gives the FLOPs per image counted from the
kernel specs (a training step: forward, backward and the update shared by the
batch), and each engine's FLOP rate (images/s x FLOPs per image) and its fraction
of the roof; the header names the CPU, its AVX2/FMA/AVX-512 flags and the load.
torch runs with ``torch.set_num_threads(2)`` (this machine's cores, and what the
C backend's OpenMP may use); the NumPy backend's OpenBLAS with one thread unless
``OPENBLAS_NUM_THREADS`` says otherwise (see the comment at the import of numpy).

Usage::

    python bench/lenet5.py [--rounds 11] [--seconds 0.2] [--batches 1 64]
                           [--no-torch] [--contracted] [--json PATH] [--roof-seconds 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from pathlib import Path

# One OpenBLAS thread for the NumPy backend (must be set before numpy loads; an explicit
# OPENBLAS_NUM_THREADS wins): on 2 shared cores OpenBLAS's default 2 threads spin waiting
# on descheduled peers after a run of batch-1 calls, which made the batch-64 NumPy
# figures vary by more than an order of magnitude between rounds.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import roof  # noqa: E402
from bench.kernels import (  # noqa: E402
    interleaved_samples,
    load_torch,
    paired_ratio,
    write_json_atomic,
)
from lenet5 import spec, train  # noqa: E402
from lenet5.data import SAMPLE_DIR, load_dir, to_input  # noqa: E402
from lenet5.network import LeNet5, parameter_count  # noqa: E402
from lenet5.train import SDLM_RATE_FACTOR, sdlm_rate  # noqa: E402

ENGINES = ("C", "C contracted", "C composed", "C loop", "NumPy", "torch")
#: Extra compiler flags of the C contracted engine.
CONTRACT = ("-ffp-contract=fast",)
MODES = ("inference", "train-sgd", "train-sdlm")
DTYPE = np.float32
#: Penalties y = sum_k (x6_k - c_ik)^2 lie in [0, 336]; the engines sum the conv and
#: dense products in different orders, each float32 sum of <= 400 terms rounds at
#: ~sqrt(400) * 6e-8 = 1.2e-6 relative, and the tanh layers do not amplify that.
#: 1e-4 of the largest penalty leaves ~100x headroom yet catches any wrong weight,
#: mask or constant (those move penalties by O(1)).
FORWARD_RTOL = 1e-4
#: Gradients go through the same sums twice more (backward data and filter): 1e-3
#: of the largest entry of each parameter's gradient.
GRAD_RTOL = 1e-3
SGD_LR = 1e-4  # small: timing cycles through the 4,000 sample digits many times
#: Digits per timed call of the training loop: whole batches, at least one (the loop
#: converts its input a block of up to 1,024 digits at a time).
LOOP_DIGITS = 1024


# --------------------------------------------------------------------------- torch network


class TorchLeNet5:
    """The faithful LeNet-5 in PyTorch eager, parameters copied from ``params``."""

    def __init__(self, torch, params: dict):
        self.torch = torch
        self.F = torch.nn.functional
        self.p = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
        self.mask = torch.tensor(spec.C3_MASK, dtype=torch.float32)[:, :, None, None]
        self.centers = torch.tensor(spec.RBF_CENTERS, dtype=torch.float32)
        self.opt = torch.optim.SGD(list(self.p.values()), lr=SGD_LR)

    def _f(self, a):
        return spec.SQUASH_A * self.torch.tanh(spec.SQUASH_S * a)

    def _subsample(self, x, coef, bias):
        # z = coef * (sum of the 2x2 window) + bias = 4 coef avg_pool + bias
        return self.F.avg_pool2d(x, 2) * (4 * coef)[None, :, None, None] + bias[None, :, None, None]

    def penalties(self, x):
        """RBF penalties (N, 10) of the input tensor ``x`` (N, 1, 32, 32)."""
        p, F = self.p, self.F
        x1 = self._f(F.conv2d(x, p["C1.w"], p["C1.b"]))
        x2 = self._f(self._subsample(x1, p["S2.coef"], p["S2.bias"]))
        x3 = self._f(F.conv2d(x2, p["C3.w"] * self.mask, p["C3.b"]))
        x4 = self._f(self._subsample(x3, p["S4.coef"], p["S4.bias"]))
        x5 = self._f(F.conv2d(x4, p["C5.w"], p["C5.b"])).flatten(1)
        x6 = self._f(F.linear(x5, p["F6.w"], p["F6.b"]))
        return ((x6[:, None, :] - self.centers[None, :, :]) ** 2).sum(-1)

    def loss(self, y, labels):
        """Summed MAP criterion: y_label + log(e^{-j} + sum_i e^{-y_i}) over the batch."""
        torch = self.torch
        minus_j = torch.full((len(y), 1), -spec.MAP_J)
        lse = torch.logsumexp(torch.cat([minus_j, -y], dim=1), dim=1)
        return (y.gather(1, labels[:, None])[:, 0] + lse).sum()

    def gradients(self, x, labels) -> dict:
        """Gradients of the summed loss as numpy arrays (for the agreement check)."""
        for t in self.p.values():
            t.grad = None
        self.loss(self.penalties(x), labels).backward()
        return {n: t.grad.numpy().copy() for n, t in self.p.items()}

    def infer(self, x):
        with self.torch.inference_mode():
            return self.penalties(x)

    def sgd_step(self, x, labels):
        """Forward, backward, w -= lr/B * grad (the gradient of the mean loss)."""
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.penalties(x), labels).div(len(x)).backward()
        self.opt.step()


# --------------------------------------------------------------------------- symconv steps


def symconv_sgd_step(net: LeNet5, params: dict, velocity: dict, x, labels) -> None:
    """Forward, backward, w -= lr/B * grad of the summed loss (in place): momentum 0,
    so the velocity is just the step."""
    net.sgd_step(params, velocity, x, labels, SGD_LR, 0.0)


def symconv_sdlm_step(net: LeNet5, params: dict, hess: dict, x, labels) -> None:
    """Forward, backward and the SDLM update of ``lenet5.train`` with a fixed diagonal."""
    net.sdlm_step(params, hess, x, labels, sdlm_rate(0, SDLM_RATE_FACTOR, len(x)))


def training_loop(net: LeNet5, params: dict, hess: dict, digits: Digits, batch: int):
    """(a call that runs ``lenet5 train``'s batch loop on the next ``LOOP_DIGITS`` uint8
    digits, wrapping around, in place on ``params``; the digits it trains on per call)."""
    cfg = train.Config(out="bench", batch_size=batch)
    state = train.State(params=params, hess=hess)
    flag = train._SigintFlag()  # never raised: no signal handler is installed
    eta = sdlm_rate(0, SDLM_RATE_FACTOR, batch)
    count = max(1, LOOP_DIGITS // batch) * batch
    start = [0]

    def call():
        order = (start[0] + np.arange(count)) % len(digits.images)
        start[0] = (start[0] + count) % len(digits.images)
        state.step = 0
        train.train_entries(net, state, cfg, digits.images, digits.labels, order, eta, flag)

    return call, count


# --------------------------------------------------------------------------- agreement


def agreement(nets: dict, tnet, params: dict, x, labels) -> dict:
    """Max deviation from the C backend (or NumPy without C) of penalties and gradients.

    ``ok`` is True when every engine is within ``FORWARD_RTOL`` / ``GRAD_RTOL`` of
    the reference (relative to its largest entry, per array).
    """
    ref_name = "C" if "C" in nets else "NumPy"
    ref = nets[ref_name]
    y_ref = ref.penalties(params, x).astype(np.float64)
    g_ref = ref.gradients(params, x, labels)[2]
    out = {"reference": ref_name, "forward_rtol": FORWARD_RTOL, "grad_rtol": GRAD_RTOL}
    engines = {n: (lambda net=net: net.penalties(params, x)) for n, net in nets.items()}
    grads = {n: (lambda net=net: net.gradients(params, x, labels)[2]) for n, net in nets.items()}
    if tnet is not None:
        xt, lt = tnet.torch.from_numpy(x), tnet.torch.from_numpy(labels)
        engines["torch"] = lambda: tnet.infer(xt).numpy()
        grads["torch"] = lambda: tnet.gradients(xt, lt)
    ok = True
    for name in engines:
        if name == ref_name:
            continue
        dy = float(np.abs(engines[name]() - y_ref).max() / np.abs(y_ref).max())
        g = grads[name]()
        dg = max(float(np.abs(g[n] - g_ref[n]).max() / np.abs(g_ref[n]).max()) for n in g_ref)
        out[name] = {"forward_rel_diff": dy, "grad_rel_diff": dg}
        ok = ok and dy <= FORWARD_RTOL and dg <= GRAD_RTOL
    out["ok"] = ok
    return out


# --------------------------------------------------------------------------- timing


class Batches:
    """Consecutive batches of ``batch`` digits from ``x``/``labels`` (numpy arrays or
    torch tensors), wrapping around.

    >>> b = Batches(np.arange(5), np.arange(5), 2)
    >>> [b.next()[0].tolist() for _ in range(3)]
    [[0, 1], [2, 3], [0, 1]]
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, batch: int):
        self.x, self.labels, self.batch, self.start = x, labels, batch, 0

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        if self.start + self.batch > len(self.x):
            self.start = 0
        s, self.start = self.start, self.start + self.batch
        return self.x[s : s + self.batch], self.labels[s : s + self.batch]


def mode_calls(mode: str, nets: dict, torch, params: dict, hess: dict, digits: Digits, batch: int):
    """(the step of ``mode`` for every engine, the images each call processes when not one
    batch): each engine walks the digits from the start, and each training engine updates
    its own copy of ``params``."""

    def cycle(step, x=digits.x, labels=digits.labels):  # a fresh batch cursor per engine
        b = Batches(x, labels, batch)
        return lambda: step(*b.next())

    calls, images = {}, {}
    for name, net in nets.items():
        own = {n: v.copy() for n, v in params.items()}
        vel = {n: np.zeros_like(v) for n, v in params.items()}
        if mode == "inference":
            calls[name] = cycle(lambda x, _, net=net: net.penalties(params, x, len(x)))
        elif mode == "train-sgd":
            calls[name] = cycle(
                lambda x, lab, net=net, own=own, vel=vel: symconv_sgd_step(net, own, vel, x, lab)
            )
        else:
            calls[name] = cycle(
                lambda x, lab, net=net, own=own: symconv_sdlm_step(net, own, hess, x, lab)
            )
            if name == "C":  # lenet5 train's loop around the same step, on its own copy
                trained = {n: v.copy() for n, v in params.items()}
                calls["C loop"], images["C loop"] = training_loop(net, trained, hess, digits, batch)
    if torch is not None and mode != "train-sdlm":
        tnet = TorchLeNet5(torch, params)
        xt, lt = torch.from_numpy(digits.x), torch.from_numpy(digits.labels)
        step = tnet.sgd_step if mode == "train-sgd" else (lambda x, _: tnet.infer(x))
        calls["torch"] = cycle(step, xt, lt)
    return calls, images


def bench_row(mode, batch, calls, images, rounds, seconds, gflops):
    """A result row: images/s per engine (a call processes one batch, or ``images[engine]``
    images), the throughput ratios, and each engine's GFLOP/s and fraction of the roof
    (``gflops``, the machine's sgemm)."""
    samples = interleaved_samples(calls, rounds, seconds)
    per_s = {n: [images.get(n, batch) / t for t in s] for n, s in samples.items()}
    ips = {n: statistics.median(per_s[n]) if n in per_s else None for n in ENGINES}

    def ratio(a, b):  # throughput of a over b, round by round
        return paired_ratio(per_s[a], per_s[b]) if a in per_s and b in per_s else None

    per_image = roof.flops_per_image(mode, batch)
    rate = {name: v * per_image / 1e9 if v else None for name, v in ips.items()}
    return {
        "mode": mode,
        "batch": batch,
        "images_per_s": ips,
        "images_per_s_by_round": per_s,
        "C/torch": ratio("C", "torch"),
        "C/NumPy": ratio("C", "NumPy"),
        "C/composed": ratio("C", "C composed"),
        "loop/C": ratio("C loop", "C"),
        "contracted/C": ratio("C contracted", "C"),
        "flops_per_image": per_image,
        "gflops": rate,
        "roof_fraction": {name: r / gflops if r else None for name, r in rate.items()},
    }


# --------------------------------------------------------------------------- output


def format_table(rows: list[dict]) -> str:
    """Fixed-width table: images/s per engine ("n/a" when absent), the ratios, then the
    C engine's MFLOP per image, GFLOP/s and fraction of the roof."""
    ratios = ("C/torch", "C/NumPy", "C/composed", "loop/C", "contracted/C")
    head = ["mode", "batch"] + [f"{e} img/s" for e in ENGINES] + list(ratios)
    head += ["MFLOP/img", "C GFLOP/s", "C/roof"]
    fmt_ips = lambda v: "n/a" if v is None else f"{v:,.0f}"  # noqa: E731
    fmt_ratio = lambda v: "n/a" if v is None else f"{v:.2f}x" if v < 1 else f"{v:.1f}x"  # noqa: E731
    lines = [
        [r["mode"], str(r["batch"])]
        + [fmt_ips(r["images_per_s"][e]) for e in ENGINES]
        + [fmt_ratio(r[k]) for k in ratios]
        + [f"{r['flops_per_image'] / 1e6:.3f}"]
        + ["n/a" if r["gflops"]["C"] is None else f"{r['gflops']['C']:.1f}"]
        + ["n/a" if r["roof_fraction"]["C"] is None else f"{r['roof_fraction']['C']:.1%}"]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *lines, strict=True)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(c) for c in lines])


def format_agreement(agree: dict) -> str:
    """One line per engine: its deviation from the reference engine and the tolerances."""
    ref = agree["reference"]
    return "\n".join(
        f"  {name} vs {ref}: penalties rel. diff {agree[name]['forward_rel_diff']:.1e} "
        f"(tol {FORWARD_RTOL:.0e}), gradients {agree[name]['grad_rel_diff']:.1e} "
        f"(tol {GRAD_RTOL:.0e})"
        for name in ENGINES
        if name in agree
    )


class Rebound:
    """The C kernel module ``module`` with its fused LeNet-5 entry points (``lenet5_*``)
    taken from ``step`` (a :class:`codegen.runtime.c_step.Step` on another build)."""

    def __init__(self, module, step):
        self.module, self.step = module, step

    def __getattr__(self, name):
        if name == "LENET5_STEP":
            return self.step
        if name.startswith("lenet5_"):
            return getattr(self.step, name.removeprefix("lenet5_"))
        return getattr(self.module, name)


def contracted_net() -> LeNet5:
    """``LeNet5("c")`` whose fused calls run on the kernels compiled with ``CONTRACT`` too."""
    net = LeNet5("c", DTYPE)
    net.k = Rebound(net.k, net.k.LENET5_STEP.on(net.k.LIBRARY.rebuilt(CONTRACT)))
    return net


def load_nets(contracted: bool = False) -> tuple[dict, list[str]]:
    """The symconv engines that load, and notes on those that do not."""
    nets, notes = {}, []
    engines = [
        ("C", lambda: LeNet5("c", DTYPE)),
        *([("C contracted", contracted_net)] if contracted else []),
        ("C composed", lambda: LeNet5("c", DTYPE, fused=False)),
        ("NumPy", lambda: LeNet5("numpy", DTYPE)),
    ]
    for name, make in engines:
        try:
            nets[name] = make()
        except Exception as exc:  # report and go on: a benchmark shows what is there
            notes.append(f"{name} backend unavailable: {exc}")
    if not nets:
        raise SystemExit("no symconv backend loads: " + "; ".join(notes))
    return nets, notes


@dataclasses.dataclass(frozen=True)
class Digits:
    """Training digits: ``images`` uint8 (N, 28, 28), ``x`` the network input of them,
    ``labels`` int64."""

    images: np.ndarray
    x: np.ndarray
    labels: np.ndarray


def sample_digits() -> Digits:
    """The bundled MNIST sample's training digits in a fixed random order (the files are
    sorted by class; training on them in order would not be SGD)."""
    data = load_dir(SAMPLE_DIR)
    order = np.random.default_rng(0).permutation(len(data.train_images))
    images = data.train_images[order]
    return Digits(images, to_input(images, DTYPE), data.train_labels[order].astype(np.int64))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=11, help="interleaved rounds (median taken)")
    p.add_argument("--seconds", type=float, default=0.2, help="minimum length of one sample")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument(
        "--contracted", action="store_true", help="also time the C build with -ffp-contract=fast"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    p.add_argument(
        "--roof-seconds", type=float, default=roof.SECONDS, help="sgemm time per matrix size"
    )
    args = p.parse_args(argv)
    if args.rounds < 1 or not 1 <= min(args.batches) <= max(args.batches) <= 4000:
        p.error("--rounds must be >= 1 and --batches in 1..4000 (the bundled sample)")
    if not args.seconds > 0 or not args.roof_seconds > 0:
        p.error("--seconds and --roof-seconds must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    nets, notes = load_nets(args.contracted)
    torch, torch_note = load_torch(not args.no_torch)
    if torch is not None:
        torch.set_num_threads(2)
        torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    notes.append(torch_note)
    some = next(iter(nets.values()))
    params = some.init_params(np.random.default_rng(0))
    digits = sample_digits()
    x_all, labels_all = digits.x, digits.labels
    # The SDLM diagonal as lenet5.train estimates it before a pass (500 digits).
    n_hess = spec.HESSIAN_SAMPLES
    hess = {n: (h / n_hess).astype(DTYPE) for n, h in
            some.hessian_diagonal(params, x_all[:n_hess], labels_all[:n_hess]).items()}  # fmt: skip
    tnet = TorchLeNet5(torch, params) if torch is not None else None
    agree = agreement(nets, tnet, params, x_all[:64], labels_all[:64])
    cpu, sgemm = roof.cpu_info(), roof.sgemm_roof(seconds=args.roof_seconds)
    rows = []
    for batch in args.batches:
        for mode in args.modes:
            calls, images = mode_calls(mode, nets, torch, params, hess, digits, batch)
            row = bench_row(mode, batch, calls, images, args.rounds, args.seconds, sgemm["gflops"])
            rows.append(row)
    meta = {
        "dtype": np.dtype(DTYPE).name,
        "rounds": args.rounds,
        "min_sample_seconds": args.seconds,
        "sgd_lr": SGD_LR,
        "parameters": parameter_count(params),
        **roof.run_meta(cpu, sgemm, notes),
    }
    title = f"LeNet-5 throughput, float32, median of {args.rounds} interleaved rounds"
    print(roof.header(title, cpu, sgemm, notes))
    print(format_agreement(agree))
    print(format_table(rows))
    print(
        "images per second; ratios: throughput of C over torch / NumPy / C composed (> 1: C "
        "faster), of lenet5 train's loop and of C contracted over C"
    )
    print(
        "MFLOP/img: counted from the kernel specs (training: forward, backward, the update / "
        "batch); C/roof: C's FLOP rate over the roof"
    )
    if args.json:
        write_json_atomic(args.json, {"meta": meta, "agreement": agree, "rows": rows})
        print(f"wrote {args.json}")
    if not agree["ok"]:
        print("ERROR: the engines disagree beyond the stated tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
