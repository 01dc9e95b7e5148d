"""The kernel proofs can fail: mutants of every spec are rejected.

For every backward kernel of the table, three mutants are made programmatically
from its spec (the right-hand side scaled by 2, one index of a read shifted by
one, one term or factor dropped) and each must fail :func:`derive.proofs.prove`;
so must a scaled forward spec. A proof that accepted a mutant would be a proof
that checks nothing. Also: the table's pairing is validated, every kernel has its
``kernel.<name>`` derivation, and codegen refuses an unproven table.
"""

from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

from derive import core, proofs
from derive.kernels import load_table
from derive.kernelspec import KernelSpecError, Vjp, validate_table

TABLE = load_table()
BACKWARD = sorted(name for name, spec in TABLE.items() if spec.vjp is not None)
FORWARD = sorted(name for name, spec in TABLE.items() if spec.vjp is None)


def _target(spec):
    """(nest index, statement index) of the statement computing the first gradient."""
    first_out = spec.vjp.grads[0][0] if spec.vjp else spec.outputs[0].name
    for n, nest in enumerate(spec.nests):
        for s, stmt in enumerate(nest.body):
            if str(stmt.lhs.base) == first_out and stmt.rhs.atoms(sp.Indexed):
                return n, s
    raise AssertionError(f"{spec.name}: no statement reads an array into {first_out}")


def _with_rhs(spec, rhs):
    n, s = _target(spec)
    nest = spec.nests[n]
    body = list(nest.body)
    body[s] = dataclasses.replace(body[s], rhs=rhs)
    nests = list(spec.nests)
    nests[n] = dataclasses.replace(nest, body=tuple(body))
    return dataclasses.replace(spec, nests=tuple(nests))


def _rhs(spec):
    n, s = _target(spec)
    return spec.nests[n].body[s].rhs


def scaled(spec):
    return _with_rhs(spec, 2 * _rhs(spec))


def shifted(spec):
    """One read's last loop index moved by one (``x[.., j]`` -> ``x[.., j + 1]``)."""
    rhs = _rhs(spec)
    read = sorted(rhs.atoms(sp.Indexed), key=sp.default_sort_key)[0]
    axis = max(i for i, ix in enumerate(read.indices) if ix.free_symbols)
    idx = list(read.indices)
    idx[axis] = idx[axis] + 1
    return _with_rhs(spec, rhs.xreplace({read: read.base[tuple(idx)]}))


def dropped(spec):
    """One term of a sum or factor of a product dropped (a Piecewise loses its guard)."""
    rhs = _rhs(spec)
    if isinstance(rhs, sp.Piecewise):
        return _with_rhs(spec, rhs.args[0].expr)
    if isinstance(rhs, sp.Add | sp.Mul):
        args = [a for a in rhs.args if a.atoms(sp.Indexed)]
        return _with_rhs(spec, rhs.func(*(a for a in rhs.args if a is not args[0])))
    return _with_rhs(spec, sp.Integer(0))


MUTANTS = {"scaled": scaled, "shifted": shifted, "dropped": dropped}


@pytest.mark.parametrize("mutate", sorted(MUTANTS))
@pytest.mark.parametrize("name", BACKWARD)
def test_every_backward_mutant_is_rejected(name, mutate):
    spec = TABLE[name]
    mutant = MUTANTS[mutate](spec)
    assert mutant.text() != spec.text(), f"{name}: the {mutate} mutant equals the spec"
    proof = proofs.prove(mutant, TABLE, cache=False, first=True)
    assert not proof.ok, f"{name}: the {mutate} mutant was proven:\n{mutant.text()}"
    assert proof.failure.startswith(f"{name}, case {{"), proof.failure


@pytest.mark.parametrize("name", FORWARD)
def test_a_scaled_forward_is_rejected(name):
    proof = proofs.prove(scaled(TABLE[name]), TABLE, cache=False, first=True)
    assert not proof.ok and name in proof.failure


def test_every_kernel_has_its_proof_derivation():
    ids = set(core.ids())
    assert {f"kernel.{name}" for name in TABLE} <= ids


def test_the_failure_names_the_entry_and_both_values():
    proof = proofs.prove(scaled(TABLE["dense_backward"]), TABLE, cache=False, first=True)
    assert "dense_backward, case {N=2, I=3, O=2}: dx[0, 0] = " in proof.failure
    assert "by the spec, but the VJP of dense_forward gives" in proof.failure


def test_pairing_must_name_an_earlier_forward_and_its_inputs():
    spec = TABLE["dense_backward"]
    ids = {s.derivation for s in TABLE.values()}
    fwd = TABLE["dense_forward"]
    with pytest.raises(KernelSpecError, match="^dense_backward: vjp of 'dense_forward'"):
        validate_table([spec], ids)
    bad = dataclasses.replace(spec, vjp=Vjp("dense_forward", grads=(("dx", "q"),)))
    with pytest.raises(KernelSpecError, match="^dense_backward: grads .* must pair every output"):
        validate_table([fwd, bad], ids)
    both = dataclasses.replace(spec, definition=fwd.definition)
    with pytest.raises(KernelSpecError, match="^dense_backward: give exactly one"):
        validate_table([fwd, both], ids)


def test_codegen_refuses_an_unproven_table(monkeypatch, capsys):
    from codegen import __main__ as cli
    from codegen import pipeline

    wrong = dict(TABLE)
    wrong["relu_backward"] = scaled(TABLE["relu_backward"])
    monkeypatch.setattr(pipeline, "kernel_table", lambda: wrong)
    # Emitting nothing: the refusal must come from the proofs (an unchecked empty emission
    # would be "up to date", status 0), and the emission of every file is not rerun here.
    monkeypatch.setattr(pipeline, "_emit", lambda table: {})
    assert cli.main(["--check", "--fresh"]) == 1
    err = capsys.readouterr().err
    assert "relu_backward, case {E=4}: dz[" in err and "nothing written" in err
