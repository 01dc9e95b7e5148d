"""``python -m codegen [--out DIR] [--check] [--fresh]``: regenerate generated/ or check it.

Every kernel is first proven against its derivation (:mod:`derive.proofs`); an
unproven kernel stops codegen with exit 1, naming the kernel and a failing case.
Regenerating reports the files that changed and how long it took; ``--check``
writes nothing and exits 1 listing every file that differs from what codegen emits.
When derive/ and codegen/ are unchanged since a full run (:mod:`codegen.memo`),
the files are compared with that run's record instead of being generated again
(``--fresh`` regenerates regardless).
"""

from __future__ import annotations

import argparse
import sys
import time

from codegen import memo


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
    t0 = time.perf_counter()
    key = memo.source_key()
    record = None if args.fresh else memo.load(key)
    if record is not None and not memo.drifted_by_record(record, args.out):
        took = time.perf_counter() - t0
        print(f"codegen: {len(record)} files up to date in {args.out}/ (recorded, {took:.1f} s)")
        return 0
    if record is not None and args.check:  # the record says exactly what differs
        return _report(memo.drifted_by_record(record, args.out), len(record), args.out)
    files = _generate()
    if files is None:
        return 1
    memo.save(key, files)
    if args.check:
        from codegen import writer

        return _report(writer.drifted(files, args.out), len(files), args.out)
    return _write(files, args.out, t0)


def _generate() -> dict[str, str] | None:
    """The generated files, or None (reported) when a kernel is unproven."""
    from codegen import pipeline
    from derive.proofs import ProofError

    try:
        return pipeline.generate()
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

    changed = writer.write_files(files, out)
    for rel in changed:
        print(f"codegen: wrote {out}/{rel}")
    took = time.perf_counter() - t0
    print(f"codegen: {len(changed)} of {len(files)} files changed in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
