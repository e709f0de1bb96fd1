"""The trial loop: store records, dedupe, failures, budgets, exact resume, evaluators, pipeline and CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from nasforge.arch import Arch
from nasforge.data import load_dataset
from nasforge.errors import ArchError, ConfigError, TrainingError
from nasforge.evaluators import make_evaluator
from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable
from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator
from nasforge.experiment import Experiment, Store
from nasforge.pipeline import config_dict, resolve_config, run_experiment
from nasforge.spaces import OpChoice, SearchSpace, make_space
from nasforge.strategies import SampleStrategy, make_strategy
from nasforge.trials import Budget, run_trials
from trial_runs import kill_and_resume


class TinySpace(SearchSpace):
    """Four op choices of three values each: 81 archs (not registered; built directly)."""

    name = "tiny"

    def choices(self):
        return {f"c{i}": OpChoice(f"c{i}", ("a", "b", "c")) for i in range(4)}


class Scripted(SampleStrategy):
    """Asks a fixed list of archs in turn; remembers what it was told."""

    name = "scripted"
    batch = 1

    def __init__(self, archs):
        super().__init__()
        self.archs, self.told = list(archs), []

    def setup(self, space, seed):
        self.pos = 0

    def ask(self):
        self.pos += 1
        return self.archs[(self.pos - 1) % len(self.archs)]

    def tell(self, arch, metrics):
        self.told.append((arch, metrics))

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


def _arch(*values: str) -> Arch:
    return Arch("tiny", {f"c{i}": v for i, v in enumerate(values)})


class Counting:
    """A synthetic table that counts its calls and can fail or be interrupted on chosen calls."""

    def __init__(self, table, fail=(), interrupt_at=None):
        self.table, self.fail, self.interrupt_at, self.calls = table, set(fail), interrupt_at, []

    def __call__(self, arch):
        n = len(self.calls)
        if self.interrupt_at is not None and n == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt  # a kill in the middle of a trial
        self.calls.append(arch.hash)
        if arch.hash in self.fail:
            raise RuntimeError("boom")
        return self.table(arch)


# --- store ----------------------------------------------------------------------
def _old_store(path):
    """A store written before the trials table had duplicate_of and fidelity, with one done trial."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, arch_hash TEXT NOT NULL, arch TEXT NOT NULL, "
                 "status TEXT NOT NULL, metrics TEXT, error TEXT, seed INTEGER, worker TEXT, started REAL, finished REAL)")
    conn.execute("INSERT INTO trials VALUES (0, 'h', '{}', 'done', '{\"objective\": 1}', NULL, 1, 'w', 0, 1)")
    conn.commit()
    conn.close()
    return path


def test_store_trials_round_trip_and_old_table_gets_the_new_column(tmp_path):
    path = _old_store(tmp_path / "old.sqlite")
    store = Store(path)
    assert store.trial(0)["duplicate_of"] is None and store.trial(0)["metrics"] == {"objective": 1}
    a = _arch("a", "b", "c", "a")
    store.put_trial(1, a.to_dict(), a.hash, "pending", seed=7)
    store.update_trial(1, status="done", metrics={"objective": 0.5}, worker="x", duplicate_of=0)
    row = store.trial(1)
    assert (row["status"], row["metrics"], row["seed"], row["duplicate_of"]) == ("done", {"objective": 0.5}, 7, 0)
    assert Arch.from_dict(row["arch"], validate=False) == a
    assert store.find_trial(a.hash)["index"] == 1 and store.find_trial(a.hash, before=1) is None
    assert [t["index"] for t in store.trials("done")] == [0, 1]
    with pytest.raises(KeyError):
        store.update_trial(1, bogus=1)
    store.delete_trials_from(1)
    assert [t["index"] for t in store.trials()] == [0]


def test_an_old_store_reads_read_only_without_the_newer_columns(tmp_path):
    path = _old_store(tmp_path / "old.sqlite")
    store = Store(path, readonly=True)  # a report of a run written before duplicate_of and fidelity existed
    try:
        row = store.trials()[0]
        assert (row["duplicate_of"], row["fidelity"], row["metrics"]) == (None, None, {"objective": 1})
        assert store.trial(0)["fidelity"] is None and store.find_trial("h")["index"] == 0
    finally:
        store.close()


