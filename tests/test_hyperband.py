"""Multi-fidelity search: the fidelity contract of the trial loop, Hyperband's schedule, BOHB's model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nasforge.errors import ConfigError
from nasforge.evaluators.synthetic import SyntheticTable
from nasforge.experiment import Experiment
from nasforge.fidelity import Fidelities, Request
from nasforge.runners.local import LocalRunner
from nasforge.spaces import make_space
from nasforge.strategies import SampleStrategy, make_strategy
from nasforge.strategies.hyperband import bracket_plan, brackets
from nasforge.trials import Budget, incumbent, run_trials
from trial_runs import kill_and_resume


class Curve:
    """A table with learning curves: at epoch e of 12 the valid accuracy is the final one minus a gap
    that shrinks with e and differs per architecture (so low epochs rank imperfectly); a trial costs
    10 s per epoch. Counts its calls; can be interrupted at a chosen call."""

    fidelities = Fidelities(1, 12)

    def __init__(self, space, interrupt_at=None):
        self.table, self.calls, self.interrupt_at = SyntheticTable(space), [], interrupt_at

    def __call__(self, arch, seed=None, fidelity=None):
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        e = 12 if fidelity is None else fidelity
        self.calls.append((arch.hash, e))
        m = self.table(arch)
        slope = 0.05 + 0.1 * (int(arch.hash[:4], 16) / 0xFFFF)
        valid = m["valid_acc"] - slope * (12 - e) / 12
        return {**m, "objective": valid, "valid_acc": valid, "train_seconds": 10.0 * e}


class OneFidelity:
    def __init__(self, space):
        self.table = SyntheticTable(space)

    def __call__(self, arch, seed=None):
        return self.table(arch)


@pytest.fixture(scope="module")
def space():
    return make_space("nb201")


def test_the_schedule_is_hpbandsters():
    levels = brackets(Fidelities(1, 12), 3)
    assert levels == [1, 4, 12] and len(levels) == 3  # NATS-Bench's BOHB: budgets 1.33, 4, 12 -> epochs 1, 4, 12
    assert [bracket_plan(levels, 3, i) for i in range(4)] == [
        [(9, 1), (3, 4), (1, 12)], [(3, 4), (1, 12)], [(3, 12)], [(9, 1), (3, 4), (1, 12)]]
    assert brackets(Fidelities(1, 200, levels=(12, 200)), 3) == [12, 200]  # levels snapped to what exists
    assert brackets(Fidelities(1, 200), 3) == [2, 7, 22, 66, 200]
    with pytest.raises(ConfigError, match="not offered"):
        brackets(Fidelities(1, 12), 3, low=13)


def test_hyperband_halves_each_stage_and_promotes_the_best(space):
    curve = Curve(space)
    result = run_trials(make_strategy("hyperband"), space, curve, Budget(trials=13 + 4 + 3), seed=0)
    fids = [r["fidelity"] for r in result.history]
    assert fids == [1] * 9 + [4] * 3 + [12] + [4] * 3 + [12] + [12] * 3
    first = result.history[:9]
    best3 = sorted(first, key=lambda r: -r["metrics"]["objective"])[:3]
    assert [r["arch_hash"] for r in result.history[9:12]] == [r["arch_hash"] for r in best3]
    best1 = max(result.history[9:12], key=lambda r: r["metrics"]["objective"])
    assert result.history[12]["arch_hash"] == best1["arch_hash"]
    assert len({r["arch_hash"] for r in first}) == 9  # no repeats drawn within a bracket
    # the answer is the best trial at the highest fidelity, not a higher objective at a lower one
    top = [r for r in result.history if r["fidelity"] == 12]
    assert result.info["best_trial"] == max(top, key=lambda r: r["metrics"]["objective"])["index"]
    assert result.info["fidelity"] == 12 and result.info["trials_per_fidelity"] == {"1": 9, "4": 6, "12": 5}


def test_incumbent_prefers_the_highest_fidelity():
    rec = lambda i, obj, fid: {"index": i, "status": "done", "metrics": {"objective": obj}, "fidelity": fid}
    assert incumbent([rec(0, 0.9, 1), rec(1, 0.5, 12), rec(2, 0.6, 4)])["index"] == 1
    assert incumbent([rec(0, 0.9, 1), rec(1, 0.5, None)])["index"] == 1  # None: the full fidelity
    assert incumbent([rec(0, 0.5, None), rec(1, 0.7, None)])["index"] == 1


def test_the_simulated_budget_is_charged_each_fidelitys_time(space):
    result = run_trials(make_strategy("hyperband"), space, Curve(space), Budget(sim_seconds=250.0), seed=0)
    counted = [r for r in result.history if not r.get("over_budget")]
    assert result.info["sim_seconds"] == sum(10.0 * r["fidelity"] for r in counted) <= 250.0
    assert [r["fidelity"] for r in counted] == [1] * 9 + [4] * 3  # 90 + 120 s; 120 more would pass 250
    assert [(r["fidelity"], r.get("over_budget")) for r in result.history[12:]] == [(12, True)]


def test_a_repeat_is_the_same_arch_at_the_same_fidelity(space):
    arch = space.sample(np.random.default_rng(0))

    class Twice(SampleStrategy):
        name = "twice"

        def setup(self, space, seed):
            self.k = 0

        def ask(self):
            self.k += 1
            return Request(arch, [1, 4, 1, 4][(self.k - 1) % 4])

        def tell(self, arch, metrics):
            pass

        def state_dict(self):
            return {"k": self.k}

        def load_state_dict(self, state):
            self.k = state["k"]

    curve = Curve(space)
    result = run_trials(Twice(), space, curve, Budget(trials=4), seed=0)
    assert curve.calls == [(arch.hash, 1), (arch.hash, 4)]
    assert [r["duplicate_of"] for r in result.history] == [None, None, 0, 1]


def test_a_single_fidelity_evaluator_is_a_one_line_error(space):
    with pytest.raises(ConfigError, match="scores at one fidelity only"):
        run_trials(make_strategy("hyperband"), space, OneFidelity(space), Budget(trials=5))
    with pytest.raises(ConfigError, match="fidelity 13 is not offered"):
        run_trials(make_strategy("hyperband", {"max_fidelity": 13}), space, Curve(space), Budget(trials=5))


@pytest.mark.parametrize("name", ["hyperband", "bohb"])
def test_parallel_workers_ask_the_same_trials(space, name):
    pytest.importorskip("optuna")
    options = {"min_points": 4} if name == "bohb" else {}
    one = run_trials(make_strategy(name, options), space, Curve(space), Budget(trials=40), seed=3)
    four = run_trials(make_strategy(name, options), space, Curve(space), Budget(trials=40), seed=3,
                      runner=LocalRunner(Curve(space), workers=4))
    if name == "hyperband":  # a stage's draws do not depend on its results: the same trials in the same order
        assert [(r["arch_hash"], r["fidelity"]) for r in one.history] == \
            [(r["arch_hash"], r["fidelity"]) for r in four.history]
    assert [r["fidelity"] for r in one.history] == [r["fidelity"] for r in four.history]


def _rows(path):
    exp = Experiment.open(path)
    try:
        return [(r["index"], r["arch_hash"], r["fidelity"], r["status"], json.dumps(r["metrics"], sort_keys=True),
                 r["duplicate_of"]) for r in exp.store.trials()]
    finally:
        exp.close()


@pytest.mark.parametrize("name,workers,kill_at", [("hyperband", 1, 11), ("bohb", 1, 30), ("hyperband", 4, 17)])
def test_a_killed_multi_fidelity_search_resumes_to_the_uninterrupted_result(tmp_path, space, name, workers, kill_at):
    pytest.importorskip("optuna")
    options = {"min_points": 4} if name == "bohb" else {}

    full_eval, cut_eval = Curve(space), Curve(space, interrupt_at=kill_at)
    full, resumed, _, _ = kill_and_resume(tmp_path, lambda: make_strategy(name, options), space, Budget(trials=45), 5,
                                          workers, full_eval, cut_eval)
    assert resumed.arch == full.arch and resumed.info["best_trial"] == full.info["best_trial"]
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
    assert cut_eval.calls == full_eval.calls  # nothing evaluated twice, nothing skipped


def test_bohb_draws_from_its_model_once_a_fidelity_has_enough_results(space):
    pytest.importorskip("optuna")
    strategy = make_strategy("bohb", {"random_fraction": 0.0})
    result = run_trials(strategy, space, Curve(space), Budget(trials=60), seed=1)
    assert strategy.min_points == 7  # six edges + 1
    assert strategy.model_fidelity() in (1, 4, 12) and result.info["model_fidelity"] == strategy.model_fidelity()
    again = run_trials(make_strategy("bohb", {"random_fraction": 0.0}), space, Curve(space), Budget(trials=60), seed=1)
    assert [r["arch_hash"] for r in again.history] == [r["arch_hash"] for r in result.history]
    hb = run_trials(make_strategy("hyperband"), space, Curve(space), Budget(trials=60), seed=1)
    # the same schedule; once epoch 1 has 7 results, BOHB's new draws come from the model, not the RNG
    assert [r["fidelity"] for r in hb.history] == [r["fidelity"] for r in result.history]
    assert [r["arch_hash"] for r in hb.history[:7]] == [r["arch_hash"] for r in result.history[:7]]
    assert hb.history[7]["arch_hash"] != result.history[7]["arch_hash"]


def test_bohb_finds_better_cells_than_hyperband_on_average(space):
    """The model pays: over 8 seeds at an equal simulated budget, BOHB's chosen cells are better on average."""
    pytest.importorskip("optuna")
    table = SyntheticTable(space)
    _, best = table.optimum()

    def regret(name, seed):
        res = run_trials(make_strategy(name), space, Curve(space), Budget(sim_seconds=6000.0), seed=seed)
        return best - table(res.arch)["valid_acc"]

    hb = np.mean([regret("hyperband", s) for s in range(8)])
    bohb = np.mean([regret("bohb", s) for s in range(8)])
    assert bohb < hb, (bohb, hb)
    assert math.isfinite(hb)


