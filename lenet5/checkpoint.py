"""Checkpoints: one ``.npz`` holding the parameters, optimizer state and run metadata.

Layout (``allow_pickle=False`` safe): ``param/<name>`` for the 12 trainable arrays,
``hess/<name>`` (SDLM diagonal of the current pass, when mid-pass), ``velocity/<name>``
(SGD momentum), and ``meta``: a JSON string with ``format_version``, ``spec_hash`` (of
the generated LeNet-5 constants), the training configuration, the position (``epoch``,
``step``), the running statistics of a partial pass and the per-epoch history.

Writes are atomic and durable (temp file in the same directory, ``fsync``,
``os.replace``), so a crash never leaves a half-written checkpoint behind.

Loading reads only the members listed above, each checked against its expected shape
and dtype from its ``.npy`` header *before* its data is decompressed (so neither a huge
declared shape nor a compression bomb costs memory), then read in full (so the zip's
CRC is verified), and every number must be finite.
The metadata must be a JSON object with an integer ``epoch``.  Anything wrong raises
``CheckpointError`` naming the file and the member.

>>> import tempfile, os, numpy as np
>>> from lenet5.network import PARAM_SHAPES
>>> params = {n: np.zeros(s, np.float32) for n, s in PARAM_SHAPES.items()}
>>> path = os.path.join(tempfile.mkdtemp(), "c.npz")
>>> save(path, params, {"epoch": 1})
>>> ck = load(path)
>>> ck.meta["epoch"], ck.params["F6.w"].shape, ck.hess
(1, (84, 120), None)
"""

from __future__ import annotations

import io
import json
import math
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen.writer import write_atomic
from lenet5.network import PARAM_SHAPES, check_params
from lenet5.spec import SPEC_HASH

FORMAT_VERSION = 1
_GROUPS = ("param", "hess", "velocity")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of another format version or of another spec."""


@dataclass
class Checkpoint:
    params: dict
    meta: dict
    hess: dict | None = None
    velocity: dict | None = None


def save(path, params: dict, meta: dict, hess: dict | None = None, velocity=None) -> None:
    """Write a checkpoint atomically to ``path``."""
    check_params(params)
    arrays = {f"param/{n}": a for n, a in params.items()}
    for group, d in (("hess", hess), ("velocity", velocity)):
        if d is not None:
            check_params(d)
            arrays.update({f"{group}/{n}": a for n, a in d.items()})
    full = {"format_version": FORMAT_VERSION, "spec_hash": SPEC_HASH, **meta}
    arrays["meta"] = np.array(json.dumps(full))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(Path(path), buf.getvalue())


#: Largest metadata member read (its JSON holds the configuration and a short history).
MAX_META_BYTES = 16 * 2**20
_FLOATS = (np.dtype("<f4"), np.dtype("<f8"))


def load(path) -> Checkpoint:
    """Read and validate a checkpoint written by ``save``.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, not a checkpoint, of another format version or
        spec, or any member is missing, malformed or holds a non-finite value; the
        message names the file and the member.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            meta = _read_meta(path, z)
            groups = {g: _read_group(path, z, g, g == "param") for g in _GROUPS}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({exc})") from exc
    dtypes = {a.dtype for a in groups["param"].values()}
    if len(dtypes) != 1:
        raise CheckpointError(f"checkpoint {path}: parameters must share one float dtype")
    dtype = dtypes.pop()
    for group in ("hess", "velocity"):
        for name, a in (groups[group] or {}).items():
            if a.dtype != dtype:
                raise CheckpointError(
                    f"checkpoint {path}: member {group}/{name}.npy has dtype {a.dtype}, "
                    f"the parameters {dtype}"
                )
    return Checkpoint(groups["param"], meta, groups["hess"], groups["velocity"])


def _member(path, z: zipfile.ZipFile, name: str, dtypes, shape, required=True):
    """The array of member ``name`` (None if absent and not ``required``).

    ``dtypes``: the accepted dtypes; ``shape``: the exact shape, or None for any 0-d
    array whose data fits in ``MAX_META_BYTES``.  The .npy header is checked before any
    data is read; the data is then read to its end, which verifies the zip's CRC.
    """
    try:
        info = z.getinfo(name)
    except KeyError:
        if required:
            raise CheckpointError(f"checkpoint {path}: member {name} is missing") from None
        return None

    def bad(what):
        return CheckpointError(f"checkpoint {path}: member {name} {what}")

    with z.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        # numpy re-tokenizes a version 1/2 header that does not parse, and the tokenizer
        # raises its own TokenError on an unclosed bracket.
        except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as exc:
            raise bad(f"is not a .npy array ({exc})") from None
        got_shape, fortran, dtype = header
        if dtype not in dtypes and not (shape is None and dtype.kind == "U"):
            raise bad(f"has dtype {dtype}, expected one of {[str(d) for d in dtypes]}")
        if shape is None:
            if got_shape != () or dtype.itemsize > MAX_META_BYTES:
                raise bad(f"must be a string of at most {MAX_META_BYTES} bytes")
        elif got_shape != shape:
            raise bad(f"has shape {got_shape}, expected {shape}")
        if fortran and len(got_shape) > 1:
            raise bad("is stored in Fortran order")
        nbytes = math.prod(got_shape) * dtype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise bad(f"is truncated ({len(data)} of {nbytes} data bytes)")
        if f.read(1):
            raise bad("has trailing bytes after its data")
    return np.frombuffer(data, dtype).reshape(got_shape).copy()


def _read_meta(path, z: zipfile.ZipFile) -> dict:
    raw = _member(path, z, "meta.npy", (), None)
    try:
        meta = json.loads(str(raw))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: member meta.npy is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {path}: member meta.npy must hold a JSON object, got {type(meta).__name__}"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {meta.get('format_version')!r}; "
            f"this symconv reads version {FORMAT_VERSION}"
        )
    if meta.get("spec_hash") != SPEC_HASH:
        raise CheckpointError(
            f"checkpoint {path} was trained under other LeNet-5 constants "
            f"(spec hash {str(meta.get('spec_hash'))[:12]}..., current {SPEC_HASH[:12]}...)"
        )
    types = {"epoch": int, "step": int, "config": dict, "partial": dict, "history": list}
    for key, kind in types.items():
        value = meta.get(key)
        if key != "epoch" and value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"checkpoint {path}: member meta.npy: {key!r} must be a {kind.__name__}, "
                f"got {value!r:.60}"
            )
        if kind is int and value < 0:
            raise CheckpointError(f"checkpoint {path}: member meta.npy: {key!r} is negative")
    if not all(isinstance(h, dict) for h in meta.get("history", [])):
        raise CheckpointError(f"checkpoint {path}: member meta.npy: 'history' must list objects")
    return meta


def _read_group(path, z: zipfile.ZipFile, group: str, required: bool) -> dict | None:
    """The 12 arrays ``<group>/<name>.npy`` (None when the optional group is absent)."""
    names = [f"{group}/{n}.npy" for n in PARAM_SHAPES]
    present = [n for n in names if n in z.NameToInfo]
    if not required and not present:
        return None
    out = {}
    for (param, shape), member in zip(PARAM_SHAPES.items(), names, strict=True):
        a = _member(path, z, member, _FLOATS, shape)
        if not np.isfinite(a).all():
            raise CheckpointError(
                f"checkpoint {path}: member {member} holds NaN or infinite values"
            )
        out[param] = a.astype(a.dtype.newbyteorder("="), copy=False)
    return out
