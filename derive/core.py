"""The derivation core: checked steps, derivations, and the registry.

A :class:`Derivation` is an ordered chain of :class:`Step` objects, each an
equation ``lhs = rhs`` with a justification and a verification method:

``symbolic``
    SymPy proves ``lhs - rhs == 0`` for all values of the free symbols
    (by default ``sympy.simplify``; a step may supply its own proof callable).
``exhaustive``
    A callable substitutes every concrete case listed in ``cases`` (small
    sizes, exact rational data) and SymPy checks each in exact arithmetic.
``unverified``
    Nothing could be checked; the step says why. It is never silently accepted:
    the derivation then reports itself as unverified.

Derivations are registered lazily (``@derivation(...)`` on a builder function)
so that listing ids is instant and building one costs only that one.

Examples
--------
>>> import sympy as sp
>>> x = sp.Symbol("x")
>>> s = Step(sp.sin(x) ** 2 + sp.cos(x) ** 2, sp.Integer(1), "Pythagoras")
>>> s.verify().ok
True
>>> Step(x, x + 1, "wrong").verify().ok
False
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.pretty.pretty import PrettyPrinter
from sympy.printing.pretty.stringpict import prettyForm, stringPict

SYMBOLIC = "symbolic"
EXHAUSTIVE = "exhaustive"
UNVERIFIED = "unverified"
METHODS = (SYMBOLIC, EXHAUSTIVE, UNVERIFIED)


@dataclass(frozen=True)
class StepResult:
    """Outcome of verifying one step.

    ``ok`` is True only when the step was actually proven (symbolically or on
    every listed concrete case). ``detail`` says what was checked or what failed.
    """

    ok: bool
    method: str
    detail: str
    seconds: float


@dataclass(frozen=True)
class Step:
    """One equation ``lhs = rhs`` of a derivation, with how it is proven.

    Parameters
    ----------
    lhs, rhs
        SymPy expressions (or matrices). Rendered as ``latex(lhs) = latex(rhs)``.
    why
        The justification in words (lecture reference, rule applied).
    method
        ``"symbolic"`` (default), ``"exhaustive"`` or ``"unverified"``.
    check
        For ``symbolic``: optional callable returning True when proven; default
        is ``simplify(lhs - rhs) == 0`` (element-wise for matrices).
        For ``exhaustive``: required callable ``check(case) -> bool`` run on
        every element of ``cases`` in exact arithmetic.
    cases
        The concrete cases of an exhaustive check (e.g. tuples of sizes).
    note
        For ``unverified``: why it cannot be checked. Otherwise optional extra
        text describing the check.
    latex
        Optional LaTeX override for steps whose SymPy form renders poorly
        (e.g. an unevaluated integral with a named operator).

    Examples
    --------
    >>> import sympy as sp
    >>> n = sp.Symbol("n", integer=True, positive=True)
    >>> st = Step(sp.Integer(2) * n, n + n, "doubling")
    >>> st.verify().method
    'symbolic'
    >>> ex = Step(n**2, n * n, "square", method="exhaustive",
    ...           check=lambda c: (c**2) == c * c, cases=range(1, 4))
    >>> ex.verify().detail
    'exhaustive: 3 cases in exact arithmetic'
    """

    lhs: object
    rhs: object
    why: str
    method: str = SYMBOLIC
    check: Callable | None = None
    cases: Iterable = ()
    note: str = ""
    latex: str | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"step {self.why!r}: unknown method {self.method!r}; use {METHODS}")
        if self.method == EXHAUSTIVE and self.check is None:
            raise ValueError(f"step {self.why!r}: an exhaustive step needs a check callable")
        if self.method == UNVERIFIED and not self.note:
            raise ValueError(f"step {self.why!r}: an unverified step must say why (note=...)")
        # Freeze the cases so a generator is not consumed by the first verify().
        object.__setattr__(self, "cases", tuple(self.cases))

    def verify(self) -> StepResult:
        """Prove the step; never raises for a false step, returns ``ok=False``."""
        t0 = time.perf_counter()
        try:
            ok, detail = self._verify()
        except Exception as exc:  # a proof that crashes is a failed proof, with the reason
            ok, detail = False, f"{self.method} check raised {type(exc).__name__}: {exc}"
        return StepResult(ok, self.method, detail, time.perf_counter() - t0)

    def _verify(self) -> tuple[bool, str]:
        if self.method == UNVERIFIED:
            return False, f"unverified: {self.note}"
        if self.method == EXHAUSTIVE:
            failed = [c for c in self.cases if not self.check(c)]
            if not self.cases:
                return False, "exhaustive: no cases given"
            if failed:
                return False, f"exhaustive: fails for {failed[:3]}"
            extra = f"; {self.note}" if self.note else ""
            return True, f"exhaustive: {len(self.cases)} cases in exact arithmetic{extra}"
        if self.check is not None:
            return bool(self.check()), "symbolic: " + (self.note or "custom SymPy proof")
        return is_zero(self.lhs, self.rhs), "symbolic: SymPy simplifies lhs − rhs to 0"

    def to_latex(self) -> str:
        """LaTeX of the equation ``lhs = rhs`` (sums over all integers as ``\\sum_{m,n}``)."""
        if self.latex is not None:
            return self.latex
        return f"{latex(self.lhs)} = {latex(self.rhs)}"

    def to_text(self) -> str:
        """The equation as Unicode mathematics (SymPy's pretty printer), possibly several lines.

        When ``lhs`` and ``rhs`` are the same object (a computed value equal to the printed
        one, shown with a LaTeX override in the book), the value is printed once, named by
        the override's left-hand side; when a side
        is only a name for a claim checked exhaustively, the LaTeX override is shown as text.

        >>> import sympy as sp
        >>> x = sp.Symbol("x")
        >>> print(Step(sp.Derivative(x**2, x), 2 * x, "power rule").to_text())
        d ⎛ 2⎞
        ──⎝x ⎠ = 2⋅x
        dx
        """
        names_only = isinstance(self.lhs, sp.Symbol) and isinstance(self.rhs, sp.Symbol)
        if self.latex is not None and (
            names_only or _placeholder(self.lhs) or _placeholder(self.rhs)
        ):
            return math_text(self.latex)  # a side that only names the claim: its LaTeX
        if self.lhs == self.rhs:
            if self.latex is not None and " = " in self.latex:  # name the computed side
                return pretty(math_text(self.latex.rsplit(" = ", 1)[0]), self.rhs)
            return pretty(self.rhs)
        return pretty(self.lhs, self.rhs)


def _placeholder(side) -> bool:
    # A Symbol named like "xcorr_valid(a_i, delta_j)" stands for a claim checked elsewhere
    # (exhaustively); its LaTeX override is the readable form.
    return isinstance(side, sp.Symbol) and not side.name.isidentifier()


class _BookLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer, with a sum over all integers written as the lecture writes
    it (``\\sum_{m,n}``) instead of ``\\sum_{\\substack{-\\infty \\le m \\le \\infty ...}}``."""

    def _print_Sum(self, expr):
        if all(lo == -sp.oo and hi == sp.oo for _, lo, hi in expr.limits):
            names = ",".join(self._print(var) for var, _, _ in expr.limits)
            body = self._print(expr.function)
            if isinstance(expr.function, sp.Add):
                body = rf"\left({body}\right)"
            return rf"\sum_{{{names}}} {body}"
        return super()._print_Sum(expr)


def latex(expr) -> str:
    r"""LaTeX of a SymPy object as the book prints it.

    >>> m, n, i = sp.symbols("m n i", integer=True)
    >>> f = sp.Function("f")
    >>> latex(sp.Sum(f(m) * f(i - m), (m, -sp.oo, sp.oo)))
    '\\sum_{m} f{\\left(m \\right)} f{\\left(i - m \\right)}'
    >>> latex(sp.Sum(f(m, n), (m, -sp.oo, sp.oo), (n, -sp.oo, sp.oo)))
    '\\sum_{m,n} f{\\left(m,n \\right)}'
    >>> latex(sp.Mul(sp.Add(sp.Mul(2, 2, evaluate=False), 1, evaluate=False), 6, evaluate=False))
    '\\left(2 \\cdot 2 + 1\\right) \\cdot 6'
    """
    return _BookLatexPrinter(_settings(expr)).doprint(expr)


def _settings(expr) -> dict:
    # Arithmetic on numbers held unevaluated (Add/Mul with evaluate=False) is a side that
    # shows its computation: print it in the order it was written, products with a dot.
    held = isinstance(expr, sp.Basic) and not expr.free_symbols and expr.doit() != expr
    return {"order": "none", "mul_symbol": "dot"} if held else {}


def pretty(*exprs) -> str:
    """Unicode mathematics of one expression, or of several joined by ``=`` (a string is
    shown as it is).

    >>> print(pretty(sp.Matrix([[1, 2]]), sp.Matrix([[1, 2]])))
    [1  2] = [1  2]
    >>> print(pretty(sp.Add(sp.Mul(60, 25, evaluate=False), 16, evaluate=False), 1516))
    60⋅25 + 16 = 1516
    """

    def form_of(expr):
        if isinstance(expr, str):
            return prettyForm(expr)
        settings = {"use_unicode": True, "wrap_line": False, **_settings(expr)}
        settings.pop("mul_symbol", None)  # the pretty printer always writes ⋅
        return PrettyPrinter(settings)._print(expr)

    form = form_of(exprs[0])
    for expr in exprs[1:]:
        form = prettyForm(*stringPict.next(form, " = ", form_of(expr)))
    return "\n".join(line.rstrip() for line in form.render(wrap_line=False).splitlines())


# ---------------------------------------------------------------------------
# LaTeX as terminal text (for inline $...$ in prose and for LaTeX-only steps)
# ---------------------------------------------------------------------------

LATEX_UNICODE = {
    r"\sum": "Σ", r"\prod": "Π", r"\int": "∫", r"\partial": "∂", r"\nabla": "∇",
    r"\in": "∈", r"\notin": "∉", r"\otimes": "⊗", r"\odot": "⊙", r"\times": "×",
    r"\cdot": "·", r"\star": "⋆", r"\ast": "*", r"\leftarrow": "←", r"\to": "→",
    r"\mapsto": "↦", r"\rightarrow": "→", r"\Rightarrow": "⇒", r"\le": "≤", r"\leq": "≤",
    r"\ge": "≥", r"\geq": "≥", r"\ne": "≠", r"\neq": "≠", r"\approx": "≈", r"\pm": "±",
    r"\infty": "∞", r"\lfloor": "⌊", r"\rfloor": "⌋", r"\lceil": "⌈", r"\rceil": "⌉",
    r"\lVert": "‖", r"\rVert": "‖", r"\|": "‖", r"\langle": "⟨", r"\rangle": "⟩",
    r"\circ": "°", r"\dots": "…", r"\ldots": "…", r"\cdots": "⋯", r"\quad": "  ",
    r"\qquad": "    ", r"\,": " ", r"\;": " ", r"\:": " ", r"\!": "", r"\ ": " ", r"\{": "{",
    r"\}": "}", r"\log": "log", r"\exp": "exp", r"\tanh": "tanh", r"\max": "max",
    r"\min": "min", r"\prime": "′", r"\%": "%", r"\_": "_", r"\lvert": "|", r"\rvert": "|",
    r"\mid": "|", r"\forall": "∀", r"\exists": "∃", r"\neg": "¬", r"\land": "∧", r"\lor": "∨",
    r"\equiv": "≡", r"\sim": "∼", r"\propto": "∝", r"\emptyset": "∅", r"\subset": "⊂",
    r"\cup": "∪", r"\cap": "∩", r"\hat": "", r"\bar": "", r"\tilde": "",
}  # fmt: skip
GREEK_NAMES = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
    "rho varsigma sigma tau upsilon phi chi psi omega"
).split()
for _k, _name in enumerate(GREEK_NAMES):
    LATEX_UNICODE["\\" + _name] = chr(0x3B1 + _k)
