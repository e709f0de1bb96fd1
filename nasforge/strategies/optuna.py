"""Optuna's samplers behind nasforge's ask/tell contract: TPE (``tpe``) and NSGA-II (``nsga2``).

Each architecture is one Optuna trial whose parameters are the space's choices (one
categorical parameter per choice with two or more values, over the indices of its values,
so any value type works). ``ask`` asks the study for a trial with those distributions and
turns its parameters into an ``Arch``; ``tell`` reports the trial's value(s) (a failed trial
is told as failed). The study lives in memory; ``state_dict`` keeps every told trial
(parameters, values, Optuna's system attributes) and the number of asks, and a resumed
search rebuilds the study from them. The sampler of each ask is made afresh with a seed
derived from the search's seed and the ask's index, so a resumed seeded search asks what
the uninterrupted one asked.

* ``tpe``: Bayesian optimization with the Tree-structured Parzen Estimator (Bergstra et
  al., 2011), single objective (maximise ``objective``); ``startup`` random trials first.
* ``nsga2``: multi-objective search with NSGA-II (Deb et al., 2002): maximise
  ``objective`` and minimise ``cost`` (``params``, ``flops``, ``latency``, ``latency_ms``
  or ``train_seconds`` of the evaluator's metrics; ``auto``: the first of those the
  evaluator reports). The search's ``search_info`` holds the Pareto front of the trials
  told (``pareto_front``), which ``plot_front`` draws.

Optuna is the optional extra ``optuna`` (``pip install 'nasforge[optuna]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ConfigError
from nasforge.seeds import seed_for
from nasforge.spaces.base import SearchSpace, choice_values, undecidable
from nasforge.strategies.base import SampleStrategy, register_strategy
from nasforge.utils import pareto_front

import nasforge.trials  # noqa: F401,E402  (the trial loop)

#: costs a multi-objective search can minimise, in the order ``auto`` tries them
COSTS = ("params", "flops", "latency", "latency_ms", "train_seconds")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("this strategy needs Optuna, which is not installed: pip install 'nasforge[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _support(name: str, space: Any) -> str | None:
    """Why Optuna's samplers cannot search ``space`` (``None``: they can)."""
    reason = undecidable(name, space)
    if reason is not None:
        return reason
    label = getattr(space, "name", space)
    cls = type(space)
    if getattr(cls, "check_consistency", SearchSpace.check_consistency) is not SearchSpace.check_consistency or \
            getattr(cls, "next_decision", SearchSpace.next_decision) is not SearchSpace.next_decision:
        return (f"strategy '{name}' samples every choice independently, but space '{label}' has cross-choice rules "
                "or a decision order; use random, evolution or reinforce on it")
    return None


class Encoding:
    """A space's choices as Optuna parameters: one categorical parameter per choice with two or
    more values, over the indices of its values (so any value type works); one-valued choices
    are fixed."""

    def __init__(self, space: Any):
        optuna = _optuna()
        self.space = space
        self.labels: list[str] = []
        self.values: list[tuple[Any, ...]] = []
        self.fixed: dict[str, Any] = {}
        for label, choice in space.choices().items():
            values = choice_values(choice)
            if len(values) > 1:
                self.labels.append(label)
                self.values.append(values)
            else:
                self.fixed[label] = values[0]
        self.distributions = {label: optuna.distributions.CategoricalDistribution(list(range(len(v))))
                              for label, v in zip(self.labels, self.values)}

    def arch(self, params: dict[str, int]) -> Arch:
        """The architecture of a trial's parameters."""
        choices = {}
        for label in self.space.choices():
            if label in self.fixed:
                choices[label] = self.fixed[label]
            else:
                value = self.values[self.labels.index(label)][int(params[label])]
                choices[label] = list(value) if isinstance(value, tuple) else value
        return Arch(self.space.name, choices, self.space.version)

    def params(self, arch: Arch) -> dict[str, int]:
        """The parameters of an architecture of the space."""
        return {label: values.index(arch[label]) for label, values in zip(self.labels, self.values)}


