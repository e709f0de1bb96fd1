"""Random search: every trial a uniformly sampled architecture; results are ignored.

The baseline every NAS method should beat (Li & Talwalkar, "Random Search and
Reproducibility for Neural Architecture Search", 2019; NAS-Bench-201's "RS"). Each
choice is sampled independently and uniformly, which is uniform over the space's
architectures because the space is the product of its choices. It asks without waiting
for tells, so a parallel runner keeps all its workers busy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nasforge.arch import Arch
from nasforge.strategies.base import SampleStrategy, register_strategy

import nasforge.trials  # noqa: F401,E402  (the trial loop)


@dataclass
class RandomConfig:
    """Random search has no options: the budget is in the ``trials`` section."""


@register_strategy
class RandomSearch(SampleStrategy):
    """Uniform random sampling of the space (ask/tell; tells are ignored)."""

    name = "random"
    description = "random search: uniform samples of the space, best by the evaluator (sample-based)"
    Config = RandomConfig
    batch = 1 << 30  # never waits for results

    def setup(self, space: Any, seed: int) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)

    def ask(self) -> Arch:
        return self.space.sample(self.rng)

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        """Random search learns nothing from results."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
