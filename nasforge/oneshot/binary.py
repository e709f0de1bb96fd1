"""Binarized paths of ProxylessNAS (Cai, Zhu & Han, ICLR 2019, section 3.2): sampling and gradients.

Each choice (a layer, a cell edge) holds all candidate modules, but a forward pass runs only
sampled paths (``nasforge.nn.choices.Paths`` decisions); the architecture parameters ``alpha``
(one row per choice) live in the strategy's relaxation:

- **weight step**: one path per layer, sampled from ``softmax(alpha)``; only that op
  runs, so activations and weight gradients are those of one compact network.
- **architecture step** (``two`` mode of the paper's code): two paths per layer drawn
  without replacement from ``softmax(alpha)``; the one to keep active is then drawn from
  the softmax over those two. The output is ``g_a * op_a(x) + g_b * op_b(x)`` with binary
  gates ``g = (1, 0)``; ``op_b`` runs without autograd (its output is a constant), so the
  backward pass yields ``dL/dg`` for both gates at the memory of one path. The alphas of
  the two sampled ops then get the paper's estimate
  ``dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i)`` (``p`` = softmax over the two)
  (``two_path_alpha_grad``), and after the optimiser step both are shifted by one offset
  so their total probability mass, hence every unsampled op's probability, is unchanged
  (``rescale_two_paths``; the paper's ``rescale_updated_arch_param``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample_one", "sample_two", "two_path_alpha_grad", "rescale_two_paths"]


def sample_one(alpha: Tensor, generator: torch.Generator | None = None) -> int:
    """One op index drawn from ``softmax(alpha)``."""
    probs = F.softmax(alpha.detach(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def sample_two(alpha: Tensor, generator: torch.Generator | None = None) -> tuple[int, int]:
    """(active, inactive): two ops without replacement from ``softmax(alpha)``, the active one
    then drawn from the softmax over the pair (the paper's ``binarize`` in ``two`` mode)."""
    probs = F.softmax(alpha.detach(), dim=-1)
    pair = torch.multinomial(probs, 2, replacement=False, generator=generator).tolist()
    pair_probs = F.softmax(alpha.detach()[pair], dim=-1)
    c = int(torch.multinomial(pair_probs, 1, generator=generator).item())
    return pair[c], pair[1 - c]


def two_path_alpha_grad(alpha: Tensor, involved: Sequence[int], gate_grads: Tensor) -> Tensor:
    """The paper's gradient of the two sampled ops' alphas (zeros elsewhere):
    ``dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i)``, ``p`` = softmax over ``involved``."""
    idx = torch.as_tensor(list(involved), dtype=torch.long)
    p = F.softmax(alpha.detach()[idx], dim=-1)
    jac = torch.diag(p) - torch.outer(p, p)  # [i, j] = p_j (delta_ij - p_i), symmetric
    grad = torch.zeros_like(alpha, memory_format=torch.contiguous_format).detach()
    grad[idx] = jac @ gate_grads.detach().to(alpha.dtype)
    return grad


@torch.no_grad()
def rescale_two_paths(alpha: Tensor, involved: Sequence[int], old: Tensor) -> None:
    """Shift the updated alphas of ``involved`` by one offset so that their log-sum-exp equals
    that before the update (``old``): every other op keeps its probability."""
    idx = torch.as_tensor(list(involved), dtype=torch.long)
    offset = torch.logsumexp(alpha[idx], 0) - torch.logsumexp(old.to(alpha.dtype), 0)
    alpha[idx] -= offset
