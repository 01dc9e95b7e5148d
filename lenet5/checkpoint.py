"""Checkpoints: one ``.npz`` holding the parameters, optimizer state and run metadata.

Layout (``allow_pickle=False`` safe): ``param/<name>`` for the 12 trainable arrays,
``hess/<name>`` (SDLM diagonal of the current pass, when mid-pass), ``velocity/<name>``
(SGD momentum), and ``meta``: a JSON string with ``format_version``, ``spec_hash`` (of
the generated LeNet-5 constants), the training configuration, the position (``epoch``,
``step``), the running statistics of a partial pass and the per-epoch history.

Writes are atomic (temp file in the same directory + ``os.replace``), so a crash never
leaves a half-written checkpoint behind.  Loading checks the version, the spec hash and
every array's shape and dtype; anything wrong raises ``CheckpointError`` naming the file.

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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen.writer import write_atomic
from lenet5.network import check_params
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


def load(path) -> Checkpoint:
    """Read and validate a checkpoint written by ``save``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({exc})") from exc
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
    groups = {}
    for group in _GROUPS:
        d = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(group + "/")}
        if group != "param" and not d:
            groups[group] = None
            continue
        try:
            check_params(d)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: {group} arrays invalid: {exc}") from exc
        groups[group] = d
    dtypes = {a.dtype for a in groups["param"].values()}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        raise CheckpointError(f"checkpoint {path}: parameters must share one float dtype")
    return Checkpoint(groups["param"], meta, groups["hess"], groups["velocity"])
