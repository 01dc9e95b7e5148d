"""The writer: put generated files on disk deterministically, atomically, only when changed.

Examples
--------
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> write_files({"a/b.txt": "hi\\n"}, out)
['a/b.txt']
>>> write_files({"a/b.txt": "hi\\n"}, out)
[]
>>> drifted({"a/b.txt": "changed\\n"}, out)
['a/b.txt']
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_files(files: dict[str, str], out: Path | str) -> list[str]:
    """Write each ``{relpath: text}`` under ``out`` whose content differs; return those paths.

    Files are written in sorted order, each through a temporary file in the same
    directory and ``os.replace`` (readers never see a partial file).
    """
    out = Path(out)
    changed = []
    for rel in sorted(files):
        path = out / rel
        data = files[rel].encode()
        if path.is_file() and path.read_bytes() == data:
            continue
        write_atomic(path, data)
        changed.append(rel)
    return changed


def drifted(files: dict[str, str], out: Path | str) -> list[str]:
    """Paths whose file under ``out`` is missing or differs from the generated text."""
    out = Path(out)
    return [
        rel
        for rel in sorted(files)
        if not (out / rel).is_file() or (out / rel).read_bytes() != files[rel].encode()
    ]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
