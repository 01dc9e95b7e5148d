"""The LeNet-5 constants the runtime uses, read from ``generated.lenet5_spec`` (no SymPy).

``generated/lenet5_spec.py`` is emitted by ``make codegen`` from ``derive/lenet5.py``;
this module only converts its plain values into the numpy forms the runtime needs and
fingerprints them (``SPEC_HASH``, stored in every checkpoint).

>>> C3_MASK.shape, int(C3_MASK.sum())
((16, 6), 60)
>>> RBF_CENTERS.shape, sorted(set(RBF_CENTERS.ravel().tolist()))
((10, 84), [-1.0, 1.0])
>>> sum(n for n, _ in SCHEDULE)
20
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from generated import lenet5_spec as _spec


def _c3_mask(table) -> np.ndarray:
    """(16, 6) uint8: mask[k, c] = 1 when C3 map k reads S2 map c (paper, Table I)."""
    mask = np.zeros((len(table), 6), np.uint8)
    for k, inputs in enumerate(table):
        mask[k, list(inputs)] = 1
    return mask


SQUASH_A = float(_spec.SQUASH_A)
SQUASH_S = float(_spec.SQUASH_S)
MAP_J = float(_spec.MAP_J)
INIT_NUMERATOR = float(_spec.INIT_NUMERATOR)
SDLM_MU = float(_spec.SDLM_MU)
HESSIAN_SAMPLES = int(_spec.HESSIAN_SAMPLES)
SCHEDULE = tuple((int(n), float(rate)) for n, rate in _spec.SCHEDULE)
C3_TABLE = tuple(tuple(int(c) for c in row) for row in _spec.C3_TABLE)
C3_MASK = _c3_mask(C3_TABLE)
RBF_CENTERS = np.asarray(_spec.RBF_CENTERS, dtype=np.float64)

#: sha256 of everything above: a checkpoint trained under other constants is rejected.
SPEC_HASH = hashlib.sha256(
    json.dumps(
        [SQUASH_A, SQUASH_S, MAP_J, INIT_NUMERATOR, SDLM_MU, HESSIAN_SAMPLES, SCHEDULE,
         C3_TABLE, RBF_CENTERS.tolist()]
    ).encode()
).hexdigest()  # fmt: skip


def rate_for_epoch(epoch: int) -> float:
    """The paper's global learning rate for pass ``epoch`` (0-based); the last rate after 20.

    >>> [rate_for_epoch(e) for e in (0, 1, 2, 19, 25)]
    [0.0005, 0.0005, 0.0002, 1e-05, 1e-05]
    """
    if epoch < 0:
        raise ValueError(f"rate_for_epoch: epoch must be >= 0, got {epoch}")
    for passes, rate in SCHEDULE:
        if epoch < passes:
            return rate
        epoch -= passes
    return SCHEDULE[-1][1]
