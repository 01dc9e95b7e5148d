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
        return is_zero(self.lhs, self.rhs), "symbolic: simplify(lhs - rhs) == 0"

    def to_latex(self) -> str:
        """LaTeX of the equation ``lhs = rhs``."""
        if self.latex is not None:
            return self.latex
        return f"{sp.latex(self.lhs)} = {sp.latex(self.rhs)}"

    def to_text(self) -> str:
        """Readable one-line text of the equation."""
        return f"{sp.sstr(self.lhs)} = {sp.sstr(self.rhs)}"


def is_zero(lhs, rhs) -> bool:
    """True when SymPy proves ``lhs == rhs`` (element-wise for matrices).

    >>> import sympy as sp
    >>> x = sp.Symbol("x")
    >>> is_zero(sp.Matrix([x + x]), sp.Matrix([2 * x]))
    True
    """
    diff = sp.Matrix(lhs) - sp.Matrix(rhs) if _is_matrix(lhs) else lhs - rhs
    if _is_matrix(diff):
        return all(sp.simplify(d) == 0 for d in diff)
    return sp.simplify(diff) == 0


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
