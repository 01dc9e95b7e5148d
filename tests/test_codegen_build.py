"""The C build cache: compiled then cached, keys, atomic writes, clear errors, -Werror."""

import logging
import os
import shutil
from pathlib import Path

import pytest

from codegen import build

GENERATED_C = Path(__file__).resolve().parents[1] / "generated" / "c" / "symconv.c"
needs_cc = pytest.mark.skipif(shutil.which(build.compiler()) is None, reason="no C compiler")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMCONV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def small_source(tmp_path):
    src = tmp_path / "src" / "tiny.c"
    src.parent.mkdir()
    src.write_text(
        "#include <stdint.h>\nint64_t tiny_add(int64_t a, int64_t b) { return a + b; }\n"
    )
    return src


@needs_cc
def test_compiled_then_cached(cache, small_source, caplog):
    with caplog.at_level(logging.INFO, logger="symconv.build"):
        path, status = build.build_library(small_source)
        again, status2 = build.build_library(small_source)
    assert (status, status2) == ("compiled", "cached") and path == again
    assert path.parent == cache and path.is_file()
    assert [r.getMessage().split()[0] for r in caplog.records] == ["compiled", "cached"]
    lib = build.load_library(small_source)
    assert lib.tiny_add(2, 3) == 5


@needs_cc
def test_source_change_recompiles(cache, small_source):
    first, _ = build.build_library(small_source)
    small_source.write_text(small_source.read_text() + "int tiny_other(void) { return 1; }\n")
    second, status = build.build_library(small_source)
    assert status == "compiled" and second != first


def test_key_changes_with_source_flags_and_compiler():
    base = build.cache_key(b"src", ["-O3"], "gcc 12.2")
    assert base != build.cache_key(b"src2", ["-O3"], "gcc 12.2")
    assert base != build.cache_key(b"src", ["-O3", "-fopenmp"], "gcc 12.2")
    assert base != build.cache_key(b"src", ["-O3"], "gcc 13.1")
    assert base == build.cache_key(b"src", ["-O3"], "gcc 12.2")


@needs_cc
def test_flags_are_strict_c99_and_probed(monkeypatch):
    monkeypatch.delenv("SYMCONV_CFLAGS", raising=False)
    flags = build.flags(build.compiler())
    for flag in ("-std=c99", "-O3", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"):
        assert flag in flags
    assert set(flags) - set(build.BASE_FLAGS) <= {
        "-march=native",
        "-fopenmp",
        "-fopenmp-simd",
        "-DSYMCONV_OMP_SIMD",
    }
    # The user's flags come last, so they override the defaults (-ffp-contract=fast
    # undoes the contraction -std=c99 rules out).
    monkeypatch.setenv("SYMCONV_CFLAGS", "-ffp-contract=fast -DX='a b'")
    assert build.flags(build.compiler()) == [*flags, "-ffp-contract=fast", "-DX=a b"]


@needs_cc
def test_failed_compile_is_clear_and_leaves_nothing(cache, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { int unused; return 0; }\n")  # -Werror: unused variable
    with pytest.raises(build.BuildError, match="NumPy backend") as err:
        build.build_library(bad)
    assert "unused" in str(err.value)
    assert list(cache.iterdir()) == []  # no partial library, no temporary file


def test_missing_compiler_says_use_numpy(cache, small_source, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(build.BuildError, match=r'backend="numpy"'):
        build.build_library(small_source)


def test_missing_compiler_through_the_bindings(tmp_path):
    """The bindings raise BuildError (not a ctypes traceback) on first use."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from codegen.build import BuildError\n"
        "from generated import c_kernels\n"
        "try:\n"
        "    c_kernels.relu_forward(np.zeros(3))\n"
        "except BuildError as e:\n"
        "    print('BuildError', e)\n"
    )
    env = {**os.environ, "CC": "/nonexistent/cc", "SYMCONV_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BuildError") and "NumPy backend" in out.stdout


@needs_cc
def test_generated_c_compiles_warning_free():
    """The generated library builds with -Wall -Wextra -Werror -std=c99 (cached after once)."""
    path, status = build.build_library(GENERATED_C)
    assert status in ("compiled", "cached") and path.is_file()
    assert "-Werror" in build.flags(build.compiler())


@needs_cc
def test_extension_key_names_the_interpreter(cache, small_source):
    """An extension module is rebuilt for another Python or numpy (extra_key), and is
    imported as a module."""
    first, _ = build.build_library(small_source, extra_key=" python 3.11 numpy 2.0")
    other, status = build.build_library(small_source, extra_key=" python 3.12 numpy 2.0")
    assert status == "compiled" and other != first
    assert "numpy" in build.interpreter_key() and "python" in build.interpreter_key()
    ext = small_source.parent / "tiny_ext.c"
    ext.write_text(
        "#include <Python.h>\n"
        'static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, .m_name = "tiny_ext"};\n'
        "PyMODINIT_FUNC PyInit_tiny_ext(void) { return PyModule_Create(&def); }\n"
    )
    assert build.load_extension(ext, "tiny_ext").__name__ == "tiny_ext"


@needs_cc
def test_extension_import_failure_is_a_build_error(cache, small_source):
    with pytest.raises(build.BuildError, match="importing the compiled extension"):
        build.load_extension(small_source, "tiny")  # no PyInit_tiny


@needs_cc
@pytest.mark.parametrize(
    "damage",
    ["truncate", "empty", "overwrite", "no hash"],
)
def test_damaged_cache_entry_is_rebuilt_and_logged(cache, small_source, caplog, damage):
    """A cached library whose bytes differ from the hash recorded at build time is rebuilt."""
    path, _ = build.build_library(small_source)
    good = path.read_bytes()
    recorded = Path(str(path) + ".sha256")
    assert recorded.read_text().strip() == build.file_sha256(path)
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "overwrite":
        path.write_bytes(bytes(len(good)))
    else:
        recorded.unlink()
    with caplog.at_level(logging.INFO, logger="symconv.build"):
        again, status = build.build_library(small_source)
    assert (again, status) == (path, "compiled")
    assert f"cached library {path} is damaged" in caplog.text and "rebuilding" in caplog.text
    assert build.cache_damage(path) is None
    assert build.load_library(small_source).tiny_add(2, 3) == 5


@needs_cc
@pytest.mark.slow  # recompiles the whole kernel library (about a minute of one core)
def test_truncated_cached_library_through_the_bindings(tmp_path):
    """A truncated cached symconv library used to crash every C command with SIGBUS.

    The cache entries of the bindings are copied from the user cache (compiled there
    once), then the kernel library is truncated: the next process must rebuild it.
    """
    import subprocess
    import sys

    from generated import c_kernels

    library, _ = build.build_library(c_kernels.SOURCE)
    fast, _ = build.build_library(
        c_kernels.FAST_SOURCE,
        extra_flags=build.extension_flags(),
        extra_key=build.interpreter_key(),
    )
    for path in (library, fast):
        for f in (path, Path(str(path) + ".sha256")):
            shutil.copy(f, tmp_path / f.name)
    damaged = tmp_path / library.name
    damaged.write_bytes(library.read_bytes()[: library.stat().st_size // 3])
    code = (
        "import numpy as np\n"
        "from generated import c_kernels\n"
        "print(c_kernels.relu_forward(np.array([-1.0, 2.0])).tolist())\n"
    )
    env = {**os.environ, "SYMCONV_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[0.0, 2.0]", proc.stderr
    assert f"cached library {damaged} is damaged" in proc.stderr
    assert build.cache_damage(damaged) is None