for _upper, _name in zip(
    "ΓΔΘΛΞΠΣΦΨΩ", "Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega".split(), strict=True
):
    LATEX_UNICODE["\\" + _name] = _upper

# Commands whose argument is shown as it is, and commands dropped with their argument.
_KEEP_ARG = {r"\mathrm", r"\text", r"\textit", r"\textbf", r"\mathbf", r"\mathcal", r"\texttt",
             r"\operatorname", r"\mathit", r"\boldsymbol", r"\emph"}  # fmt: skip
_DROP = {r"\left", r"\right", r"\displaystyle", r"\big", r"\Big", r"\bigg", r"\Bigg"}
_DROP_WITH_ARG = {r"\setlength", r"\begin", r"\end", r"\label"}


def math_text(latex: str) -> str:
    r"""LaTeX mathematics as terminal text: symbols as Unicode, ``\frac{a}{b}`` as ``a/b``,
    wrappers such as ``\mathrm`` dropped, line breaks of ``aligned`` kept as new lines.

    >>> math_text(r"\delta_j = \sum_{k \in C_k} \delta_k k_{kj} f'(z_j)")
    "δ_j = Σ_{k ∈ C_k} δ_k k_kj f'(z_j)"
    >>> math_text(r"\frac{d}{dx}\max\left(0, x\right) = [x > 0] \quad (x \neq 0)")
    'd/dx max(0, x) = [x > 0] (x ≠ 0)'
    >>> math_text(r"\frac{\partial J}{\partial b_j} = \sum_{u,v} \delta_j(u,v)")
    '∂J/∂b_j = Σ_{u,v} δ_j(u,v)'
    """
    out, k = [], 0
    while k < len(latex):
        ch = latex[k]
        if ch == "\\":
            end = k + 1
            while end < len(latex) and latex[end].isalpha():
                end += 1
            if end == k + 1:
                end += 1  # a one-character command such as \, or \{ or \\
            name = latex[k:end]
            k = end
            if name == "\\\\":
                out.append("\n")
            elif name in LATEX_UNICODE:
                out.append(LATEX_UNICODE[name])
            elif name in (r"\frac", r"\tfrac", r"\dfrac"):
                num, k = _argument(latex, k)
                den, k = _argument(latex, k)
                num, den = num.replace("∂ ", "∂"), den.replace("∂ ", "∂")
                out.append(f"{_grouped(num)}/{_grouped(den)} ")
            elif name == r"\sqrt":
                arg, k = _argument(latex, k)
                out.append(f"√{_grouped(arg)}")
            elif name in _KEEP_ARG:
                arg, k = _argument(latex, k)
                out.append(arg)
            elif name in _DROP_WITH_ARG:
                _, k = _argument(latex, k)
                if name == r"\setlength":
                    _, k = _argument(latex, k)
            elif name not in _DROP:
                out.append(name)
            continue
        if ch == "{" and out and out[-1][-1:] in ("_", "^"):
            close = _matching_brace(latex, k)
            inner = math_text(latex[k + 1 : close])
            # a_{kj} reads fine as a_kj; a_{k ∈ C} keeps its braces
            out.append(inner if inner.isalnum() else "{" + inner + "}")
            k = close + 1
            continue
        if ch not in "{}&":
            out.append(ch)
        k += 1
    text = "".join(out)
    return "\n".join(" ".join(line.split()) for line in text.split("\n") if line.strip())


