"""codegen.runtime.c_library on its own (no compiler): the choice of a LeNet-5
specialization, and the fast path loaded once on first use."""

import numpy as np

from codegen.runtime import c_library

SPECIALIZATIONS = {
    "conv": (
        ("C1", {"C": 1, "K": 2}, None),
        ("C3", {"C": 2, "K": 2}, ((0,), (0, 1))),
    )
}


def library():
    return c_library.Library("k.c", "k_fast.c", (), {}, SPECIALIZATIONS)


def test_variant_matches_sizes_and_connection_table():
    lib = library()
    assert lib.variant("conv", {"C": 1, "K": 2}, np.ones((2, 1), bool)) == "C1"
    c3 = np.array([[1, 0], [1, 1]], bool)
    assert lib.variant("conv", {"C": 2, "K": 2}, c3) == "C3"
    assert lib.variant("conv", {"C": 2, "K": 2}, ~c3) is None  # other table: generic
    assert lib.variant("conv", {"C": 2, "K": 3}, np.ones((3, 2), bool)) is None
    assert lib.variant("other", {"C": 1, "K": 2}) is None


def test_fast_path_loads_once_on_first_use(monkeypatch):
    lib, loads = library(), []

    def fast_path():
        loads.append(1)
        return c_library.Declining()

    monkeypatch.setattr(lib, "fast_path", fast_path)
    unloaded = lib.fast
    assert isinstance(unloaded, c_library.Unloaded) and loads == []
    assert unloaded.relu(np.ones(2)) is None and isinstance(lib.fast, c_library.Declining)
    assert unloaded.tanh(np.ones(2)) is None  # a reference kept from before: no reload
    assert lib.fast.relu() is None and loads == [1]
