"""The code generation pipeline as named pure stages.

``table -> lower -> print -> render -> files {relpath: text}``; the writer
(:mod:`codegen.writer`) puts the files on disk. Each stage is a function a test
can call and inspect; nothing runs at import time.

Examples
--------
>>> files = generate()
>>> sorted(files)[:3]
['_runtime.py', 'c/symconv.c', 'c/symconv.h']
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from codegen import flops, lenet5_step, lower, printers, render
from derive import core, proofs
from derive import lenet5 as lenet5_spec
from derive.kernels import load_table
from derive.kernelspec import KernelSpec


def kernel_table() -> dict[str, KernelSpec]:
    """Stage 1: the validated kernel table."""
    return load_table()


def proven(table: dict[str, KernelSpec], emit):
    """Stage 1a: ``emit(table)``, returned only once every kernel of ``table`` is proven
    against its derivation.

    Missing proofs run in worker processes (one per core) while ``emit`` runs here.
    Raises :class:`derive.proofs.ProofError` naming each unproven kernel and a failing
    case: nothing generated from an unproven table leaves this function.
    """
    with ThreadPoolExecutor(1) as background:
        proving = background.submit(proofs.require_proven, table, os.cpu_count() or 1)
        out = emit(table)
        proving.result()
    return out


def module_for(derivation: str) -> str:
    """The derive module that defines ``derivation`` (cited by the headers)."""
    return core.module_of(derivation)


@dataclass(frozen=True)
class Specialization:
    """A kernel at the fixed sizes of one LeNet-5 layer (the batch stays free)."""

    layer: str
    kernel: str
    fixed: tuple  # sorted (name, value) pairs; ("table", rows-or-None) for convolutions

    @property
    def fixed_dict(self) -> dict:
        return dict(self.fixed)


def specializations(table: dict[str, KernelSpec]) -> list[Specialization]:
    """Stage 1b: every LeNet-5 layer's kernels at its constant shapes.

    An int parameter the layer does not set is fixed at its default (stride 1, no
    padding, no dilation: the paper's layers).

    >>> [s.kernel for s in specializations(kernel_table()) if s.layer == "C3"]
    ['conv2d_forward', 'conv2d_backward_data', 'conv2d_backward_filter']
    """
    out = []
    for layer in lenet5_spec.LAYERS:
        if layer.kind == "conv":
            fixed = {
                "C": layer.in_maps,
                "K": layer.out_maps,
                "H": layer.in_size,
                "W": layer.in_size,
                "KH": layer.kernel,
                "KW": layer.kernel,
                "table": layer.table,
            }
            kernels = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter")
        elif layer.kind == "subsample":
            fixed = {"C": layer.in_maps, "H": layer.in_size, "W": layer.in_size}
            kernels = ("subsample_forward", "subsample_backward")
        else:
            fixed = {"I": layer.in_maps, "O": layer.out_maps}
            kernels = (
                f"{'dense' if layer.kind == 'dense' else 'rbf'}_{d}"
                for d in ("forward", "backward")
            )
        for name in kernels:
            if name in table:
                ints = {p.name: p.default for p in table[name].params if p.kind == "int"}
                pinned = {**ints, **fixed}
                out.append(Specialization(layer.name, name, tuple(sorted(pinned.items()))))
    return out


def spec_hash(spec: KernelSpec, fixed: tuple = ()) -> str:
    """sha256 of the spec text (and the fixed sizes of a specialization)."""
    return hashlib.sha256((spec.text() + repr(fixed)).encode()).hexdigest()


# --- stage 2-4: lower, print, render ---------------------------------------------------


def numpy_module(table: dict[str, KernelSpec]) -> str:
    """``generated/np_kernels.py``."""
    printer = printers.NumpyPrinter()
    kernels = []
    for spec in table.values():
        ctx = render.kernel_context(spec, module_for(spec.derivation), printer)
        ctx["body"] = printer.block(lower.lower_numpy(spec).body)
        kernels.append(ctx)
    head = render.header("derive.kernels", "all kernel derivations")
    return render.render("np_kernels.py.j2", header=head, kernels=kernels)


def runtime_module() -> str:
    """``generated/_runtime.py``: argument checks shared by both backends."""
    head = render.header("derive.kernels", "all kernel derivations")
    return render.render("_runtime.py.j2", header=head)


def lenet5_constants() -> list[tuple[str, str, object]]:
    """(name, comment, plain Python value) of every LeNet-5 constant the runtime needs."""

    def plain(x):
        if isinstance(x, tuple | list):
            return tuple(plain(v) for v in x)
        if hasattr(x, "is_Rational") and x.is_Rational:
            return int(x) if x.is_Integer else float(x)
        return x

    s = lenet5_spec
    layers = tuple(
        {
            "name": L.name,
            "kind": L.kind,
            "in_maps": L.in_maps,
            "out_maps": L.out_maps,
            "in_size": L.in_size,
            "out_size": L.out_size,
            "kernel": L.kernel,
            "table": L.table,
            "params": s.layer_params(L),
            "connections": s.layer_connections(L),
        }
        for L in s.LAYERS
    )
    items = [
        ("INPUT_SIZE", "side of the network's input plane", s.INPUT_SIZE),
        ("MNIST_SIZE", "side of an MNIST digit", s.MNIST_SIZE),
        ("PAD", "zero-background padding on each side", s.PAD),
        ("WHITE", f"background pixel value (= {s.WHITE})", s.WHITE),
        ("BLACK", f"ink pixel value (= {s.BLACK})", s.BLACK),
        ("SQUASH_A", f"squashing f(a) = A tanh(S a): A (= {s.SQUASH_A})", s.SQUASH_A),
        ("SQUASH_S", f"squashing f(a) = A tanh(S a): S (= {s.SQUASH_S})", s.SQUASH_S),
        ("C3_TABLE", "C3 map -> the S2 maps it reads (paper Table I)", s.C3_TABLE),
        ("RBF_ROWS", "rows of an RBF bitmap", s.RBF_ROWS),
        ("RBF_COLS", "columns of an RBF bitmap", s.RBF_COLS),
        ("RBF_BITMAPS", "digit bitmaps, '#' = +1, '.' = -1", s.RBF_BITMAPS),
        ("RBF_CENTERS", "the 10 fixed RBF parameter vectors (bitmaps row by row)", s.rbf_centers()),
        ("MAP_J", f"the MAP criterion's constant j (= {s.MAP_J})", s.MAP_J),
        (
            "INIT_NUMERATOR",
            f"init uniform +-INIT_NUMERATOR/fan_in (= {s.INIT_NUMERATOR})",
            s.INIT_NUMERATOR,
        ),
        ("SDLM_MU", f"stochastic diagonal Levenberg-Marquardt mu (= {s.SDLM_MU})", s.SDLM_MU),
        ("HESSIAN_SAMPLES", "samples for the diagonal Hessian estimate", s.HESSIAN_SAMPLES),
        ("SCHEDULE", "(passes, global learning rate)", s.SCHEDULE),
        ("LAYERS", "the layer table, with parameter and connection counts", layers),
    ]
    return [
        (name, comment, plain(value) if name != "LAYERS" else value)
        for name, comment, value in items
    ]


def lenet5_flop_constants(table: dict[str, KernelSpec]) -> list[tuple[str, str, object]]:
    """(name, comment, value) of the LeNet-5 FLOP counts (:mod:`codegen.flops`)."""
    counted = flops.lenet5_flops(table)
    return [
        (
            "FLOPS_PER_IMAGE",
            "float operations per image, counted from the kernel specs (codegen.flops): "
            "inference; a training step's forward (with the loss) and backward",
            counted["image"],
        ),
        (
            "FLOPS_PER_UPDATE",
            "float operations of one parameter update, per step whatever the batch",
            counted["update"],
        ),
        (
            "LAYER_FLOPS",
            "float operations per image of each layer's kernels at its sizes",
            flops.lenet5_kernel_flops(table),
        ),
    ]


def lenet5_module(table: dict[str, KernelSpec]) -> str:
    """``generated/lenet5_spec.py``: LeNet-5 constants and FLOP counts as plain Python."""
    items = lenet5_constants() + lenet5_flop_constants(table)
    constants = [(n, c, _pyrepr(v)) for n, c, v in items]
    head = render.header("derive.lenet5", "lenet5.layers")
    sha = hashlib.sha256("\n".join(f"{n}={v}" for n, _, v in constants).encode()).hexdigest()
    return render.render("lenet5_spec.py.j2", header=head, constants=constants, sha=sha)


def _pyrepr(value) -> str:
    """Deterministic Python literal text (dicts keep their insertion order)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_pyrepr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        inner = ", ".join(_pyrepr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if hasattr(value, "is_Rational"):
        value = int(value) if value.is_Integer else float(value)
    return repr(value)


def c_functions(table: dict[str, KernelSpec]) -> list[dict]:
    """Stage 2-3 for C: every kernel (generic, then each LeNet-5 specialization) lowered
    and printed for both dialects, as template data."""
    variants = [(spec, None, None) for spec in table.values()]
    variants += [(table[s.kernel], s.layer, s.fixed) for s in specializations(table)]
    out = []
    for spec, layer, fixed in variants:
        fn = lower.lower_c(spec, dict(fixed or ()))
        for dialect in printers.DIALECTS:
            printer = printers.CPrinter(dialect)
            args = render.c_args(spec, fn.body, dialect)
            what = f"{spec.name} at LeNet-5 layer {layer}'s sizes" if layer else spec.name
            out.append(
                {
                    "symbol": render.c_symbol(spec.name, layer, dialect),
                    "comment": f"{what} ({dialect.numpy_dtype}): {spec.doc}",
                    "header": render.header(
                        module_for(spec.derivation), spec.derivation, ""
                    ).strip(),
                    "sha": spec_hash(spec, fixed or ()),
                    "args": [a["c"] for a in args],
                    "arg_types": [a["type"] for a in args],
                    "arg_kinds": [(a["name"], a["kind"]) for a in args],
                    "body": printer.block(fn.body),
                }
            )
    return out


def c_header_line() -> str:
    return render.header("derive.kernels", "all kernel derivations", "/*") + " */"


def c_source(functions: list[dict]) -> str:
    """``generated/c/symconv.c``."""
    return render.render(
        "symconv.c.j2", header=c_header_line(), functions=functions, step=lenet5_step.context()
    )


def c_header(functions: list[dict]) -> str:
    """``generated/c/symconv.h``."""
    return render.render(
        "symconv.h.j2", header=c_header_line(), functions=functions, step=lenet5_step.context()
    )


def fast_source(table: dict[str, KernelSpec], functions: list[dict]) -> str:
    """``generated/c/symconv_fast.c``: the CPython fast path of every binding."""
    arg_kinds = {f["symbol"]: f["arg_kinds"] for f in functions if f["symbol"].endswith("_f64")}
    variants: dict[str, list] = {}
    for s in specializations(table):
        variants.setdefault(s.kernel, []).append((s.layer, s.fixed_dict))
    kernels = [
        render.fast_kernel(spec, variants.get(name, []), arg_kinds) for name, spec in table.items()
    ]
    return render.render(
        "symconv_fast.c.j2",
        header=c_header_line(),
        functions=functions,
        kernels=kernels,
        max_dims=render.FAST_MAX_DIMS,
    )


def bindings_module(table: dict[str, KernelSpec], functions: list[dict]) -> str:
    """``generated/c_kernels.py``: validated ctypes bindings with the NumPy signatures."""
    printer = printers.NumpyPrinter()
    kernels = []
    for spec in table.values():
        ctx = render.kernel_context(spec, module_for(spec.derivation), printer)
        ctx["value_dict"] = render.values_dict(spec)
        has_table = any(a.name == "table" for a in spec.inputs)
        ctx["table_arg"] = ", table" if has_table else ""
        ctx["args"] = ", ".join(spec.signature)
        kernels.append(ctx)
    grouped: dict[str, list] = {}
    for s in specializations(table):
        fixed = s.fixed_dict
        rows = fixed.pop("table", None)
        grouped.setdefault(s.kernel, []).append(
            {"layer": s.layer, "fixed": _pyrepr_dict(fixed), "table": _pyrepr(rows)}
        )
    head = render.header("derive.kernels", "all kernel derivations")
    return render.render(
        "c_kernels.py.j2",
        header=head,
        kernels=kernels,
        functions=[f for f in functions if f["symbol"].endswith("_f64")],
        fast_symbols=[f["symbol"] for f in functions],
        specializations=sorted(grouped.items()),
        step=lenet5_step.context(),
    )


def _pyrepr_dict(d: dict) -> str:
    return "{" + ", ".join(f"{k!r}: {_pyrepr(d[k])}" for k in sorted(d)) + "}"


def generate() -> dict[str, str]:
    """Every generated file, ``{path relative to generated/: text}`` (of a proven table)."""
    return proven(kernel_table(), _emit)


def _emit(table: dict[str, KernelSpec]) -> dict[str, str]:
    """Stages 2-4 for every file (:func:`generate` releases them once proven)."""
    functions = c_functions(table)
    return {
        "_runtime.py": runtime_module(),
        "np_kernels.py": numpy_module(table),
        "lenet5_spec.py": lenet5_module(table),
        "c/symconv.c": c_source(functions),
        "c/symconv.h": c_header(functions),
        "c/symconv_fast.c": fast_source(table, functions),
        "c_kernels.py": bindings_module(table, functions),
    }
