"""Path algebra of densely connected one-shot spaces (DenseNAS): expected latency and Viterbi.

A dense space is a DAG of nodes ``0 .. T``: node 0 is the first block (after the stem),
node ``T`` the tail, and ``successors[i]`` lists the nodes that node ``i`` may feed. Each
node ``i < T`` owns a distribution ``path_probs[i]`` over its successors (softmax of its
architecture parameters ``beta_i``). Both functions here take those probabilities as given,
so they serve the search (differentiable tensors) and tests (hand-made numbers) alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["expected_latency", "viterbi", "all_paths"]


def expected_latency(successors: Sequence[Sequence[int]], path_probs: Sequence[Tensor],
                     head_latency: Mapping[tuple[int, int], float], stack_latency: Sequence[Tensor | float],
                     fixed: float = 0.0) -> Tensor:
    """The DenseNAS expected latency of the supernet, computed block by block from the tail back.

    ``E(T) = 0`` and, for a node ``i``, ``E(i) = stack(i) + sum_j p(i->j) * (head(i->j) + E(j))``:
    the cost from ``i``'s input of its stacking layers (``stack_latency[i]``, already the
    op-probability-weighted sum over its layers) plus, over every way out of ``i``, the
    probability of taking it times the head layer on that connection and everything after.
    The result is ``fixed + E(0)`` (``fixed``: stem, classifier, call overhead). It is exactly
    the expectation of the path latency when a path is drawn by walking from node 0 with the
    transition probabilities (each node's stacking cost taken at its expected op mix).
    """
    tail = len(successors)
    if len(path_probs) != tail or len(stack_latency) != tail:
        raise ValueError(f"{tail} nodes before the tail, but {len(path_probs)} path distributions and "
                         f"{len(stack_latency)} stack latencies")
    cost: list[Tensor | float] = [0.0] * (tail + 1)
    for i in range(tail - 1, -1, -1):
        probs = path_probs[i]
        if len(successors[i]) != len(probs):
            raise ValueError(f"node {i} has {len(successors[i])} successors but {len(probs)} probabilities")
        total: Tensor | float = stack_latency[i]
        for k, j in enumerate(successors[i]):
            total = total + probs[k] * (head_latency[(i, j)] + cost[j])
        cost[i] = total
    out = cost[0] + fixed
    return out if isinstance(out, Tensor) else torch.tensor(float(out))


def viterbi(successors: Sequence[Sequence[int]], path_probs: Sequence[Sequence[float] | Tensor | np.ndarray]
            ) -> list[int]:
    """The path ``0 -> ... -> T`` with the largest product of transition probabilities.

    Forward dynamic programming in log space over the DAG (nodes are topologically ordered:
    every successor has a larger index). Ties keep the first predecessor found, scanning
    predecessors in increasing order. Returns the node indices of the path, 0 and ``T``
    included.
    """
    tail = len(successors)
    best = [-math.inf] * (tail + 1)
    back = [-1] * (tail + 1)
    best[0] = 0.0
    for i in range(tail):
        probs = np.asarray(torch.as_tensor(path_probs[i]).detach().cpu().double().numpy())
        if not np.isfinite(best[i]):
            continue
        for k, j in enumerate(successors[i]):
            if j <= i:
                raise ValueError(f"successor {j} of node {i} is not after it; nodes must be in topological order")
            p = float(probs[k])
            score = best[i] + (math.log(p) if p > 0 else -math.inf)
            if score > best[j]:
                best[j], back[j] = score, i
    if back[tail] < 0:
        # every path has probability 0: fall back to the first path found by following first successors
        path = [0]
        while path[-1] != tail:
            path.append(successors[path[-1]][0])
        return path
    path = [tail]
    while path[-1] != 0:
        path.append(back[path[-1]])
    return path[::-1]


def all_paths(successors: Sequence[Sequence[int]]) -> list[list[int]]:
    """Every path from node 0 to the tail (brute force; for tests and tiny spaces)."""
    tail = len(successors)
    out: list[list[int]] = []

    def walk(path: list[int]) -> None:
        if path[-1] == tail:
            out.append(list(path))
            return
        for j in successors[path[-1]]:
            walk(path + [j])

    walk([0])
    return out
