"""The ``symconv`` command: one entry point for the project's three command lines.

======================================  ==========================  =======================
``symconv derive list|show ID|book``    the checked derivations     ``python -m derive``
``symconv codegen [--out D] [--check]`` regenerate / check kernels  ``python -m codegen``
``symconv train|evaluate|predict ...``  LeNet-5 on MNIST            ``python -m lenet5``
``symconv reproduce --seeds 0-4 ...``   seeds as parallel runs      ``python -m lenet5``
======================================  ==========================  =======================

Each command passes its arguments unchanged to that module's ``main`` and exits with its
status (see the README's table); an unknown command exits 2. ``derive`` and ``codegen``
(SymPy, Jinja) are imported only for their own commands, so the runtime commands start
without them.

>>> main(["frobnicate"])  # prints the usage on stderr
2
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

#: command -> (module whose ``main(argv)`` runs it, whether the command name is passed on)
COMMANDS = {
    "derive": ("derive.__main__", False),
    "codegen": ("codegen.__main__", False),
    "train": ("lenet5.cli", True),
    "evaluate": ("lenet5.cli", True),
    "predict": ("lenet5.cli", True),
    "reproduce": ("lenet5.cli", True),
}

USAGE = """\
usage: symconv COMMAND [ARGS...]

  symconv derive list | show ID [--latex] | book --out DIR
                       the lecture's mathematics as checked derivations
  symconv codegen [--out DIR] [--check]
                       regenerate the NumPy/C kernels (or check generated/ for drift)
  symconv train --out RUNDIR [--data DIR|sample] [--epochs N] ...
  symconv evaluate --checkpoint F [--data DIR|sample]
  symconv predict --checkpoint F [--json] IMAGE.png ...
  symconv reproduce --out OUT [--data DIR|sample] [--seeds 0-4] ...
                       LeNet-5 on MNIST

`symconv COMMAND --help` describes a command's options."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``symconv`` on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"symconv: unknown command {argv[0]!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    module, keep_name = COMMANDS[argv[0]]
    rest = argv if keep_name else argv[1:]
    status = importlib.import_module(module).main(rest)
    return 0 if status is None else int(status)


def run() -> None:
    """The console script: exit with :func:`main`'s status; output piped into a program
    that stops reading (``| head``) ends quietly."""
    try:
        sys.exit(main())
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
