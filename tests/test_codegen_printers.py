"""Printers: exact source text for small expressions in both C dialects and NumPy."""

import pytest
import sympy as sp

from codegen import ir
from codegen import lower_numpy as N
from codegen.passes.simd import simd_lengths
from codegen.printers import F32, F64, CPrinter, NumpyPrinter, UnsupportedNode
from derive.indexing import CeilDiv, Floor, FloorDiv

x, y = sp.symbols("x y", real=True)
i, j, n = sp.symbols("i j n", integer=True, nonnegative=True)
H = sp.Symbol("H", integer=True, nonnegative=True)


@pytest.mark.parametrize(
    ("expr", "f32", "f64"),
    [
        (sp.tanh(2 * x / 3), "tanhf((2.0F/3.0F)*x)", "tanh((2.0/3.0)*x)"),
        (sp.exp(-x) + sp.log(y), "logf(y) + expf(-x)", "log(y) + exp(-x)"),
        # NaN propagates (C's fmax/fmin would drop it): PyTorch's relu and max pooling
        (
            sp.Max(x, y),
            "(((x) > (y) || isnan(x)) ? (x) : (y))",
            "(((x) > (y) || isnan(x)) ? (x) : (y))",
        ),
        (
            sp.Min(x, 0),
            "(((x) < (0) || isnan(x)) ? (x) : (0))",
            "(((x) < (0) || isnan(x)) ? (x) : (0))",
        ),
        (x**2, "(x*x)", "(x*x)"),
        (1 / x**2, "(1.0F/(x*x))", "(1.0/(x*x))"),
        (sp.Float("1.7159") * x, "1.7159F*x", "1.7159*x"),
        (sp.Piecewise((x, x > y), (0, True)), "((x > y) ? (x) : (0))", "((x > y) ? (x) : (0))"),
        (-sp.oo, "-INFINITY", "-INFINITY"),
    ],
)
def test_c_dialects(expr, f32, f64):
    assert CPrinter(F32).doprint(expr) == f32
    assert CPrinter(F64).doprint(expr) == f64


def test_nan_and_scatter_nodes():
    from derive.indexing import IsNaN

    assert CPrinter(F32).doprint(sp.Or(x > y, IsNaN(x))) == "isnan(x) || x > y"
    assert NumpyPrinter().doprint(IsNaN(x)) == "numpy.isnan(x)"
    a = sp.IndexedBase("a")
    node = ir.Update(N.Scatter(sp.Symbol("dx"), FloorDiv(a[i], H), sp.Mod(a[i], H)), "+=", y)
    assert NumpyPrinter().update(node) == "numpy.add.at(dx, ((a[i]) // (H), a[i] % H), y)"


def test_c_integer_helpers():
    p = CPrinter(F64)
    assert p.doprint(sp.Max(i, j)) == "((i) > (j) ? (i) : (j))"
    assert p.doprint(sp.Min(i, j)) == "((i) < (j) ? (i) : (j))"
    assert p.doprint(CeilDiv(i, j)) == "((i) + (j) - 1)/(j)"
    assert p.doprint(FloorDiv(i, j)) == "((i)/(j))"
    a = sp.IndexedBase("a", shape=(H,))
    assert p.doprint(sp.Mod(a[i], H)) == "((a[i]) % (H))"  # an index read from an array


def test_c_indexed_is_flat_row_major():
    a = sp.IndexedBase("a", shape=(sp.Symbol("N", integer=True), 3, H))
    assert CPrinter(F32).doprint(a[n, 2, i + 1]) == "a[3*H*n + 2*H + i + 1]"


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (sp.tanh(2 * x / 3), "numpy.tanh((2/3)*x)"),
        (sp.Max(x, 0), "numpy.maximum(0, x)"),
        (sp.Max(i, j), "max(i, j)"),
        (sp.Piecewise((x, x > 0), (0, True)), "numpy.where(x > 0, x, 0)"),
        (1 / y, "1/y"),
        (CeilDiv(i, j), "-(-(i) // (j))"),
        (FloorDiv(i, j), "(i) // (j)"),
        (sp.Mod(H, 2), "H % 2"),
        (-sp.oo, "-numpy.inf"),
    ],
)
def test_numpy(expr, text):
    assert NumpyPrinter().doprint(expr) == text


