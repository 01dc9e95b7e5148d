"""The README speaks of the project as it is: its sections in order, the command line and
its tables, no history, no pointers to documents outside the repository."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_sections_in_the_reading_order():
    headings = [line for line in README.splitlines() if line.startswith("## ")]
    assert headings[:6] == [
        "## Two commands",
        "## The data path",
        "## Command line",
        "## Adding a kernel",
        "## Figures",
        "## Details",
    ]
    assert "make demo" in README[: README.index("## The data path")]


def test_every_command_has_its_exit_statuses_and_every_variable_its_row():
    table = README[README.index("**Exit status**") : README.index("**Environment variables**")]
    for command in ("derive list", "derive show", "derive book", "codegen", "train", "predict"):
        assert f"`symconv {command}" in table, command
    env = README[README.index("**Environment variables**") : README.index("## Adding a kernel")]
    for var in ("SYMCONV_CACHE", "SYMCONV_MNIST", "OMP_NUM_THREADS", "CC"):
        assert re.search(rf"^\| `{var}` \|", env, re.M), var


def test_no_history_and_no_documents_outside_the_repository():
    lowered = README.lower()
    for phrase in ("issue ", "session", "previous default", "before this", "shared/design"):
        assert phrase not in lowered, phrase


def test_figures_say_when_and_on_what_they_were_measured():
    figures = README[README.index("## Figures") : README.index("## Details")]
    dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", figures)
    assert figures.count("Intel(R) Xeon(R)") >= 3 and len(dates) >= 3
    demo = README[: README.index("## The data path")]
    assert re.search(r"\d+ min \d+ s", demo) and "fresh clone" in demo
