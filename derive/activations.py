"""Activation functions and losses with their derivatives (lecture: CNN前向传播, 代价函数E).

Activations: the sigmoid with slope β, ``f = (1 + e^{−βx})^{−1}``; the scaled
hyperbolic tangent ``f = A tanh(S x)`` (the lecture's ``a tanh(bx)``; LeNet-5's
squashing function); ReLU. Losses: squared error ``E = ½‖t − y‖²``; LeNet-5's MAP
criterion ``E = y_D + log(e^{−j} + Σ_i e^{−y_i})`` on RBF penalties; softmax
cross-entropy. Each derivative is proven by ``sympy.diff`` equal to the closed
form the kernels implement.

Examples
--------
>>> import sympy as sp
>>> e = map_criterion((0, 0), 0, 1)  # two classes, both penalties 0, j = 1
>>> e == sp.log(2 + sp.exp(-1)), sp.N(e, 6)
(True, 0.861995)
"""

from __future__ import annotations

import sympy as sp

from derive.convolution import same
from derive.core import EXHAUSTIVE, Derivation, Step, derivation

x = sp.Symbol("x", real=True)
beta, amp, slope = sp.symbols("beta A S", positive=True)


def sigmoid(z, b=beta):
    """``(1 + e^{−b z})^{−1}``.

    >>> sigmoid(0)
    1/2
    """
    return 1 / (1 + sp.exp(-b * z))


def scaled_tanh(z, a=amp, s=slope):
    """``a tanh(s z)``.

    >>> scaled_tanh(0)
    0
    """
    return a * sp.tanh(s * z)


def relu(z):
    """The rectifier ``max(z, 0)``.

    >>> relu(-2), relu(sp.Rational(1, 2))
    (0, 1/2)
    """
    return sp.Max(z, 0)


def leaky_relu(z, slope):
    """The leaky rectifier ``max(z, 0) + slope min(z, 0)``.

    >>> leaky_relu(-2, sp.Rational(1, 10)), leaky_relu(3, sp.Rational(1, 10))
    (-1/5, 3)
    """
    return sp.Max(z, 0) + slope * sp.Min(z, 0)


def map_criterion(y, label: int, j):
    """LeNet-5's MAP criterion for one sample: ``y_D + log(e^{−j} + Σ_i e^{−y_i})``.

    ``y`` are the RBF penalties (smaller = better), ``label`` the correct class D,
    ``j`` the positive constant of the "rubbish" class.
    """
    return y[label] + sp.log(sp.exp(-j) + sum(sp.exp(-v) for v in y))


def softmax_xent(z, label: int):
    """``−log softmax(z)_D = −z_D + log Σ_i e^{z_i}``."""
    return -z[label] + sp.log(sum(sp.exp(v) for v in z))


def _real_symbols(stem: str, n: int):
    return sp.symbols(f"{stem}_0:{n}", real=True)


def _zero(expr) -> bool:
    return sp.simplify(expr) == 0


# --- activations ------------------------------------------------------------------


@derivation("act.sigmoid", "Sigmoid with slope β and its derivative")
def _sigmoid() -> Derivation:
    fx = sigmoid(x)
    steps = (
        Step(
            sp.diff(fx, x),
            beta * fx * (1 - fx),
            "sympy.diff of the lecture's $f(x) = (1 + e^{-\\beta x})^{-1}$ is $\\beta f (1 - f)$.",
            latex=r"\frac{d}{dx}\left(1 + e^{-\beta x}\right)^{-1} = \beta f(x)(1 - f(x))",
        ),
        Step(
            sp.Subs(fx, x, 0),
            sp.Rational(1, 2),
            "$f(0) = 1/2$, whatever $\\beta$.",
        ),
        Step(
            sp.Subs(sp.Derivative(fx, x), x, 0),
            beta / 4,
            "The slope at 0 is $\\beta/4$: $\\beta$ sets the steepness.",
        ),
    )
    return Derivation(
        "act.sigmoid",
        "Sigmoid with slope β and its derivative",
        r"CNN前向传播 ($f(x) = (1 + e^{-\beta x})^{-1}$)",
        steps,
        summary="The logistic sigmoid with slope $\\beta$; its derivative needs only $f$ itself.",
    )


