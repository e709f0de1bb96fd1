"""Strategies, their registry and their capabilities.

A strategy chooses architectures. One-shot strategies (``kind = "oneshot"``) train a
supernet of the space and derive an ``Arch`` from its architecture parameters;
sample-based ones (``kind = "sample"``) only see an evaluator callable. Each strategy has
a typed ``Config`` dataclass, so the CLI and YAML configs can name and check its options,
and says which spaces it can search (``supports``; ``check_supported`` raises the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from nasforge.arch import Arch
from nasforge.config import load_section
from nasforge.errors import ConfigError
from nasforge.profiles import fill_auto
from nasforge.registry import Registry, check_supported


@dataclass
class SearchResult:
    """The outcome of a search: the architecture found, per-epoch/per-trial history, extra info."""

    arch: Arch
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


#: ``callback(strategy, epoch, record)`` runs after each epoch is recorded and checkpointed.
EpochCallback = Callable[[Any, int, dict[str, Any]], None]


class Strategy:
    """Base class; subclasses set ``name``, ``kind``, ``Config`` and implement ``search``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = object

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        from nasforge.hardware.penalty import LatencyConfig

        #: the run's ``latency`` section (target device, table, latency objective); hardware-aware methods read it
        self.latency_config = LatencyConfig()

    @classmethod
    def supports(cls, space: Any) -> str | None:
        """``None`` when this strategy can search ``space`` (an instance), else a one-line reason
        naming what is missing and the fix. Checked when a config is resolved, before any run
        directory exists; the base class supports every space."""
        return None

    def search(self, space: Any, data: Any, **kwargs: Any) -> SearchResult:
        raise NotImplementedError


class SampleStrategy(Strategy):
    """Ask/tell base of sample-based strategies (random, evolution, REINFORCE, Q-learning).

    The trial loop (``nasforge.trials``) drives it: ``setup`` once, then ``ask`` for an
    architecture, evaluate it, ``tell`` its metrics (``None`` for a failed trial). The
    objective is ``metrics["objective"]``, higher is better. ``batch`` asks may be
    outstanding before their tells (a controller's batch of children; parallel runners).
    ``state_dict``/``load_state_dict`` hold everything needed to continue after a kill,
    RNG state included, so a resumed seeded search ends where an uninterrupted one ends.
    """

    kind: ClassVar[str] = "sample"
    #: how many architectures may be asked before their results are told
    batch: int = 1

    def search(self, space: Any, data: Any, **kwargs: Any) -> SearchResult:
        """Run the trial loop (``nasforge.trials.sample_search``; ``evaluator``, ``budget``, ``runner`` in kwargs)."""
        from nasforge.trials import sample_search

        check_supported(type(self), space)
        return sample_search(self, space, data, **kwargs)

    def setup(self, space: Any, seed: int) -> None:
        raise NotImplementedError

    def ask(self) -> Arch:
        raise NotImplementedError

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class MultiFidelityStrategy(SampleStrategy):
    """A sample-based strategy that chooses how much each trial costs (Hyperband, BOHB): ``ask``
    returns a ``nasforge.fidelity.Request`` (an architecture and a fidelity, e.g. epochs).

    It can only run with an evaluator that offers ``fidelities``; the trial loop checks that
    (one line naming such evaluators otherwise) and sets ``self.fidelities`` (the evaluator's
    ``Fidelities``) before ``setup``. Tells come in ask order, so the strategy knows which
    fidelity each told result was scored at.
    """

    #: the evaluator's fidelities (set by the trial loop before ``setup``)
    fidelities: Any = None


#: every registered strategy class, by name
STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``."""
    return STRATEGIES.register(cls.name, cls, description=cls.description)


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def get_strategy_class(name: str) -> type[Strategy]:
    """The registered strategy class called ``name`` (``ConfigError`` listing the names otherwise)."""
    return STRATEGIES.get(name)


def make_strategy(name: str, options: dict[str, Any] | None = None, dataset: str = "digits",
                  latency: Any = None) -> Strategy:
    """A strategy with checked options; "auto" (None) options take the dataset's profile. ``latency``: the
    run's ``latency`` section (a ``LatencyConfig`` or a dict of its keys) for hardware-aware methods."""
    from nasforge.hardware.penalty import MOVED_OPTIONS, LatencyConfig

    cls = get_strategy_class(name)
    for key in options or {}:
        if key in MOVED_OPTIONS:
            raise ConfigError(f"strategy.{key} is now latency.{MOVED_OPTIONS[key]} (one latency section for every "
                              f"method); use --set latency.{MOVED_OPTIONS[key]}=...")
    config = load_section(cls.Config, options or {}, "strategy")
    strategy = cls(fill_auto(config, dataset, "search"))
    if latency is not None:
        strategy.latency_config = latency if isinstance(latency, LatencyConfig) else \
            load_section(LatencyConfig, latency, "latency")
    return strategy
