"""Structure: the kernel-table loader, the loop nests lowering builds, the LeNet-5
specializations and the @generated headers."""

import dataclasses
import re
from pathlib import Path

import pytest
import sympy as sp

from codegen import ir, pipeline
from codegen import lower_numpy as N
from codegen.analysis import flat_offset
from codegen.lower_c import lower_c
from codegen.lower_numpy import lower_numpy
from codegen.passes.jam import JAM
from codegen.printers import F32, CPrinter
from derive import core, lenet5
from derive import kernels as K
from derive import kernelspec as KS
from derive.indexing import Floor, isym

GENERATED = Path(__file__).resolve().parents[1] / "generated"
TABLE = pipeline.kernel_table()
IDS = {s.derivation for s in TABLE.values()}


def test_every_cited_derivation_is_registered():
    from derive import core

    assert {s.derivation for s in TABLE.values()} <= set(core.ids())


def test_the_emitted_api_is_the_table():
    """Each kernel of the table is a NumPy function and a C function per dtype, and the
    NumPy backend has no other (the C library adds only the LeNet-5 specializations)."""
    header = (GENERATED / "c" / "symconv.h").read_text()
    numpy_defs = set(
        re.findall(r"^def ([a-z]\w*)\(", (GENERATED / "np_kernels.py").read_text(), re.M)
    )
    assert numpy_defs == set(TABLE)
    for name in TABLE:
        for suffix in ("f32", "f64"):
            assert re.search(rf"^void symconv_{name}_{suffix}\(", header, re.M), (name, suffix)


# --- the loader rejects inconsistent specs, naming the kernel --------------------------

CONV = TABLE["conv2d_forward"]
n, k, c, i, j, u, v = (isym(s) for s in "n k c i j u v".split())
Y, X, W = (sp.IndexedBase(s) for s in "y x w".split())


def _with_stmt(spec, stmt):
    nest = dataclasses.replace(spec.nests[1], body=(stmt,))
    return dataclasses.replace(spec, nests=(spec.nests[0], nest))


BAD = {
    "unknown derivation id": dataclasses.replace(CONV, derivation="conv.nonexistent"),
    "undeclared array": _with_stmt(
        CONV, KS.Stmt(Y[n, k, i, j], "+=", sp.IndexedBase("q")[k, c, u, v])
    ),
    "unknown symbols": _with_stmt(CONV, KS.Stmt(Y[n, k, i, j], "+=", isym("zz") * W[k, c, u, v])),
    "ranges over": _with_stmt(CONV, KS.Stmt(Y[n, k, i, j], "+=", X[n, c, i, j] * W[k, c, v, u])),
    "has rank": _with_stmt(CONV, KS.Stmt(Y[n, k, i, j], "+=", W[k, c, u])),
    "writes the input": _with_stmt(CONV, KS.Stmt(sp.IndexedBase("b")[k], "+=", W[k, c, u, v])),
    "unknown op": _with_stmt(CONV, KS.Stmt(Y[n, k, i, j], "*=", W[k, c, u, v])),
    "undeclared indices": dataclasses.replace(
        CONV, nests=(dataclasses.replace(CONV.nests[0], loops=("n", "k", "i", "j", "zz")),)
    ),
    "never written": dataclasses.replace(
        CONV, arrays=CONV.arrays + (KS.Array("z", ("K",), role=KS.OUT),)
    ),
    "before initializing": dataclasses.replace(CONV, nests=CONV.nests[1:2]),
    "signature": dataclasses.replace(CONV, signature=("x", "w", "stride", "padding", "table")),
    "exactly one of definition": dataclasses.replace(CONV, definition=None),
    "needs proof cases": dataclasses.replace(CONV, cases=()),
}


@pytest.mark.parametrize("message", sorted(BAD))
def test_loader_rejects_bad_spec_naming_the_kernel(message):
    with pytest.raises(KS.KernelSpecError, match=rf"^conv2d_forward: .*{message}"):
        KS.validate_table([BAD[message]], IDS)


def test_loader_rejects_a_float_param_before_the_float_arrays():
    tanh = TABLE["scaled_tanh_forward"]
    bad = dataclasses.replace(tanh, signature=("A", "z", "S"))
    with pytest.raises(KS.KernelSpecError, match="^scaled_tanh_forward: float param 'A'"):
        KS.validate_table([bad], IDS)


