"""The runtime imports no SymPy, no Jinja, nothing of derive/ and only codegen's runtime.

The runtime is the generated bindings (``generated/``), the C loader and the hand-written
runtime they import (:mod:`codegen.build`, :mod:`codegen.runtime`) and the LeNet-5 app
(``lenet5/``). A fresh interpreter imports every module of it, then trains, evaluates and
predicts through the command line (catching imports made inside functions), and lists
``sys.modules``: no module of SymPy, Jinja or derive/ may be there, and of codegen/ only
the modules the runtime is allowed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Top-level packages the runtime must never load.
FORBIDDEN = ("sympy", "jinja2", "derive")
#: The codegen/ modules the runtime may load (the rest turn specs into source text).
CODEGEN_RUNTIME = ("codegen", "codegen.build", "codegen.writer", "codegen.runtime")

#: Imports every runtime module, runs the app's commands, writes ``sys.modules`` as JSON.
SCRIPT = """
import importlib, json, pkgutil, sys
import generated, lenet5
for package in (generated, lenet5):
    for m in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{m.name}")
from lenet5 import cli
run, image, out = sys.argv[1:]
common = ["--data", "sample"]
train = ["train", "--out", run, "--epochs", "1", "--limit", "40", "--batch-size", "20"]
codes = [
    cli.main([*train, *common, "--no-progress"]),
    cli.main(["evaluate", "--checkpoint", f"{run}/checkpoint-last.npz", *common]),
    cli.main(["predict", "--checkpoint", f"{run}/checkpoint-last.npz", image]),
]
with open(out, "w") as f:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, f)
"""


def not_runtime(modules):
    """The modules of ``modules`` the runtime must not load.

    >>> not_runtime(["numpy", "codegen", "codegen.runtime.checks", "codegen.lower", "sympy.core"])
    ['codegen.lower', 'sympy.core']
    """
    return [name for name in modules if not _allowed(name)]


def _allowed(name):
    top = name.split(".")[0]
    if top == "codegen":
        return name in CODEGEN_RUNTIME or name.startswith("codegen.runtime.")
    return top not in FORBIDDEN


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """``sys.modules`` of a fresh interpreter that imported and ran the runtime."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("runtime")
    image = tmp / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    out = tmp / "modules.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", SCRIPT, str(tmp / "run"), str(image), str(out)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_the_commands_ran(loaded):
    assert loaded["codes"] == [0, 0, 0]
    assert {"generated.c_kernels", "lenet5.cli", "codegen.runtime.checks"} <= set(loaded["modules"])


def test_runtime_loads_no_sympy_jinja_derive_or_code_generator(loaded):
    assert not_runtime(loaded["modules"]) == []
