"""Optuna behind the ask/tell contract: TPE (tpe) and multi-objective NSGA-II (nsga2) with a Pareto front."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch

from nasforge.errors import ConfigError
from nasforge.evaluators.synthetic import SyntheticTable
from nasforge.experiment import Experiment
from nasforge.spaces import make_space
from nasforge.strategies import get_strategy_class, make_strategy
from nasforge.strategies.optuna import hypervolume, plot_front
from nasforge.utils import pareto_front
from nasforge.trials import Budget, run_trials

pytest.importorskip("optuna")

SPACE = make_space("nb201")


def test_missing_optuna_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    for name in ("tpe", "nsga2"):
        with pytest.raises(ConfigError, match=r"pip install 'nasforge\[optuna\]'") as info:
            make_strategy(name)
        assert "\n" not in str(info.value)


def test_tpe_beats_random_search_on_a_synthetic_table():
    table = SyntheticTable(SPACE)
    regret = {}
    for name in ("random", "tpe"):
        regret[name] = np.mean([table.regret(run_trials(make_strategy(name), SPACE, table, Budget(trials=80),
                                                        seed=s).info["best_objective"]) for s in range(4)])
    assert regret["tpe"] < 0.7 * regret["random"], regret


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_state_dict_continues_exactly(name):
    table = _two_objectives(SyntheticTable(SPACE))

    def step(strategy, n):
        archs = []
        for _ in range(n):
            arch = strategy.ask()
            strategy.tell(arch, table(arch) if len(archs) % 7 != 3 else None)  # some failures too
            archs.append(arch)
        return archs

    a = make_strategy(name, {"population": 6} if name == "nsga2" else {"startup": 5})
    a.setup(SPACE, 3)
    step(a, 20)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # through a checkpoint file's format
    buffer.seek(0)
    b = make_strategy(name, {"population": 6} if name == "nsga2" else {"startup": 5})
    b.setup(SPACE, 3)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert [x.hash for x in step(a, 12)] == [x.hash for x in step(b, 12)]


def test_resumed_search_ends_as_the_uninterrupted_one(tmp_path):
    table = SyntheticTable(SPACE)
    whole = run_trials(make_strategy("tpe"), SPACE, table, Budget(trials=24), seed=2)
    exp = Experiment.create(tmp_path / "run", {})
    run_trials(make_strategy("tpe"), SPACE, table, Budget(trials=10), experiment=exp, seed=2)
    exp.close()
    exp = Experiment.open(tmp_path / "run")
    resumed = run_trials(make_strategy("tpe"), SPACE, table, Budget(trials=24), experiment=exp, seed=2)
    exp.close()
    assert [r["arch_hash"] for r in resumed.history] == [r["arch_hash"] for r in whole.history]


def _params(arch) -> float:
    ops = [v for k, v in arch.as_dict().items() if k.startswith("edge")]
    return 0.07 + 0.2 * ops.count("nor_conv_3x3") + 0.03 * ops.count("nor_conv_1x1")


def _two_objectives(table):
    """A synthetic two-objective table: the table's objective plus a bonus for convolutions (which cost params)."""

    def evaluate(arch):
        m = table(arch)
        p = _params(arch)
        return {**m, "objective": m["objective"] + 0.02 * p, "params": p}

    return evaluate


def test_nsga2_front_dominates_random_searchs_at_equal_budget():
    volumes = {"random": [], "nsga2": []}
    for seed in range(3):
        evaluate = _two_objectives(SyntheticTable(SPACE, None))
        fronts = {}
        for name in volumes:
            strategy = make_strategy(name, {"population": 16} if name == "nsga2" else {})
            result = run_trials(strategy, SPACE, evaluate, Budget(trials=160), seed=seed)
            points = [(r["metrics"]["objective"], r["metrics"]["params"]) for r in result.history]
            fronts[name] = [points[i] for i in pareto_front([(c, o) for o, c in points])]
            if name == "nsga2":  # the strategy's own front is the front of its trials
                info = result.info
                assert info["cost"] == "params"
                assert sorted((r["objective"], r["params"]) for r in info["pareto_front"]) == sorted(set(fronts[name]))
        # every point of random search's front is matched or beaten on both objectives by one of NSGA-II's
        for o, c in fronts["random"]:
            assert any(o2 >= o and c2 <= c for o2, c2 in fronts["nsga2"]), (seed, (o, c), fronts["nsga2"])
        ref = (0.5, 1.4)  # worse than every cell on both objectives
        for name in volumes:
            volumes[name].append(hypervolume(fronts[name], ref))
    assert np.mean(volumes["nsga2"]) > np.mean(volumes["random"]), volumes
    assert sum(n > r for n, r in zip(volumes["nsga2"], volumes["random"])) >= 2


def test_pareto_front_and_hypervolume():
    points = [(0.9, 1.0), (0.5, 3.0), (0.95, 3.0), (0.8, 0.5), (0.8, 0.5), (0.7, 2.0)]
    assert pareto_front([(c, o) for o, c in points]) == [0, 2, 3, 4]  # (cost, objective); equal points both stay
    assert hypervolume([(0.9, 1.0), (0.5, 3.0)], (0.0, 5.0)) == pytest.approx(3.6)
    assert hypervolume([(0.5, 1.0), (0.9, 3.0)], (0.0, 5.0)) == pytest.approx(0.5 * 2 + 0.9 * 2)


def test_nsga2_needs_a_cost_and_plots_its_front(tmp_path):
    with pytest.raises(ConfigError, match="reports none of"):
        run_trials(make_strategy("nsga2"), SPACE, lambda a: {"objective": 0.5}, Budget(trials=3))
    with pytest.raises(ConfigError, match="'latency', which the evaluator does not report"):
        run_trials(make_strategy("nsga2", {"cost": "latency"}), SPACE,
                   lambda a: {"objective": 0.5, "params": 1.0}, Budget(trials=3))
    result = run_trials(make_strategy("nsga2"), SPACE, SyntheticTable(SPACE), Budget(trials=30), seed=0)
    assert result.info["cost"] == "train_seconds"  # auto: the synthetic table reports only its training time
    png = plot_front(result.info, tmp_path / "front.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_spaces_with_cross_choice_rules_are_refused_in_one_line():
    reason = get_strategy_class("tpe").supports(make_space("dense"))
    assert reason is not None and "cross-choice rules" in reason and "\n" not in reason
    assert get_strategy_class("nsga2").supports(SPACE) is None
