"""The Makefile names only tests that exist (a renamed test file or function must not leave
a target, such as ``make sanitize``, collecting nothing)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted(set(re.findall(r"\btests/[\w/]+\.py\b", MAKEFILE))))
def test_every_test_file_the_makefile_names_exists(path):
    assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("node", sorted(set(re.findall(r"tests/\w+\.py::\w+", MAKEFILE))))
def test_every_test_function_the_makefile_names_exists(node):
    path, name = node.split("::")
    assert re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M), node
