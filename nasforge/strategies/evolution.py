"""Regularized (aging) evolution (Real, Aggarwal, Huang & Le, AAAI 2019, Algorithm 1).

A population of ``population`` architectures starts from random samples. Each further
trial draws ``sample_size`` members of the population at random (with replacement, as
in the paper's Algorithm 1 and NAS-Bench-201's code), takes the best of that sample as
the parent, and evaluates its child: the parent with exactly one choice changed to
another value (``space.mutate``). The child joins the population and the *oldest*
member (not the worst) leaves it: aging keeps the search exploring and makes a lucky
evaluation die out.

Defaults are those NAS-Bench-201 uses for REA (D-X-Y/AutoDL-Projects,
``exps/NATS-algos/regularized_ea.py`` and ``scripts-search/algos/R-EA.sh``):
population 10, sample size 3 (``--ea_population 10 --ea_sample_size 3``); the budget
there is 12,000 simulated seconds (``--time_budget 12000``), here the ``trials`` section
(``--set trials.max_sim_seconds=12000`` with a table evaluator).

Failed trials (``tell(arch, None)``) never join the population. With a parallel runner,
children are asked while others are still running (asynchronous evolution, as in the
paper): parents are drawn from the results told so far; until ``population`` trials have
been asked, asks are random samples.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.strategies.base import SampleStrategy, register_strategy

import nasforge.trials  # noqa: F401,E402  (the trial loop)


@dataclass
class EvolutionConfig:
    """Options of regularized evolution (NAS-Bench-201's REA defaults)."""

    population: int = option(10, lo=1, hi=100000, help="population size P (NAS-Bench-201 REA: 10)")
    sample_size: int = option(3, lo=1, hi=100000, help="tournament sample size S, drawn with replacement (REA: 3)")


@register_strategy
class RegularizedEvolution(SampleStrategy):
    """Aging evolution: tournament of ``sample_size``, mutate the winner, drop the oldest."""

    name = "evolution"
    description = "regularized (aging) evolution, Real et al. 2019: P=10, S=3 (sample-based)"
    Config = EvolutionConfig
    batch = 1 << 30  # asynchronous: parents come from whatever results are in

    def setup(self, space: Any, seed: int) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.population: deque[tuple[Arch, float]] = deque()
        self.asked = 0

    def ask(self) -> Arch:
        self.asked += 1
        if self.asked <= self.config.population or not self.population:
            return self.space.sample(self.rng)
        members = list(self.population)
        picks = self.rng.integers(len(members), size=self.config.sample_size)
        parent = max((members[int(k)] for k in picks), key=lambda m: m[1])  # first of equals wins
        return self.space.mutate(parent[0], self.rng)

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        if metrics is None:
            return  # a failed child never joins the population
        self.population.append((arch, float(metrics["objective"])))
        if len(self.population) > self.config.population:
            self.population.popleft()  # the oldest dies, whatever its fitness

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "asked": self.asked,
                "population": [(a.to_dict(), f) for a, f in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.asked = int(state["asked"])
        self.population = deque((Arch.from_dict(a, validate=False), float(f)) for a, f in state["population"])
