"""Evaluators: callables ``arch -> dict of metrics`` that score one architecture.

Sample-based strategies only see what an evaluator returns; the key ``"objective"``
(higher is better) is what they optimise. Three are built in and made by name with
``make_evaluator(name, options, space, data)`` (the ``evaluator`` section of a config):

* ``train``: build the architecture with the space, train it for a budget of epochs or
  steps on the train split, score it on the valid split (``TrainEvaluator``);
* ``table``: look the architecture up in a tabular benchmark file such as NAS-Bench-201
  (``nasforge.evaluators.table.TableEvaluator``, imported when first asked for);
* ``synthetic``: a deterministic, seeded table over any space with a known optimum
  (``SyntheticTable``), for testing and comparing strategies in seconds.

Any other callable works too: pass it to ``SampleStrategy.search(..., evaluator=fn)``.
An evaluator that accepts a ``seed`` keyword gets the trial's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from nasforge.arch import Arch
from nasforge.config import load_section, option, to_dict
from nasforge.errors import ConfigError

#: An evaluator: ``arch -> metrics`` with at least ``"objective"`` (higher is better).
Evaluator = Callable[[Arch], dict[str, Any]]


@dataclass
class TableOptions:
    """Options of the ``table`` evaluator (a tabular benchmark file)."""

    path: str | None = option(None, help="benchmark table file (e.g. NAS-Bench-201); required")
    metric: str = option("valid_acc", help="column used as the objective")

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("the table evaluator needs a benchmark file; pass --table FILE "
                              "(or --set evaluator.path=FILE)")


def _train_config() -> type:
    from nasforge.evaluators.train import TrainEvalConfig

    return TrainEvalConfig


def _synthetic_config() -> type:
    from nasforge.evaluators.synthetic import SyntheticConfig

    return SyntheticConfig


#: name -> (description, function returning the options dataclass)
_EVALUATORS: dict[str, tuple[str, Callable[[], type]]] = {
    "train": ("train each architecture for a few epochs or steps, objective = valid accuracy", _train_config),
    "table": ("look architectures up in a benchmark table file (NAS-Bench-201; --table FILE)", lambda: TableOptions),
    "synthetic": ("seeded synthetic table over any space, known optimum (strategy tests, benchmarks)",
                  _synthetic_config),
}


def evaluator_names() -> list[str]:
    """Names accepted by ``make_evaluator``."""
    return sorted(_EVALUATORS)


def evaluator_description(name: str) -> str:
    """One line about the evaluator called ``name``."""
    return _EVALUATORS[name][0]


def _options_class(name: str) -> type:
    if name not in _EVALUATORS:
        raise ConfigError(f"unknown evaluator '{name}'; choose one of {evaluator_names()}")
    return _EVALUATORS[name][1]()


def resolve_evaluator_options(name: str, options: dict[str, Any] | None, dataset: str = "digits") -> dict[str, Any]:
    """Check an evaluator's options and fill its "auto" fields from the dataset profile."""
    from nasforge.profiles import fill_auto

    config = load_section(_options_class(name), options or {}, "evaluator")
    fill_auto(config, dataset, "evaluate")
    return to_dict(config)


def make_evaluator(name: str, options: dict[str, Any] | None, space: Any, data: Any = None) -> Evaluator:
    """The evaluator called ``name`` for ``space`` (and ``data``, for ``train``), options checked."""
    dataset = getattr(data, "name", "digits")
    resolved = resolve_evaluator_options(name, options, dataset)
    if name == "train":
        from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator

        if data is None:
            raise ConfigError("the train evaluator needs a dataset; pass data= (or use evaluator synthetic|table)")
        return TrainEvaluator(space, data, TrainEvalConfig(**resolved))
    if name == "synthetic":
        from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable

        return SyntheticTable(space, SyntheticConfig(**resolved))
    # name == "table": written separately (NAS-Bench-201 support); imported lazily.
    if not resolved["path"]:
        raise ConfigError("the table evaluator needs a benchmark file; pass --table FILE "
                          "(or --set evaluator.path=FILE)")
    try:
        from nasforge.evaluators.table import TableEvaluator
    except ImportError as exc:
        raise ConfigError(f"the table evaluator is not available in this install ({exc}); "
                          "use --evaluator train or synthetic") from None
    return TableEvaluator(resolved["path"], space, metric=resolved["metric"])


__all__ = ["Evaluator", "TableOptions", "evaluator_description", "evaluator_names", "make_evaluator",
           "resolve_evaluator_options"]
