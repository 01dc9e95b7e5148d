"""SDLM diagnostics: why the paper's learning-rate schedule is too large for this LeNet-5.

Three measurements (README, "LeNet-5", "The SDLM rate cap"), on MNIST digits:

``rates``   the Hessian diagonal h_k the training uses (``train.hessian_estimate``, the
            paper's recursion averaged over 500 digits) at initialization, per layer, and
            the effective rates eta/(mu + h_k) at the paper's first rate, for the
            initialization bound 2.4/F_i^p with p = 1 (the paper's formula, the runtime's
            default) and p = 1/2; the paper reports 7e-5 .. 0.016 for its first pass.
``exact``   the paper's recursion against the exact Gauss-Newton diagonal diag(J^T L J)
            (L: the exact d2E/dx6^2 matrix of the MAP loss), estimated without bias by
            back-propagating a random v with E[v v^T] = L and squaring the gradient.
``rho``     per digit, the step ratio rho = phi''(0) / -phi'(0) of
            phi(t) = E_digit(w - t eps g) for the SDLM step eps g at rate eta (central
            differences, float64), per layer and for the whole step.  rho > 2: the step
            on that digit overshoots the minimum of its own loss along the step.

Usage::

    python bench/sdlm_curvature.py --data DIR rates [--seeds 0 1 2]
    python bench/sdlm_curvature.py --data DIR exact [--checkpoint F | --power P]
    python bench/sdlm_curvature.py --data DIR rho --checkpoint F [--eta 0.0005] [--digits 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: the package lenet5, not bench/lenet5.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lenet5 import checkpoint, spec  # noqa: E402
from lenet5.data import load_mnist, to_input  # noqa: E402
from lenet5.network import PARAM_SHAPES, LeNet5, trainable_mask  # noqa: E402
from lenet5.train import hessian_estimate  # noqa: E402

LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6")


def _hessian_digits(seed: int, epoch: int, n: int):
    """The 500 digits ``train`` estimates the Hessian on in pass ``epoch`` of ``seed``."""
    rng = np.random.default_rng([seed, epoch])
    rng.permutation(n)  # the pass's order is drawn first
    return rng.choice(n, spec.HESSIAN_SAMPLES, replace=False)


def _trainable(h: dict) -> dict:
    return {k: np.asarray(v)[trainable_mask(k).astype(bool)] for k, v in h.items()}


def rates(data, seeds, eta):
    net = LeNet5("c", np.float32)
    n = len(data.train_images)
    for power in (1.0, 0.5):
        print(f"\ninit bound 2.4/F_i^{power:g}")
        for seed in seeds:
            params = net.init_params(np.random.default_rng([seed]), power)
            pick = _hessian_digits(seed, 0, n)
            h = _trainable(hessian_estimate(net, params, data.train_images[pick],
                                            data.train_labels[pick]))  # fmt: skip
            c = net.forward(params, to_input(data.train_images[pick[:100]]))
            std = " ".join(f"{float(c[f'a{i}'].std()):.3f}" for i in range(1, 7))
            every = np.concatenate(list(h.values()))
            eps = eta / (spec.SDLM_MU + every)
            print(
                f"  seed {seed}: std of the weighted sums a1..a6 {std}; eta/(mu+h) at eta={eta:g}"
                f": 1st-99th percentile {np.percentile(eps, 1):.2g} .. "
                f"{np.percentile(eps, 99):.2g} (min {eps.min():.2g}, max {eps.max():.2g})"
            )
            for name, v in h.items():
                print(f"    {name:8s} h median {np.median(v):9.3g}  max {v.max():9.3g}")


def exact_gauss_newton(net, params, images, labels, rng) -> dict:
    """Unbiased estimate of the mean over the digits of diag(J^T L J) (one draw per digit)."""
    total = {k: np.zeros(v.shape) for k, v in params.items()}
    for i in range(len(images)):
        x, lab = to_input(images[i : i + 1], net.dtype), labels[i : i + 1]
        c = net.forward(params, x)
        onehot = np.zeros_like(c["y"])
        onehot[0, lab[0]] = 1
        s = (onehot - net.k.map_loss_backward(c["y"], lab, net.j))[0].astype(np.float64)
        jac = 2 * (c["x6"][0][None, :] - net.centers)  # dy_i/dx6_k, (10, 84)
        # r = e_i - s with i ~ s (none with probability 1 - sum s): E[r r^T] = diag(s) - s s^T,
        # the Hessian of the MAP loss in y; z = +-1: the 2 (1 - sum s) I of the RBF's d2y/dx2.
        r = -s.copy()
        pick = np.searchsorted(np.cumsum(s), rng.random())
        if pick < len(s):
            r[pick] += 1
        z = rng.choice([-1.0, 1.0], jac.shape[1])
        v = jac.T @ r + np.sqrt(max(2 * (1 - s.sum()), 0.0)) * z
        g = net._backward(params, c, np.ascontiguousarray(v[None, :], net.dtype), square=False)
        for k in total:
            total[k] += np.asarray(g[k], np.float64) ** 2
    return {k: v / len(images) for k, v in total.items()}


def exact(data, params, seed):
    net = LeNet5("c", np.float64, fused=False)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    pick = _hessian_digits(seed, 0, len(data.train_images))
    images, labels = data.train_images[pick], data.train_labels[pick]
    paper = _trainable(hessian_estimate(net, params, images, labels))
    true = _trainable(exact_gauss_newton(net, params, images, labels, np.random.default_rng(5)))
    print("exact Gauss-Newton diagonal / the paper's recursion (median over the entries):")
    for name in PARAM_SHAPES:
        ratio = true[name] / np.maximum(paper[name], 1e-30)
        print(f"  {name:8s} recursion median {np.median(paper[name]):9.3g}  exact median "
              f"{np.median(true[name]):9.3g}  ratio median {np.median(ratio):6.3g}")  # fmt: skip


def rho(data, params, epoch, eta, digits, seed):
    net = LeNet5("c", np.float64, fused=False)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    n = len(data.train_images)
    pick = _hessian_digits(seed, epoch, n)
    h = hessian_estimate(net, params, data.train_images[pick], data.train_labels[pick])
    groups = {layer: [k for k in PARAM_SHAPES if k.startswith(layer)] for layer in LAYERS}
    groups["all"] = list(PARAM_SHAPES)
    ratios = {g: [] for g in groups}
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for d in order[:digits]:
        x, lab = to_input(data.train_images[d : d + 1], np.float64), data.train_labels[d : d + 1]
        _, _, g = net.gradients(params, x, lab)

        def loss(q, x=x, lab=lab):
            return float(net.loss(net.penalties(q, x), lab)[0])

        for name, members in groups.items():
            step = {
                k: (eta / (spec.SDLM_MU + h[k]) * g[k] if k in members else 0 * g[k]) for k in g
            }
            slope = sum(float((step[k] * g[k]).sum()) for k in g)
            t = 1e-4
            e = [loss({k: params[k] - s * step[k] for k in params}) for s in (t, 0.0, -t)]
            ratios[name].append((e[0] - 2 * e[1] + e[2]) / t**2 / slope if slope > 0 else 0.0)
    print(
        f"per-digit step ratio rho at eta={eta:g} over {digits} digits (median, 90th percentile):"
    )
    for name, r in ratios.items():
        print(f"  {name:4s} {np.median(r):8.3f} {np.percentile(r, 90):8.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("what", choices=("rates", "exact", "rho"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--checkpoint", help="a training checkpoint (its pass is the next one's)")
    ap.add_argument("--power", type=float, default=1.0, help="init 2.4/F_i^p without --checkpoint")
    ap.add_argument("--eta", type=float, default=spec.rate_for_epoch(0))
    ap.add_argument("--digits", type=int, default=40)
    args = ap.parse_args(argv)
    data = load_mnist(args.data)
    seed, epoch = args.seeds[0], 0
    if args.checkpoint:
        ck = checkpoint.load(args.checkpoint)
        params, epoch = ck.params, int(ck.meta["epoch"])
        seed = int(ck.meta["config"]["seed"])
    else:
        params = LeNet5("c", np.float64).init_params(np.random.default_rng([seed]), args.power)
    if args.what == "rates":
        rates(data, args.seeds, args.eta)
    elif args.what == "exact":
        exact(data, params, seed)
    else:
        rho(data, params, epoch, args.eta, args.digits, seed)


if __name__ == "__main__":
    main()
