"""What codegen emitted for identical inputs, so an unchanged tree is checked in well
under a second (no SymPy import, no lowering, no proofs).

The key is the sha256 of every input of the pipeline: the sources of ``derive/`` and
``codegen/`` (templates included) and the versions of Python and of the libraries
that shape the output. The record is ``{relative path: sha256 of the text}`` of
every generated file, stored under ``$SYMCONV_CACHE/codegen/<key>.json`` after a
full run (whose kernels were all proven). Any change to an input is a new key, so a
stale record is never consulted.

Examples
--------
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> _ = (out / "a.txt").write_text("hi\\n")
>>> drifted_by_record({"a.txt": digest("hi\\n")}, out), drifted_by_record({"a.txt": "0"}, out)
([], ['a.txt'])
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Libraries whose version can change generated text (printing, templates, arrays).
LIBRARIES = ("sympy", "numpy", "jinja2")


def cache_dir() -> Path:
    """``$SYMCONV_CACHE/codegen`` (default ``~/.cache/symconv/codegen``)."""
    base = os.environ.get("SYMCONV_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "symconv"
    )
    return Path(base) / "codegen"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def source_key() -> str:
    """sha256 of every file under derive/ and codegen/ and the relevant versions."""
    h = hashlib.sha256(sys.version.encode())
    for dist in LIBRARIES:
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=absent".encode())
    for package in ("derive", "codegen"):
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".j2"):
                h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def load(key: str) -> dict[str, str] | None:
    """The recorded ``{path: sha256}`` for ``key``, or None (missing or unreadable)."""
    try:
        record = json.loads((cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and all(isinstance(v, str) for v in record.values())
    return record if ok else None


def save(key: str, files: dict[str, str]) -> None:
    """Record the digests of ``files`` (text by path) under ``key``; best effort."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".record-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({rel: digest(text) for rel, text in sorted(files.items())}, f)
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # an unwritable cache only costs time: the next check regenerates


def drifted_by_record(record: dict[str, str], out: Path | str) -> list[str]:
    """Paths whose file under ``out`` is missing or differs from the recorded digest."""
    out = Path(out)
    stale = []
    for rel, want in sorted(record.items()):
        path = out / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != want:
            stale.append(rel)
    return stale
