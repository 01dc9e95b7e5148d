"""Template data of the fused LeNet-5 training step: one C call per batch.

``templates/lenet5_step.c.j2`` emits, for each dialect, C entry points that run a
whole training step of the faithful LeNet-5 on B images: forward (C1..F6, RBF), the
per-image MAP losses, backward to every parameter gradient and the SDLM or momentum
update; and one that runs the forward pass alone (``penalties``), in the same lanes.
They only *call* generated functions: each layer's specialization
(``symconv_conv2d_forward_C1_f32`` ...), the generic activation, loss and bias
kernels, and the ``sdlm_update`` / ``sgd_momentum_update`` kernels of the table. This
module turns the LeNet-5 layer table into the data the template needs: which function
each layer calls, the scratch buffers and where they live in the caller's workspace,
and the trainable arrays in the order of the C pointer arrays.

Parallelism and determinism: the batch is cut into ``lanes(B) = min(B, LANES)``
contiguous slices of at most ``ceil(B / lanes)`` images. Each lane runs its slice
through forward and backward into its own gradient accumulator (OpenMP over lanes,
inner kernels then run serially); the lane gradients are then added in lane order.
Every float operation and its order depend on B only, never on the number of
threads, so a step gives the same bits with 1 or 16 threads. At B = 1 there is one
lane and no reduction: the step performs exactly the composed path's kernel calls.

Workspace (elements of the call's dtype, caller-allocated once, see
:func:`workspace_size`): ``UPDATE`` scratch for the updated arrays, then per lane
``LANE_FIXED`` (gradient accumulator, the RBF centers' unused gradient) and
``per_image`` elements for each image of the slice.

Examples
--------
>>> [name for name, _ in param_table()][:4]
['C1.w', 'C1.b', 'S2.coef', 'S2.bias']
>>> sum(math.prod(shape) for _, shape in param_table())
60900
>>> workspace_size(1) == UPDATE + LANE_FIXED + per_image()
True
>>> lanes(3), lanes(64)
(3, 8)
"""

from __future__ import annotations

import math

from codegen import printers, render
from derive import lenet5 as lenet5_spec

#: Lanes of a batch: enough for 8 threads; more lanes would only add reduction work
#: (each lane's gradient accumulator is one more 60,900-element sum).
LANES = 8
#: Names of each layer kind's two trainable arrays (weights/coefficients, biases).
PARAM_NAMES = {"conv": ("w", "b"), "subsample": ("coef", "bias"), "dense": ("w", "b")}


def trainable_layers():
    """The LeNet-5 layers with parameters, in forward order (all but the RBF output)."""
    return [L for L in lenet5_spec.LAYERS if L.kind in PARAM_NAMES]


def _param_shapes(layer) -> tuple[tuple, tuple]:
    """Shapes of a layer's two arrays (C3's weights dense: absent connections stay 0)."""
    if layer.kind == "conv":
        k = layer.kernel
        return (layer.out_maps, layer.in_maps, k, k), (layer.out_maps,)
    if layer.kind == "subsample":
        return (layer.in_maps,), (layer.in_maps,)
    return (layer.out_maps, layer.in_maps), (layer.out_maps,)


def param_table() -> list[tuple[str, tuple]]:
    """``[(name, shape)]`` of every trainable array, in the C pointer arrays' order."""
    out = []
    for layer in trainable_layers():
        for role, shape in zip(PARAM_NAMES[layer.kind], _param_shapes(layer), strict=True):
            out.append((f"{layer.name}.{role}", shape))
    return out


def _sizes() -> list[int]:
    return [math.prod(shape) for _, shape in param_table()]


def _offsets() -> list[int]:
    return [sum(_sizes()[:i]) for i in range(len(_sizes()))]


PARAMS = sum(_sizes())
#: Elements of a trainable array updated per update-kernel call: the new values are copied
#: back while they are still in L1 (whole arrays of the larger layers would not fit in it,
#: nor the step's parameters and gradients in L2, and would stream through memory twice).
UPDATE_CHUNK = 1024
#: Scratch for one chunk of new values and of the new velocity.
UPDATE = 2 * UPDATE_CHUNK
_RBF = lenet5_spec.LAYERS[-1]
#: Per-lane elements that do not grow with the slice: the gradient accumulator and
#: the RBF centers' gradient (computed by rbf_backward, unused: the centers are fixed).
LANE_FIXED = PARAMS + _RBF.in_maps * _RBF.out_maps


def _elements(layer) -> int:
    """Outputs of ``layer`` per image."""
    return layer.out_maps * layer.out_size**2


def buffers() -> list[tuple[str, int]]:
    """Per-image scratch ``(name, elements)``: pre-activation ``a`` (later the loss gradient
    with respect to it), activation ``x`` and the loss gradient with respect to ``x`` of
    every trainable layer; then the loss scratch."""
    out = []
    for layer in trainable_layers():
        n = _elements(layer)
        out += [(f"{kind}_{layer.name}", n) for kind in ("a", "x", "dx")]
    return out + [("m", 1), ("ssum", 1), ("dy", _RBF.out_maps)]


