"""Mixed ops: one module holding all candidate ops of a choice, combined by given weights.

The supernet owns the candidate ops' weights; the strategy owns the architecture
parameters and turns them into per-edge weights with its relaxation:

- DARTS passes softmax weights and no index: the output is the weighted sum of all ops.
- GDAS passes a straight-through one-hot and the sampled index: only that op runs.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from torch import Tensor, nn


class EdgeWeights(NamedTuple):
    """Per-edge op weights ``[edges, ops]`` and, for sampled relaxations, the chosen op per edge."""

    weights: Tensor
    index: Sequence[int] | None = None


class MixedOp(nn.Module):
    """Candidate ops of one edge; ``forward(x, w, index)`` mixes them.

    ``zero_ops`` names ops whose output is identically zero (``none``): they add nothing to
    a weighted sum, so the sum skips them (the result and the gradients are the same).
    """

    def __init__(self, ops: dict[str, nn.Module], zero_ops: Sequence[str] = ("none",)):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(ops.values())
        self._live = [i for i, name in enumerate(self.names) if name not in zero_ops]

    def forward(self, x: Tensor, weights: Tensor, index: int | None = None) -> Tensor:
        if index is not None:
            # Hard sample: run only the chosen op; its (straight-through) weight carries the gradient.
            return weights[index] * self.ops[index](x)
        out = None
        for i in self._live:
            term = weights[i] * self.ops[i](x)
            out = term if out is None else out + term
        return out