class _OptunaStrategy(SampleStrategy):
    """Shared ask/tell bridge; subclasses set ``directions`` and ``_sampler`` and ``_values``."""

    batch = 1  # the sampler models every result before the next ask

    def __init__(self, config: Any = None):
        super().__init__(config)
        _optuna()  # a missing package fails when the strategy is made (before a run directory exists)

    @classmethod
    def supports(cls, space: Any) -> str | None:
        return _support(cls.name, space)

    directions: Sequence[str] = ("maximize",)

    def _sampler(self, seed: int) -> Any:
        raise NotImplementedError

    def _values(self, metrics: dict[str, Any]) -> list[float]:
        raise NotImplementedError

    # --- ask/tell ---------------------------------------------------------------------
    def setup(self, space: Any, seed: int) -> None:
        optuna = _optuna()
        reason = _support(self.name, space)
        if reason:
            raise ConfigError(reason)
        self.space, self.seed = space, int(seed)
        self.encoding = Encoding(space)
        self.distributions = self.encoding.distributions
        self.study = optuna.create_study(directions=list(self.directions), sampler=self._sampler(self.seed % 2**32))
        self.asked = 0
        self.told: list[dict[str, Any]] = []
        self.pending: Any = None

    def ask(self) -> Arch:
        self.study.sampler = self._sampler(seed_for(self.seed, "optuna.ask", self.asked) % 2**32)
        self.asked += 1
        trial = self.study.ask(fixed_distributions=self.distributions)
        self.pending = trial
        return self.encoding.arch(trial.params)

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        optuna = _optuna()
        trial, self.pending = self.pending, None
        if trial is None:
            raise ConfigError(f"strategy '{self.name}' was told a result it did not ask for; tell after each ask")
        if metrics is None:
            values, state = None, optuna.trial.TrialState.FAIL
        else:
            values, state = self._values(metrics), optuna.trial.TrialState.COMPLETE
        frozen = self.study.tell(trial, values, state=state)
        self.told.append({"params": dict(frozen.params), "values": None if values is None else list(values),
                          "system_attrs": dict(frozen.system_attrs)})

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "told": [dict(t) for t in self.told], "extra": self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        optuna = _optuna()
        self.study = optuna.create_study(directions=list(self.directions), sampler=self._sampler(self.seed % 2**32))
        self.asked, self.told = int(state["asked"]), [dict(t) for t in state["told"]]
        self._load_extra(state.get("extra") or {})
        for t in self.told:
            ok = t["values"] is not None
            self.study.add_trial(optuna.trial.create_trial(
                params=t["params"], distributions={k: self.distributions[k] for k in t["params"]},
                values=t["values"] if ok else None, system_attrs=t.get("system_attrs") or {},
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
        self.pending = None

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, extra: dict[str, Any]) -> None:
        pass


@dataclass
class TPEConfig:
    """Options of TPE (Optuna's ``TPESampler``)."""

    startup: int = option(10, lo=1, hi=100000, help="random trials before the Parzen estimators are used")
    candidates: int = option(24, lo=1, hi=100000, help="candidates drawn per ask to maximise expected improvement")
    multivariate: bool = option(True, help="model the choices jointly (multivariate TPE) instead of one by one")


@register_strategy
class TPE(_OptunaStrategy):
    """Bayesian optimization with Optuna's TPE sampler (single objective)."""

    name = "tpe"
    description = "Bayesian optimization: Optuna's TPE sampler over the choices (sample-based; optuna extra)"
    Config = TPEConfig

    def _sampler(self, seed: int) -> Any:
        optuna = _optuna()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate TPE is flagged experimental
            return optuna.samplers.TPESampler(n_startup_trials=self.config.startup,
                                              n_ei_candidates=self.config.candidates,
                                              multivariate=self.config.multivariate, seed=seed)

    def _values(self, metrics: dict[str, Any]) -> list[float]:
        return [float(metrics["objective"])]


@dataclass
class NSGA2Config:
    """Options of NSGA-II (Optuna's ``NSGAIISampler``)."""

    cost: str = option("auto", choices=("auto",) + COSTS,
                       help="second objective, minimised: a metric of the evaluator (auto: the first it reports of "
                            "params, flops, latency, latency_ms, train_seconds)")
    population: int = option(20, lo=2, hi=100000, help="population of each generation")
    mutation_prob: float | None = option(None, lo=0.0, hi=1.0, help="per-choice mutation probability "
                                         "(auto: 1 / number of choices)")
    crossover_prob: float = option(0.9, lo=0.0, hi=1.0, help="probability of crossing two parents")


@register_strategy
class NSGA2(_OptunaStrategy):
    """Multi-objective search with Optuna's NSGA-II sampler: accuracy up, a cost down; a Pareto front."""

    name = "nsga2"
    description = "multi-objective NSGA-II (Optuna): objective vs params/latency, a Pareto front (sample-based)"
    Config = NSGA2Config
    directions = ("maximize", "minimize")

    def setup(self, space: Any, seed: int) -> None:
        super().setup(space, seed)
        self.cost = None if self.config.cost == "auto" else self.config.cost

    def _sampler(self, seed: int) -> Any:
        optuna = _optuna()
        return optuna.samplers.NSGAIISampler(population_size=self.config.population,
                                             mutation_prob=self.config.mutation_prob,
                                             crossover_prob=self.config.crossover_prob, seed=seed)

    def _values(self, metrics: dict[str, Any]) -> list[float]:
        if self.cost is None:
            self.cost = next((c for c in COSTS if metrics.get(c) is not None), None)
            if self.cost is None:
                raise ConfigError(f"strategy 'nsga2' needs a cost to minimise, but the evaluator reports none of "
                                  f"{list(COSTS)} (it reports {sorted(metrics)}); use an evaluator or table with one")
        if metrics.get(self.cost) is None:
            raise ConfigError(f"strategy 'nsga2' minimises {self.cost!r}, which the evaluator does not report (it "
                              f"reports {sorted(metrics)}); set strategy.cost to one it has")
        return [float(metrics["objective"]), float(metrics[self.cost])]

    def _extra_state(self) -> dict[str, Any]:
        return {"cost": self.cost}

    def _load_extra(self, extra: dict[str, Any]) -> None:
        self.cost = extra.get("cost", self.cost)

    def search_info(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The Pareto front of the told trials (objective up, cost down), for ``search_info``."""
        cost = self.cost or "cost"
        points = [(r["index"], r["metrics"]["objective"], r["metrics"].get(cost), r["arch"]) for r in history
                  if r["metrics"] is not None and not r.get("over_budget") and r["metrics"].get(cost) is not None]
        front = pareto_front([(c, o) for _, o, c, _ in points])
        seen, rows = set(), []
        for k in front:
            index, objective, value, arch = points[k]
            if (objective, value) in seen:
                continue  # a repeated architecture: its first trial stands for it
            seen.add((objective, value))
            rows.append({"trial": index, "objective": objective, cost: value, "arch": arch})
        rows.sort(key=lambda r: r[cost])
        return {"objectives": ["objective (max)", f"{cost} (min)"], "cost": cost, "pareto_front": rows,
                "hypervolume": hypervolume([(r["objective"], r[cost]) for r in rows],
                                           ref=(min((o for _, o, _, _ in points), default=0.0),
                                                max((c for _, _, c, _ in points), default=0.0)))}


def hypervolume(front: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``front`` (objective maximised, cost minimised) up to the reference point
    ``ref`` = (worst objective, worst cost); points beyond the reference count nothing."""
    pts = sorted((c, o) for o, c in front if o > ref[0] and c < ref[1])
    # sweep the costs upwards: between two consecutive costs the front is as high as the best point so far
    area, top = 0.0, ref[0]
    for k, (cost, objective) in enumerate(pts):
        top = max(top, objective)
        nxt = pts[k + 1][0] if k + 1 < len(pts) else ref[1]
        area += (nxt - cost) * (top - ref[0])
    return area


def plot_front(info: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The Pareto front of a multi-objective search (``search_info``) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = info["cost"]
    rows = info["pareto_front"]
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.step([r[cost] for r in rows], [r["objective"] for r in rows], where="post", marker="o")
    ax.set_xlabel(f"{cost} (lower is better)")
    ax.set_ylabel("objective (higher is better)")
    ax.set_title(title or f"Pareto front ({len(rows)} architectures)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


__all__ = ["COSTS", "Encoding", "NSGA2", "TPE", "hypervolume", "plot_front"]
