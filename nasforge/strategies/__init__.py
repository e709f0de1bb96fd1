"""Search strategies. Importing this package registers the built-in strategies."""

from nasforge.strategies.base import (
    SampleStrategy,
    SearchResult,
    Strategy,
    get_strategy_class,
    make_strategy,
    register_strategy,
    strategy_names,
)
from nasforge.strategies import darts, gdas  # noqa: F401  (registers the strategies)

__all__ = ["SampleStrategy", "SearchResult", "Strategy", "get_strategy_class", "make_strategy", "register_strategy",
           "strategy_names"]
