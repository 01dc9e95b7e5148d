"""The lowering passes on small specs: what each changes in the IR, and that the program
still computes the spec after it (exact: integer data, the IR run by :mod:`ir_eval`,
compared with :func:`derive.kernelspec.evaluate`)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import sympy as sp
from ir_eval import IRFault, run

from codegen import ir
from codegen.analysis import size_env
from codegen.lower_c import SCHEDULE, Schedule, lower_c, plan_nest
from codegen.passes.accumulate import accumulate
from codegen.passes.fusion import fuse_contiguous
from codegen.passes.hoist import hoist_over_pairs
from codegen.passes.jam import JAM, jam_outputs, jam_reduction, jam_sum, jam_sum_outer
from codegen.passes.parallel import (
    ELEMENTWISE_CHUNK,
    PARALLEL_WORK,
    measure_work,
    parallelize,
    threads,
)
from codegen.passes.rowpad import row_padded, sample_local
from codegen.passes.table import MAX_ACCUMULATORS, expand_pairs
from codegen.passes.unroll import single_trip, unroll_taps
from codegen.passes.zerofill import fold_zero_fill
from derive import kernelspec as KS
from derive.indexing import isym
from derive.kernels import load_table

TABLE = load_table()
SPECIALIZED, GENERIC = SCHEDULE["specialized"], SCHEDULE["generic"]


def _spec(name, arrays, ranges, nests, derived=()) -> KS.KernelSpec:
    """A kernel spec with just what lowering and exact evaluation read."""
    return KS.KernelSpec(
        name=name,
        derivation="test",
        doc=name,
        arrays=arrays,
        params=(),
        signature=tuple(a.name for a in arrays if a.role == KS.IN),
        returns=tuple(a.name for a in arrays if a.role == KS.OUT),
        ranges=ranges,
        nests=nests,
        derived=derived,
    )


def _stmt(lhs, op, rhs):
    return KS.Stmt(lhs, op, sp.sympify(rhs))


n, o, i, j, k, c, u, v = (isym(s) for s in "n o i j k c u v".split())
X, W, B, Y, DX, DY = (sp.IndexedBase(s) for s in ("x", "w", "b", "y", "dx", "dy"))

#: y[n, o] = b[o] + sum_i w[o, i] x[n, i]: a reduction innermost, the output indexed by o.
DOT = _spec(
    "dot",
    (
        KS.Array("x", ("N", "I")),
        KS.Array("w", ("O", "I")),
        KS.Array("b", ("O",)),
        KS.Array("y", ("N", "O"), role=KS.OUT),
    ),
    (("n", 0, "N"), ("o", 0, "O"), ("i", 0, "I")),
    (
        KS.Nest(("n", "o"), (_stmt(Y[n, o], "=", B[o]),)),
        KS.Nest(("n", "o", "i"), (_stmt(Y[n, o], "+=", W[o, i] * X[n, i]),)),
    ),
)
#: dx[n, i] = sum_o dy[n, o] w[o, i]: the innermost loop runs along the output.
ROWS = _spec(
    "rows",
    (
        KS.Array("dy", ("N", "O")),
        KS.Array("w", ("O", "I")),
        KS.Array("dx", ("N", "I"), role=KS.OUT),
    ),
    (("n", 0, "N"), ("o", 0, "O"), ("i", 0, "I")),
    (
        KS.Nest(("n", "i"), (_stmt(DX[n, i], "=", 0),)),
        KS.Nest(("n", "o", "i"), (_stmt(DX[n, i], "+=", DY[n, o] * W[o, i]),)),
    ),
)
#: y[n, k] = sum_{c, u} w[k, c, u] x[n, c, u]: (c, u) walk both reads as one flat run.
FLAT = _spec(
    "flat",
    (
        KS.Array("x", ("N", "C", "U")),
        KS.Array("w", ("K", "C", "U")),
        KS.Array("y", ("N", "K"), role=KS.OUT),
    ),
    (("n", 0, "N"), ("k", 0, "K"), ("c", 0, "C"), ("u", 0, "U")),
    (
        KS.Nest(("n", "k"), (_stmt(Y[n, k], "=", 0),)),
        KS.Nest(("n", "k", "c", "u"), (_stmt(Y[n, k], "+=", W[k, c, u] * X[n, c, u]),)),
    ),
)
#: y[n, i, j] = sum_{u, v} w[u, v] x[n, i + u, j + v]: output rows narrower than input rows.
CORR = _spec(
    "corr",
    (
        KS.Array("x", ("N", "H", "W")),
        KS.Array("w", ("KH", "KW")),
        KS.Array("y", ("N", "I", "J"), role=KS.OUT),
    ),
    (("n", 0, "N"), ("i", 0, "I"), ("j", 0, "J"), ("u", 0, "KH"), ("v", 0, "KW")),
    (
        KS.Nest(("n", "i", "j"), (_stmt(Y[n, i, j], "=", 0),)),
        KS.Nest(
            ("n", "u", "v", "i", "j"),
            (_stmt(Y[n, i, j], "+=", W[u, v] * X[n, i + u, j + v]),),
            taps=("u", "v"),
        ),
    ),
    derived=(("I", isym("H") - isym("KH") + 1), ("J", isym("W") - isym("KW") + 1)),
)

#: A 3-output, 2-input connection table (rows: the inputs of each output).
ROWS_3x2 = ((0,), (0, 1), (1,))
CONV = {"C": 2, "K": 3, "H": 5, "W": 6, "KH": 3, "KW": 2, "stride": 1, "padding": 0, "dilation": 1}

#: name -> (spec, fixed sizes (None: generic), sizes of the call)
CASES = {
    "dot jammed whole": (DOT, {"O": 8, "I": 6}, {"N": 2}),
    "dot jammed by blocks": (DOT, {"O": 12, "I": 5}, {"N": 2}),
    "rows jammed into sums": (ROWS, {"O": 8, "I": 6}, {"N": 2}),
    "flat run fused": (FLAT, {"K": 3, "C": 2, "U": 4}, {"N": 2}),
    "correlation row-padded": (CORR, {"H": 6, "W": 7, "KH": 3, "KW": 2}, {"N": 2}),
    "conv 1x1 output": (
        TABLE["conv2d_forward"],
        {**CONV, "H": 3, "W": 2, "table": None},
        {"N": 2},
    ),
    "conv forward, table": (TABLE["conv2d_forward"], {**CONV, "table": ROWS_3x2}, {"N": 2}),
    "conv data gradient, table": (
        TABLE["conv2d_backward_data"],
        {**CONV, "table": ROWS_3x2},
        {"N": 2},
    ),
    "conv filter gradient, table": (
        TABLE["conv2d_backward_filter"],
        {**CONV, "table": ROWS_3x2},
        {"N": 2},
    ),
    "conv filter gradient, all connected": (
        TABLE["conv2d_backward_filter"],
        {**CONV, "table": None},
        {"N": 2},
    ),
    "conv data gradient, all connected": (
        TABLE["conv2d_backward_data"],
        {**CONV, "table": None},
        {"N": 2},
    ),
    "conv filter gradient, run-time mask": (
        TABLE["conv2d_backward_filter"],
        CONV,
        {"N": 2, "table": ROWS_3x2},
    ),
    "conv data gradient, run-time mask": (
        TABLE["conv2d_backward_data"],
        CONV,
        {"N": 2, "table": ROWS_3x2},
    ),
    "generic conv, padded and strided": (
        TABLE["conv2d_forward"],
        None,
        {**CONV, "N": 2, "stride": 2, "padding": 1, "table": ROWS_3x2},
    ),
    "generic conv data gradient": (
        TABLE["conv2d_backward_data"],
        None,
        {**CONV, "N": 2, "stride": 2, "padding": 1, "dilation": 2, "table": ROWS_3x2},
    ),
}


def _arguments(spec, sizes, seed=0):
    """Small integer arrays for every input of ``spec`` (the mask from ``sizes["table"]``)."""
    rng = np.random.default_rng(seed)
    env = {isym(key): val for key, val in sizes.items() if key != "table"}
    for name, formula in spec.derived:
        env.setdefault(isym(name), int(sp.sympify(formula).subs(env)))
    for p in spec.params:  # an hw param is the sizes of its dims
        if p.kind == "hw":
            env.update({isym(d): sizes[d] for d in p.dims})
    args = {p.name: sizes[p.name] for p in spec.params if p.kind == "int" and p.name in sizes}
    args.update({p.name: tuple(sizes[d] for d in p.dims) for p in spec.params if p.kind == "hw"})
    for a in spec.inputs:
        shape = [int(isym(d).subs(env)) for d in a.dims]
        if a.kind == KS.MASK:
            rows = sizes.get("table")
            mask = np.ones(shape, dtype=int)
            if rows is not None:
                mask[:] = 0
                for out, ins in enumerate(rows):
                    mask[out, list(ins)] = 1
            args[a.name] = mask
        else:
            args[a.name] = rng.integers(-3, 4, size=shape)
    return args


def _outputs(fn, spec, args):
    """Run ``fn`` (a lowering of ``spec``) on ``args``; the expected outputs too."""
    expected = KS.evaluate(spec, args)
    shapes = expected["_shape"]
    env = {d: size for a in spec.arrays for d, size in zip(a.dims, shapes[a.name], strict=True)}
    env.update({p.name: args.get(p.name, p.default) for p in spec.params if p.kind == "int"})
    memory = {a.name: [None] * math.prod(shapes[a.name]) for a in spec.arrays}
    for a in spec.inputs:
        memory[a.name] = [int(x) for x in np.asarray(args[a.name]).reshape(-1)]
    run(fn.body, env, memory)
    got = {a.name: memory[a.name] for a in spec.outputs}
    want = {a.name: [int(x) for x in expected[a.name].reshape(-1)] for a in spec.outputs}
    return got, want


def _sizes(fixed, call):
    return {**(fixed or {}), **call}


def _prefixes(schedule: Schedule):
    """Every prefix of the nest passes (no tree pass), then every prefix of the tree passes."""
    for m in range(len(schedule.nest) + 1):
        yield Schedule(schedule.nest[:m], (), ())
    for m in range(1, len(schedule.tree) + 1):
        yield Schedule(schedule.nest, schedule.tree[:m], ())


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_schedule_prefix_computes_the_spec(case):
    spec, fixed, call = CASES[case]
    args = _arguments(spec, _sizes(fixed, call))
    for schedule in _prefixes(SPECIALIZED if fixed else GENERIC):
        fn = lower_c(spec, fixed, schedule=schedule)
        got, want = _outputs(fn, spec, args)
        passes = [p.__name__ for p in schedule.nest + schedule.tree]
        assert got == want, f"{case}: wrong after {passes}"


def _changes(case, pass_):
    """Does ``pass_`` change the IR of ``case`` where the schedule runs it?"""
    spec, fixed, _ = CASES[case]
    schedule = SPECIALIZED if fixed else GENERIC
    if pass_ in schedule.nest:
        return any(_plan(case, m, pass_) != pass_(_plan(case, m, pass_)) for m in _nests(case))
    before = schedule.tree[: schedule.tree.index(pass_)]
    fn = lower_c(spec, fixed, schedule=Schedule(schedule.nest, before, ()))
    return pass_(fn.body) != fn.body


def _nests(case):
    return range(len(CASES[case][0].nests))


def _plan(case, m, until):
    """The plan of nest ``m`` of ``case`` just before the schedule runs ``until``."""
    spec, fixed, _ = CASES[case]
    fixed = dict(fixed or {})
    plan = plan_nest(spec, spec.nests[m], size_env(spec, fixed), fixed)
    for pass_ in (SPECIALIZED if fixed else GENERIC).nest:
        if pass_ is until:
            break
        plan = pass_(plan)
    return plan


@pytest.mark.parametrize(
    "pass_", list(dict.fromkeys(SPECIALIZED.nest + SPECIALIZED.tree)), ids=lambda p: p.__name__
)
def test_every_pass_changes_some_case(pass_):
    """The prefix test above exercises every pass of the schedule, not only its no-ops."""
    assert any(_changes(case, pass_) for case in CASES if CASES[case][1] is not None)


# --- what each pass changes ---------------------------------------------------------


def test_single_trip_makes_a_one_iteration_loop_a_constant():
    plan = _plan("conv 1x1 output", 1, single_trip)
    after = single_trip(plan)
    assert set(plan.loops) - set(after.loops) == {"i", "j"}
    assert after.point == {i: 0, j: 0}
    assert not {i, j} & {s for st in after.body for s in sp.Tuple(st.lhs, st.rhs).free_symbols}


def test_fusion_merges_the_flat_run_into_one_loop():
    after = fuse_contiguous(_plan("flat run fused", 1, fuse_contiguous))
    assert after.loops == ("n", "k", "cu") and after.made == {"cu": 8}
    (update,) = after.body
    assert (
        update.rhs
        == sp.IndexedBase("w", shape=(3, 2, 4))[k, 0, isym("cu")]
        * sp.IndexedBase("x", shape=(isym("N"), 2, 4))[n, 0, isym("cu")]
    )


def test_fusion_leaves_strided_loops_alone():
    plan = _plan("correlation row-padded", 1, fuse_contiguous)
    assert fuse_contiguous(plan) == plan  # rows of x are wider than the taps


def test_unroll_sums_the_taps_that_do_not_index_the_output():
    after = unroll_taps(_plan("correlation row-padded", 1, unroll_taps))
    assert after.loops == ("n", "i", "j")
    (update,) = after.body
    assert len(sp.Add.make_args(update.rhs)) == 3 * 2  # KH * KW products


def test_work_counts_the_region_and_hoisting_multiplies_it_by_the_pairs():
    plan = measure_work(_plan("conv filter gradient, table", 1, measure_work))
    assert plan.loops[:2] == ("k", "c") and plan.work == 3 * 2 * isym("N") * 3 * 5  # u v n i j
    hoisted = hoist_over_pairs(plan)
    assert hoisted.loops == ("u", "k", "c", "v", "n", "i", "j")
    assert hoisted.work == plan.work * sum(len(r) for r in ROWS_3x2)


def test_hoisting_needs_the_pairs_outermost():
    plan = measure_work(_plan("conv forward, table", 1, measure_work))
    assert plan.loops[0] == "n" and hoist_over_pairs(plan) == plan


@pytest.mark.parametrize(
    ("case", "loops", "updates"),
    [("dot jammed whole", ("n", "i"), 8), ("dot jammed by blocks", ("n", "o4", "i"), JAM)],
)
def test_jam_reduction_copies_the_body_per_output(case, loops, updates):
    plan = _plan(case, 1, jam_reduction)
    after = jam_reduction(plan)
    assert after.loops == loops and len(after.body) == updates
    assert len({u.lhs for u in after.body}) == updates  # one target (accumulator) each
    assert jam_sum(after) == after  # the innermost loop does not index the output


def test_jam_sum_adds_four_products_per_update():
    plan = _plan("rows jammed into sums", 1, jam_sum)
    assert jam_reduction(plan) == plan  # the innermost loop indexes the output
    after = jam_sum(plan)
    assert after.loops == ("n", "o4", "i") and after.made == {"o4": 2}
    (update,) = after.body
    assert len(sp.Add.make_args(update.rhs)) == JAM


def test_jam_outputs_jams_the_output_loops_while_the_accumulators_fit():
    plan = _plan("conv filter gradient, all connected", 1, jam_outputs)
    assert plan.loops == ("k", "c", "u", "n", "i", "j") and len(plan.body) == 2  # v jammed
    after = jam_outputs(plan)
    assert after.loops == ("k", "n", "i", "j")  # u, then c; k stays the parallel loop
    assert len({u.lhs for u in after.body}) == len(after.body) == 2 * 3 * 2  # C * KH * KW
    fixed = {**CONV, "H": 9, "W": 9, "KH": 5, "KW": 5, "table": None}
    spec = TABLE["conv2d_backward_filter"]
    wide = plan_nest(spec, spec.nests[1], size_env(spec, fixed), fixed)
    for pass_ in SPECIALIZED.nest[: SPECIALIZED.nest.index(jam_outputs)]:
        wide = pass_(wide)
    after = jam_outputs(wide)  # u: 25 accumulators; c as well would make 50
    assert after.loops == ("k", "c", "n", "i", "j") and len(after.body) == 5 * 5
    assert 2 * len(after.body) > MAX_ACCUMULATORS


def test_jam_outputs_needs_a_read_the_copies_share():
    plan = _plan("conv filter gradient, all connected", 1, jam_outputs)

    def along_u(read):  # dy[n, k, i, j] -> dy[n, k, i + u, j]: no read is free of u
        if read.base.label.name != "dy":
            return read
        return read.func(read.base, *read.indices[:2], read.indices[2] + u, read.indices[3])

    unshared = tuple(
        dataclasses.replace(s, rhs=s.rhs.replace(lambda e: isinstance(e, sp.Indexed), along_u))
        for s in plan.body
    )
    assert jam_outputs(dataclasses.replace(plan, body=unshared)).loops == plan.loops


def test_jam_sum_outer_sums_a_short_loop_around_a_scatter():
    plan = _plan("conv data gradient, all connected", 1, jam_sum_outer)
    assert plan.loops == ("n", "c", "k", "u", "v", "i", "j")
    after = jam_sum_outer(plan)
    assert after.loops == ("n", "c", "u", "v", "i", "j")
    (update,) = after.body
    assert len(sp.Add.make_args(update.rhs)) == CONV["K"] and k not in update.rhs.free_symbols
    assert jam_sum_outer(_plan("rows jammed into sums", 1, jam_sum_outer)).loops == (
        "n",
        "o4",
        "i",
    )  # one loop inside: jam_sum's case
    fixed = {**CONV, "K": 2 * JAM + 1, "table": None}
    spec = TABLE["conv2d_backward_data"]
    long = plan_nest(spec, spec.nests[1], size_env(spec, fixed), fixed)
    for pass_ in SPECIALIZED.nest[: SPECIALIZED.nest.index(jam_sum_outer)]:
        long = pass_(long)
    assert jam_sum_outer(long) == long  # more than 2 * JAM products per sum


def test_jam_sum_outer_lets_row_padding_pad_every_plane_of_the_sample():
    fn = lower_c(*CASES["conv data gradient, all connected"][:2])
    (scratch,) = [x for x in ir.walk(fn.body) if isinstance(x, ir.Scratch)]
    assert scratch.size == CONV["K"] * (6 * 2 + 5)  # the K padded planes of dy[n]
    init, loop = [x for x in fn.body if isinstance(x, ir.Loop) and x.parallel]
    assert str(loop.var) == "n" and scratch in ir.walk(loop.body)  # once per sample


def test_parallelize_picks_the_first_loop_with_disjoint_writes_and_enough_work():
    generic = parallelize(_plan("generic conv, padded and strided", 1, parallelize))
    assert generic.parallel == "n"  # work depends on the run-time sizes
    small = _plan("conv filter gradient, table", 0, parallelize)
    assert small.work.is_Integer and small.work < PARALLEL_WORK
    assert parallelize(small).parallel is None
    big = dataclasses.replace(small, work=sp.Integer(PARALLEL_WORK))
    assert parallelize(big).parallel == "k"


def test_accumulate_starts_where_only_a_reduction_remains():
    assert accumulate(_plan("dot jammed by blocks", 1, accumulate)).accumulate == "i"
    assert accumulate(_plan("generic conv, padded and strided", 1, accumulate)).accumulate is None
    fn = lower_c(*CASES["dot jammed by blocks"][:2])
    (reduction,) = [x for x in ir.walk(fn.body) if isinstance(x, ir.Loop) and x.reduction]
    assert str(reduction.var) == "i" and len(reduction.reduction) == JAM


def test_table_expansion_merges_the_copies_of_one_output_map():
    forward = _tree_before("conv forward, table", expand_pairs).body
    (pairs,) = [x for x in ir.walk(forward) if isinstance(x, ir.Pairs)]
    expanded = expand_pairs(forward)
    assert not [x for x in ir.walk(expanded) if isinstance(x, ir.Pairs)]
    sums = [x for x in ir.walk(expanded) if isinstance(x, ir.Update) and x.op == "+="]
    targets = {u.lhs.indices[1] for u in sums}  # one nest per output map, its inputs summed
    assert len(sums) == len(targets) == len(ROWS_3x2)
    gradient = expand_pairs(_tree_before("conv filter gradient, table", expand_pairs).body)
    reductions = [x for x in ir.walk(gradient) if isinstance(x, ir.Loop) and x.reduction]
    assert len(reductions) == len(ROWS_3x2)  # the inputs of one output share its dy plane


def _tree_before(case, pass_):
    spec, fixed, _ = CASES[case]
    tree = SPECIALIZED.tree
    return lower_c(spec, fixed, schedule=Schedule(SPECIALIZED.nest, tree[: tree.index(pass_)], ()))


@pytest.mark.parametrize(
    ("case", "form", "plane"),
    [  # plane: pitch * (rows - 1) + columns of the narrow plane
        ("correlation row-padded", "gather", 7 * 3 + 6),
        ("conv filter gradient, table", "reduction", 6 * 2 + 5),
        ("conv data gradient, table", "scatter", 6 * 2 + 5),
    ],
)
def test_row_padding_runs_one_loop_over_the_padded_plane(case, form, plane):
    before = _tree_before(case, row_padded).body
    after = row_padded(before)
    assert not [x for x in ir.walk(before) if isinstance(x, ir.Scratch)]
    assert [x for x in ir.walk(after) if isinstance(x, ir.Scratch)]
    flat = [x for x in ir.walk(after) if isinstance(x, ir.Loop) and str(x.var) == "q"]
    assert any(x.hi == plane and bool(x.reduction) == (form == "reduction") for x in flat)


def test_sample_local_copies_the_sample_the_fills_read():
    before = _tree_before("correlation row-padded", sample_local).body
    after = sample_local(before)
    init, loop = [x for x in after if isinstance(x, ir.Loop) and x.parallel]
    assert init in before  # its body fills no padded rows
    (block,) = loop.body
    scratch, copy = block.body[:2]
    assert (str(scratch.var), scratch.size) == ("x_n", 6 * 7)
    assert (copy.lo, copy.hi) == (0, 6 * 7)  # one contiguous copy of x[n]
    reads = {
        a.base.label.name
        for x in ir.walk(block.body[2:])
        for e in ir.node_exprs(x)
        for a in e.atoms(sp.Indexed)
    }
    assert "x" not in reads and "x_n" in reads


def _zero_fills(nodes) -> int:
    """Top-level nests that only write zeros."""
    updates = [[u for u in ir.walk((x,)) if isinstance(u, ir.Update)] for x in nodes]
    return sum(bool(us) and all(u.op == "=" and u.rhs == 0 for u in us) for us in updates)


def _assigned(nodes, name) -> list:
    return [
        x
        for x in ir.walk(nodes)
        if isinstance(x, ir.Update) and x.op == "=" and str(getattr(x.lhs, "base", "")) == name
    ]


@pytest.mark.parametrize(
    ("case", "array"),
    [
        ("conv filter gradient, all connected", "dw"),  # an accumulator, added once: assigned
        ("correlation row-padded", "y"),  # a padded row, added once: assigned
        ("rows jammed into sums", "dx"),  # the reduction peeled (a run-time output loop)
    ],
)
def test_fold_zero_fill_lets_the_first_step_assign(case, array):
    before = _tree_before(case, fold_zero_fill).body
    after = fold_zero_fill(before)
    assert _zero_fills(before) == 1 and _zero_fills(after) == 0
    assert len(after) == len(before) - 1
    assert not _assigned(before[1:], array) and _assigned(after, array)
    spec, fixed, call = CASES[case]
    fn = dataclasses.replace(lower_c(spec, fixed), body=after)
    got, want = _outputs(fn, spec, _arguments(spec, _sizes(fixed, call)))
    assert got == want


@pytest.mark.parametrize(
    ("case", "fills"),
    [
        ("conv filter gradient, table", 1),  # absent connections keep their zeros
        ("conv data gradient, all connected", 1),  # a scatter adds to an element several times
        ("dot jammed whole", 0),  # y = b is no zero fill
    ],
)
def test_fold_zero_fill_keeps_a_fill_the_sum_does_not_cover(case, fills):
    before = _tree_before(case, fold_zero_fill).body
    assert _zero_fills(before) == fills and fold_zero_fill(before) == before


def test_fold_zero_fill_needs_one_reduction_loop_no_mask_and_no_read_of_the_sum():
    N, zero, one, three, four = isym("N"), *map(sp.Integer, (0, 1, 3, 4))
    a = sp.IndexedBase("a", shape=(4,))
    x = sp.IndexedBase("x", shape=(N, 3, 4))
    m = sp.IndexedBase("m", shape=(4,))
    fill = ir.Loop(i, zero, four, (ir.Update(a[i], "=", zero),))

    def summed(body, hi=N):
        return ir.Loop(n, zero, hi, (ir.Loop(i, zero, four, body),))

    add = ir.Update(a[i], "+=", x[n, 0, i])
    assert fold_zero_fill((fill, summed((add,)))) == (  # the first step assigns, then n from 1
        ir.Block((ir.Let(n, zero), ir.Loop(i, zero, four, (ir.Update(a[i], "=", x[n, 0, i]),)))),
        ir.Loop(n, one, N, (ir.Loop(i, zero, four, (add,)),)),
    )
    two = (fill, ir.Loop(j, zero, three, (summed((ir.Update(a[i], "+=", x[n, j, i]),)),)))
    masked = (fill, summed((ir.If(m[i], (add,)),)))
    reading = (fill, summed((ir.Update(a[i], "+=", a[i] * x[n, 0, i]),)))
    no_step = (fill, summed((add,), hi=zero))
    for nodes in (two, masked, reading, no_step):
        assert fold_zero_fill(nodes) == nodes


def test_threads_guard_depends_on_constant_or_runtime_work():
    N = isym("N")
    a = sp.IndexedBase("a", shape=(N, 4))
    inner = ir.Loop(j, 0, 4, (ir.Update(a[i, j], "=", 0),))
    constant = ir.Loop(i, 0, 100, (inner,), parallel=True, work=sp.Integer(PARALLEL_WORK))
    runtime = ir.Loop(i, 0, N, (inner,), parallel=True, work=4 * N)
    elementwise = ir.Loop(i, 0, N, (ir.Update(a[i, 0], "=", 0),), parallel=True, work=N)
    serial = ir.Loop(i, 0, N, (inner,), work=4 * N)
    annotated = threads((constant, runtime, elementwise, serial))
    assert annotated[0].threads == ir.Threads()
    assert annotated[1].threads == ir.Threads(((N, ">", 1), (4 * N, ">=", PARALLEL_WORK)), 0, True)
    assert annotated[2].threads.chunk == ELEMENTWISE_CHUNK
    assert annotated[3].threads is None


# --- the interpreter itself catches faulty programs -----------------------------------


def test_interpreter_rejects_reads_outside_an_array_and_of_unwritten_elements():
    a = sp.IndexedBase("a", shape=(3,))
    with pytest.raises(IRFault, match="outside"):
        run((ir.Loop(i, 0, 4, (ir.Update(a[i], "=", 1),)),), {}, {"a": [None] * 3})
    with pytest.raises(IRFault, match="before it was written"):
        run((ir.Update(a[0], "+=", 1),), {}, {"a": [None] * 3})
