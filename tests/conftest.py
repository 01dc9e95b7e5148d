import os

import pytest
from hypothesis import HealthCheck, settings

# CI: deterministic examples and bounded time; dev: the same by default.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=40, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "longest: a run of many minutes, collected first (make test's xdist note explains)",
    )


def pytest_collection_modifyitems(config, items):
    # The longest runs go first, in their order: `make test` (--dist loadgroup) hands the
    # first tests out one per worker, so each worker starts one of them.
    items.sort(key=lambda item: "longest" not in item.keywords)
    if config.getoption("--runslow") or os.environ.get("SYMCONV_RUNSLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow (or SYMCONV_RUNSLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
