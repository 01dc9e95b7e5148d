"""``python -m codegen [--out DIR] [--check]``: regenerate generated/ or check it for drift.

Every kernel is first proven against its derivation (:mod:`derive.proofs`); an
unproven kernel stops codegen with exit 1, naming the kernel and a failing case.
Regenerating reports the files that changed and how long it took; ``--check``
writes nothing and exits 1 listing every file that differs from what codegen emits.
"""

from __future__ import annotations

import argparse
import sys
import time

from codegen import pipeline, writer
from derive.proofs import ProofError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("--out", default="generated", help="output directory (default: generated)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if files differ; write nothing"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        files = pipeline.generate()
    except ProofError as exc:
        print(f"codegen: error: {exc}", file=sys.stderr)
        print(
            "codegen: nothing written; fix the spec or its pairing in derive/kernels.py",
            file=sys.stderr,
        )
        return 1
    if args.check:
        stale = writer.drifted(files, args.out)
        for rel in stale:
            print(f"codegen: drifted: {args.out}/{rel} (run `make codegen`)")
        if not stale:
            print(f"codegen: {len(files)} files up to date in {args.out}/")
        return 1 if stale else 0
    changed = writer.write_files(files, args.out)
    for rel in changed:
        print(f"codegen: wrote {args.out}/{rel}")
    took = time.perf_counter() - t0
    print(f"codegen: {len(changed)} of {len(files)} files changed in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
