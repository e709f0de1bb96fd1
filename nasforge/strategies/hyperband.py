"""Multi-fidelity search: Hyperband and BOHB, over any evaluator that offers fidelities.

**Hyperband** (Li et al., JMLR 2018) runs *brackets* of successive halving: a bracket
scores ``n`` new architectures at a low fidelity (few epochs), keeps the best ``1/eta``
of them for a fidelity ``eta`` times higher, and so on up to the full fidelity; the
brackets differ in how aggressively they start low (the last starts at full fidelity), so
the search hedges against low fidelities that rank badly. The schedule is hpbandster's
(the BOHB authors' code, which NATS-Bench ran): with ``m = floor(log_eta(max/min)) + 1``
fidelity levels ``max * eta^-k`` (snapped down to the evaluator's offered fidelities, as
NATS-Bench's ``int(budget)``), bracket ``i`` has ``s = m - 1 - (i mod m)`` promotions,
``n0 = floor(m / (s + 1)) * eta^s`` architectures and keeps ``max(floor(n0 eta^-j), 1)``
at stage ``j``. A stage's architectures are ranked when all of them are told (a failed
trial ranks last); new architectures are drawn uniformly, without repeats in a bracket.

**BOHB** (Falkner et al., ICML 2018) keeps Hyperband's brackets and draws the new
architectures of a bracket from a model: a Tree-structured Parzen Estimator fitted on the
results of the highest fidelity that has at least ``min_points`` of them (the top
``top_fraction`` are the "good" density, the rest the "bad"), maximising good/bad over
``candidates`` draws; a ``random_fraction`` of them, and all before any fidelity has
enough results, are drawn at random. The model is Optuna's ``TPESampler`` (multivariate
Parzen estimators with categorical kernels) instead of hpbandster's statsmodels KDE; it
needs the optional extra ``optuna``. NATS-Bench ran BOHB with eta 3 over epochs 1..12 of
the 12-epoch schedule, ``random_fraction`` 0 and 4 samples (``--preset nb201``).

Both give results whose fidelity is recorded per trial; the search's answer is the best
architecture at the highest fidelity evaluated. Tells arrive in ask order, so each
strategy keeps a queue of what it asked.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ConfigError
from nasforge.fidelity import Fidelities, Request
from nasforge.presets import register_preset
from nasforge.seeds import seed_for
from nasforge.strategies.base import MultiFidelityStrategy, register_strategy

import nasforge.trials  # noqa: F401,E402  (the trial loop)

log = logging.getLogger(__name__)


def brackets(fidelities: Fidelities, eta: float, low: int | None = None, high: int | None = None) -> list[int]:
    """The fidelity levels of Hyperband's schedule, lowest first."""
    low = fidelities.low if low is None else fidelities.check(low)
    high = fidelities.high if high is None else fidelities.check(high)
    if low > high:
        raise ConfigError(f"strategy.min_fidelity={low} is above strategy.max_fidelity={high}; lower it")
    count = int(math.floor(math.log(high / low) / math.log(eta) + 1e-9)) + 1
    budgets = high * np.power(float(eta), -np.linspace(count - 1, 0, count))
    return sorted({max(fidelities.snap(float(b)), low) for b in budgets})


def bracket_plan(levels: list[int], eta: float, iteration: int) -> list[tuple[int, int]]:
    """(architectures, fidelity) per stage of bracket ``iteration`` (hpbandster's ``get_next_iteration``)."""
    m = len(levels)
    s = m - 1 - (iteration % m)
    n0 = int(math.floor(m / (s + 1)) * eta ** s)
    counts = [max(int(n0 * eta ** (-j)), 1) for j in range(s + 1)]
    return list(zip(counts, levels[-s - 1:]))


@dataclass
class HyperbandConfig:
    """Options of Hyperband."""

    eta: float = option(3.0, lo=1.01, hi=100.0, help="fidelity ratio between stages; the best 1/eta go on")
    min_fidelity: int | None = option(None, lo=1, hi=10**9, help="lowest fidelity, e.g. epochs (auto: the "
                                      "evaluator's lowest)")
    max_fidelity: int | None = option(None, lo=1, hi=10**9, help="highest fidelity (auto: the evaluator's full one)")