# --- the loop --------------------------------------------------------------------
def test_every_trial_is_a_row_and_the_best_is_returned(tmp_path):
    space = TinySpace()
    table = SyntheticTable(space)
    exp = Experiment.create(tmp_path / "run", {})
    result = run_trials(make_strategy("random"), space, table, Budget(trials=12), experiment=exp, seed=3)
    rows = exp.store.trials()
    assert [r["index"] for r in rows] == list(range(12))
    assert all(r["status"] == "done" and r["worker"] and r["finished"] >= r["started"] for r in rows)
    assert len({r["seed"] for r in rows}) == 12
    best = max((r for r in rows if r["duplicate_of"] is None), key=lambda r: r["metrics"]["objective"])
    assert result.arch.hash == best["arch_hash"]
    assert result.info["best_objective"] == best["metrics"]["objective"] == table(result.arch)["objective"]
    assert [h["arch_hash"] for h in result.history] == [r["arch_hash"] for r in rows]


def test_duplicates_are_answered_from_the_store(tmp_path):
    space = TinySpace()
    a, b = _arch("a", "a", "a", "a"), _arch("b", "b", "b", "b")
    evaluator = Counting(SyntheticTable(space))
    exp = Experiment.create(tmp_path / "run", {})
    strategy = Scripted([a, b, a, a])
    run_trials(strategy, space, evaluator, Budget(trials=4), experiment=exp)
    assert evaluator.calls == [a.hash, b.hash]
    rows = exp.store.trials()
    assert [r["duplicate_of"] for r in rows] == [None, None, 0, 0]
    assert rows[2]["metrics"] == rows[0]["metrics"] and [m for _, m in strategy.told][2] == rows[0]["metrics"]
    # without dedupe the same arch is evaluated again
    again = Counting(SyntheticTable(space))
    run_trials(Scripted([a, b, a, a]), space, again, Budget(trials=4), dedupe=False)
    assert len(again.calls) == 4


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path):
    space = TinySpace()
    a, b, c = _arch("a", "a", "a", "a"), _arch("b", "b", "b", "b"), _arch("c", "c", "c", "c")
    exp = Experiment.create(tmp_path / "run", {})
    strategy = Scripted([a, b, c])
    result = run_trials(strategy, space, Counting(SyntheticTable(space), fail={b.hash}), Budget(trials=3),
                        experiment=exp)
    rows = exp.store.trials()
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert "RuntimeError: boom" in rows[1]["error"] and rows[1]["metrics"] is None
    assert strategy.told[1] == (b, None)
    assert result.info["failed"] == 1 and result.arch in (a, c)
    with pytest.raises(TrainingError, match="all 2 trials failed"):
        run_trials(Scripted([b]), space, Counting(SyntheticTable(space), fail={b.hash}), Budget(trials=2))


def test_nan_loss_fails_the_trial_not_the_search():
    data = load_dataset("synthetic", seed=0)
    space = make_space("darts", nodes=1)
    evaluator = TrainEvaluator(space, data, TrainEvalConfig(epochs=1, lr=1e30, grad_clip=0.0, weight_decay=0.0,
                                                             momentum=0.0))
    with pytest.raises(TrainingError, match="NaN"):
        evaluator(space.sample(np.random.default_rng(0)))
    result_archs = [space.sample(np.random.default_rng(s)) for s in range(2)]
    with pytest.raises(TrainingError, match="all 2 trials failed.*NaN"):
        run_trials(Scripted(result_archs), space, evaluator, Budget(trials=2))


def test_an_arch_of_another_space_is_a_clear_error(tmp_path):
    space = TinySpace()
    alien = Arch("darts", {"normal.0.op0": "sep_conv_3x3"})
    exp = Experiment.create(tmp_path / "run", {})
    with pytest.raises(ArchError, match="belongs to space 'darts'"):
        run_trials(Scripted([alien]), space, SyntheticTable(space), Budget(trials=1), experiment=exp)
    with pytest.raises(ArchError, match="belongs to space 'darts'"):
        SyntheticTable(space)(alien)


def test_a_setup_error_in_the_evaluator_stops_the_search_and_keeps_the_store(tmp_path):
    space = TinySpace()
    a, b = _arch("a", "a", "a", "a"), _arch("b", "b", "b", "b")
    table = SyntheticTable(space)

    def evaluator(arch):
        if arch == b:
            raise ConfigError("architecture not in the table; use a table that covers the space")
        return table(arch)

    exp = Experiment.create(tmp_path / "run", {})
    with pytest.raises(ConfigError, match="not in the table"):
        run_trials(Scripted([a, b]), space, evaluator, Budget(trials=2), experiment=exp)
    rows = exp.store.trials()
    assert [r["status"] for r in rows] == ["done", "running"]  # the finished trial is kept, the other reruns


