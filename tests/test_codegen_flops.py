"""The FLOP counter (codegen.flops): small hand-built specs against hand counts, the
table's kernels at small sizes, and the LeNet-5 totals against an independent count
from the layer table."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from codegen import flops, lenet5_step, pipeline
from derive import lenet5
from derive.indexing import isym
from derive.kernelspec import OUT, Array, KernelSpec, Nest, Stmt
from generated import lenet5_spec

TABLE = pipeline.kernel_table()
i, j = isym("i"), isym("j")
x, y, z, m = (sp.IndexedBase(a) for a in ("x", "y", "z", "m"))


def _spec(nests, ranges, arrays=None) -> KernelSpec:
    """A minimal spec: x (I), mask m (I, J), output y (I) and z (I, J)."""
    arrays = arrays or (
        Array("x", ("I",)),
        Array("m", ("I", "J"), "mask", optional=True),
        Array("y", ("I",), role=OUT),
        Array("z", ("I", "J"), role=OUT),
    )
    return KernelSpec(
        name="hand",
        derivation="none",
        doc="",
        arrays=arrays,
        params=(),
        signature=("x",),
        returns=("y",),
        ranges=ranges,
        nests=nests,
    )


RANGES = (("i", 0, "I"), ("j", 0, "J"))


def test_expression_ops_follow_the_conventions():
    floats = frozenset({"x", "y"})
    a, b = x[i], y[i]
    A, S = sp.Symbol("A", real=True), sp.Symbol("S", real=True)
    cases = [
        (a, {}),  # a read
        (a + b, {"add": 1}),
        (a - 2 * b, {"add": 1, "mul": 1}),  # the sign folds into the add
        (-a, {}),
        (a * b * b, {"mul": 2}),
        (a**2, {"mul": 1}),
        (a / b, {"div": 1}),
        (1 / (a * b), {"mul": 1, "div": 1}),
        (S / A * a, {"mul": 1}),  # S / A is loop-invariant: one multiply by it
        (A * sp.tanh(S * a), {"mul": 2, "other": 1}),
        (sp.exp(a - A), {"add": 1, "other": 1}),
        (sp.Piecewise((a * b, a > 0), (0, True)), {"mul": 1, "other": 1}),
        (sp.Max(a, b, 0), {"other": 2}),
        (A**2 + 1, {}),  # no array read: computed once, outside the loops
        (x[i * 2 + 1] * y[i], {"mul": 1}),  # index arithmetic is not float work
    ]
    for expr, want in cases:
        got = flops.expr_ops(expr, floats)
        assert {k: n for k, n in got.items() if n} == want, expr


def test_counts_every_point_of_a_nest():
    spec = _spec(
        (
            Nest(("i",), (Stmt(y[i], "=", x[i] * x[i]),)),
            Nest(("i", "j"), (Stmt(y[i], "+=", 3 * x[i]),)),
            Nest(("i",), (Stmt(y[i], "max=", x[i]),)),
        ),
        RANGES,
    )
    got = flops.count(spec, {"I": 4, "J": 5})
    # 4 multiplies; 20 x (one multiply + the add of +=); 4 comparisons
    assert dict(got) == {"add": 20, "mul": 4 + 20, "div": 0, "other": 4}
    assert flops.total(got) == 48


def test_a_guard_counts_only_its_true_points():
    nest = Nest(("i", "j"), (Stmt(z[i, j], "+=", x[i] * 2),), cond=m[i, j])
    spec = _spec((Nest(("i", "j"), (Stmt(z[i, j], "=", sp.Integer(0)),)), nest), RANGES)
    table = np.array([[1, 0, 1], [0, 0, 1]], np.uint8)
    assert flops.total(flops.count(spec, {"I": 2, "J": 3, "m": table})) == 2 * 3
    # absent, the optional mask is all ones
    assert flops.total(flops.count(spec, {"I": 2, "J": 3})) == 2 * 6


def test_clip_counts_only_in_bounds_points():
    # y[i] += x[i + j - 1]: with I = 4, J = 3 the reads x[-1] and x[4] are padding
    clipped = Nest(("i", "j"), (Stmt(y[i], "+=", x[i + j - 1]),), clip=True)
    spec = _spec((Nest(("i",), (Stmt(y[i], "=", sp.Integer(0)),)), clipped), RANGES)
    assert flops.total(flops.count(spec, {"I": 4, "J": 3})) == 12 - 2
    # unclipped, a read outside is a zero that is still added
    plain = _spec((spec.nests[0], Nest(("i", "j"), clipped.body)), RANGES)
    assert flops.total(flops.count(plain, {"I": 4, "J": 3})) == 12


def test_a_write_outside_its_array_does_not_run():
    scatter = Nest(("i", "j"), (Stmt(y[i + j], "+=", x[i]),))
    spec = _spec((Nest(("i",), (Stmt(y[i], "=", sp.Integer(0)),)), scatter), RANGES)
    # y[i + j] exists for i + j < 3: (0,0) (0,1) (0,2) (1,0) (1,1) (2,0)
    assert flops.total(flops.count(spec, {"I": 3, "J": 3})) == 6


@pytest.mark.parametrize(
    ("kernel", "sizes", "want"),
    [
        # 2 x 2 output maps of 2 x 2, 2 input maps, 2 x 2 taps: 64 multiply-adds
        ("conv2d_forward", dict(N=1, C=2, K=2, H=3, W=3, KH=2, KW=2), 2 * 64),
        # padding 1: out 4 x 4; in-bounds taps per output row pattern (1, 2, 2, 1) per axis
        ("conv2d_forward", dict(N=1, C=1, K=1, H=3, W=3, KH=2, KW=2, padding=1), 2 * 6 * 6),
        ("conv2d_backward_bias", dict(N=2, K=3, Ho=2, Wo=2), 2 * 3 * 4),
        ("subsample_forward", dict(N=1, C=2, H=4, W=4), 2 * 4 * 2 * 4),
        # y = 0; y += (x - c)**2: subtract, square, add
        ("rbf_forward", dict(N=1, I=3, O=2), 3 * 6),
        ("sdlm_update", dict(E=5), 4 * 5),  # w - eta g / (mu + h)
        ("sgd_momentum_update", dict(E=5), 4 * 5),  # m v - r g; w + v
        ("scaled_tanh_forward", dict(E=7), 3 * 7),  # A tanh(S z)
        ("scaled_tanh_backward_from_output", dict(E=7), 4 * 7),  # dy (S/A) (A^2 - y^2)
    ],
)
def test_table_kernels_against_hand_counts(kernel, sizes, want):
    assert flops.total(flops.count(TABLE[kernel], sizes)) == want


def test_layer_kernels_scale_with_the_batch():
    """The benchmarks multiply per-image counts by the batch: every LeNet-5 layer
    kernel's count must be linear in N."""
    for layer in lenet5.LAYERS:
        sizes = flops._layer_sizes(layer)
        for _, kernel in flops.LAYER_KERNELS[layer.kind]:
            one = flops.total(flops.count(TABLE[kernel], sizes))
            assert flops.total(flops.count(TABLE[kernel], {**sizes, "N": 3})) == 3 * one