def _argument(latex: str, k: int) -> tuple[str, int]:
    # The next {...} group (or single character) from k, as text, and the index after it.
    while k < len(latex) and latex[k] == " ":
        k += 1
    if k < len(latex) and latex[k] == "{":
        close = _matching_brace(latex, k)
        return math_text(latex[k + 1 : close]), close + 1
    return (latex[k], k + 1) if k < len(latex) else ("", k)


def _grouped(text: str) -> str:
    return (
        text
        if len(text) <= 1
        or text.replace("_", "").isalnum()
        or " " not in text
        and ("+" not in text and "-" not in text[1:])
        else f"({text})"
    )


def _matching_brace(text: str, start: int) -> int:
    depth = 0
    for k in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return k
    return len(text) - 1


def is_zero(lhs, rhs) -> bool:
    """True when SymPy proves ``lhs == rhs`` (element-wise for matrices).

    A side may hold its computation unevaluated (``Derivative``, ``Subs``, an
    ``evaluate=False`` sum) so the book shows it; it is evaluated (``doit``) here.

    >>> import sympy as sp
    >>> x = sp.Symbol("x")
    >>> is_zero(sp.Matrix([x + x]), sp.Matrix([2 * x]))
    True
    >>> is_zero(sp.Subs(sp.Derivative(x**3, x), x, 2), sp.Integer(12))
    True
    """
    diff = sp.Matrix(lhs) - sp.Matrix(rhs) if _is_matrix(lhs) else lhs - rhs
    if _is_matrix(diff):
        return all(sp.simplify(sp.sympify(d).doit()) == 0 for d in diff)
    return sp.simplify(sp.sympify(diff).doit()) == 0