@pytest.mark.parametrize("bad", [{"trials": 0}, {"trials": -3}, {"seconds": 0.0}, {"sim_seconds": -1.0}, {}])
def test_a_budget_of_zero_or_none_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="budget"):
        Budget(**bad)


def test_budget_of_zero_in_a_config_is_a_config_error():
    with pytest.raises(ConfigError, match="max_trials=0"):
        resolve_config({"strategy": {"name": "evolution"}, "trials": {"max_trials": 0}})


def test_simulated_and_wall_time_budgets_stop_the_search():
    space = TinySpace()
    table = SyntheticTable(space, SyntheticConfig(seconds=10.0))
    result = run_trials(make_strategy("random"), space, table, Budget(sim_seconds=50.0), seed=1, dedupe=False)
    spent = [h["metrics"]["train_seconds"] for h in result.history]
    # a hard budget: the last trial would end past it, so it is recorded but not counted
    assert sum(spent) > 50.0 >= sum(spent[:-1]) and result.history[-1]["over_budget"]
    assert result.info["sim_seconds"] == pytest.approx(sum(spent[:-1])) and "over_budget" in result.info
    over = run_trials(make_strategy("random"), space, table, Budget(sim_seconds=50.0, overshoot=True), seed=1,
                      dedupe=False)
    assert over.info["sim_seconds"] == pytest.approx(sum(spent)) and len(over.history) == len(result.history)
    timed = run_trials(make_strategy("random"), space, table, Budget(seconds=1e-9), seed=1)
    assert len(timed.history) == 1


# --- resume --------------------------------------------------------------------------
def _sequence(rows: list[dict[str, Any]]) -> list[tuple]:
    return [(r["index"], r["arch_hash"], r["status"], json.dumps(r["metrics"], sort_keys=True), r["duplicate_of"])
            for r in rows]


@pytest.mark.parametrize("workers,kill_at", [(1, 9), (3, 14)])
def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path, workers, kill_at):
    space = make_space("nb201") if "nb201" in __import__("nasforge.spaces").spaces.space_names() else TinySpace()
    table = SyntheticTable(space)
    budget = Budget(trials=30)

    full_eval, cut_eval = Counting(table), Counting(table, interrupt_at=kill_at)
    full, resumed, _, _ = kill_and_resume(tmp_path, lambda: make_strategy("evolution", {"population": 5, "sample_size": 2}),
                                          space, budget, 4, workers, full_eval, cut_eval)

    assert resumed.arch == full.arch and resumed.info["best_objective"] == full.info["best_objective"]
    assert _sequence(Experiment.open(tmp_path / "cut").store.trials()) == \
        _sequence(Experiment.open(tmp_path / "full").store.trials())
    assert cut_eval.calls == full_eval.calls  # nothing evaluated twice, nothing skipped


def test_resuming_a_finished_search_evaluates_nothing(tmp_path):
    space = TinySpace()
    exp = Experiment.create(tmp_path / "run", {})
    first = run_trials(make_strategy("evolution"), space, SyntheticTable(space), Budget(trials=15), experiment=exp)
    counting = Counting(SyntheticTable(space))
    again = run_trials(make_strategy("evolution"), space, counting, Budget(trials=15), experiment=exp)
    assert counting.calls == [] and again.arch == first.arch and len(again.history) == 15


# --- evaluators ------------------------------------------------------------------------
def test_synthetic_table_is_deterministic_with_a_known_optimum():
    space = TinySpace()
    table = SyntheticTable(space, SyntheticConfig(seed=5))
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(20)]
    assert [table(a) for a in archs] == [SyntheticTable(space, SyntheticConfig(seed=5))(a) for a in archs]
    assert [table(a) for a in archs] != [SyntheticTable(space, SyntheticConfig(seed=6))(a) for a in archs]
    best, value = table.optimum()
    every = {}
    import itertools

    for values in itertools.product("abc", repeat=4):
        every[values] = table(_arch(*values))["objective"]
    assert value == max(every.values()) == table(best)["objective"]
    assert table.grid().shape == (3, 3, 3, 3) and table.regret(value) == 0.0
    assert all(0 < m["valid_acc"] < 1 and m["train_seconds"] > 0 for m in map(table, archs))
    assert len({round(table(a)["train_seconds"], 9) for a in archs}) > 1  # time depends on the arch
    with pytest.raises(ConfigError, match="optimum only up to"):
        SyntheticTable(make_space("darts")).optimum()


