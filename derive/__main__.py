"""Command line: ``python -m derive list | show ID [--latex] | book --out DIR``.

``list`` shows statuses recorded (by ``list`` or ``book``) for byte-identical
derive sources and library versions, see :func:`derive.render.statuses`;
``--fresh`` re-verifies. ``show`` and ``book`` always verify.

Exit status: 0 on success; 1 when a step's check failed (an UNVERIFIED step is
reported, not a failure) or, for ``list``, a derivation could not be built (``show``
and ``book`` let a builder's exception propagate with its traceback); 2 for usage
errors and unknown ids (the message suggests close ids).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from derive import core, render


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m derive",
        description="symconv's checked derivations of the lecture's mathematics.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="every derivation: id, title, verified/unverified")
    lst.add_argument(
        "--fresh",
        action="store_true",
        help="re-verify everything instead of using statuses recorded for identical sources",
    )
    show = sub.add_parser("show", help="one derivation as readable text (or LaTeX)")
    show.add_argument("id", help="derivation id, e.g. conv.output_size")
    show.add_argument("--latex", action="store_true", help="print the LaTeX of every step")
    book = sub.add_parser("book", help="write derivations.tex and derivations.md")
    book.add_argument("--out", required=True, help="output directory (created if missing)")
    return p


def _list(fresh: bool) -> int:
    labels = render.statuses(fresh=fresh)
    rows = [(id_, render.plain(core.title(id_)), label) for id_, label in labels.items()]
    width = max((len(r[0]) for r in rows), default=0)
    twidth = max((len(r[1]) for r in rows), default=0)
    for id_, title, label in rows:
        print(f"{id_:<{width}}  {title:<{twidth}}  {label}")
    ok = {render.VERIFIED, render.UNVERIFIED_LABEL}
    return 0 if all(label in ok for label in labels.values()) else 1


def _show(id_: str, latex: bool) -> int:
    d = core.get(id_)
    results = d.verify()
    print(render.to_latex(d, results) if latex else render.to_text(d, results), end="\n")
    return 1 if render.derivation_status(results) == render.FAILED else 0


class BadOutput(ValueError):
    """The ``--out`` path cannot be used (a usage error: exit 2)."""


def _book(out: str) -> int:
    if Path(out).exists() and not Path(out).is_dir():
        raise BadOutput(f"--out {out!r} exists and is not a directory")
    paths, built = render.write_book(out)
    for path in paths:
        print(path)
    failed = [d.id for d, res in built if render.derivation_status(res) == render.FAILED]
    if failed:
        print(f"error: failed steps in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list(args.fresh)
        if args.command == "show":
            return _show(args.id, args.latex)
        return _book(args.out)
    except (core.UnknownDerivation, BadOutput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
