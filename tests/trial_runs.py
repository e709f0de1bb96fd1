"""A helper of the trial-loop tests: a seeded sample-based search run whole, and again killed and resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from nasforge.experiment import Experiment
from nasforge.runners.local import LocalRunner
from nasforge.trials import Budget, run_trials


def kill_and_resume(tmp_path: Path, make_strategy: Callable[[], Any], space: Any, budget: Budget, seed: int,
                    workers: int, whole_evaluator: Any, cut_evaluator: Any) -> tuple[Any, Any, Path, Path]:
    """Search once whole (``whole_evaluator``) and once with ``cut_evaluator``, which raises
    ``KeyboardInterrupt`` in some trial, then resume that run; (whole result, resumed result,
    whole run dir, cut run dir). The first run of the cut search must be interrupted."""

    def search(path: Path, evaluator: Any) -> Any:
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {})
        try:
            return run_trials(make_strategy(), space, evaluator, budget, experiment=exp,
                              runner=LocalRunner(evaluator, workers=workers), seed=seed)
        finally:
            exp.close()

    whole = search(tmp_path / "full", whole_evaluator)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "cut", cut_evaluator)
    exp = Experiment.open(tmp_path / "cut")
    try:
        assert [r for r in exp.store.trials() if r["status"] in ("pending", "running")]  # the kill left trials to rerun
    finally:
        exp.close()
    resumed = search(tmp_path / "cut", cut_evaluator)
    return whole, resumed, tmp_path / "full", tmp_path / "cut"
