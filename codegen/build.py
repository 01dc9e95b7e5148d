"""Compile the generated C into a shared library in a per-user cache, and load it.

SymPy-free: the runtime (:mod:`codegen.runtime.c_library`, behind ``generated/c_kernels.py``)
imports this module.

The library is built with the system C compiler (``$CC`` or ``cc``) and
``-std=c99 -O3 -Wall -Wextra -Werror -fPIC -shared``, plus ``-march=native`` and
``-fopenmp`` when the compiler accepts them (probed once per compiler), plus the
flags in ``$SYMCONV_CFLAGS`` (e.g. the sanitizers of ``make sanitize``). It is
cached in ``$SYMCONV_CACHE`` (default ``~/.cache/symconv``) under the sha256 of
the sources, the flags and the compiler's version, written atomically; the log
says ``compiled`` or ``cached``. A missing or failing compiler raises
:class:`BuildError`, which says to use the NumPy backend instead.

The cache does not trust a file by its name: beside each library ``X.so`` the build
records the sha256 of its bytes in ``X.so.sha256``, and a cached library is loaded
only when its bytes still have that hash.  A damaged entry (truncated, emptied,
overwritten, or without its hash) is rebuilt, with a warning in the log: loading a
truncated shared library crashes the process (SIGBUS) instead of raising.

Examples
--------
>>> key = cache_key(b"int f(void);", ["-O3"], "gcc 12")
>>> len(key), key == cache_key(b"int f(void);", ["-O2"], "gcc 12")
(64, False)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy

from codegen.writer import write_atomic

log = logging.getLogger("symconv.build")

BASE_FLAGS = ("-std=c99", "-O3", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared")
#: Accepted when the compiler takes them; -fopenmp-simd alone still vectorizes the
#: ``omp simd`` reductions (the generated code checks SYMCONV_OMP_SIMD).
OPTIONAL_FLAGS = ("-march=native", "-fopenmp", "-fopenmp-simd -DSYMCONV_OMP_SIMD")
FALLBACK = 'use the NumPy backend instead (backend="numpy", i.e. generated.np_kernels)'


class BuildError(RuntimeError):
    """The C library cannot be built or loaded; the message says how to fall back."""


def compiler() -> str:
    """The C compiler command: ``$CC`` or ``cc``."""
    return os.environ.get("CC") or "cc"


def cache_dir() -> Path:
    """``$SYMCONV_CACHE`` or ``~/.cache/symconv``."""
    env = os.environ.get("SYMCONV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "symconv"


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    except OSError as exc:  # missing or not executable
        raise BuildError(
            f"C compiler {cmd[0]!r} cannot be run ({exc.strerror}); {FALLBACK}"
        ) from None


@functools.cache
def compiler_version(cc: str) -> str:
    """First line of ``cc --version`` (part of the cache key)."""
    proc = _run([cc, "--version"])
    if proc.returncode != 0:
        raise BuildError(f"C compiler {cc!r} failed to report its version; {FALLBACK}")
    return proc.stdout.splitlines()[0] if proc.stdout else ""


@functools.cache
def supported_flags(cc: str) -> tuple[str, ...]:
    """The optional flags (``-march=native``, ``-fopenmp``, ...) ``cc`` accepts, probed once."""
    accepted = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("int symconv_probe(int x) { return x + 1; }\n")
        for option in OPTIONAL_FLAGS:
            cmd = [cc, *BASE_FLAGS, *option.split(), str(src), "-o", str(Path(tmp) / "probe.so")]
            if _run(cmd).returncode == 0:
                accepted.extend(option.split())
    return tuple(accepted)


def flags(cc: str) -> list[str]:
    """All compile flags for ``cc``: the base flags, the accepted optional ones, then
    ``$SYMCONV_CFLAGS`` (part of the cache key like every flag)."""
    return [*BASE_FLAGS, *supported_flags(cc), *shlex.split(os.environ.get("SYMCONV_CFLAGS", ""))]


def cache_key(source: bytes, flag_list, version: str) -> str:
    """sha256 over the sources, the flags and the compiler version."""
    h = hashlib.sha256()
    for part in (source, "\0".join(flag_list).encode(), version.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _sources(source: Path) -> bytes:
    """The C file and the headers beside it, in sorted order (all of them affect the build)."""
    parts = [source.read_bytes()]
    parts += [h.read_bytes() for h in sorted(source.parent.glob("*.h"))]
    return b"\0".join(parts)


def file_sha256(path: Path) -> str:
    """Hex sha256 of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_file(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def cache_damage(target: Path) -> str | None:
    """Why the cached library ``target`` cannot be trusted, or None if its bytes have the
    sha256 recorded when it was built."""
    try:
        recorded = _hash_file(target).read_text().strip()
    except OSError:
        return "no recorded hash"
    try:
        actual = file_sha256(target)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if actual != recorded:
        return f"its sha256 {actual[:12]}... differs from the recorded {recorded[:12]}..."
    return None


def build_library(
    source: Path | str, cc: str | None = None, extra_flags=(), extra_key: str = ""
) -> tuple[Path, str]:
    """Compile ``source`` (or reuse the cached build); returns ``(path, "compiled" | "cached")``.

    ``extra_key`` joins the compiler version in the cache key (the interpreter and numpy
    versions of an extension module, whose ABI the sources and flags do not name).
    """
    source = Path(source)
    cc = cc or compiler()
    if shutil.which(cc) is None:
        raise BuildError(f"C compiler {cc!r} not found (set CC to a C99 compiler); {FALLBACK}")
    flag_list = [*flags(cc), *extra_flags]
    key = cache_key(_sources(source), flag_list, compiler_version(cc) + extra_key)
    out_dir = cache_dir()
    target = out_dir / f"{source.stem}-{key[:24]}.so"
    if target.is_file():
        damage = cache_damage(target)
        if damage is None:
            log.info("cached %s", target)
            return target, "cached"
        log.warning("cached library %s is damaged (%s): rebuilding it", target, damage)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        proc = _run([cc, *flag_list, str(source), "-o", tmp, "-lm"], cwd=source.parent)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
            raise BuildError(f"compiling {source.name} with {cc} failed:\n{tail}\n{FALLBACK}")
        digest = file_sha256(tmp)
        os.replace(tmp, target)
        write_atomic(_hash_file(target), (digest + "\n").encode())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("compiled %s", target)
    return target, "compiled"


def identity(library: ctypes.CDLL, extra_flags=()) -> dict:
    """What a library loaded by :func:`load_library` runs: its file (named by the cache key
    of its sources, flags and compiler), the compiler's version and the flags.

    Two libraries with the same file name compute the same bits on one machine; another
    name (other sources, ``$SYMCONV_CFLAGS``, another compiler) may round differently.
    """
    cc = compiler()
    return {
        "library": Path(library._name).name,
        "compiler": compiler_version(cc),
        "flags": [*flags(cc), *extra_flags],
    }


def load_library(source: Path | str, extra_flags=()) -> ctypes.CDLL:
    """Build (or reuse) and load the library of ``source`` (``extra_flags`` after all others)."""
    path, _ = build_library(source, extra_flags=extra_flags)
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise BuildError(
            f"loading the compiled library {path} failed ({exc}); {FALLBACK}"
        ) from None


def extension_flags() -> list[str]:
    """Include flags for a CPython extension using the numpy C API."""
    return [f"-I{sysconfig.get_paths()['include']}", f"-I{numpy.get_include()}"]


def interpreter_key() -> str:
    """The versions an extension module's binary depends on beyond the compiler's.

    >>> interpreter_key().startswith(" python ")
    True
    """
    return f" python {sys.version} ({sys.implementation.cache_tag}) numpy {numpy.__version__}"


def load_extension(source: Path | str, name: str, extra_flags=()):
    """Build (or reuse) and import the CPython extension module ``name`` of ``source``.

    Built with other ``extra_flags`` it is another file, hence another module instance
    with state of its own. A missing compiler or missing Python headers raise
    :class:`BuildError`.
    """
    flag_list = (*extension_flags(), *extra_flags)
    path, _ = build_library(source, extra_flags=flag_list, extra_key=interpreter_key())
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    try:
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except ImportError as exc:
        raise BuildError(f"importing the compiled extension {path} failed ({exc})") from None
    return module