def _is_matrix(obj) -> bool:
    return isinstance(obj, sp.MatrixBase | list | tuple)


@dataclass(frozen=True)
class Derivation:
    """A titled, ordered chain of checked steps taken from the lecture.

    Parameters
    ----------
    id
        Stable dotted id (``conv.discrete_2d``); kernels and generated files cite it.
    title
        Short human title.
    source
        Where in the lecture (slide title / section) the formulas come from.
    steps
        The equations, in order.
    summary
        One paragraph of prose shown above the steps.
    data
        Named SymPy objects that code may reuse (e.g. the explicit small-kernel
        gradient expressions). Not rendered.
    """

    id: str
    title: str
    source: str
    steps: tuple[Step, ...]
    summary: str = ""
    data: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.steps:
            raise ValueError(f"derivation {self.id!r} has no steps")
        object.__setattr__(self, "steps", tuple(self.steps))

    def verify(self) -> tuple[StepResult, ...]:
        """Verify every step, in order."""
        return tuple(s.verify() for s in self.steps)

    def __str__(self) -> str:
        """The derivation as terminal text (:func:`derive.render.to_text`), verified now."""
        from derive import render  # render imports core: deferred

        return render.to_text(self, self.verify())

    # Jupyter displays an object through these (Markdown first where the front end
    # renders it, LaTeX otherwise); the steps are verified at display time.
    def _repr_markdown_(self) -> str:
        from derive import render

        return render.to_markdown(self, self.verify())

    def _repr_latex_(self) -> str:
        r"""The steps as one displayed formula block (MathJax renders LaTeX math only):
        title and reasons as ``\text`` (their ``$...$`` parts as mathematics), each
        equation on its own line.

        >>> import sympy as sp
        >>> x = sp.Symbol("x")
        >>> d = Derivation("demo.x", "Demo", "here", [Step(x + x, 2 * x, "add $x$ to x_1")])
        >>> print(d._repr_latex_())
        $$\begin{array}{l}
        \textbf{Demo}\ \texttt{(demo.x)}\\
        \text{1. add }x\text{ to x\_1}\\
        \displaystyle 2 x = 2 x\\
        \end{array}$$
        """
        from derive import render

        def line(text: str) -> str:
            return "".join(
                chunk if is_math else r"\text{" + _mathjax_text(chunk) + "}"
                for is_math, chunk in render.split_math(text)
            )

        title = line(self.title).replace(r"\text{", r"\textbf{")
        rows = [title + r"\ \texttt{(" + _mathjax_text(self.id) + ")}"]
        for n, step in enumerate(self.steps, 1):
            rows.append(line(f"{n}. {step.why}"))
            rows.append(r"\displaystyle " + step.to_latex())
        return "$$\\begin{array}{l}\n" + "".join(r + "\\\\\n" for r in rows) + "\\end{array}$$"