@register_strategy
class Hyperband(MultiFidelityStrategy):
    """Hyperband: brackets of successive halving over the evaluator's fidelities (sample-based)."""

    name = "hyperband"
    description = "Hyperband: successive halving over fidelities (epochs); needs an evaluator with fidelities"
    Config = HyperbandConfig

    # --- the schedule ------------------------------------------------------------------
    def setup(self, space: Any, seed: int) -> None:
        self.space, self.seed = space, int(seed)  # self.fidelities: set and checked by the trial loop
        self.levels = brackets(self.fidelities, self.config.eta, self.config.min_fidelity,
                                  self.config.max_fidelity)
        if len(self.levels) == 1:
            log.warning("strategy '%s' has one fidelity level (%s from %s, eta %g): every trial runs at full "
                        "fidelity, so it is random search in brackets; widen the range (e.g. more evaluator.epochs)",
                        self.name, self.levels[0], self.fidelities.describe(), self.config.eta)
        self.rng = np.random.default_rng(self.seed)
        self.iteration = 0      # bracket number
        self.stage = 0          # stage of the bracket
        self.queue: list[dict[str, Any]] = []     # the stage's architectures still to ask
        self.results: list[tuple[dict[str, Any], float | None]] = []  # the stage's told (arch, objective)
        self.pending: deque[tuple[dict[str, Any], int]] = deque()   # asked, not told: (arch, fidelity)
        self.seen: set[str] = set()  # architectures drawn in this bracket
        self.asked = 0
        self._start_bracket()

    def _plan(self) -> list[tuple[int, int]]:
        return bracket_plan(self.levels, self.config.eta, self.iteration)

    def _start_bracket(self) -> None:
        self.stage, self.queue, self.results, self.seen = 0, [], [], set()
        self.to_draw = self._plan()[0][0]  # new architectures this stage still draws

    @property
    def batch(self) -> int:  # type: ignore[override]
        """Asks possible before the stage's results are in."""
        return self.to_draw + len(self.queue) if self.stage == 0 else len(self.queue)

    def _draw(self) -> Arch:
        """A new architecture for the bracket's first stage: uniform, not drawn before in the bracket."""
        arch = self.space.sample(self.rng)
        for _ in range(100):
            if arch.hash not in self.seen:
                break
            arch = self.space.sample(self.rng)
        return arch

    def ask(self) -> Request:
        plan = self._plan()
        fidelity = plan[self.stage][1]
        if self.stage == 0 and self.to_draw > 0:
            arch = self._draw()
            self.to_draw -= 1
            self.seen.add(arch.hash)
            data = arch.to_dict()
        elif self.queue:
            data = self.queue.pop(0)
        else:
            raise ConfigError(f"strategy '{self.name}' was asked while its stage waits for results; the trial loop "
                              "reads its batch first")
        self.pending.append((data, fidelity))
        self.asked += 1
        return Request(Arch.from_dict(data, validate=False), fidelity)

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        data, fidelity = self.pending.popleft()
        objective = None if metrics is None else float(metrics["objective"])
        self.results.append((data, objective))
        self._observe(data, fidelity, objective)
        plan = self._plan()
        count = plan[self.stage][0]
        if len(self.results) < count:
            return
        if self.stage + 1 < len(plan):  # promote the best of the stage
            keep = plan[self.stage + 1][0]
            order = sorted(range(len(self.results)), key=lambda k: (
                -(self.results[k][1] if self.results[k][1] is not None else -math.inf), k))
            self.queue = [self.results[k][0] for k in order[:keep]]
            self.results = []
            self.stage += 1
        else:
            self.iteration += 1
            self._start_bracket()

    def _observe(self, arch: dict[str, Any], fidelity: int, objective: float | None) -> None:
        """A told result (BOHB's model learns from it)."""

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "iteration": self.iteration, "stage": self.stage,
                "to_draw": self.to_draw, "queue": list(self.queue), "results": [list(r) for r in self.results],
                "pending": [list(p) for p in self.pending], "seen": sorted(self.seen), "asked": self.asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.iteration, self.stage, self.to_draw = int(state["iteration"]), int(state["stage"]), int(state["to_draw"])
        self.queue = [dict(a) for a in state["queue"]]
        self.results = [(dict(a), None if o is None else float(o)) for a, o in state["results"]]
        self.pending = deque((dict(a), int(f)) for a, f in state["pending"])
        self.seen, self.asked = set(state["seen"]), int(state["asked"])

    def search_info(self, history: Any) -> dict[str, Any]:
        return {"brackets": self.iteration + (1 if self.stage or self.results else 0),
                "fidelity_levels": list(self.levels)}