def test_loader_rejects_duplicate_names():
    with pytest.raises(KS.KernelSpecError, match="^conv2d_forward: duplicate kernel name"):
        KS.validate_table([CONV, CONV], IDS)


def test_spec_text_and_hash_are_stable():
    again = {s.name: s for s in K.kernel_specs()}
    assert all(again[name].sha256() == spec.sha256() for name, spec in TABLE.items())


# --- lowering ------------------------------------------------------------------------


def test_c_loop_nest_is_the_spec_order_with_the_table_guard():
    fn = lower_c(CONV)
    init, acc = fn.body
    assert ir.loop_vars(init) == ["n", "k", "i", "j"]
    assert ir.loop_vars(acc) == ["n", "k", "c", "u", "v", "i", "j"]
    ifs = [x for x in ir.walk([acc]) if isinstance(x, ir.If)]
    assert len(ifs) == 1 and str(ifs[0].cond) == "table[k, c]"
    assert init.parallel and acc.parallel  # batch loop: disjoint writes


def test_backward_filter_parallelizes_over_output_channels_not_batch():
    fn = lower_c(TABLE["conv2d_backward_filter"])
    assert ir.loop_vars(fn.body[1])[0] == "k" and fn.body[1].parallel


def test_innermost_reduction_uses_an_accumulator():
    fn = lower_c(TABLE["dense_forward"])
    loops = [x for x in ir.walk(fn.body) if isinstance(x, ir.Loop) and x.reduction]
    assert [str(x.var) for x in loops] == ["i"]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_numpy_loops_only_over_kernel_taps(name):
    spec = TABLE[name]
    taps = {t for nest in spec.nests for t in nest.taps}
    loops = {str(x.var) for x in ir.walk(lower_numpy(spec).body) if isinstance(x, ir.Loop)}
    assert loops <= taps
    assert not ({"n", "p", "e", "i", "j"} & loops)


# --- LeNet-5 specializations -------------------------------------------------------------


def _special(layer, kernel):
    (s,) = [s for s in pipeline.specializations(TABLE) if s.layer == layer and s.kernel == kernel]
    return lower_c(TABLE[kernel], s.fixed_dict)


def test_every_lenet_layer_is_specialized():
    layers = {s.layer for s in pipeline.specializations(TABLE)}
    assert layers == {layer.name for layer in lenet5.LAYERS}


@pytest.mark.parametrize(
    ("layer", "kernel"), [(s.layer, s.kernel) for s in pipeline.specializations(TABLE)]
)
def test_specialization_bounds_are_constant_except_the_batch(layer, kernel):
    fn = _special(layer, kernel)
    for loop in (x for x in ir.walk(fn.body) if isinstance(x, ir.Loop)):
        assert loop.lo.is_Integer, (loop.var, loop.lo)
        assert loop.hi.is_Integer or loop.hi == isym("N"), (loop.var, loop.hi)
    assert not [x for x in ir.walk(fn.body) if isinstance(x, ir.If)]


def _w_pairs(fn):
    """(out map, in map) of every filter read of a lowered body (constant offsets)."""
    pairs = set()
    for node in ir.walk(fn.body):
        if isinstance(node, ir.Update) and node.op == "=" and node.rhs == 0:
            continue  # the zero initialization covers every (out, in) pair of dw
        for expr in ir.node_exprs(node):
            for acc in expr.atoms(sp.Indexed):
                if str(acc.base) in ("w", "dw"):
                    assert acc.indices[0].is_Integer and acc.indices[1].is_Integer
                    pairs.add((int(acc.indices[0]), int(acc.indices[1])))
    return pairs


@pytest.mark.parametrize(
    "kernel", ["conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"]
)
def test_c3_table_is_compiled_in(kernel):
    fn = _special("C3", kernel)
    connected = {(k_, c_) for k_, row in enumerate(lenet5.C3_TABLE) for c_ in row}
    assert _w_pairs(fn) == connected  # absent maps produce no code
    text = "\n".join(CPrinter(F32).block(fn.body))
    assert "table" not in text


def test_forward_taps_are_unrolled():
    fn = _special("C1", "conv2d_forward")
    loops = [str(x.var) for x in ir.walk(fn.body) if isinstance(x, ir.Loop)]
    assert "u" not in loops and "v" not in loops
    sums = [x for x in ir.walk(fn.body) if isinstance(x, ir.Update)]
    assert any(len(s.rhs.atoms(sp.Indexed)) >= 50 for s in sums)  # 25 taps x (x, w)