def _mathjax_text(text: str) -> str:
    # Text inside MathJax's \text{}: LaTeX specials escaped, Unicode (Chinese too) kept.
    return "".join("\\" + ch if ch in "#$%&_{}" else ch for ch in text)


@dataclass(frozen=True)
class _Entry:
    id: str
    title: str
    module: str
    builder: Callable[[], Derivation]


_REGISTRY: dict[str, _Entry] = {}
_CACHE: dict[str, Derivation] = {}


def derivation(id: str, title: str):
    """Register a builder ``() -> Derivation`` under ``id`` (lazily built).

    The built derivation must carry the same id and title, otherwise
    :func:`get` raises naming the id.
    """

    def register(builder: Callable[[], Derivation]):
        if id in _REGISTRY:
            raise ValueError(f"derivation id {id!r} registered twice")
        _REGISTRY[id] = _Entry(id, title, builder.__module__, builder)
        return builder

    return register


def ids() -> list[str]:
    """All registered derivation ids, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def title(id: str) -> str:
    """The title of a registered derivation, without building it."""
    return _entry(id).title


def module_of(id: str) -> str:
    """The derive module that defines a derivation (cited by generated headers)."""
    return _entry(id).module


def get(id: str) -> Derivation:
    """Build (once) and return the derivation ``id``.

    Raises
    ------
    KeyError
        For an unknown id; the message suggests close ids.
    """
    entry = _entry(id)
    if id not in _CACHE:
        d = entry.builder()
        if d.id != id or d.title != entry.title:
            raise ValueError(
                f"derivation {id!r}: builder returned id={d.id!r} title={d.title!r}, "
                f"registered title {entry.title!r}"
            )
        _CACHE[id] = d
    return _CACHE[id]


def suggest(id: str) -> list[str]:
    """Registered ids close to ``id`` (for error messages)."""
    known = ids()
    close = difflib.get_close_matches(id, known, n=5, cutoff=0.5)
    prefix = [k for k in known if k.startswith(id.split(".")[0] + ".") and k not in close]
    return close + prefix[: max(0, 5 - len(close))]


class UnknownDerivation(KeyError):
    """Raised for an id that is not registered; ``str()`` suggests close ids."""

    def __str__(self):  # KeyError quotes its argument; we want a readable sentence
        return self.args[0]


def _entry(id: str) -> _Entry:
    _load_all()
    try:
        return _REGISTRY[id]
    except KeyError:
        hint = suggest(id)
        tail = f"; did you mean: {', '.join(hint)}?" if hint else ""
        raise UnknownDerivation(f"unknown derivation id {id!r}{tail}") from None


def _load_all() -> None:
    # Importing the derivation modules runs their @derivation decorators.
    from derive import catalog  # noqa: F401


def cache_dir() -> Path:
    """Where proven results are recorded: ``$SYMCONV_CACHE``, else ``~/.cache/symconv``.

    >>> cache_dir().name in {"symconv", os.path.basename(os.environ.get("SYMCONV_CACHE", ""))}
    True
    """
    base = os.environ.get("SYMCONV_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "symconv"
    )
    return Path(base)
