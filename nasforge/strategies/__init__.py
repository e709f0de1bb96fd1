"""Search strategies. Importing this package registers the built-in strategies."""

from nasforge.registry import check_supported
from nasforge.strategies.base import (
    STRATEGIES,
    MultiFidelityStrategy,
    SampleStrategy,
    SearchResult,
    Strategy,
    get_strategy_class,
    make_strategy,
    register_strategy,
    strategy_names,
)
from nasforge.strategies import darts, gdas  # noqa: F401  (registers the strategies)
from nasforge.strategies import random, evolution  # noqa: F401  (sample-based: random search, regularized evolution)
from nasforge.strategies import proxyless  # noqa: F401  (registers the strategy)
from nasforge.strategies import densenas  # noqa: F401  (registers the strategy)
from nasforge.strategies import haq  # noqa: F401  (HAQ quantization)
from nasforge.strategies import reinforce, qlearning  # noqa: F401  (NAS-RL, MetaQNN)
from nasforge.strategies import optuna as _optuna  # noqa: F401  (TPE, NSGA-II; Optuna imported when used)
from nasforge.strategies import hyperband  # noqa: F401  (Hyperband, BOHB: multi-fidelity)

__all__ = ["STRATEGIES", "MultiFidelityStrategy", "SampleStrategy", "SearchResult", "Strategy", "check_supported", "get_strategy_class",
           "make_strategy", "register_strategy", "strategy_names"]
