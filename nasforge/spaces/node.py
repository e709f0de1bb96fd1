"""The inputs a cell node keeps: the declaration behind ``NodeChoice`` and the darts space.

A DARTS node sums two ops, each on one of its earlier states. The DARTS paper's derivation
keeps two *different* inputs; GDAS's official derivation keeps the two strongest
``(op, input)`` pairs, so both ops may read the *same* input (``inputs: [1, 1]``, ``op0`` and
``op1`` on state 1). ``NodeInputs`` is an ``InputChoice`` that accepts both forms when it
checks an arch (an arch with a repeated input builds and trains), while sampling, mutation,
its size and its values for sequential decisions stay those of distinct inputs, the space
the sample-based methods search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasforge.spaces.base import InputChoice


def check_node_inputs(value: Any, n_inputs: int, k: int) -> str | None:
    """None if ``value`` is ``k`` input indices in ``0..n_inputs-1`` in non-decreasing order, else the problem."""
    if not isinstance(value, (list, tuple)) or len(value) != k:
        return f"{value!r} must be a list of {k} input indices"
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_inputs for i in value):
        return f"{list(value)!r} has an index outside 0..{n_inputs - 1}"
    if list(value) != sorted(value):
        return f"{list(value)!r} must list its {k} indices in increasing order (an index may repeat)"
    return None


@dataclass(frozen=True)
class NodeInputs(InputChoice):
    """``k`` of ``n_inputs`` node inputs: sampled distinct, but an arch may repeat one (two ops on one input)."""

    def check(self, value: Any) -> str | None:
        return check_node_inputs(value, self.n_inputs, self.k)


__all__ = ["NodeInputs", "check_node_inputs"]