@derivation("act.scaled_tanh", "Scaled tanh A·tanh(S·x) and its derivative")
def _scaled_tanh() -> Derivation:
    fx = scaled_tanh(x)
    d = sp.diff(fx, x)
    steps = (
        Step(
            d,
            amp * slope * (1 - sp.tanh(slope * x) ** 2),
            "sympy.diff of $f(x) = A \\tanh(S x)$ (the lecture's $a \\tanh(bx)$).",
            latex=r"\frac{d}{dx} A \tanh(S x) = A S \left(1 - \tanh^2(S x)\right)",
        ),
        Step(
            d,
            slope / amp * (amp**2 - fx**2),
            "In terms of the output $f$: $f' = (S/A)(A^2 - f^2)$, so back-propagation can reuse "
            "$f$.",
            latex=r"f'(x) = \frac{S}{A}\left(A^2 - f(x)^2\right)",
        ),
        Step(
            amp * sp.tanh(-slope * x, evaluate=False),
            -fx,
            "$f$ is odd: $f(-x) = -f(x)$ (symmetric outputs, as LeNet-5 wants).",
        ),
    )
    return Derivation(
        "act.scaled_tanh",
        "Scaled tanh A·tanh(S·x) and its derivative",
        r"CNN前向传播 ($f(x) = a \tanh(bx)$)",
        steps,
        summary=(
            "The scaled hyperbolic tangent; LeNet-5 uses $A = 1.7159$, $S = 2/3$ (see "
            "lenet5.squash)."
        ),
    )


#: Non-zero points where ReLU's derivative is checked (at 0 it is not differentiable).
_RELU_POINTS = tuple(sp.Rational(v) for v in ("-3", "-1/2", "-1/1000", "1/1000", "1/2", "3"))


def _relu_split_ok(relu) -> bool:
    """max(0, x) = (x + |x|)/2 on each of x > 0, x < 0, x = 0 (SymPy decides each case)."""
    p = sp.Symbol("p", positive=True)
    halves = (x + sp.Abs(x)) / 2
    return all(_zero(relu.subs(x, v) - halves.subs(x, v)) for v in (p, -p, 0))


@derivation("act.relu", "ReLU and its derivative")
def _relu() -> Derivation:
    rect = relu(x)
    steps = (
        Step(
            rect,
            (x + sp.Abs(x)) / 2,
            "$\\max(0, x) = (x + |x|)/2$ for real $x$.",
            check=lambda: _relu_split_ok(rect),
            note="proof by cases: x = p > 0, x = -p < 0, x = 0",
        ),
        Step(
            sp.Symbol("Derivative(Max(0, x), x)"),
            sp.Symbol("[x > 0]"),
            "At every $x \\ne 0$, sympy.diff gives 1 for $x > 0$ and 0 for $x < 0$. At $x = 0$ "
            "ReLU has no derivative; the kernels use the subgradient 0 ($dy \\cdot [z > 0]$).",
            method=EXHAUSTIVE,
            check=lambda v: sp.diff(rect, x).subs(x, v) == (1 if v > 0 else 0),
            cases=_RELU_POINTS,
            latex=r"\frac{d}{dx}\max(0, x) = [x > 0] \quad (x \neq 0)",
        ),
    )
    return Derivation(
        "act.relu",
        "ReLU and its derivative",
        "(not in the lecture; provided by the kernels for comparison)",
        steps,
        summary="The rectifier $\\max(0, x)$: derivative 1 for positive inputs, 0 for negative.",
    )


