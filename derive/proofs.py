"""Kernel proofs: every spec of the kernel table proven against its derivation.

For each kernel ``name`` of :mod:`derive.kernels` the derivation ``kernel.<name>``
proves, exhaustively in exact arithmetic on the concrete cases its table entry
lists:

* a forward kernel (one with a ``definition``): the spec, evaluated as explicit
  sums (:func:`derive.kernelspec.evaluate`), equals the defining function of its
  derivation on the same inputs, entry by entry;
* a backward kernel (one with a ``vjp``): for a symbolic cotangent ``dy``, its
  spec equals the vector-Jacobian product of its forward spec,
  ``backward(dy, ...)[out] == d(sum dy * forward(...)) / d in`` for every pair
  ``(out, in)`` of its ``grads``; the derivative is taken by ``sympy.diff`` of the
  forward spec evaluated on symbolic inputs, then evaluated at exact rational
  points where the forward is differentiable (distinct values: a unique maximum,
  no ReLU at 0).

A result is recorded under ``$SYMCONV_CACHE/proofs`` keyed by the sha256 of
everything it depends on (the spec, its forward spec, the pairing, the cases and
the sources of the derive modules), so only changed kernels are proven again.
``codegen`` calls :func:`require_proven` and emits nothing while a kernel is
unproven.

Examples
--------
>>> from derive.kernels import load_table
>>> table = load_table()
>>> prove(table["relu_backward"], table).ok
True
>>> import dataclasses, sympy as sp
>>> spec = table["relu_backward"]
>>> stmt = spec.nests[0].body[0]
>>> wrong = dataclasses.replace(stmt, rhs=2 * stmt.rhs)  # dz = 2 dy [z > 0]
>>> bad = dataclasses.replace(spec, nests=(dataclasses.replace(spec.nests[0], body=(wrong,)),))
>>> print(prove(bad, table, cache=False).failure)  # doctest: +ELLIPSIS
relu_backward, case {E=4}: dz[...] = 2*dy_{...} by the spec, but the VJP of relu_forward gives...
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import sympy as sp

from derive import core
from derive.core import EXHAUSTIVE, Derivation, Step
from derive.indexing import isym
from derive.kernelspec import FLOAT, MASK, KernelSpec, evaluate

#: Values of a case: ``symbolic`` inputs (the default), ``distinct`` exact rationals
#: (where a formula needs comparable numbers: max pooling, the losses' log-sum-exp),
#: or ``ties`` (small integers with repeated values: which maximum wins).
VALUES = ("symbolic", "distinct", "ties")


class ProofError(RuntimeError):
    """Kernels whose proof fails or is missing; the message names each with a failing case."""


@dataclass(frozen=True)
class Proof:
    """The outcome of proving one kernel: ``ok``, the cases proved, the first failure."""

    kernel: str
    ok: bool
    cases: int
    failure: str | None = None
    failed_cases: tuple[str, ...] = ()


# --- the inputs of a case ----------------------------------------------------------


def _sizes(spec: KernelSpec, case: dict) -> dict:
    """Every size and int param of ``spec`` at ``case`` (derived sizes computed)."""
    env = {isym(k): sp.Integer(v) for k, v in case.items() if isinstance(v, int)}
    for p in spec.params:
        if p.kind == "int" and isym(p.name) not in env:
            value = env[isym(p.default_from)] if p.default_from else p.default
            env[isym(p.name)] = sp.Integer(value)
    for name, formula in spec.derived:
        env.setdefault(isym(name), sp.sympify(formula).subs(env))
    return {str(k): int(v) for k, v in env.items()}


def _shape(spec: KernelSpec, name: str, sizes: dict) -> tuple[int, ...]:
    return tuple(sizes[d] for d in spec.array(name).dims)


def _symbols(name: str, shape: tuple) -> np.ndarray:
    cells = [
        sp.Symbol(f"{name}_{{{','.join(map(str, idx))}}}", real=True) for idx in np.ndindex(*shape)
    ]
    return np.array(cells, dtype=object).reshape(shape)


def _points(shape: tuple, rng: random.Random, values: str) -> np.ndarray:
    """Exact rationals: pairwise distinct and non-zero, or (``ties``) from {0, 1, 2}."""
    size = int(np.prod(shape))
    if values == "ties":
        cells = [sp.Integer(rng.choice((0, 1, 1, 2))) for _ in range(size)]
    else:
        pool = sorted(
            {sp.Rational(a, b) for a in range(-40, 41) if a for b in (1, 2, 3, 5, 7)}, key=float
        )
        cells = rng.sample(pool, size)
    return np.array(cells, dtype=object).reshape(shape)


@dataclass(frozen=True)
class _Inputs:
    """A forward kernel's arguments at one case: symbolic, and at the exact point."""

    symbolic: dict
    point: dict
    at: dict  # symbol -> its point value

    def __getitem__(self, values: str) -> dict:
        return self.symbolic if values == "symbolic" else self.point