#: Prefixes of the buffers the forward pass writes: each layer's pre-activation and activation.
FORWARD_BUFFERS = ("a_", "x_")


def per_image() -> int:
    """Workspace elements per image of a lane."""
    return sum(n for _, n in buffers())


def lanes(batch: int) -> int:
    """Lanes a batch of ``batch`` images is cut into (the C ``symconv_lenet5_lanes``)."""
    return min(batch, LANES)


def workspace_size(batch: int) -> int:
    """Workspace elements a step on ``batch`` images needs (the C function of this name)."""
    n = lanes(batch)
    return UPDATE + n * (LANE_FIXED + -(-batch // n) * per_image())


def _layer(layer, previous, index, dialect) -> dict:
    """How the template calls one trainable layer's kernels."""
    kernel = {"conv": "conv2d", "subsample": "subsample", "dense": "dense"}[layer.kind]
    passes = ("backward_data", "backward_filter") if layer.kind == "conv" else ("backward",)
    sym = {d: render.c_symbol(f"{kernel}_{d}", layer.name, dialect) for d in ("forward", *passes)}
    return {
        "name": layer.name,
        "kind": layer.kind,
        "w": 2 * index,
        "b": 2 * index + 1,
        "w_offset": _offsets()[2 * index],
        "b_offset": _offsets()[2 * index + 1],
        "elements": _elements(layer),
        "maps": layer.out_maps,
        "size": layer.out_size,
        "input": f"x_{previous.name}" if previous else "x0",
        "input_grad": f"dx_{previous.name}" if previous else None,
        "symbols": sym,
    }


def dialect_context(dialect: printers.Dialect) -> dict:
    """The template data of one dialect."""
    layers, previous = [], None
    for index, layer in enumerate(trainable_layers()):
        layers.append(_layer(layer, previous, index, dialect))
        previous = layer

    def generic(name):
        return render.c_symbol(name, None, dialect)

    return {
        "suffix": dialect.suffix,
        "ctype": dialect.ctype,
        "layers": layers,
        "last": layers[-1]["name"],
        "rbf_forward": render.c_symbol("rbf_forward", _RBF.name, dialect),
        "rbf_backward": render.c_symbol("rbf_backward", _RBF.name, dialect),
        **{
            key: generic(name)
            for key, name in (
                ("tanh_forward", "scaled_tanh_forward"),
                ("tanh_backward", "scaled_tanh_backward_from_output"),
                ("loss_forward", "map_loss_forward"),
                ("loss_backward", "map_loss_backward"),
                ("bias_backward", "conv2d_backward_bias"),
                ("sdlm", "sdlm_update"),
                ("sgd", "sgd_momentum_update"),
            )
        },
    }


#: C parameters of the training entry points after their pointer arrays, as (name, kind):
#: kind "input" or "output" (a buffer of the dialect's type), "labels" (int64), "int",
#: "float" (the dialect's type).
STEP_ARGS = (
    ("centers", "input"),
    ("x", "input"),
    ("labels", "labels"),
    ("E", "output"),
    ("y", "output"),
    ("work", "output"),
    ("B", "int"),
)
#: The forward pass needs no labels and computes no loss.
FORWARD_ARGS = (
    ("centers", "input"),
    ("x", "input"),
    ("y", "output"),
    ("work", "output"),
    ("B", "int"),
)
SQUASH_ARGS = (("A", "float"), ("S", "float"))
LOSS_ARGS = (("j", "float"),)
#: Entry point -> (its pointer arrays, its other parameters). A pointer array is "pointers"
#: (read) or "pointers_out" (written: the checks require writeable arrays).
ENTRY_POINTS = {
    "penalties": ((("params", "pointers"),), FORWARD_ARGS + SQUASH_ARGS),
    "gradients": (
        (("params", "pointers"), ("grads", "pointers_out")),
        STEP_ARGS + SQUASH_ARGS + LOSS_ARGS,
    ),
    "sdlm_step": (
        (("params", "pointers_out"), ("hess", "pointers")),
        STEP_ARGS + (("eta", "float"), ("mu", "float")) + SQUASH_ARGS + LOSS_ARGS,
    ),
    "sgd_step": (
        (("params", "pointers_out"), ("velocity", "pointers_out")),
        STEP_ARGS + (("rate", "float"), ("momentum", "float")) + SQUASH_ARGS + LOSS_ARGS,
    ),
}


def entry_args(name: str) -> list[tuple[str, str]]:
    """``[(parameter, kind)]`` of an entry point (see ``ENTRY_POINTS``).

    >>> entry_args("sdlm_step")[:3]
    [('params', 'pointers_out'), ('hess', 'pointers'), ('centers', 'input')]
    >>> [name for name, _ in entry_args("penalties")]
    ['params', 'centers', 'x', 'y', 'work', 'B', 'A', 'S']
    """
    pointers, rest = ENTRY_POINTS[name]
    return list(pointers + rest)


def c_parameters(name: str, dialect: printers.Dialect) -> list[tuple[str, str]]:
    """``[(C type, parameter)]`` of an entry point in ``dialect``."""
    t = dialect.ctype
    ctypes = {
        "pointers": f"{t} *const *",
        "pointers_out": f"{t} *const *",
        "input": f"const {t} *restrict ",
        "output": f"{t} *restrict ",
        "labels": "const int64_t *restrict ",
        "int": "int64_t ",
        "float": f"{t} ",
    }
    return [(ctypes[kind], arg) for arg, kind in entry_args(name)]


def c_declaration(name: str, dialect: printers.Dialect) -> str:
    """The C parameter list of an entry point in ``dialect``."""
    return ", ".join(f"{ctype}{arg}" for ctype, arg in c_parameters(name, dialect))


#: The training steps the CPython fast path takes (the gradients are not a per-step hot
#: path). It takes the forward pass (``penalties``) too, through a function of its own.
FAST_ENTRY_POINTS = ("sdlm_step", "sgd_step")


def fast_functions() -> list[dict]:
    """The step functions the fast path calls: ``symbol``, C ``returns`` and ``params``."""
    out = [{"symbol": "symconv_lenet5_workspace_size", "returns": "int64_t", "params": "int64_t"}]
    for name in ("penalties", *FAST_ENTRY_POINTS):
        for d in printers.DIALECTS:
            symbol = f"symconv_lenet5_{name}_{d.suffix}"
            out.append({"symbol": symbol, "returns": "void", "params": c_declaration(name, d)})
    return out


def step_declaration(dialect: printers.Dialect) -> str:
    """The C parameter list of the fast entry points in ``dialect``, which all have the
    same C types: the fast path runs them through one function that takes their
    addresses as this type (the parameter names are the first entry point's).

    >>> step_declaration(printers.DIALECTS[0]).split(", ")[:2]
    ['float *const *params', 'float *const *hess']
    """
    types = {name: [t for t, _ in c_parameters(name, dialect)] for name in FAST_ENTRY_POINTS}
    first = FAST_ENTRY_POINTS[0]
    if any(found != types[first] for found in types.values()):
        raise ValueError(
            f"the fast step entry points {FAST_ENTRY_POINTS} differ in their C parameter "
            f"types ({dialect.suffix})"
        )
    return c_declaration(first, dialect)


def input_shape() -> tuple[int, int, int]:
    """(maps, rows, columns) of one input image."""
    first = lenet5_spec.LAYERS[0]
    return (first.in_maps, first.in_size, first.in_size)


def fast_context() -> dict:
    """What ``symconv_fast.c.j2`` needs for the steps' fast path."""
    table = param_table()
    squash = (lenet5_spec.SQUASH_A, lenet5_spec.SQUASH_S)
    return {
        "entries": [
            {"name": name, "state": state, "state_written": kind == "pointers_out"}
            for name in FAST_ENTRY_POINTS
            for state, kind in ENTRY_POINTS[name][0][1:]
        ],
        "dialects": [
            {
                "suffix": d.suffix,
                "ctype": d.ctype,
                "npy": NPY_TYPES[d.numpy_dtype],
                "step_params": step_declaration(d),
            }
            for d in printers.DIALECTS
        ],
        "names": [name for name, _ in table],
        "shapes": [shape for _, shape in table],
        "input": input_shape(),
        "classes": _RBF.out_maps,
        "centers": [float(v) for row in lenet5_spec.rbf_centers() for v in row],
        # C literals of the Python floats the checked path passes (the same rounding)
        "squash": [repr(float(v)) for v in squash],
        "map_j": repr(float(lenet5_spec.MAP_J)),
    }


#: The numpy C type number of each dialect's dtype.
NPY_TYPES = {"float32": "NPY_FLOAT", "float64": "NPY_DOUBLE"}


def context() -> dict:
    """Everything ``lenet5_step.c.j2`` and the bindings' step section need."""
    sizes, offsets = _sizes(), _offsets()
    entry = [
        {
            "name": name,
            "args": entry_args(name),
            "declarations": {d.suffix: c_declaration(name, d) for d in printers.DIALECTS},
        }
        for name in ENTRY_POINTS
    ]
    return {
        "lanes": LANES,
        "params": PARAMS,
        "count": len(sizes),
        "sizes": sizes,
        "offsets": offsets,
        "chunk": UPDATE_CHUNK,
        "update_scratch": UPDATE,
        "lane_fixed": LANE_FIXED,
        "per_image": per_image(),
        "buffers": [
            {
                "name": name,
                "offset": sum(n for _, n in buffers()[:i]),
                "forward": name[:2] in FORWARD_BUFFERS,
            }
            for i, (name, _) in enumerate(buffers())
        ],
        "input": math.prod(input_shape()),
        "input_shape": input_shape(),
        "classes": _RBF.out_maps,
        "param_table": param_table(),
        "entry_points": entry,
        "dialects": [dialect_context(d) for d in printers.DIALECTS],
    }
