"""``python -m codegen [--out DIR] [--check]``: regenerate generated/ or check it for drift.

Regenerating reports the files that changed and how long it took; ``--check``
writes nothing and exits 1 listing every file that differs from what codegen emits.
An ``--out`` that is not a directory or cannot be written exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from codegen import pipeline, writer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("--out", default="generated", help="output directory (default: generated)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if files differ; write nothing"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"codegen: error: --out {out}: exists and is not a directory", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    table = pipeline.kernel_table(strict=False)
    missing = pipeline.missing_derivations(table)
    if missing:
        print(
            f"codegen: note: derivations not registered yet: {', '.join(missing)}", file=sys.stderr
        )
    files = pipeline.generate(strict=False)
    if args.check:
        stale = writer.drifted(files, args.out)
        for rel in stale:
            print(f"codegen: drifted: {args.out}/{rel} (run `make codegen`)")
        if not stale:
            print(f"codegen: {len(files)} files up to date in {args.out}/")
        return 1 if stale else 0
    try:
        changed = writer.write_files(files, args.out)
    except OSError as exc:  # read-only or full disk, a path component that is a file
        print(
            f"codegen: error: cannot write {exc.filename or args.out}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    for rel in changed:
        print(f"codegen: wrote {args.out}/{rel}")
    took = time.perf_counter() - t0
    print(f"codegen: {len(changed)} of {len(files)} files changed in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
