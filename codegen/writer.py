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
    """Write ``data`` to ``path`` durably via a temporary sibling and ``os.replace``.

    The temporary file is flushed to disk (``fsync``) before it replaces ``path``, and
    the directory after: otherwise a power loss right after the rename can leave
    ``path`` empty or truncated on file systems that reorder metadata and data writes.
    The temporary is named ``.<name>.<random>.tmp`` (see ``stale_temporaries``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on directories
        pass
    finally:
        os.close(fd)


def stale_temporaries(directory: Path | str) -> list[Path]:
    """The temporaries ``write_atomic`` left in ``directory`` when its process was killed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.npz.k2j4.tmp").write_bytes(b""), (d / "a.npz").write_bytes(b"")
    >>> [p.name for p in stale_temporaries(d)]
    ['.a.npz.k2j4.tmp']
    """
    return sorted(p for p in Path(directory).glob(".*.tmp") if p.is_file())
