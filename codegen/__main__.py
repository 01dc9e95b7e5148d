"""``python -m codegen [--out DIR] [--check] [--fresh]``: regenerate generated/ or check it.

Every kernel is first proven against its derivation (:mod:`derive.proofs`); an
unproven kernel stops codegen with exit 1, naming the kernel and a failing case.
Regenerating reports the files that changed and how long it took; ``--check``
writes nothing and exits 1 listing every file that differs from what codegen emits.
With ``--out`` the project's generated/, the kernel API table of README.md (between
its markers) is generated too (:mod:`codegen.readme`).
When derive/ and codegen/ are unchanged since a full run (:mod:`codegen.memo`),
the files are compared with that run's record instead of being generated again
(``--fresh`` regenerates regardless).
An ``--out`` that is not a directory or cannot be written exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from codegen import memo, readme

#: The record's entry for the README's generated kernel API table.
API = "README.md#kernel-api"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("--out", default="generated", help="output directory (default: generated)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if files differ; write nothing"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="regenerate even if an identical run is recorded"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"codegen: error: --out {out}: exists and is not a directory", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    key = memo.source_key()
    record = None if args.fresh else memo.load(key)
    with_readme = Path(args.out).resolve() == memo.ROOT / "generated"
    if record is not None and not _stale(record, args.out, with_readme):
        took = time.perf_counter() - t0
        print(f"codegen: {len(record)} files up to date in {args.out}/ (recorded, {took:.1f} s)")
        return 0
    if record is not None and args.check:  # the record says exactly what differs
        return _report(_stale(record, args.out, with_readme), len(record), args.out)
    generated = _generate()
    if generated is None:
        return 1
    files, api = generated
    memo.save(key, {**files, API: api})
    if args.check:
        from codegen import writer

        stale = writer.drifted(files, args.out) + _readme_stale(api, with_readme)
        return _report(stale, len(files), args.out)
    if with_readme:
        _write_readme(api)
    return _write(files, args.out, t0)


def _stale(record: dict, out: str, with_readme: bool) -> list[str]:
    """Recorded paths that differ on disk (the README's table only for generated/)."""
    files = {rel: digest for rel, digest in record.items() if rel != API}
    stale = memo.drifted_by_record(files, out)
    if with_readme and API in record:
        text = readme.block(_read_readme())
        if text is None or memo.digest(text) != record[API]:
            stale.append(API)
    return stale


def _read_readme() -> str:
    try:
        return readme.readme_path().read_text(encoding="utf-8")
    except OSError:
        return ""


def _readme_stale(api: str, with_readme: bool) -> list[str]:
    return [API] if with_readme and readme.block(_read_readme()) != api else []


def _write_readme(api: str) -> None:
    from codegen import writer

    text = _read_readme()
    if text and readme.block(text) != api:
        writer.write_atomic(readme.readme_path(), readme.with_table(text, api).encode())
        print(f"codegen: wrote {readme.readme_path().name} (kernel API table)")


def _generate() -> tuple[dict[str, str], str] | None:
    """The generated files and the README's API table, or None (reported) when a kernel
    is unproven."""
    from codegen import pipeline
    from derive.proofs import ProofError

    try:
        return pipeline.generate(), readme.api_table(pipeline.kernel_table())
    except ProofError as exc:
        print(f"codegen: error: {exc}", file=sys.stderr)
        print(
            "codegen: nothing written; fix the spec or its pairing in derive/kernels.py",
            file=sys.stderr,
        )
        return None


def _report(stale: list[str], total: int, out: str) -> int:
    for rel in stale:
        print(f"codegen: drifted: {out}/{rel} (run `make codegen`)")
    if not stale:
        print(f"codegen: {total} files up to date in {out}/")
    return 1 if stale else 0


def _write(files: dict[str, str], out: str, t0: float) -> int:
    from codegen import writer

    try:
        changed = writer.write_files(files, out)
    except OSError as exc:  # read-only or full disk, a path component that is a file
        print(
            f"codegen: error: cannot write {exc.filename or out}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    for rel in changed:
        print(f"codegen: wrote {out}/{rel}")
    took = time.perf_counter() - t0
    print(f"codegen: {len(changed)} of {len(files)} files changed in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