def _forward_inputs(spec: KernelSpec, case: dict) -> _Inputs:
    sizes = _sizes(spec, case)
    rng = random.Random(f"{spec.name} {sorted(case.items(), key=str)}")
    values = case.get("values", "symbolic")
    symbolic, point, at = {}, {}, {}
    for a in spec.inputs:
        shape = _shape(spec, a.name, sizes)
        if a.kind == FLOAT and a.name in case:  # given exactly (a resampling's positions)
            given = np.vectorize(sp.Rational, otypes=[object])(np.array(case[a.name], object))
            if given.shape != shape:
                raise ValueError(f"{spec.name}: case value of {a.name} has shape {given.shape}")
            symbolic[a.name] = point[a.name] = given
        elif a.kind == FLOAT:
            syms, vals = _symbols(a.name, shape), _points(shape, rng, values)
            symbolic[a.name], point[a.name] = syms, vals
            at.update(zip(syms.reshape(-1), vals.reshape(-1), strict=True))
        elif a.kind == MASK:
            rows = case.get(a.name)
            symbolic[a.name] = point[a.name] = None if rows is None else np.array(rows)
        else:  # int64 labels: every class in turn
            bound = int(np.prod([sizes[d] for d in a.bounds]))
            symbolic[a.name] = point[a.name] = np.arange(int(np.prod(shape))) % bound
    for p in spec.params:
        if p.kind == "int":
            symbolic[p.name] = point[p.name] = case.get(p.name, p.default)
        elif p.kind == "float":
            given = case.get(p.name, p.default)
            value = sp.Symbol(p.name, real=True) if given is None else sp.nsimplify(given)
            symbolic[p.name] = point[p.name] = value
    return _Inputs(symbolic, point, at)


def _run(spec: KernelSpec, args: dict, sizes: dict | None = None) -> dict:
    """The spec's outputs on ``args`` (object arrays by name)."""
    out = evaluate(spec, {k: v for k, v in args.items() if v is not None}, sizes)
    return {a.name: out[a.name] for a in spec.outputs}


def _definition(spec: KernelSpec, args: dict) -> dict:
    """The defining function's outputs on ``args``, named like the spec's outputs."""
    names = [a.name for a in spec.inputs] + [p.name for p in spec.params]
    got = spec.definition(**{n: args.get(n) for n in names})
    got = got if isinstance(got, tuple) else (got,)
    return {a.name: np.asarray(v, dtype=object) for a, v in zip(spec.outputs, got, strict=True)}


# --- comparing exact values -----------------------------------------------------------


def _is_zero(expr, cotangents=()) -> bool:
    """Exact zero test: expansion first, then (for exp/log/tanh, max/min and branches)
    SymPy's simplifier on each coefficient of the cotangent symbols. A coefficient
    without free symbols whose value is clearly non-zero (30 digits, SymPy's
    guaranteed-precision evalf) is rejected without simplifying."""
    expr = sp.expand(sp.sympify(expr))
    if expr == 0:
        return True
    parts = [expr.coeff(c) for c in cotangents if expr.has(c)] or [expr]
    rest = sp.expand(expr - sum(c * expr.coeff(c) for c in cotangents if expr.has(c)))
    parts += [rest] if cotangents and rest != 0 else []
    return all(_zero_part(p) for p in parts)


def _zero_part(part) -> bool:
    if part == 0:
        return True
    if not part.free_symbols and abs(sp.N(part, 30)) > sp.Float("1e-20"):
        return False
    if sp.simplify(sp.expand(part.rewrite(sp.exp))) == 0:
        return True
    if part.has(sp.Piecewise, sp.Max, sp.Min):  # case analysis: everything as Piecewise
        return sp.simplify(sp.piecewise_fold(part.rewrite(sp.Piecewise))) == 0
    return False


