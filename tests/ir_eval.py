"""An exact interpreter of the C loop IR (:mod:`codegen.ir`), for the pass tests.

It runs a lowered body the way the C printer's text runs it, serially: every
:class:`~codegen.ir.Loop` in order (annotations ignored), scopes, scratch arrays,
lets, masks and updates, and a table's :class:`~codegen.ir.Pairs` before expansion.
Arrays are flat Python lists of exact numbers (ints or fractions) addressed by the
row-major offset of an access, like the C code; a read
outside an array or of an element nothing has written yet raises :class:`IRFault`,
so a pass that reads padding it did not zero, or writes past a row, fails loudly.

Examples
--------
>>> import sympy as sp
>>> from codegen.ir import Loop, Update
>>> i = sp.Symbol("i", integer=True)
>>> a = sp.IndexedBase("a", shape=(3,))
>>> run((Loop(i, 0, 3, (Update(a[i], "=", 2 * i),)),), {}, {"a": [None] * 3})["a"]
[0, 2, 4]
"""

from __future__ import annotations

import functools
import math
from collections import ChainMap
from fractions import Fraction

import sympy as sp

from codegen.ir import Block, If, Let, Loop, Pairs, Scratch, Update
from derive.indexing import CeilDiv, FloorDiv


class IRFault(RuntimeError):
    """An access outside an array, or a read of an element never written."""


def run(nodes, env: dict, memory: dict) -> dict:
    """Run ``nodes`` with scalars ``env`` (name -> value) on ``memory`` (name -> flat list).

    ``memory`` is updated in place and returned; unwritten elements are None.
    """
    _scope(nodes, ChainMap({}, dict(env)), memory)
    return memory


def _scope(nodes, env: ChainMap, memory):
    """Run ``nodes`` in a new C scope: its declarations end with it."""
    inner = env.new_child()
    for node in nodes:
        _exec(node, inner, memory)


def _exec(node, env, memory):
    if isinstance(node, Loop):
        lo, hi = _value(node.lo, env, memory), _value(node.hi, env, memory)
        for value in range(lo, hi):
            _scope(node.body, env.new_child({node.var.name: value}), memory)
    elif isinstance(node, Pairs):
        for k, cs in enumerate(node.rows):
            for c in sorted(cs):
                pair = {node.out_var.name: k, node.in_var.name: c}
                _scope(node.body, env.new_child(pair), memory)
    elif isinstance(node, Block):
        _scope(node.body, env, memory)
    elif isinstance(node, If):
        if _value(node.cond, env, memory) != 0:
            _scope(node.body, env, memory)
    elif isinstance(node, Scratch):
        memory[node.var.name] = [None] * node.size  # C leaves a local array undefined
    elif isinstance(node, Let):
        env.maps[0][node.var.name] = _value(node.value, env, memory)  # a declaration
    elif isinstance(node, Update):
        _update(node, env, memory)
    else:
        raise TypeError(f"no rule to run {type(node).__name__}")


def _update(node, env, memory):
    value = _value(node.rhs, env, memory)
    if isinstance(node.lhs, sp.Indexed):
        label, offset = _locate(node.lhs, env, memory)
        old = memory[label][offset]
    elif node.lhs.name in env:
        old = env[node.lhs.name]
    else:
        raise IRFault(f"{node.lhs} assigned but never declared")
    if node.op != "=" and old is None:
        raise IRFault(f"{node.lhs} {node.op} before it was written")
    new = {
        "=": lambda: value,
        "+=": lambda: old + value,
        "max=": lambda: max(old, value),
        "min=": lambda: min(old, value),
    }[node.op]()
    if isinstance(node.lhs, sp.Indexed):
        memory[label][offset] = new
    else:  # assigns the variable in the scope that declared it
        next(m for m in env.maps if node.lhs.name in m)[node.lhs.name] = new


def _locate(acc: sp.Indexed, env, memory) -> tuple[str, int]:
    label = acc.base.label.name
    offset = 0
    for index, size in zip(acc.indices, acc.base.shape, strict=True):
        offset = offset * _value(size, env, memory) + _value(index, env, memory)
    if not 0 <= offset < len(memory[label]):
        raise IRFault(f"{acc}: offset {offset} outside {label}[{len(memory[label])}]")
    return label, offset


def _value(expr, env, memory):
    return _compiled(sp.sympify(expr))(env, memory)


@functools.cache
def _compiled(expr):
    """A closure ``(env, memory) -> exact value`` of one expression."""
    if isinstance(expr, sp.Indexed):

        def read(env, memory):
            label, offset = _locate(expr, env, memory)
            value = memory[label][offset]
            if value is None:
                raise IRFault(f"{expr} read before it was written")
            return value

        return read
    if isinstance(expr, sp.Symbol):
        name = expr.name
        return lambda env, memory: env[name]
    if isinstance(expr, sp.Integer):
        value = int(expr)
        return lambda env, memory: value
    if isinstance(expr, sp.Rational):
        value = Fraction(int(expr.p), int(expr.q))
        return lambda env, memory: value
    args = [_compiled(a) for a in expr.args]
    combine = _COMBINE.get(type(expr)) or next(
        (f for t, f in _COMBINE.items() if isinstance(expr, t)), None
    )
    if combine is None:
        raise TypeError(f"no rule to evaluate {type(expr).__name__}: {expr}")
    return lambda env, memory: combine([f(env, memory) for f in args])


_COMBINE = {
    sp.Add: sum,
    sp.Mul: math.prod,
    sp.Pow: lambda a: a[0] ** a[1],
    sp.Max: max,
    sp.Min: min,
    CeilDiv: lambda a: -(-a[0] // a[1]),
    FloorDiv: lambda a: a[0] // a[1],
    sp.Mod: lambda a: a[0] % a[1],
}
