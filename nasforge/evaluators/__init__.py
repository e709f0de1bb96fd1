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

Each is an ``EvaluatorSpec`` in the ``EVALUATORS`` registry (``register_evaluator`` adds
one); ``spec.supports(space)`` says whether it can score that space (``table`` needs an
arch string form), checked when a config is resolved.

Any other callable works too: pass it to ``SampleStrategy.search(..., evaluator=fn)``.
An evaluator that accepts a ``seed`` keyword gets the trial's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from nasforge.arch import Arch
from nasforge.config import load_section, option, to_dict
from nasforge.errors import ConfigError
from nasforge.registry import Registry

#: An evaluator: ``arch -> metrics`` with at least ``"objective"`` (higher is better).
Evaluator = Callable[[Arch], dict[str, Any]]


@dataclass
class TableOptions:
    """Options of the ``table`` evaluator (a tabular benchmark file)."""

    path: str | None = option(None, help="benchmark table file (e.g. NAS-Bench-201); required")
    metric: str = option("valid_acc", help="column used as the objective")
    dataset: str = option("cifar10", help="benchmark files: cifar10 | cifar100 | ImageNet16-120")
    epochs: int = option(12, choices=(12, 200), help="benchmark files: epochs of the search signal (12 or 200)")
    split: str = option("x-valid", choices=("x-valid", "valid", "ori-test"),
                        help="benchmark files: split of the search signal")
    seeds: str = option("mean", choices=("mean", "random"),
                        help="benchmark files: mean over the seeds, or one seed's run per trial")
    retrain: bool = option(False, help="train the found cell on --data after the search (default: report the table)")

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("the table evaluator needs a benchmark file; pass --table FILE "
                              "(or --set evaluator.path=FILE)")


@dataclass(frozen=True)
class EvaluatorSpec:
    """A registered evaluator: its options dataclass, how to build it, and which spaces it can score."""

    name: str
    description: str
    #: returns the options dataclass (a function, so heavy modules are imported when first asked for)
    options: Callable[[], type]
    #: ``(resolved options dict, space, data) -> evaluator``
    build: Callable[[dict[str, Any], Any, Any], Evaluator]
    #: ``space -> None`` or a one-line reason (see ``nasforge.registry.check_supported``)
    needs: Callable[[Any], str | None] | None = None

    def supports(self, space: Any) -> str | None:
        """``None`` when this evaluator can score architectures of ``space``, else the reason."""
        return self.needs(space) if self.needs is not None else None


#: every evaluator, by name
EVALUATORS: Registry[EvaluatorSpec] = Registry("evaluator")


def register_evaluator(spec: EvaluatorSpec) -> EvaluatorSpec:
    """Make an evaluator available by ``spec.name`` (configs, ``make_evaluator``, ``nasforge list``)."""
    return EVALUATORS.register(spec.name, spec, description=spec.description)


def _train_config() -> type:
    from nasforge.evaluators.train import TrainEvalConfig

    return TrainEvalConfig


def _build_train(resolved: dict[str, Any], space: Any, data: Any) -> Evaluator:
    from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator

    if data is None:
        raise ConfigError("the train evaluator needs a dataset; pass data= (or use evaluator synthetic|table)")
    return TrainEvaluator(space, data, TrainEvalConfig(**resolved))


def _synthetic_config() -> type:
    from nasforge.evaluators.synthetic import SyntheticConfig

    return SyntheticConfig


def _build_synthetic(resolved: dict[str, Any], space: Any, data: Any) -> Evaluator:
    from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable

    return SyntheticTable(space, SyntheticConfig(**resolved))


def _table_needs(space: Any) -> str | None:
    if hasattr(space, "from_string") and hasattr(space, "to_string"):
        return None
    return (f"evaluator 'table' needs a space with an arch string form (nb201); "
            f"'{getattr(space, 'name', space)}' has none: pass --space nb201 or use --evaluator train or synthetic")


def _build_table(resolved: dict[str, Any], space: Any, data: Any) -> Evaluator:
    # written separately (NAS-Bench-201 support); imported lazily.
    if not resolved["path"]:
        raise ConfigError("the table evaluator needs a benchmark file; pass --table FILE "
                          "(or --set evaluator.path=FILE)")
    try:
        from nasforge.evaluators.table import TableEvaluator
    except ImportError as exc:
        raise ConfigError(f"the table evaluator is not available in this install ({exc}); "
                          "use --evaluator train or synthetic") from None
    return TableEvaluator(resolved["path"], space, metric=resolved["metric"], dataset=resolved.get("dataset", "cifar10"),
                          epochs=resolved.get("epochs", 12), split=resolved.get("split", "x-valid"),
                          seeds=resolved.get("seeds", "mean"))


register_evaluator(EvaluatorSpec(
    "train", "train each architecture for a few epochs or steps, objective = valid accuracy",
    _train_config, _build_train))
register_evaluator(EvaluatorSpec(
    "table", "look architectures up in a benchmark table file (NAS-Bench-201; --table FILE)",
    lambda: TableOptions, _build_table, _table_needs))
register_evaluator(EvaluatorSpec(
    "synthetic", "seeded synthetic table over any space, known optimum (strategy tests, benchmarks)",
    _synthetic_config, _build_synthetic))


def evaluator_names() -> list[str]:
    """Names accepted by ``make_evaluator``."""
    return EVALUATORS.names()


def evaluator_description(name: str) -> str:
    """One line about the evaluator called ``name``."""
    return EVALUATORS.description(name)


def resolve_evaluator_options(name: str, options: dict[str, Any] | None, dataset: str = "digits") -> dict[str, Any]:
    """Check an evaluator's options and fill its "auto" fields from the dataset profile."""
    from nasforge.profiles import fill_auto

    config = load_section(EVALUATORS.get(name).options(), options or {}, "evaluator")
    fill_auto(config, dataset, "evaluate")
    return to_dict(config)


def make_evaluator(name: str, options: dict[str, Any] | None, space: Any, data: Any = None) -> Evaluator:
    """The evaluator called ``name`` for ``space`` (and ``data``, for ``train``), options checked."""
    dataset = getattr(data, "name", "digits")
    resolved = resolve_evaluator_options(name, options, dataset)
    return EVALUATORS.get(name).build(resolved, space, data)


__all__ = ["EVALUATORS", "Evaluator", "EvaluatorSpec", "TableOptions", "evaluator_description", "evaluator_names",
           "make_evaluator", "register_evaluator", "resolve_evaluator_options"]