def _loops(fn):
    return [x for x in ir.walk(fn.body) if isinstance(x, ir.Loop)]


@pytest.mark.parametrize(
    "kernel", ["conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"]
)
def test_c5_inner_loops_fuse_into_one_contiguous_loop(kernel):
    fn = _special("C5", kernel)
    accumulating = [x for x in _loops(fn) if x in ir.walk(fn.body[-1:])]
    fused = [x for x in accumulating if str(x.var) == "cuv"]  # two with a first step peeled
    assert fused and all((x.lo, x.hi) == (0, 400) for x in fused)  # C*KH*KW
    assert not {"c", "u", "v"} & {str(x.var) for x in accumulating}
    for update in (x for loop in fused for x in ir.walk(loop.body) if isinstance(x, ir.Update)):
        for acc in sp.Tuple(update.lhs, update.rhs).atoms(sp.Indexed):
            if isym("cuv") in acc.free_symbols:  # unit stride along the flat loop
                assert sp.diff(flat_offset(acc), isym("cuv")) == 1


def test_fusion_leaves_strided_loops_alone():
    fn = _special("C1", "conv2d_forward")  # x rows are 32 wide, kernel rows 5: no flat run
    assert not [x for x in _loops(fn) if len(str(x.var)) > 1]


@pytest.mark.parametrize(("layer", "kernel"), [("F6", "dense_forward"), ("C5", "conv2d_forward")])
def test_dot_products_are_jammed_into_four_accumulators(layer, kernel):
    fn = _special(layer, kernel)
    (red,) = [x for x in _loops(fn) if x.reduction]
    assert len(red.reduction) == JAM
    reads = {a for u in red.body for a in u.rhs.atoms(sp.Indexed)}
    assert len(reads) == JAM + 1  # four weight rows, one shared input row


@pytest.mark.parametrize(
    ("layer", "kernel", "var", "trips", "inner"),
    [("F6", "dense_backward", "o4", 21, "i"), ("C5", "conv2d_backward_data", "k4", 30, "cuv")],
)
def test_output_rows_are_updated_once_per_four_products(layer, kernel, var, trips, inner):
    fn = _special(layer, kernel)
    (jammed,) = [x for x in _loops(fn) if str(x.var) == var]
    first = [x for x in ir.walk(fn.body) if isinstance(x, ir.Let) and str(x.var) == var]
    assert jammed.hi == trips  # from 0, or from 1 after the first step (zero fill folded)
    assert (jammed.lo, [x.value for x in first]) in ((0, []), (1, [0]))
    (loop,) = jammed.body
    (update,) = loop.body
    assert str(loop.var) == inner and loop.var in update.lhs.free_symbols
    assert len(sp.Add.make_args(update.rhs)) == JAM
    rows = {a.base for a in update.rhs.atoms(sp.Indexed) if loop.var in a.free_symbols}
    assert len({a for a in update.rhs.atoms(sp.Indexed) if a.base in rows}) == JAM


def _fills(fn):
    """The loops filling a row-padded scratch ``t`` from array reads (``t[q] = ...``, ``+=``)."""
    return [
        x
        for x in _loops(fn)
        if str(x.var) == "q"
        and all(isinstance(u, ir.Update) and str(u.lhs.base) == "t" for u in x.body)
        and all(u.rhs.atoms(sp.Indexed) for u in x.body)
    ]


def test_c3_forward_fills_one_loop_per_connection():
    fn = _special("C3", "conv2d_forward")
    fills = _fills(fn)
    pairs = []
    for fill in fills:
        (update,) = fill.body
        weights = {a for a in update.rhs.atoms(sp.Indexed) if str(a.base) == "w"}
        assert len(weights) == 25  # the loop's invariants: one 5x5 filter
        assert len({a.indices[:2] for a in weights}) == 1
        pairs.append(tuple(int(i) for i in next(iter(weights)).indices[:2]))
    assert pairs == [(k, c) for k, row in enumerate(lenet5.C3_TABLE) for c in sorted(row)]
    # the first connection of a map sets its scratch row, the others add to it
    ops = [fill.body[0].op for fill in fills]
    assert ops == [op for row in lenet5.C3_TABLE for op in ["="] + ["+="] * (len(row) - 1)]
    adds = [
        x
        for x in ir.walk(fn.body[1:])
        if isinstance(x, ir.Update) and x.op == "+=" and str(x.lhs.base) == "y"
    ]
    assert len(adds) == len(lenet5.C3_TABLE)  # each output map read and written once