@derivation("act.leaky_relu", "Leaky ReLU and its derivative")
def _leaky_relu() -> Derivation:
    a = sp.Symbol("a", positive=True)
    f = leaky_relu(x, a)
    branches = sp.Piecewise((x, x > 0), (a * x, True))
    steps = (
        Step(
            f,
            branches,
            "$\\max(x, 0) + a \\min(x, 0)$ is $x$ for $x > 0$ and $a x$ otherwise (the form the "
            "kernels compute; a NaN input takes the second branch and stays NaN).",
            check=lambda: (
                all(_zero((f - branches).subs(x, v)) for v in (sp.Symbol("p", positive=True), 0))
                and _zero((f - branches).subs(x, -sp.Symbol("p", positive=True)))
            ),
            note="proof by cases: x = p > 0, x = 0, x = -p < 0",
        ),
        Step(
            sp.Symbol("Derivative(leaky_relu(x, a), x)"),
            sp.Symbol("[x > 0] + a [x < 0]"),
            "At every $x \\ne 0$, sympy.diff gives 1 for $x > 0$ and $a$ for $x < 0$; at 0 the "
            "kernels use $a$ ($dy \\cdot a$).",
            method=EXHAUSTIVE,
            check=lambda v: sp.diff(f, x).subs(x, v) == (1 if v > 0 else a),
            cases=_RELU_POINTS,
            latex=r"\frac{d}{dx}\left(\max(x, 0) + a \min(x, 0)\right) = [x > 0] + a\,[x < 0] "
            r"\quad (x \neq 0)",
        ),
    )
    return Derivation(
        "act.leaky_relu",
        "Leaky ReLU and its derivative",
        "(not in the lecture; provided by the kernels, as torch.nn.functional.leaky_relu)",
        steps,
        summary="The leaky rectifier: slope 1 for positive inputs, a small slope $a$ otherwise.",
    )


# --- losses --------------------------------------------------------------------------


def _squared_error_grad_ok(case) -> bool:
    n, c = case
    t = [_real_symbols(f"t{p}", c) for p in range(n)]
    y = [_real_symbols(f"y{p}", c) for p in range(n)]
    total = sum(sp.Rational(1, 2) * sum((tk - yk) ** 2 for tk, yk in zip(tp, yp, strict=True))
                for tp, yp in zip(t, y, strict=True))  # fmt: skip
    return all(same(sp.diff(total, y[p][k]), y[p][k] - t[p][k]) for p in range(n) for k in range(c))


@derivation("loss.squared_error", "Squared error and its gradient")
def _squared_error() -> Derivation:
    t, y = _real_symbols("t", 3), _real_symbols("y", 3)
    tv, yv = sp.Matrix(t), sp.Matrix(y)
    e = sp.Rational(1, 2) * sum((tk - yk) ** 2 for tk, yk in zip(t, y, strict=True))
    steps = (
        Step(
            e,
            sp.Rational(1, 2) * (tv - yv).dot(tv - yv),
            "$E^n = \\frac12 \\sum_k (t_k - y_k)^2 = \\frac12 \\lVert t - y \\rVert^2$ ($c = 3$ "
            "outputs shown).",
            latex=r"E^n = \frac{1}{2}\sum_{k=1}^{c}(t_k^n - y_k^n)^2 = "
            r"\frac{1}{2}\lVert t^n - y^n \rVert_2^2",
        ),
        Step(
            sp.Matrix([sp.diff(e, v) for v in y]),
            yv - tv,
            "Its gradient with respect to the outputs is y - t.",
            latex=r"\frac{\partial E^n}{\partial y^n} = y^n - t^n",
        ),
        Step(
            sp.Symbol("dE^N/dy^n"),
            sp.Symbol("y^n - t^n"),
            "$E^N = \\sum_n E^n$: each sample's outputs only enter its own term, so the gradient "
            "of the $N$-sample sum with respect to $y^n$ is $y^n - t^n$ (cases: $N$, $c$).",
            method=EXHAUSTIVE,
            check=_squared_error_grad_ok,
            cases=((1, 1), (2, 3), (3, 2)),
            latex=r"E^N = \frac{1}{2}\sum_{n=1}^{N}\sum_{k=1}^{c}(t_k^n - y_k^n)^2, \quad "
            r"\frac{\partial E^N}{\partial y^n} = y^n - t^n",
        ),
    )
    return Derivation(
        "loss.squared_error",
        "Squared error and its gradient",
        "代价函数E (平方误差代价函数)",
        steps,
        summary="The squared-error cost of one sample and of N samples, and its gradient.",
    )


def _map_grad_ok(case) -> bool:
    n, label = case
    y, j = _real_symbols("y", n), sp.Symbol("j", positive=True)
    e = map_criterion(y, label, j)
    denom = sp.exp(-j) + sum(sp.exp(-v) for v in y)
    return all(
        _zero(sp.diff(e, y[i]) - (int(i == label) - sp.exp(-y[i]) / denom)) for i in range(n)
    )


def _softmax_grad_ok(case) -> bool:
    n, label = case
    z = _real_symbols("z", n)
    total = sum(sp.exp(v) for v in z)
    return all(
        _zero(sp.diff(softmax_xent(z, label), z[i]) - (sp.exp(z[i]) / total - int(i == label)))
        for i in range(n)
    )


