"""Table expansion (a tree pass): one copy of the loops inside a compiled-in connection
table per connected (out, in) pair, then merged."""

from __future__ import annotations

import dataclasses

import sympy as sp

from codegen.ir import Block, Let, Loop, Pairs, Update, subs_nodes, transform


def expand_pairs(nodes) -> tuple:
    """Replace each :class:`~codegen.ir.Pairs` by one copy of its body per connected pair.

    Each copy has the pair's variables replaced by the pair's ``k, c``. Consecutive
    copies that accumulate into the same elements, or whose reductions multiply by the
    same read, are merged (:func:`_merge_same_targets`, :func:`_merge_shared_reads`).
    """
    return transform(nodes, after=lambda node: _expanded(node) if isinstance(node, Pairs) else node)


def _expanded(pairs: Pairs) -> tuple:
    copies = [
        subs_nodes(pairs.body, {pairs.out_var: sp.Integer(k), pairs.in_var: sp.Integer(c)})
        for k, cs in enumerate(pairs.rows)
        for c in sorted(cs)
    ]
    merged = _merge_same_targets(copies)
    return tuple(node for nodes in _merge_shared_reads(merged) for node in nodes)


#: Accumulators one merged reduction may carry: each is a vector register, of the 32 of
#: AVX-512; the shared read and a product take two more.
MAX_ACCUMULATORS = 30


def _reduction(nodes):
    """(accumulator lets, loop chain, stores) of an accumulator block, else None."""
    if len(nodes) != 1 or not isinstance(nodes[0], Block):
        return None
    body = nodes[0].body
    lets = [x for x in body if isinstance(x, Let)]
    loops = [x for x in body if isinstance(x, Loop)]
    stores = [x for x in body if isinstance(x, Update)]
    if not lets or len(loops) != 1 or len(lets) + 1 + len(stores) != len(body):
        return None
    chain = [loops[0]]
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], Loop):
        chain.append(chain[-1].body[0])
    if not chain[-1].reduction or not all(isinstance(x, Update) for x in chain[-1].body):
        return None
    return lets, chain, stores


def _shared_reads(found):
    """The loop skeleton and the reads every update of a reduction multiplies by."""
    _, chain, _ = found
    skeleton = tuple((x.var, x.lo, x.hi, x.parallel) for x in chain)
    shared = set.intersection(*(set(sp.Mul.make_args(u.rhs)) for u in chain[-1].body))
    return skeleton, frozenset(a for a in shared if isinstance(a, sp.Indexed))


def _merge_shared_reads(nests):
    """Consecutive reductions that multiply by the same read, merged into one.

    A filter gradient ``dw[k, c, u, v] = sum dy[n, k, i, j] x[n, c, i + u, j + v]``: the
    input maps ``c`` connected to output map ``k`` share the plane ``dy[n, k]``; one
    reduction over it with the accumulators of every such map reads (and row-pads) that
    plane once instead of once per map. Applies to consecutive accumulator blocks
    (:func:`~codegen.passes.accumulate.accumulated`) with the same loops, at most
    :data:`MAX_ACCUMULATORS` accumulators per merge.
    """
    out, run = [], []

    def flush():
        if len(run) == 1:
            out.append(run[0][0])
        elif run:
            out.append(_merged_reduction([found for _, found in run]))
        run.clear()

    for nodes in nests:
        found = _reduction(nodes)
        key = _shared_reads(found) if found is not None else None
        if key is None or not key[1]:
            flush()
            out.append(nodes)
            continue
        count = sum(len(f[0]) for _, f in run) + len(found[0])
        if run and (_shared_reads(run[0][1]) != key or count > MAX_ACCUMULATORS):
            flush()
        run.append((nodes, found))
    flush()
    return out


def _merged_reduction(founds):
    """One accumulate block running the reductions ``founds`` (accumulators renumbered)."""
    lets, updates, stores, accs = [], [], [], []
    for old_lets, chain, old_stores in founds:
        sub = {}
        for let in old_lets:
            sub[let.var] = sp.Symbol(f"acc{len(accs)}", real=True)
            accs.append(sub[let.var])
            lets.append(Let(sub[let.var], let.value, let.integer, let.mutable))
        updates += [Update(sub[u.lhs], u.op, u.rhs) for u in chain[-1].body]
        stores += [Update(u.lhs, u.op, u.rhs.xreplace(sub)) for u in old_stores]
    chain = founds[0][1]
    nest = dataclasses.replace(chain[-1], body=tuple(updates), reduction=tuple(accs))
    for loop in reversed(chain[:-1]):
        nest = dataclasses.replace(loop, body=(nest,))
    return (Block((*lets, nest, *stores)),)


def _skeleton(nodes):
    """The structure of plain ``+=`` loop nests without their right-hand sides (else None)."""
    out = []
    for node in nodes:
        if isinstance(node, Loop):
            body = _skeleton(node.body)
            if body is None:
                return None
            out.append((node.var, node.lo, node.hi, node.parallel, node.work, node.reduction, body))
        elif isinstance(node, Update) and node.op == "+=":
            out.append(node.lhs)
        else:
            return None
    return tuple(out)


def _summed(a, b):
    """Two nests of one skeleton as one: each update adds both right-hand sides."""
    out = []
    for x, y in zip(a, b, strict=True):
        if isinstance(x, Loop):
            out.append(dataclasses.replace(x, body=_summed(x.body, y.body)))
        else:
            out.append(Update(x.lhs, "+=", x.rhs + y.rhs))
    return tuple(out)


def _merge_same_targets(pairs):
    """Nests of table pairs that accumulate into the same elements, merged into one.

    A forward convolution: the input maps connected to output map ``k`` add into the
    same ``y[n, k, i, j]``; one nest summing all their taps reads and writes ``y`` once
    instead of once per pair (a data gradient likewise over the output maps of
    ``dx[n, c]``). Applies to plain ``+=`` nests with the same loops and targets; nests
    of any other form (accumulator blocks, cse temporaries) are kept as they are.
    """
    merged, order = {}, []
    for nodes in pairs:
        key = _skeleton(nodes)
        if key is None:
            order.append(nodes)
        elif key in merged:
            merged[key][0] = _summed(merged[key][0], nodes)
        else:
            merged[key] = [nodes]
            order.append(key)
    return [merged[x][0] if x in merged else x for x in order]