def test_lenet5_totals_against_an_independent_count():
    """Per image, from the layer table alone: a convolution or dense layer does a
    multiply-add per connection of its weights (C3: only Table I's 60 pairs), a
    subsampling layer a multiply-add per input, each squashed value A tanh(S a) two
    multiplies and a tanh, the MAP loss on 10 penalties 45 operations."""
    L = {layer.name: layer for layer in lenet5.LAYERS}
    macs = {
        "C1": 6 * 1 * 25 * 28**2,
        "C3": sum(len(maps) for maps in lenet5.C3_TABLE) * 25 * 10**2,
        "C5": 120 * 16 * 25,
        "F6": 120 * 84,
    }
    assert macs["C3"] == 60 * 25 * 100
    squashed = sum(L[n].out_maps * L[n].out_size ** 2 for n in ("C1", "S2", "C3", "S4", "C5", "F6"))
    pooled = 6 * 28**2 + 16 * 10**2  # S2's and S4's inputs
    rbf = 84 * 10
    loss_fwd = 10 + 2 + 3 * 10 + 3  # min, exp(m - j), the sum of exps, y_label - m + log
    inference = 2 * sum(macs.values()) + 2 * pooled + 3 * squashed + 3 * rbf
    backward = (
        2 * sum(macs.values())  # weight gradients: a multiply-add per connection and image
        + 2 * (macs["C3"] + macs["C5"] + macs["F6"])  # input gradients (not C1's)
        + (6 * 28**2 + 16 * 10**2 + 120 + 84)  # bias gradients: an add per output
        + 3 * pooled
        + (6 * 14**2 + 16 * 5**2)  # subsampling: dx, dcoef per input; dbias
        + 2 * 4 * rbf  # the input's and the centers' gradient, each 2 dy (x - c) summed
        + 4 * squashed  # dy (S/A) (A^2 - y^2)
        + (10 + 2 + 30 + 30 + 1)  # MAP loss gradient: the forward's prologue, g, the label
    )
    counted = lenet5_spec.FLOPS_PER_IMAGE
    assert counted == {
        "inference": inference,
        "forward": inference + loss_fwd,
        "backward": backward,
    }
    per_update = 4 * lenet5_step.PARAMS  # two multiplies, an add, a divide or add per entry
    assert lenet5_spec.FLOPS_PER_UPDATE == {"sdlm": per_update, "sgd": per_update}


def test_the_emitted_counts_are_the_counted_ones():
    counted = flops.lenet5_flops(TABLE)
    assert lenet5_spec.FLOPS_PER_IMAGE == counted["image"]
    assert lenet5_spec.FLOPS_PER_UPDATE == counted["update"]
    assert lenet5_spec.LAYER_FLOPS == flops.lenet5_kernel_flops(TABLE)