_LABEL_CASES = tuple((n, d) for n in (1, 2, 3, 4) for d in range(n))


@derivation("loss.map", "LeNet-5's MAP criterion and its gradient")
def _map() -> Derivation:
    y, j = _real_symbols("y", 3), sp.Symbol("j", positive=True)
    e = map_criterion(y, 0, j)
    denom = sp.exp(-j) + sum(sp.exp(-v) for v in y)
    posterior = sp.exp(-y[0]) / denom
    grad_sum = sum(sp.diff(e, v) for v in y)
    steps = (
        Step(
            e,
            -sp.log(posterior),
            "$E = y_D + \\log(e^{-j} + \\sum_i e^{-y_i})$ is minus the log of the posterior of the "
            "correct class $D$ when class $i$ has likelihood $e^{-y_i}$ and a 'rubbish' class has "
            "$e^{-j}$ (3 classes, $D = 0$ shown). Minimising it pulls $y_D$ down and pushes the "
            "other penalties up, unlike plain MSE on $y_D$.",
            check=lambda: _zero(sp.expand_log(e + sp.log(posterior), force=True)),
            note="log expanded (all arguments positive) and simplified",
        ),
        Step(
            sp.Symbol("dE/dy_i"),
            sp.Symbol("[i = D] - exp(-y_i)/(exp(-j) + sum_k exp(-y_k))"),
            "Gradient w.r.t. each penalty, for every class count 1..4 and every label D.",
            method=EXHAUSTIVE,
            check=_map_grad_ok,
            cases=_LABEL_CASES,
            latex=(
                r"\frac{\partial E}{\partial y_i} = [i = D] - "
                r"\frac{e^{-y_i}}{e^{-j} + \sum_k e^{-y_k}}"
            ),
        ),
        Step(
            grad_sum,
            sp.exp(-j) / denom,
            "The gradient components sum to $e^{-j}/(e^{-j} + \\sum_i e^{-y_i}) > 0$: the rubbish "
            "class keeps the criterion from being minimised by driving every penalty to 0.",
            latex=r"\sum_i \frac{\partial E}{\partial y_i} = "
            r"\frac{e^{-j}}{e^{-j} + \sum_k e^{-y_k}}",
        ),
    )
    return Derivation(
        "loss.map",
        "LeNet-5's MAP criterion and its gradient",
        "LeNet-5 output layer (RBF 输出 $= -\\log$ likelihood); LeCun et al. 1998, eq. (9)",
        steps,
        summary=(
            "LeNet-5 trains its RBF penalties $y$ with the maximum a posteriori criterion; $j$ is "
            "a positive constant (derive.lenet5.MAP_J). Its gradient is the indicator of the "
            "correct class minus the posterior of each class."
        ),
    )


@derivation("loss.softmax_xent", "Softmax cross-entropy and its gradient")
def _softmax() -> Derivation:
    z = _real_symbols("z", 3)
    total = sum(sp.exp(v) for v in z)
    steps = (
        Step(
            softmax_xent(z, 0),
            -sp.log(sp.exp(z[0]) / total),
            "$-\\log \\mathrm{softmax}(z)_D = -z_D + \\log \\sum_i e^{z_i}$ (3 classes, $D = 0$ "
            "shown).",
            check=lambda: _zero(
                sp.expand_log(softmax_xent(z, 0) + sp.log(sp.exp(z[0]) / total), force=True)
            ),
            note="log expanded and simplified",
        ),
        Step(
            sp.Symbol("dE/dz_i"),
            sp.Symbol("softmax(z)_i - [i = D]"),
            "Gradient: softmax minus the one-hot label, every class count 1..4 and label D.",
            method=EXHAUSTIVE,
            check=_softmax_grad_ok,
            cases=_LABEL_CASES,
            latex=r"\frac{\partial E}{\partial z_i} = \mathrm{softmax}(z)_i - [i = D]",
        ),
    )
    return Derivation(
        "loss.softmax_xent",
        "Softmax cross-entropy and its gradient",
        "(not in the lecture; the usual classifier loss, provided by the kernels)",
        steps,
        summary="Cross-entropy of the softmax of the logits; gradient softmax - onehot.",
    )
