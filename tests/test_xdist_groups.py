"""`make test` runs ``pytest -n 2 --dist loadgroup``: tests marked ``xdist_group`` share a
worker, so the expensive module fixtures (the derivations book, a full codegen run, a
trained network) are built once. pytest-xdist marks a grouped test by appending
``@group`` to its node id; with a pytest that ignores that rename (9.2 with xdist 3.8) the
groups silently fall apart and every worker rebuilds the fixtures. This test fails then.
"""

import pytest

pytestmark = pytest.mark.xdist_group("self")


def test_grouped_tests_carry_their_group(request):
    if not request.config.getoption("loadgroup", default=False):
        pytest.skip("not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@self"), request.node.nodeid