# --- the command line -----------------------------------------------------------------
def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nasforge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_cli_hyperband_on_a_table_without_fidelities_is_one_line_before_any_file(tmp_path, space):
    from nasforge.evaluators.table import write_table

    rows = [{"arch": space.sample(np.random.default_rng(i)), "valid_acc": 0.5, "test_acc": 0.5} for i in range(3)]
    table = write_table(tmp_path / "t.csv", rows, space)
    proc = _cli("search", "--space", "nb201", "--strategy", "hyperband", "--table", table, "--out", tmp_path / "run")
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "scores at one fidelity only" in proc.stderr and not (tmp_path / "run").exists()


def test_cli_bohb_search_records_fidelities_and_resumes_finished(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "run"
    proc = _cli("search", "--space", "nb201", "--strategy", "bohb", "--evaluator", "synthetic", "--trials", "30",
                "--set", "train.epochs=1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    info = result["search_info"]
    assert info["trials_per_fidelity"] == {"1": 18, "4": 7, "12": 5} and info["fidelity"] == 12
    exp = Experiment.open(out)
    try:
        rows = exp.store.trials()
    finally:
        exp.close()
    assert [r["fidelity"] for r in rows] == [1] * 9 + [4] * 3 + [12] + [4] * 3 + [12] + [12] * 3 + [1] * 9 + [4]
    assert rows[info["best_trial"]]["fidelity"] == 12
    assert "trials per fidelity" in proc.stdout and "1: 18, 4: 7, 12: 5" in proc.stdout
    again = _cli("resume", out)  # a finished run: nothing evaluated, the same answer
    assert again.returncode == 0, again.stderr


def test_bench_runs_the_multi_fidelity_strategies_on_a_synthetic_table(tmp_path):
    pytest.importorskip("optuna")
    proc = _cli("bench", "nb201", "--synthetic", "0", "--runs", "2", "--strategy", "hyperband", "--strategy", "bohb",
                "--sim-seconds", "3000", "--out", tmp_path / "b", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert set(summary["strategies"]) == {"hyperband", "bohb"}
    for res in summary["strategies"].values():
        assert 0.5 < res["test_acc"]["mean"] <= summary["optimum"]["test_acc"] and res["trials"]["mean"] > 13
    assert summary["strategies"]["bohb"]["paper"] is None  # the synthetic table has no paper row
    assert (tmp_path / "b" / "regret.png").stat().st_size > 0
