"""Floating-point operations of a kernel spec, counted from its statements.

:func:`count` walks a :class:`~derive.kernelspec.KernelSpec` at concrete sizes: for
every statement it counts the points of its nest where it runs (the nest's guard,
such as a connection table, is true and, in a ``clip`` nest, every access lies
inside its array; elsewhere the written entry must exist) and multiplies them by
the float operations of one execution. :func:`lenet5_flops` applies it to every
kernel the LeNet-5 runtime calls, at the layer table's sizes, for the per-image
figures ``make codegen`` writes to ``generated/lenet5_spec.py`` and the benchmarks
divide by.

Conventions (each counted operation is one FLOP, as a GEMM's multiply and add are
two):

``add``    an addition or subtraction, and the addition of ``+=``
``mul``    a multiplication (a square is one)
``div``    a division
``other``  a transcendental function (``tanh``, ``exp``, ``log``: one each), a
           comparison of float values (``max=``, ``min=``, a condition, ``isnan``),
           a non-integer power

Only operations on values that vary with the loop point count: a subexpression of
sizes and parameters alone (``S / A``, ``1 / size**2``) is computed once, outside
the loops, and costs nothing; a sign change folds into the neighbouring add or
multiply; index arithmetic (``i*stride + u - padding``) and integer or mask reads
are not float operations. A ``Piecewise`` counts its float comparisons and its
costliest branch. ``=`` costs nothing beyond its right-hand side.

Examples
--------
>>> from derive.kernels import load_table
>>> spec = load_table()["dense_forward"]
>>> total(count(spec, {"N": 1, "I": 3, "O": 2}))  # 6 multiplies, 6 adds
12
>>> lenet5_flops(load_table())["image"]["inference"]
690740
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import sympy as sp

from codegen.lenet5_step import PARAMS
from derive import lenet5 as lenet5_spec
from derive.indexing import IsNaN, isym
from derive.kernelspec import FLOAT, KernelSpec, Nest

KINDS = ("add", "mul", "div", "other")


def total(counts: Counter) -> int:
    """All operations of ``counts`` (each kind counts one FLOP per operation)."""
    return sum(counts[k] for k in KINDS)


# --- operations of one execution of a statement ------------------------------------------


def _float_arrays(spec: KernelSpec) -> frozenset[str]:
    return frozenset(a.name for a in spec.arrays if a.kind == FLOAT)


def _varies(expr, floats: frozenset[str]) -> bool:
    """True when ``expr`` reads a float array (outside index positions)."""
    if isinstance(expr, sp.Indexed):
        return str(expr.base) in floats
    return any(_varies(a, floats) for a in expr.args)


def expr_ops(expr, floats: frozenset[str]) -> Counter:
    """Float operations of evaluating ``expr`` once (see the module conventions).

    ``floats`` names the arrays whose entries are floats.

    >>> x, y = sp.IndexedBase("x")[isym("i")], sp.IndexedBase("y")[isym("i")]
    >>> sorted(expr_ops(3 * x * y - sp.tanh(x) / y, frozenset({"x", "y"})).items())
    [('add', 1), ('div', 1), ('mul', 2), ('other', 1)]
    """
    out: Counter = Counter()
    if not _varies(expr, floats) or isinstance(expr, sp.Indexed):
        return out
    if isinstance(expr, sp.Add | sp.Mul):
        varying = [a for a in expr.args if _varies(a, floats)]
        invariant = expr.func(*(a for a in expr.args if not _varies(a, floats)))
        if isinstance(expr, sp.Add):
            out["add"] += len(varying) - 1 + (invariant != 0)
        else:
            dens = [a for a in varying if a.is_Pow and a.exp == -1]
            nums = len(varying) - len(dens)
            # (numerators and coefficient) / (product of the denominators): one divide
            out["mul"] += max(nums - 1, 0) + (nums > 0 and abs(invariant) != 1)
            out["mul"] += max(len(dens) - 1, 0)
            out["div"] += bool(dens)
            varying = [a.base if a in dens else a for a in varying]
        for a in varying:
            out += expr_ops(a, floats)
    elif isinstance(expr, sp.Pow):
        n = expr.exp
        if n.is_Integer and n != 0:
            out["mul"] += abs(int(n)) - 1
            out["div"] += int(n) < 0
        else:
            out["other"] += 1
        out += expr_ops(expr.base, floats)
    elif isinstance(expr, sp.Piecewise):
        conds = [c for _, c in expr.args]
        branches = [expr_ops(v, floats) for v, _ in expr.args]
        out += max(branches, key=total)
        for c in conds:
            out += expr_ops(c, floats)
    elif isinstance(expr, sp.Rel | IsNaN | sp.Max | sp.Min):
        out["other"] += 1 if not isinstance(expr, sp.Max | sp.Min) else len(expr.args) - 1
        for a in expr.args:
            out += expr_ops(a, floats)
    elif isinstance(expr, sp.Function):  # tanh, exp, log, ...
        out["other"] += 1
        for a in expr.args:
            out += expr_ops(a, floats)
    else:  # boolean connectives (And, Or, Not) combine comparisons at no float cost
        for a in expr.args:
            out += expr_ops(a, floats)
    return out


def statement_ops(spec: KernelSpec, stmt) -> Counter:
    """Float operations of one execution of ``stmt`` (its right-hand side and its op)."""
    out = expr_ops(sp.sympify(stmt.rhs), _float_arrays(spec))
    out["add"] += stmt.op == "+="
    out["other"] += stmt.op in ("max=", "min=")
    return out


# --- how often each statement runs ---------------------------------------------------------


def _env(spec: KernelSpec, sizes: dict) -> dict:
    """Every size and int param of ``spec`` as ``{symbol: int}`` (defaults filled in,
    derived sizes computed)."""
    env = {isym(k): int(v) for k, v in sizes.items() if not isinstance(v, np.ndarray)}
    for p in spec.params:
        if p.kind == "int" and isym(p.name) not in env:
            if p.default_from is None:
                env[isym(p.name)] = int(p.default)
            else:  # a pooling stride: the window size, given or default
                env[isym(p.name)] = int(
                    sizes.get(p.default_from, spec.param(p.default_from).default)
                )
    for name, formula in spec.derived:
        env.setdefault(isym(name), int(sp.sympify(formula).subs(env)))
    missing = [d for d in spec.dim_names() if isym(d) not in env]
    if missing:
        raise ValueError(f"{spec.name}: count needs the sizes {missing}")
    return env


_NUMPY = [{"FloorDiv": np.floor_divide, "Mod": np.mod}, "numpy"]


def _grid_value(expr, env: dict, loops: list, grids: list):
    """``expr`` (an index expression of the loop indices) at every point of the grid."""
    f = sp.lambdify(loops, sp.sympify(expr).subs(env), modules=_NUMPY)
    return np.broadcast_to(f(*grids), np.broadcast_shapes(*(g.shape for g in grids)))


def _inside(acc, spec, env, loops, grids) -> np.ndarray | bool:
    """Where the access ``acc`` lies inside its array; True for data-dependent indices
    (``labels[p]``, an argmax), which the bindings check before any kernel runs."""
    inside: np.ndarray | bool = True
    dims = spec.array(str(acc.base)).dims
    for index, dim in zip(acc.indices, dims, strict=True):
        if sp.sympify(index).atoms(sp.Indexed):
            continue
        at = _grid_value(index, env, loops, grids)
        inside = inside & (at >= 0) & (at < env[isym(dim)])
    return inside


def _runs(spec: KernelSpec, nest: Nest, stmt, env: dict, masks: dict) -> int:
    """Points of ``nest`` where ``stmt`` executes (its semantics in ``evaluate``)."""
    loops = [isym(x) for x in nest.loops]
    trips = [int(sp.sympify(hi - lo).subs(env)) for lo, hi in map(spec.range_of, nest.loops)]
    if not loops:
        return 1
    if min(trips) <= 0:
        return 0
    starts = [int(sp.sympify(spec.range_of(x)[0]).subs(env)) for x in nest.loops]
    grids = list(np.ix_(*(np.arange(s, s + t) for s, t in zip(starts, trips, strict=True))))
    where: np.ndarray | bool = np.ones(trips, bool)
    if nest.cond is not None:
        table = masks.get(str(nest.cond.base))
        if table is not None:
            idx = tuple(_grid_value(i, env, loops, grids) for i in nest.cond.indices)
            where = where & (np.asarray(table)[idx] != 0)
    where = where & _inside(stmt.lhs, spec, env, loops, grids)
    if nest.clip:
        for acc in sp.sympify(stmt.rhs).atoms(sp.Indexed):
            where = where & _inside(acc, spec, env, loops, grids)
    return int(np.count_nonzero(where))


def count(spec: KernelSpec, sizes: dict) -> Counter:
    """Float operations of one call of ``spec``, by kind (:data:`KINDS`).

    ``sizes`` maps size names (``N``, ``C``, ``H``, ...) and int params to values;
    an int param left out takes its default. A mask array (a connection table) is
    given as an array under its name; absent, the optional mask is all ones.

    >>> from derive.kernels import load_table
    >>> conv = load_table()["conv2d_forward"]
    >>> sizes = dict(N=1, C=2, K=2, H=3, W=3, KH=2, KW=2)
    >>> total(count(conv, sizes)), total(count(conv, {**sizes, "table": np.eye(2)}))
    (128, 64)
    """
    env = _env(spec, sizes)
    masks = {k: v for k, v in sizes.items() if isinstance(v, np.ndarray)}
    out: Counter = Counter({k: 0 for k in KINDS})
    for nest in spec.nests:
        for stmt in nest.body:
            ops = statement_ops(spec, stmt)
            if total(ops):
                runs = _runs(spec, nest, stmt, env, masks)
                out += Counter({k: runs * n for k, n in ops.items()})
    return Counter({k: out[k] for k in KINDS})


# --- LeNet-5 ---------------------------------------------------------------------------------


def _table_mask(rows, in_maps: int) -> np.ndarray:
    """A connection table (output map -> the input maps it reads) as a 0/1 (K, C) mask."""
    mask = np.zeros((len(rows), in_maps), np.uint8)
    for k, maps in enumerate(rows):
        mask[k, list(maps)] = 1
    return mask


def _layer_sizes(layer) -> dict:
    """The sizes of one image through ``layer``'s kernels (a table as a mask)."""
    if layer.kind == "conv":
        sizes = dict(C=layer.in_maps, K=layer.out_maps, H=layer.in_size, W=layer.in_size)
        sizes.update(KH=layer.kernel, KW=layer.kernel, Ho=layer.out_size, Wo=layer.out_size)
        if layer.table is not None:
            sizes["table"] = _table_mask(layer.table, layer.in_maps)
    elif layer.kind == "subsample":
        sizes = dict(C=layer.in_maps, H=layer.in_size, W=layer.in_size)
    else:
        sizes = dict(I=layer.in_maps, O=layer.out_maps)
    return {"N": 1, **sizes}


