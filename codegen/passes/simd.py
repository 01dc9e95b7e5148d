"""Vector lengths of short reductions, for one vector width (a printing dialect)."""

from __future__ import annotations

import dataclasses

from codegen.ir import Loop, transform

#: Reductions shorter than this many whole vectors may run on half vectors (see
#: :func:`simd_lengths`).
SHORT_REDUCTION = 16


def simd_lengths(nodes, lanes: int) -> tuple:
    """Set ``simdlen`` to half vectors on short constant reductions that half vectors fit.

    Applies to a reduction loop whose constant trip count ``h = lanes / 2`` divides but
    ``lanes`` does not, and which is shorter than :data:`SHORT_REDUCTION` whole vectors:
    whole vectors would leave a remainder loop and a wider horizontal sum, a fixed cost
    per run that outweighs the wider vectors on a short loop.
    """
    half = lanes // 2

    def annotate(node):
        if not isinstance(node, Loop) or not node.reduction:
            return node
        trips = node.hi - node.lo
        if trips.is_Integer and trips % half == 0 and trips % lanes != 0:
            if trips < SHORT_REDUCTION * lanes:
                return dataclasses.replace(node, simdlen=half)
        return node

    return transform(nodes, after=annotate)