def test_train_evaluator_scores_on_the_valid_split_with_a_step_budget():
    data = load_dataset("synthetic", seed=0)
    space = make_space("darts", nodes=1)
    evaluator = make_evaluator("train", {"steps": 3}, space, data)
    arch = space.sample(np.random.default_rng(1))
    m = evaluator(arch, seed=2)
    assert m["steps"] == 3 and m["objective"] == m["valid_acc"] and 0 <= m["valid_acc"] <= 1
    assert m["params"] > 0 and m["flops"] > 0 and m["train_seconds"] > 0
    assert evaluator(arch, seed=2)["valid_loss"] == m["valid_loss"]  # seeded


def test_unknown_evaluator_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown evaluator"):
        make_evaluator("oracle", {}, TinySpace())
    with pytest.raises(ConfigError, match="evaluator.epochs"):
        resolve_config({"evaluator": {"name": "train", "epochs": 0}})
    with pytest.raises(ConfigError, match="needs a benchmark file"):
        resolve_config({"evaluator": {"name": "table"}})


# --- the main job ------------------------------------------------------------------------
def test_pipeline_runs_a_sample_search_then_trains_the_best(tmp_path):
    cfg = resolve_config({"seed": 2, "data": {"name": "synthetic"}, "space": {"name": "darts", "nodes": 1},
                          "strategy": {"name": "evolution", "population": 3}, "evaluator": {"name": "synthetic"},
                          "trials": {"max_trials": 6}, "train": {"epochs": 1}})
    exp = Experiment.create(tmp_path / "run", config_dict(cfg))
    result = run_experiment(exp, cfg)
    rows = exp.store.trials()
    assert len(rows) == 6 and result["search_trials"] == 6 and result["strategy"] == "evolution"
    best = max((r for r in rows), key=lambda r: r["metrics"]["objective"])
    assert result["arch"] == best["arch"] and Arch.from_json(exp.path / "arch.json").hash == best["arch_hash"]
    from nasforge.report import write_report

    html = write_report(exp.path).read_text()
    assert "Trials (sample-based search)" in html and (exp.path / "report" / "trials.png").is_file()


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nasforge.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_cli_bad_budget_and_missing_table_are_one_line_errors(tmp_path):
    for args, message in ((["--trials", "0"], "max_trials=0"), (["--evaluator", "table"], "needs a benchmark file")):
        proc = _cli("search", "--strategy", "evolution", "--out", str(tmp_path / "x"), *args)
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_evolution_with_the_train_evaluator_on_digits(tmp_path):
    out = tmp_path / "evo"
    proc = _cli("search", "--space", "darts", "--strategy", "evolution", "--trials", "4", "--evaluator", "train",
                "--set", "train.epochs=2", "--set", "evaluator.steps=10", "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["search_trials"] == 4 and result["strategy"] == "evolution" and result["test_acc"] > 0.3
    assert "4 trials" in proc.stdout


def test_run_experiment_interrupted_mid_search_resumes_to_the_same_run(tmp_path):
    from contextlib import contextmanager

    from nasforge.progress import Progress, Task

    class StopAfter(Progress):
        @contextmanager
        def task(self, description, total, completed=0):
            class T(Task):
                def advance(self, n=1, **fields):
                    if description == "search" and fields.get("trial") == 4:
                        raise KeyboardInterrupt

            yield T()

    raw = {"seed": 1, "data": {"name": "synthetic"}, "space": {"name": "darts", "nodes": 1},
           "strategy": {"name": "evolution", "population": 3}, "evaluator": {"name": "synthetic"},
           "trials": {"max_trials": 9}, "train": {"epochs": 1}}
    cfg = resolve_config(raw)
    full = run_experiment(Experiment.create(tmp_path / "full", config_dict(cfg)), cfg)
    exp = Experiment.create(tmp_path / "cut", config_dict(cfg))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, cfg, StopAfter())
    assert len(exp.store.trials()) == 5 and not (exp.path / "arch.json").exists()
    exp.close()
    again = Experiment.open(tmp_path / "cut")
    resumed = run_experiment(again, resolve_config(again.read_config()))
    assert resumed["arch"] == full["arch"] and resumed["test_acc"] == full["test_acc"]
    assert _sequence(again.store.trials()) == _sequence(Experiment.open(tmp_path / "full").store.trials())