def test_numpy_views_and_einsum():
    p = NumpyPrinter()
    view = N.View(sp.Symbol("x"), N.Span(0, H, 1), N.Span(i, i + 2 * H, 2), 3)
    assert p.doprint(view) == "x[:, i:2*H + i:2, 3]"
    ein = N.Einsum(sp.Symbol("ab,b->a"), sp.Symbol("w"), sp.Symbol("v"))
    assert p.doprint(ein) == "numpy.einsum('ab,b->a', w, v, optimize=True)"
    aligned = N.Align(sp.Symbol("b"), sp.Tuple(n), sp.Tuple(i, n, j))
    assert p.doprint(aligned) == "b[None, :, None]"


@pytest.mark.parametrize("printer", [CPrinter(F32), CPrinter(F64), NumpyPrinter()])
@pytest.mark.parametrize("node", [sp.erf(x), sp.besselj(0, x), sp.Integral(x, x)])
def test_unsupported_node_names_its_class(printer, node):
    with pytest.raises(UnsupportedNode, match=type(node).__name__):
        printer.doprint(node)


def test_statements_print_in_both_languages():
    a = sp.IndexedBase("a", shape=(H,))
    loop = ir.Loop(i, 0, H, (ir.Update(a[i], "+=", 2 * x),))
    assert CPrinter(F32).block([loop], 0) == [
        "for (int64_t i = 0; i < H; ++i) {",
        "    a[i] += 2*x;",
        "}",
    ]
    assert NumpyPrinter().block([loop], 0) == ["for i in range(H):", "    a[i] += 2*x"]


@pytest.mark.parametrize(
    ("trips", "dialect", "clause"),
    [
        (120, F32, " simdlen(8)"),  # 15 half vectors of floats, 7.5 whole ones
        (120, F64, ""),  # 15 whole vectors of doubles
        (128, F32, ""),  # whole vectors, no remainder
        (84, F64, " simdlen(4)"),
        (892, F64, ""),  # 111.5 vectors: long enough for the width to win
        (H, F32, ""),  # runtime trip count
    ],
)
def test_short_reductions_run_on_half_vectors(trips, dialect, clause):
    acc = sp.Symbol("acc0", real=True)
    a = sp.IndexedBase("a", shape=(1000,))
    body = (ir.Update(acc, "+=", a[i]),)
    loop = ir.Loop(i, sp.Integer(0), sp.sympify(trips), body, reduction=(acc,))
    lines = CPrinter(dialect).block(simd_lengths([loop], dialect.vector_lanes), 0)
    assert lines[1] == f"#pragma omp simd{clause} reduction(+: acc0)"


def test_floor_is_an_integer_only_inside_an_index():
    """A computed position: float floor in values and bounds tests, converted to int64
    only where it indexes (C) or once clipped into its axis (NumPy)."""
    a = sp.IndexedBase("a", shape=(H,))
    read = sp.Piecewise((a[Floor(x) + 1], sp.And(Floor(x) + 1 >= 0, Floor(x) + 1 < H)), (0, True))
    expr = (x - Floor(x)) * read
    assert CPrinter(F32).doprint(expr) == (
        "(x - floorf(x))*((floorf(x) >= -1 && H > floorf(x) + 1) ? "
        "(a[((int64_t)floorf(x)) + 1]) : (0))"
    )
    assert CPrinter(F64).doprint(Floor(x)) == "floor(x)"
    p = NumpyPrinter()
    assert p.doprint(sp.And(Floor(x) >= 0, H > Floor(x))) == (
        "(numpy.floor(x) >= 0) & (H > numpy.floor(x))"
    )
    view = N.View(sp.Symbol("a"), N.Clip(Floor(x) + 1, 0, H - 1))
    assert p.doprint(view) == "a[numpy.clip(numpy.floor(x) + 1, 0, H - 1).astype(numpy.int64)]"
