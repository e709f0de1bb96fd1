"""DARTS+ early stopping (Liang et al. 2019): stop a cell search before it collapses.

Run long, DARTS drifts to parameter-free ops, skip-connects above all, and the derived
cell degrades ("collapse"). DARTS+ stops the search at the first epoch where either
  1. the derived normal cell has ``max_skips`` (2) or more skip-connects, or
  2. the ranking of the *learnable* ops' architecture weights (every op but none,
     skip-connect and pooling) has not changed for ``patience`` (10) epochs,
and returns the genotype of that epoch. The stopper is a policy, not a strategy: any
cell-space search that records per-epoch weights and genotypes can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nasforge.spaces.darts import PRIMITIVES

PARAMETER_FREE = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3")


def learnable_ranking(arch_weights: dict[str, Sequence[Sequence[float]]],
                      primitives: Sequence[str] = PRIMITIVES) -> tuple:
    """Per cell and edge, the learnable ops ordered from strongest to weakest."""
    learnable = [k for k, p in enumerate(primitives) if p not in PARAMETER_FREE]
    out = []
    for cell in sorted(arch_weights):
        for row in np.asarray(arch_weights[cell], dtype=np.float64):
            out.append(tuple(sorted(learnable, key=lambda k: (-row[k], k))))
    return tuple(out)


@dataclass
class DartsPlusStopper:
    """Decides, from the per-epoch records of a search, whether DARTS+ would stop now."""

    max_skips: int = 2
    patience: int = 10

    def check(self, history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """None to go on, or ``{"criterion", "epoch", "detail"}`` for the last record of ``history``."""
        if not history:
            return None
        last = history[-1]
        normal = _normal_cell_ops(last["arch"])
        skips = sum(1 for op in normal if op == "skip_connect")
        if skips >= self.max_skips:
            return {"criterion": "skip_connect", "epoch": last["epoch"],
                    "detail": f"normal cell has {skips} skip-connects (limit {self.max_skips})"}
        if self.patience > 0 and len(history) > self.patience:
            window = [learnable_ranking(r["arch_weights"]) for r in history[-(self.patience + 1):]]
            if all(r == window[0] for r in window[1:]):
                return {"criterion": "ranking_stable", "epoch": last["epoch"],
                        "detail": f"learnable ops' ranking unchanged for {self.patience} epochs"}
        return None


def _normal_cell_ops(arch: dict[str, Any]) -> list[str]:
    """Op names of the normal cell of a darts arch dict (``Arch.to_dict`` form)."""
    choices = arch["choices"]
    return [v for k, v in choices.items() if k.startswith("normal.") and ".op" in k]
