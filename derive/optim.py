"""Parameter updates: stochastic diagonal Levenberg-Marquardt and SGD with momentum.

The lecture ends each gradient derivation with the update ``w <- w - eta dJ/dw``;
LeNet-5 (LeCun et al. 1998, Appendix C) scales it per parameter by the inverse of a
damped diagonal curvature, ``w <- w - eta g / (mu + h)``. The optional optimizer is
classical momentum on the batch-mean gradient, ``v <- m v - (lr/B) sum_b g_b``,
``w <- w + v``. The kernels ``sdlm_update`` and ``sgd_momentum_update`` implement them.

Examples
--------
>>> import sympy as sp
>>> sdlm_step(1, sp.Rational(1, 4), 2, 0, sp.Rational(1, 2))  # w=1, eta=1/4, g=2, h=0, mu=1/2
0
>>> momentum_velocities([1, 1], 0, sp.Rational(1, 2), 1)
[-1, -3/2]
"""

from __future__ import annotations

import sympy as sp

from derive.core import EXHAUSTIVE, Derivation, Step, derivation

w, g = sp.symbols("w g", real=True)
h = sp.Symbol("h", nonnegative=True)
eta, mu, rate = sp.symbols("eta mu r", positive=True)
m = sp.Symbol("m", nonnegative=True)
d = sp.Symbol("d", real=True)


def sdlm_step(w_, eta_, g_, h_, mu_):
    """The SDLM update ``w - eta g / (mu + h)``.

    >>> sdlm_step(w, eta, g, h, mu) == w - eta * g / (h + mu)
    True
    """
    return w_ - eta_ * g_ / (mu_ + h_)


def momentum_velocities(grads, v0, m_, r_):
    """Velocities after each step of ``v <- m v - r g_t`` from ``v0`` over ``grads``.

    >>> momentum_velocities([g], 0, m, rate)
    [-g*r]
    """
    out, v = [], v0
    for gt in grads:
        v = m_ * v - r_ * gt
        out.append(sp.expand(v))
    return out


def momentum_step(w_, v_, g_, rate_, momentum_):
    """One step of momentum SGD: ``v' = momentum v - rate g`` and ``w' = w + v'``.

    >>> momentum_step(1, 0, 2, sp.Rational(1, 2), m)
    (0, -1)
    """
    (v_new,) = momentum_velocities([g_], v_, momentum_, rate_)
    return w_ + v_new, v_new


def _unrolled_ok(steps: int) -> bool:
    gs = sp.symbols(f"g1:{steps + 1}", real=True)
    v = momentum_velocities(gs, 0, m, rate)[-1]
    closed = -rate * sum(m ** (steps - t) * gs[t - 1] for t in range(1, steps + 1))
    return sp.expand(v - closed) == 0


def _batch_mean_ok(batch: int) -> bool:
    gs = sp.symbols(f"g1:{batch + 1}", real=True)
    lr = sp.Symbol("lr", positive=True)
    v = momentum_velocities([sum(gs) / batch], 0, m, lr)[-1]
    return sp.expand(v + lr * sum(gs) / batch) == 0


@derivation("opt.sdlm", "Stochastic diagonal Levenberg-Marquardt update")
def _sdlm() -> Derivation:
    model = g * d + (mu + h) * d**2 / 2
    best = -g / (mu + h)
    steps = (
        Step(
            sp.diff(model, d).subs(d, best),
            sp.Integer(0),
            "Along parameter $k$ the loss is modelled by $q(d) = g d + (\\mu + h) d^2 / 2$ "
            "(gradient $g$, Gauss-Newton diagonal $h \\ge 0$, damping $\\mu > 0$); its stationary "
            "point is $d^* = -g / (\\mu + h)$, a minimum since $q'' = \\mu + h > 0$.",
            latex=r"q'(d^*) = 0 \quad\text{at}\quad d^* = -\frac{g}{\mu + h}",
        ),
        Step(
            sdlm_step(w, eta, g, h, mu),
            w + eta * best,
            "The update moves each parameter by the global rate $\\eta$ times that step "
            "(LeCun et al. 1998, Appendix C, eq. 20).",
            latex=r"w' = w - \frac{\eta}{\mu + h}\, g",
        ),
        Step(
            sp.Max(g * (sdlm_step(w, eta, g, h, mu) - w), 0),
            sp.Integer(0),
            "It never goes uphill: $g (w' - w) = -\\eta g^2 / (\\mu + h) \\le 0$ for every $g$, "
            "$h \\ge 0$.",
            check=lambda: (g * (sdlm_step(w, eta, g, h, mu) - w)).is_nonpositive is True,
            note="SymPy's assumptions: η, μ > 0, h ≥ 0, g real",
            latex=r"g\,(w' - w) = -\frac{\eta\, g^2}{\mu + h} \le 0",
        ),
    )
    return Derivation(
        "opt.sdlm",
        "Stochastic diagonal Levenberg-Marquardt update",
        r"LeCun et al. 1998, Appendix C (the lecture's update rule "
        r"$w \leftarrow w - \eta\, \partial J / \partial w$, rescaled)",
        steps,
        summary=(
            "Each parameter takes a Newton step on its own damped quadratic model: the global rate "
            "$\\eta$ divided by $\\mu$ plus the Gauss-Newton second derivative $h$."
        ),
    )


@derivation("opt.sgd_momentum", "SGD with momentum on the batch-mean gradient")
def _momentum() -> Derivation:
    v = sp.Symbol("v", real=True)
    steps = (
        Step(
            momentum_velocities([g], v, m, rate)[0],
            m * v - rate * g,
            "Velocity: the previous velocity decayed by the momentum $m \\in [0, 1)$ minus the "
            "rate $r$ times the gradient; then $w' = w + v'$.",
            latex=r"v' = m\,v - r\,g, \qquad w' = w + v'",
        ),
        Step(
            sp.Symbol("v_B"),
            sp.Symbol("-lr/B sum_b g_b"),
            "From rest, with $r = \\mathrm{lr} / B$ and $g$ the sum of the $B$ per-sample "
            "gradients of a batch, the first step is plain gradient descent on the batch mean ($B "
            "= 1..4$).",
            method=EXHAUSTIVE,
            check=_batch_mean_ok,
            cases=(1, 2, 3, 4),
            latex=r"v_1 = -\frac{lr}{B}\sum_{b=1}^{B} g_b",
        ),
        Step(
            sp.Symbol("v_T"),
            sp.Symbol("-r sum_t m^(T-t) g_t"),
            "Unrolled from $v_0 = 0$, the velocity is the $m$-discounted sum of past gradient "
            "steps ($T = 1..4$ steps).",
            method=EXHAUSTIVE,
            check=_unrolled_ok,
            cases=(1, 2, 3, 4),
            latex=r"v_T = -r \sum_{t=1}^{T} m^{T-t} g_t",
        ),
    )
    return Derivation(
        "opt.sgd_momentum",
        "SGD with momentum on the batch-mean gradient",
        "(not in the lecture; the optional optimizer of lenet5 train)",
        steps,
        summary="Classical momentum: the velocity accumulates discounted gradient steps.",
    )