def _show(expr, limit: int = 160) -> str:
    text = sp.sstr(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _case_text(case: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in case.items()) + "}"


def _first_mismatch(spec, case, got: dict, want: dict, what: str, cotangents=()) -> str | None:
    for name, expected in want.items():
        actual = got[name]
        if actual.shape != expected.shape:
            return (
                f"{spec.name}, case {_case_text(case)}: {name} has shape {actual.shape} by the "
                f"spec, {expected.shape} by {what}"
            )
        for idx in np.ndindex(*expected.shape):
            if not _is_zero(actual[idx] - expected[idx], cotangents):
                where = ", ".join(map(str, idx))
                return (
                    f"{spec.name}, case {_case_text(case)}: {name}[{where}] = "
                    f"{_show(actual[idx])} by the spec, but {what} gives {_show(expected[idx])}"
                )
    return None


# --- the two kinds of proof -------------------------------------------------------------


def _prove_forward(spec: KernelSpec, case: dict) -> str | None:
    inputs = _forward_inputs(spec, case)
    args = inputs[case.get("values", "symbolic")]
    what = f"the definition {_qualname(spec.definition)}"
    return _first_mismatch(spec, case, _run(spec, args), _definition(spec, args), what)


def _prove_vjp(spec: KernelSpec, fwd: KernelSpec, case: dict) -> str | None:
    v = spec.vjp
    inputs = _forward_inputs(fwd, case)
    outputs = _run(fwd, inputs.symbolic)
    cot = {}
    if v.cotangent:
        mine, theirs = v.cotangent
        cot[theirs] = _symbols(mine, outputs[theirs].shape)
    else:  # a loss: the gradient of the summed per-sample losses
        (loss,) = outputs
        cot[loss] = np.full(outputs[loss].shape, sp.Integer(1), dtype=object)
    want = {}
    for out, src in v.grads:
        syms = inputs.symbolic[src]
        index = {s: i for i, s in enumerate(syms.reshape(-1))}
        grad = [sp.Integer(0)] * syms.size
        for name, weights in cot.items():
            for value, weight in zip(outputs[name].reshape(-1), weights.reshape(-1), strict=True):
                for s in value.free_symbols & index.keys():
                    grad[index[s]] += weight * sp.diff(value, s).xreplace(inputs.at)
        want[out] = np.array(grad, dtype=object).reshape(syms.shape)
    args = dict(inputs.point)
    saved = _run(fwd, inputs.point) if v.saved else {}
    args.update({mine: saved[theirs] for mine, theirs in v.saved})
    if v.cotangent:
        mine, theirs = v.cotangent
        args[mine] = cot[theirs]
    sizes = _sizes(fwd, case)
    for p in spec.params:
        if p.kind == "hw":
            args[p.name] = tuple(sizes[d] for d in p.dims)
    args = {k: val for k, val in args.items() if k in spec.signature}
    cotangents = [s for c in cot.values() for s in c.reshape(-1) if isinstance(s, sp.Symbol)]
    what = f"the VJP of {fwd.name}"
    return _first_mismatch(spec, case, _run(spec, args, sizes), want, what, cotangents)


def _qualname(f) -> str:
    return f"{f.__module__}.{f.__qualname__}"


def cases_of(spec: KernelSpec, table: dict) -> tuple[dict, ...]:
    """The concrete cases ``spec`` is proven on: a backward kernel takes its forward's,
    except those with ties (where the forward has no derivative)."""
    if spec.vjp is None:
        return spec.cases
    return tuple(c for c in table[spec.vjp.forward].cases if c.get("values") != "ties")


def prove_case(spec: KernelSpec, table: dict, case: dict) -> str | None:
    """Prove ``spec`` on one case: None, or the first mismatch with its concrete values."""
    if spec.vjp is None:
        return _prove_forward(spec, case)
    return _prove_vjp(spec, table[spec.vjp.forward], case)


# --- the cache and the gate ------------------------------------------------------------

#: derive modules whose text can change a proof's outcome (the table enters through the
#: spec texts; rendering and the CLI cannot).
_DISPLAY_ONLY = {"render.py", "__main__.py", "catalog.py", "kernels.py"}


def proof_key(spec: KernelSpec, table: dict) -> str:
    """sha256 of everything the proof of ``spec`` depends on."""
    h = hashlib.sha256()
    fwd = table[spec.vjp.forward] if spec.vjp else None
    for part in (spec.text(), repr(spec.vjp), repr(cases_of(spec, table))):
        h.update(part.encode() + b"\0")
    h.update((fwd.text() if fwd else _qualname(spec.definition)).encode() + b"\0")
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name not in _DISPLAY_ONLY:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    for dist in ("sympy", "numpy"):
        h.update(f"{dist}={metadata.version(dist)}".encode())
    return h.hexdigest()


def _cache_path(key: str) -> Path:
    return core.cache_dir() / "proofs" / f"{key}.json"


def _load(key: str) -> Proof | None:
    try:
        return Proof(**json.loads(_cache_path(key).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None  # missing or unreadable: prove again


def _record(key: str, proof: Proof) -> None:
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".proof-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(proof.__dict__, f)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs time: the proof runs again next time


def prove(spec: KernelSpec, table: dict, cache: bool = True, first: bool = False) -> Proof:
    """Prove ``spec`` on all its cases (``first``: stop at the first failing one).

    Only a successful proof is recorded; a failing one is always re-run.
    """
    key = proof_key(spec, table) if cache else None
    if key and (hit := _load(key)) is not None:
        return hit
    cases = cases_of(spec, table)
    failures = []
    for case in cases:
        try:
            failure = prove_case(spec, table, case)
        except Exception as exc:  # a crashing proof is a failed proof, with the reason
            failure = f"{spec.name}, case {_case_text(case)}: {type(exc).__name__}: {exc}"
        if failure:
            failures.append((_case_text(case), failure))
            if first:
                break
    if not cases:
        failures.append(("", f"{spec.name}: no proof cases"))
    proof = Proof(
        spec.name,
        not failures,
        len(cases),
        failures[0][1] if failures else None,
        tuple(c for c, _ in failures),
    )
    if key and proof.ok:
        _record(key, proof)
    return proof


def _prove_by_name(name: str) -> Proof:
    """Prove the table's kernel ``name`` (in a worker process: specs hold closures that
    do not pickle, so each worker loads the table itself)."""
    from derive.kernels import load_table

    table = load_table()
    return prove(table[name], table)


def require_proven(table: dict, jobs: int = 1) -> list[Proof]:
    """Every kernel's proof; raises :class:`ProofError` naming each that fails.

    Recorded proofs are read here; the others run in ``jobs`` worker processes when
    ``jobs > 1`` and several are missing (only for the table of derive.kernels).

    >>> from derive.kernels import load_table
    >>> len(require_proven(load_table()))
    32
    """
    todo = [name for name, spec in table.items() if _load(proof_key(spec, table)) is None]
    done = {}
    if jobs > 1 and len(todo) > 1 and _is_the_table(table):
        with ProcessPoolExecutor(min(jobs, len(todo))) as pool:
            done = dict(zip(todo, pool.map(_prove_by_name, todo), strict=True))
    proofs = [done.get(name) or prove(spec, table) for name, spec in table.items()]
    failed = [p for p in proofs if not p.ok]
    if failed:
        lines = "\n".join(f"  {p.failure}" for p in failed)
        raise ProofError(f"{len(failed)} kernel(s) not proven against their derivation:\n{lines}")
    return proofs


def _is_the_table(table: dict) -> bool:
    from derive.kernels import kernel_specs

    return [s.text() for s in table.values()] == [s.text() for s in kernel_specs()]


# --- the derivations kernel.<name> ------------------------------------------------------


def _statement(spec: KernelSpec, table: dict) -> str:
    if spec.vjp is None:
        return (
            f"The spec {spec.name}, evaluated as explicit sums, equals "
            f"{_qualname(spec.definition)}, the defining formula of {spec.derivation}, "
            "entry by entry."
        )
    v = spec.vjp
    grads = ", ".join(f"{out} = ∂/∂{src}" for out, src in v.grads)
    seed = f"Σ {v.cotangent[0]}·{v.cotangent[1]}" if v.cotangent else "the summed loss"
    return (
        f"The spec {spec.name} is the vector-Jacobian product of {v.forward}: "
        f"{grads} of {seed} (sympy.diff of the forward spec)."
    )


def _tex(name: str) -> str:
    return name.replace("_", r"\_")


def _latex(spec: KernelSpec) -> str:
    if spec.vjp is None:
        return rf"\texttt{{{_tex(spec.name)}}} = \texttt{{{_tex(_qualname(spec.definition))}}}"
    v = spec.vjp
    seed = rf"\sum {_tex(v.cotangent[0])}\,{_tex(v.cotangent[1])}" if v.cotangent else r"\sum_p E_p"
    parts = [
        rf"\mathrm{{{_tex(out)}}} = \frac{{\partial}}{{\partial\, \mathrm{{{_tex(src)}}}}} {seed}"
        for out, src in v.grads
    ]
    return rf"\texttt{{{_tex(spec.name)}}}:\ " + r",\quad ".join(parts)


def _builder(name: str):
    def build() -> Derivation:
        from derive.kernels import load_table  # the table cites derivations: import late

        table = load_table()
        spec = table[name]
        cases = cases_of(spec, table)
        proof = None

        def check(case: str) -> bool:
            nonlocal proof
            proof = proof or prove(spec, table)
            return case not in proof.failed_cases

        step = Step(
            sp.Symbol(spec.name),
            sp.Symbol(spec.vjp.forward if spec.vjp else spec.derivation),
            _statement(spec, table),
            method=EXHAUSTIVE,
            check=check,
            cases=tuple(_case_text(c) for c in cases),
            note="every entry in exact arithmetic; cases: " + "; ".join(map(_case_text, cases)),
            latex=_latex(spec),
        )
        return Derivation(
            f"kernel.{name}",
            _title(name),
            f"derive/kernels.py ({spec.derivation})",
            (step,),
            summary=spec.doc,
        )

    return build


def _title(name: str) -> str:
    return f"Kernel {name} proven against its derivation"


def _register() -> None:
    from derive.kernels import kernel_specs

    for spec in kernel_specs():
        core.derivation(f"kernel.{spec.name}", _title(spec.name))(_builder(spec.name))


_register()
