"""Structure of the generated LeNet-5 training step: the template data follows the layer
table, and the emitted C calls only generated functions, forward in layer order, backward
in reverse, then the update kernel on every trainable array."""

from __future__ import annotations

import math
import re

import pytest

from codegen import lenet5_step, pipeline, printers
from derive import lenet5 as spec

# `make test` runs --dist loadgroup: one worker takes the group and builds the fixture once.
pytestmark = pytest.mark.xdist_group("lenet5_step")


@pytest.fixture(scope="module")
def source():
    functions = pipeline.c_functions(pipeline.kernel_table())
    return pipeline.c_source(functions), functions


def _body(source: str, name: str) -> str:
    """The text of the C function ``name`` (from its signature to the closing brace)."""
    start = re.search(rf"^\S.*\b{name}\(", source, re.M).start()
    return source[start : source.index("\n}\n", start)]


def test_param_table_follows_the_layer_table():
    names = [name for name, _ in lenet5_step.param_table()]
    trainable = [L.name for L in spec.LAYERS if L.kind != "rbf"]
    assert names[::2] == [f"{n}.{'coef' if n[0] == 'S' else 'w'}" for n in trainable]
    total = sum(math.prod(shape) for _, shape in lenet5_step.param_table())
    # 60,000 trainable parameters plus C3's 36 absent connections x 25 taps stored as 0.
    assert total == 60000 + 36 * 25 == lenet5_step.PARAMS


def test_lane_calls_generated_functions_in_layer_order(source):
    text, functions = source
    defined = {f["symbol"] for f in functions}
    lane = _body(text, "lenet5_lane_f32")
    calls = re.findall(r"\b(symconv_\w+)\(", lane)
    forward_calls = re.findall(r"\b(symconv_\w+)\(", _body(text, "lenet5_forward_f32"))
    assert set(calls) | set(forward_calls) <= defined  # nothing but generated kernels
    # The lane's forward pass is the forward function, before any kernel of its own.
    assert lane.index("lenet5_forward_f32(") < lane.index("symconv_")
    layers = [L.name for L in spec.LAYERS if L.kind != "rbf"]
    forward = [c for c in forward_calls if "_forward_" in c and "tanh" not in c]
    assert [c.split("_")[-2] for c in forward] == layers + ["OUTPUT"]
    assert len([c for c in forward_calls if "tanh_forward" in c]) == len(layers)
    assert not any("_forward_" in c and "loss" not in c for c in calls)  # no second forward
    backward = [c for c in calls if re.search(r"_backward_(filter|data)?_?[A-Z]", c)]
    order = list(dict.fromkeys(c.split("_")[-2] for c in backward))
    assert order == ["OUTPUT"] + layers[::-1]
    # C1's input gradient is never needed: no backward_data at C1.
    assert not any("backward_data_C1" in c for c in calls)
    assert calls.index("symconv_map_loss_forward_f32") < calls.index(
        "symconv_rbf_backward_OUTPUT_f32"
    )


@pytest.mark.parametrize("dialect", printers.DIALECTS, ids=lambda d: d.suffix)
def test_the_penalties_entry_point_runs_the_forward_pass_only(source, dialect):
    text, _ = source
    body = _body(text, f"symconv_lenet5_penalties_{dialect.suffix}")
    code = "\n".join(line for line in body.split("{", 1)[1].splitlines() if "#" not in line)
    assert re.findall(r"\b(\w+)\(", code) == [
        "symconv_lenet5_lanes",
        "lenet5_lane_stride",
        f"lenet5_forward_{dialect.suffix}",
    ]
    assert "#pragma omp parallel for" in body


@pytest.mark.parametrize("dialect", printers.DIALECTS, ids=lambda d: d.suffix)
def test_entry_points_update_every_array(source, dialect):
    text, _ = source
    for entry, kernel in (("sdlm_step", "sdlm_update"), ("sgd_step", "sgd_momentum_update")):
        body = _body(text, f"symconv_lenet5_{entry}_{dialect.suffix}")
        assert f"lenet5_gradients_{dialect.suffix}(" in body
        assert f"symconv_{kernel}_{dialect.suffix}(" in body
        assert f"i < {len(lenet5_step.param_table())}" in body  # every array
    sizes = re.search(r"lenet5_size\[\d+\] = \{([^}]*)\}", text).group(1)
    assert [int(v) for v in sizes.split(",")] == [
        math.prod(s) for _, s in lenet5_step.param_table()
    ]


def test_workspace_layout_is_consistent():
    buffers = lenet5_step.buffers()
    assert lenet5_step.per_image() == sum(n for _, n in buffers)
    assert len({name for name, _ in buffers}) == len(buffers)
    # The update scratch holds one chunk twice (new values and velocity); the arrays are
    # updated a chunk at a time, the last chunk of most of them partial.
    assert lenet5_step.UPDATE == 2 * lenet5_step.UPDATE_CHUNK
    sizes = [math.prod(s) for _, s in lenet5_step.param_table()]
    assert any(n % lenet5_step.UPDATE_CHUNK for n in sizes if n > lenet5_step.UPDATE_CHUNK)
    for batch in (1, 3, 8, 9, 17, 64):
        lanes = lenet5_step.lanes(batch)
        slices = [(i + 1) * batch // lanes - i * batch // lanes for i in range(lanes)]
        assert sum(slices) == batch and max(slices) <= -(-batch // lanes) and min(slices) >= 1


def test_the_fast_entry_points_share_one_c_signature(monkeypatch):
    """The fast path calls every step entry point through one function pointer type: an
    entry point whose C parameter types differ is refused by name, not miscalled."""
    d = printers.DIALECTS[0]
    assert lenet5_step.step_declaration(d) == lenet5_step.c_declaration("sdlm_step", d)
    points = dict(lenet5_step.ENTRY_POINTS)
    pointers, rest = points["sgd_step"]
    points["sgd_step"] = (pointers, rest[:-1])  # one float parameter fewer
    monkeypatch.setattr(lenet5_step, "ENTRY_POINTS", points)
    with pytest.raises(ValueError, match=r"differ in their C parameter types \(f32\)"):
        lenet5_step.step_declaration(d)