@pytest.mark.parametrize(("layer", "sample"), [("C1", 32 * 32), ("C3", 6 * 14 * 14)])
def test_forward_fills_read_a_local_copy_of_the_sample(layer, sample):
    fn = _special(layer, "conv2d_forward")
    (parallel,) = [x for x in _loops(fn) if x.parallel and x in ir.walk(fn.body[1:])]
    (block,) = parallel.body
    scratch, copy = block.body[:2]
    assert (str(scratch.var), scratch.size) == ("x_n", sample)
    assert (copy.lo, copy.hi) == (0, sample)  # one contiguous copy of x[n]
    (update,) = copy.body
    assert sp.diff(flat_offset(update.rhs), copy.var) == 1
    assert update.rhs.indices[0] == parallel.var
    for fill in _fills(fn):
        assert {str(a.base) for a in fill.body[0].rhs.atoms(sp.Indexed)} == {"w", "x_n"}


@pytest.mark.parametrize(("layer", "rows"), [("C1", 28), ("C3", 10)])
def test_narrow_output_rows_are_computed_at_the_input_pitch(layer, rows):
    fn = _special(layer, "conv2d_forward")
    scratch = [x for x in ir.walk(fn.body) if isinstance(x, ir.Scratch)]
    width = {"C1": 32, "C3": 14}[layer]
    rows_t = [s for s in scratch if str(s.var) == "t"]
    assert rows_t and all(s.size == width * (rows - 1) + rows for s in rows_t)
    assert _fills(fn) and all(fill.hi == width * (rows - 1) + rows for fill in _fills(fn))


@pytest.mark.parametrize(("layer", "rows", "width"), [("C1", 28, 32), ("C3", 10, 14)])
def test_filter_gradient_reduces_over_a_row_padded_copy_of_dy(layer, rows, width):
    fn = _special(layer, "conv2d_backward_filter")
    scratch = [x for x in ir.walk(fn.body) if isinstance(x, ir.Scratch)]
    assert scratch and all(s.size == width * (rows - 1) + rows for s in scratch)
    (red,) = {x.hi for x in ir.walk(fn.body) if isinstance(x, ir.Loop) and x.reduction}
    assert red == width * (rows - 1) + rows  # the simd loop runs over the whole padded plane


def test_c3_data_gradient_scatters_from_row_padded_copies_of_dy():
    fn = _special("C3", "conv2d_backward_data")
    (scratch,) = [x for x in ir.walk(fn.body) if isinstance(x, ir.Scratch)]
    assert scratch.size == len(lenet5.C3_TABLE) * (14 * 9 + 10)  # every dy plane once
    scatters = [
        x
        for x in ir.walk(fn.body)
        if isinstance(x, ir.Update) and x.op == "+=" and str(x.lhs.base) == "dx"
    ]
    assert len(scatters) == 6  # one per input map (taps are loops), its output maps summed
    assert all(len(sp.Add.make_args(x.rhs)) > 1 for x in scatters)


def test_c3_filter_gradient_reduces_each_dy_plane_once():
    fn = _special("C3", "conv2d_backward_filter")
    reductions = [x for x in _loops(fn) if x.reduction]
    # one reduction per output map k: 5 accumulators (v) for each connected input map
    assert [len(r.reduction) for r in reductions] == [5 * len(row) for row in lenet5.C3_TABLE]
    copied = [
        x.rhs
        for x in ir.walk(fn.body)
        if isinstance(x, ir.Update) and x.op == "=" and x.rhs.atoms(sp.Indexed)
    ]
    assert [int(a.indices[1]) for a in copied] == list(range(len(lenet5.C3_TABLE)))
    for red, row in zip(reductions, lenet5.C3_TABLE, strict=True):
        (shared,) = {a for u in red.body for a in u.rhs.atoms(sp.Indexed) if str(a.base) == "t"}
        assert all(shared in u.rhs.atoms(sp.Indexed) for u in red.body)
        planes = {
            int(a.indices[1])
            for u in red.body
            for a in u.rhs.atoms(sp.Indexed)
            if str(a.base) == "x"
        }
        assert planes == set(row)