#: The kernels of each layer kind, as (pass, kernel); the trainable layers are also
#: squashed (``scaled_tanh_*``). The first layer needs no gradient of its input.
LAYER_KERNELS = {
    "conv": (
        ("forward", "conv2d_forward"),
        ("backward", "conv2d_backward_filter"),
        ("backward", "conv2d_backward_bias"),
        ("backward", "conv2d_backward_data"),
    ),
    "subsample": (("forward", "subsample_forward"), ("backward", "subsample_backward")),
    "dense": (("forward", "dense_forward"), ("backward", "dense_backward")),
    "rbf": (("forward", "rbf_forward"), ("backward", "rbf_backward")),
}
SQUASH = (("forward", "scaled_tanh_forward"), ("backward", "scaled_tanh_backward_from_output"))
LOSS = (("forward", "map_loss_forward"), ("backward", "map_loss_backward"))
UPDATES = {"sdlm": "sdlm_update", "sgd": "sgd_momentum_update"}


def lenet5_kernel_flops(table: dict[str, KernelSpec]) -> dict[str, dict[str, int]]:
    """FLOPs per image of every LeNet-5 layer kernel, ``{layer: {kernel: flops}}``, each
    kernel at its layer's sizes (``conv2d_backward_data`` for the first layer too)."""
    out = {}
    for layer in lenet5_spec.LAYERS:
        sizes = _layer_sizes(layer)
        out[layer.name] = {k: total(count(table[k], sizes)) for _, k in LAYER_KERNELS[layer.kind]}
    return out


