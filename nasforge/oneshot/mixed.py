"""Mixed ops: one module holding all candidate ops of a choice, combined by given weights.

The supernet owns the candidate ops' weights; the strategy owns the architecture
parameters and turns them into per-edge weights with its relaxation:

- DARTS passes softmax weights and no index: the output is the weighted sum of all ops.
- GDAS passes a straight-through one-hot and the sampled index: only that op runs.

A space that one-shot strategies can search follows ``OneShotSpace``: it names its groups
of architecture weights and their ``[edges, ops]`` shapes, its supernet takes one
``EdgeWeights`` per group, and it derives an ``Arch`` from per-group op weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, Sequence, runtime_checkable

from torch import Tensor, nn


class EdgeWeights(NamedTuple):
    """Per-edge op weights ``[edges, ops]`` and, for sampled relaxations, the chosen op per edge."""

    weights: Tensor
    index: Sequence[int] | None = None


@runtime_checkable
class OneShotSpace(Protocol):
    """What DARTS and GDAS need of a space (the darts space is adapted by the strategies).

    ``alpha_shapes()``: group name -> ``(edges, ops)``, in the order the supernet's
    ``forward(x, *weights)`` takes one ``EdgeWeights`` per group and ``derive(*weights)``
    takes one ``[edges, ops]`` weight matrix per group (softmax of the alphas).
    """

    def alpha_shapes(self) -> dict[str, tuple[int, int]]: ...

    def supernet(self, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module: ...

    def derive(self, *weights: Any) -> Any: ...


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
