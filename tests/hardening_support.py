"""Helpers of the hardening tests: valid files to corrupt, and an address-space limit."""

from __future__ import annotations

import contextlib
import io
import resource
import zipfile
from pathlib import Path

import numpy as np

from lenet5 import checkpoint
from lenet5.data import load_mnist, write_idx
from lenet5.network import PARAM_SHAPES


def _virtual_bytes() -> int:
    """The address space this process uses now (VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def memory_limit(extra_mb: int):
    """At most ``extra_mb`` MB more address space inside the block (MemoryError beyond).

    A reader that allocates what a file announces instead of what it holds fails here.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _virtual_bytes() + extra_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def params(dtype=np.float32, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(-0.1, 0.1, s).astype(dtype) for n, s in PARAM_SHAPES.items()}


def valid_checkpoint(path: Path, hess=True, velocity=False, meta=None) -> Path:
    """A small valid checkpoint (random parameters, a positive Hessian diagonal)."""
    p = params()
    h = {n: np.abs(a) + 0.01 for n, a in params(seed=1).items()} if hess else None
    v = params(seed=2) if velocity else None
    checkpoint.save(path, p, meta if meta is not None else {"epoch": 1, "step": 0}, h, v)
    return path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path, files: dict, compress=False):
    """A zip of ``{name: bytes}`` (deflated with ``compress``) written to ``path``, a path or
    a binary file object; returns ``path``."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_header(shape, dtype="<f4") -> bytes:
    """A .npy header declaring ``shape`` and ``dtype`` (no data follows)."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def tiny_mnist(folder: Path, n_train: int = 100, n_test: int = 50) -> Path:
    """The first digits of the bundled sample as the four MNIST IDX files in ``folder``.

    Training runs on them take a second or so, which the fault and run-folder tests need.
    """
    full = load_mnist("sample")
    for prefix, images, labels in (
        ("train", full.train_images[:n_train], full.train_labels[:n_train]),
        ("t10k", full.test_images[:n_test], full.test_labels[:n_test]),
    ):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return folder