def lenet5_flops(table: dict[str, KernelSpec]) -> dict:
    """FLOPs of the LeNet-5 runtime, counted from the kernel specs.

    Returns ``{"image": {"inference", "forward", "backward"}, "update": {"sdlm",
    "sgd"}}``: per image, inference (C1 to the RBF penalties), a training step's
    forward (inference and the MAP loss) and backward (every parameter gradient; the
    first layer's input gradient is not computed, the fixed RBF centers' is); per
    step, whatever the batch, each optimizer's update of every parameter array (C3's
    weights dense, as the runtime holds them: absent connections are updated too).
    """
    per_layer = lenet5_kernel_flops(table)
    image = Counter()
    for i, layer in enumerate(lenet5_spec.LAYERS):
        for step, kernel in LAYER_KERNELS[layer.kind]:
            if not (i == 0 and kernel == "conv2d_backward_data"):
                image[step] += per_layer[layer.name][kernel]
        if layer.kind != "rbf":
            elements = {"E": layer.out_maps * layer.out_size**2}
            for step, kernel in SQUASH:
                image[step] += total(count(table[kernel], elements))
    inference = image["forward"]
    for step, kernel in LOSS:
        image[step] += total(count(table[kernel], {"P": 1, "O": lenet5_spec.LAYERS[-1].out_maps}))
    update = {name: total(count(table[k], {"E": PARAMS})) for name, k in UPDATES.items()}
    return {
        "image": {
            "inference": inference,
            "forward": image["forward"],
            "backward": image["backward"],
        },
        "update": update,
    }