def _good(n: int, fraction: float) -> int:
    """How many of ``n`` results are "good" (BOHB's top ``fraction``, at least one)."""
    return max(1, int(math.ceil(fraction * n)))


@dataclass
class BOHBConfig(HyperbandConfig):
    """Options of BOHB: Hyperband's, plus the model's."""

    random_fraction: float = option(1 / 3, lo=0.0, hi=1.0, help="share of new architectures drawn at random "
                                    "(BOHB 1/3; NATS-Bench 0)")
    min_points: int | None = option(None, lo=2, hi=10**6, help="results a fidelity needs before the model uses it "
                                    "(auto: number of choices + 1)")
    top_fraction: float = option(0.15, lo=0.01, hi=0.99, help="share of results that form the good density")
    candidates: int = option(64, lo=1, hi=100000, help="draws from the good density per new architecture "
                             "(BOHB 64; NATS-Bench 4)")


@register_strategy
class BOHB(Hyperband):
    """BOHB: Hyperband whose new architectures come from a TPE model on the highest fidelity with data."""

    name = "bohb"
    description = "BOHB: Hyperband + a TPE model (Optuna) of the best fidelity with data; needs fidelities, optuna"
    Config = BOHBConfig

    def __init__(self, config: Any = None):
        super().__init__(config)
        from nasforge.strategies.optuna import _optuna

        _optuna()  # a missing package fails when the strategy is made, before any run exists

    @classmethod
    def supports(cls, space: Any) -> str | None:
        from nasforge.strategies.optuna import _support

        return _support(cls.name, space)

    def setup(self, space: Any, seed: int) -> None:
        from nasforge.strategies.optuna import Encoding

        super().setup(space, seed)
        self.encoding = Encoding(space)
        self.min_points = self.config.min_points or len(self.encoding.labels) + 1
        self.observations: dict[int, list[tuple[dict[str, int], float]]] = {}  # fidelity -> (params, objective)

    def _observe(self, arch: dict[str, Any], fidelity: int, objective: float | None) -> None:
        if objective is not None:  # a failed trial teaches the model nothing (hpbandster: loss inf)
            params = self.encoding.params(Arch.from_dict(arch, validate=False))
            self.observations.setdefault(fidelity, []).append((params, objective))

    def model_fidelity(self) -> int | None:
        """The highest fidelity with at least ``min_points`` results (None: too few anywhere yet)."""
        ready = [f for f, obs in self.observations.items() if len(obs) >= self.min_points]
        return max(ready) if ready else None

    def _draw(self) -> Arch:
        fidelity = self.model_fidelity()
        if fidelity is None or self.rng.random() < self.config.random_fraction:
            return super()._draw()
        from nasforge.strategies.optuna import _optuna

        optuna = _optuna()
        import warnings

        dists = self.encoding.distributions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate TPE is flagged experimental
            sampler = optuna.samplers.TPESampler(
                n_startup_trials=0, n_ei_candidates=self.config.candidates, multivariate=True,
                gamma=functools.partial(_good, fraction=self.config.top_fraction),
                seed=seed_for(self.seed, "bohb.draw", self.asked) % 2**32)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.add_trials([optuna.trial.create_trial(params=p, distributions=dists, value=v)
                              for p, v in self.observations[fidelity]])
            trial = study.ask(fixed_distributions=dists)
        return self.encoding.arch(trial.params)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["observations"] = {str(f): [[p, v] for p, v in obs] for f, obs in self.observations.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.observations = {int(f): [(dict(p), float(v)) for p, v in obs]
                             for f, obs in state["observations"].items()}

    def search_info(self, history: Any) -> dict[str, Any]:
        info = super().search_info(history)
        info["model_fidelity"] = self.model_fidelity()
        return info


_NATS_BOHB = "NATS-Bench, exps/NATS-algos/bohb.py (the hpbandster run of its BOHB baseline)"
for _dataset in ("cifar10", "cifar100", "imagenet16"):
    register_preset("nb201", "bohb", _dataset, {"strategy": {
        "eta": 3.0, "random_fraction": 0.0, "candidates": 4}},
        sources={"*": _NATS_BOHB}, note="on a NAS-Bench-201/NATS-Bench file: epochs 1..12 of the 12-epoch schedule")

__all__ = ["BOHB", "BOHBConfig", "Hyperband", "HyperbandConfig", "bracket_plan", "brackets"]