def test_c3_filter_gradient_is_one_parallel_region():
    fn = _special("C3", "conv2d_backward_filter")
    assert len([x for x in _loops(fn) if x.parallel]) == 1


# --- the @generated headers --------------------------------------------------------------

HEADER = re.compile(r"@generated by make codegen from (derive\.\w+) \(([\w. ]+)\); do not edit")


@pytest.mark.parametrize(
    "path",
    [
        "np_kernels.py",
        "c_kernels.py",
        "lenet5_spec.py",
        "c/symconv.c",
        "c/symconv.h",
        "c/symconv_fast.c",
    ],
)
def test_files_carry_the_generated_header(path):
    first = (GENERATED / path).read_text().splitlines()[0]
    assert HEADER.search(first), first


@pytest.mark.parametrize("path", ["np_kernels.py", "c_kernels.py"])
def test_every_python_kernel_cites_its_derivation(path):
    text = (GENERATED / path).read_text()
    for name, spec in TABLE.items():
        body = text.split(f"\ndef {name}(", 1)[1].split("\ndef ", 1)[0]
        module, ident = HEADER.search(body).groups()
        assert ident == spec.derivation and module.startswith("derive.")
        assert f"spec sha256: {spec.sha256()}" in body


def test_every_c_function_cites_its_derivation():
    text = (GENERATED / "c" / "symconv.c").read_text()
    # Every commented kernel; the LeNet-5 step's entry points call kernels, derive nothing.
    functions = re.findall(
        r"^/\* ((?:(?!\*/).)*)\*/\nvoid (symconv_(?!lenet5_)\w+)\(", text, flags=re.S | re.M
    )
    assert len(functions) == 2 * (len(TABLE) + len(pipeline.specializations(TABLE)))
    known = set(core.ids()) | IDS
    for comment, _ in functions:
        assert HEADER.search(comment).group(2) in known
        assert "spec sha256: " in comment


def _c_function(name: str) -> str:
    text = (GENERATED / "c" / "symconv.c").read_text()
    return text.split(f"\nvoid {name}(", 1)[1].split("\n}\n", 1)[0]


def test_small_parallel_loops_have_a_serial_copy():
    """A false OpenMP if() still builds a one-thread team (~0.4 us): loops cheap per
    sample (F6, activations) run a plain serial copy when threads do not pay; the
    unrolled convolutions keep the if() clause (their text would double)."""
    f6 = _c_function("symconv_dense_forward_F6_f32")
    assert "parallel for if(" not in f6
    assert f6.count("#pragma omp parallel for") == f6.count("} else\n#endif") == 2
    assert "parallel for if(" in _c_function("symconv_conv2d_forward_C5_f32")
    assert "} else\n#endif" in _c_function("symconv_scaled_tanh_forward_f32")


def _reads(expr, name):
    return [a for a in expr.atoms(sp.Indexed) if str(a.base) == name]


def test_reads_at_computed_positions_are_guarded_in_both_lowerings():
    """affine_resample reads x at floor(source position) + {0, 1}: in C each such read is
    the first branch of a bounds test, in NumPy a gather with every computed index clipped;
    the source positions themselves (src_r, src_c: plain indices) are read unguarded."""
    spec = TABLE["affine_resample"]
    nodes = ir.walk(lower_c(spec).body)
    (update,) = [u for u in nodes if isinstance(u, ir.Update) and str(u.lhs.base) == "y"]
    guards = update.rhs.atoms(sp.Piecewise)
    assert len(guards) == 4
    assert all(len(_reads(g.args[0][0], "x")) == 1 for g in guards)
    assert len(_reads(update.rhs, "x")) == 4  # no read of x outside a guard
    body = lower_numpy(spec).body
    gathers = [
        v
        for node in body
        if isinstance(node, ir.Update)
        for v in node.rhs.atoms(N.View)
        if str(v.args[0]) == "x"
    ]
    assert len(gathers) == 4
    assert all(isinstance(e, N.Clip) for v in gathers for e in v.args[2:])
    # Each floor of a source position is computed once, before the statement that uses it.
    floors = [node.value for node in body if isinstance(node, ir.Let)]
    assert len(floors) == 2 and all(isinstance(f, Floor) for f in floors)
