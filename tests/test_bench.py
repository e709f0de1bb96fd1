"""`nasforge bench nb201`: N searches per strategy on a full table, summary beside the paper, regret plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nasforge.bench import PAPER, BenchConfig, attach_paper, run_bench
from nasforge.cli import main
from nasforge.errors import ConfigError
from nasforge.evaluators.table import TableEvaluator, write_table
from nasforge.spaces import make_space


def _cli(monkeypatch, *args):
    monkeypatch.setattr("sys.argv", ["nasforge", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One CLI run on a synthetic table of every cell (written by the command), 8 runs per strategy."""
    out = tmp_path_factory.mktemp("bench") / "out"
    mp = pytest.MonkeyPatch()
    try:
        code = _cli(mp, "bench", "nb201", "--synthetic", "3", "--runs", "8", "--out", str(out), "-q")
    finally:
        mp.undo()
    assert code == 0
    return out


def test_bench_writes_summary_plot_and_optimum(bench_run, capsys):
    summary = json.loads((bench_run / "bench.json").read_text())
    assert set(summary["strategies"]) == {"random", "evolution"} and summary["runs"] == 8
    table = TableEvaluator(bench_run / "synthetic-3.csv")
    best_arch, best = table.optimum("test_acc")
    assert summary["optimum"]["test_acc"] == pytest.approx(best) and summary["optimum"]["test_arch"] == best_arch
    for name, res in summary["strategies"].items():
        tests = [r["test_acc"] for r in res["runs"]]
        assert len(tests) == 8 and all(t <= best + 1e-12 for t in tests)
        assert res["test_acc"]["mean"] == pytest.approx(np.mean(tests))
        assert res["test_acc"]["std"] == pytest.approx(np.std(tests))
        for run in res["runs"]:  # each run's chosen cell is reported by the table's test accuracy
            assert table.lookup(run["arch"])["test_acc"] == pytest.approx(run["test_acc"])
        assert res["sim_seconds"]["max"] <= 12000.0  # the budget is hard
        curve = [v for v in res["regret_curve"]["mean"] if v is not None]
        assert curve[-1] == pytest.approx(np.mean([best - t for t in tests]))
        assert res["paper"] is None  # a synthetic table has no paper numbers
    # evolution finds better cells than random search under the same budget
    assert summary["strategies"]["evolution"]["test_acc"]["mean"] > summary["strategies"]["random"]["test_acc"]["mean"]
    png = (bench_run / "regret.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_trial_budget_and_paper_numbers(bench_run):
    table = TableEvaluator(bench_run / "synthetic-3.csv", seeds="random")
    summary = run_bench(table, BenchConfig(strategies=["random"], runs=3, trials=25, seed=5))
    res = summary["strategies"]["random"]
    assert res["trials"]["mean"] == 25 and [r["seed"] for r in res["runs"]] == [5, 6, 7]
    again = run_bench(table, BenchConfig(strategies=["random"], runs=3, trials=25, seed=5))
    assert again["strategies"]["random"]["runs"] == res["runs"]  # a function of the seeds
    summary["strategies"]["random"]["test_acc"]["mean"] = 0.7100
    attach_paper(summary, "cifar100", budget_is_papers=True)
    assert res["paper"] == {"valid_mean": 70.93, "valid_std": 1.09, "test_mean": 71.04, "test_std": 1.07}
    assert res["within_paper_std"] is True
    assert set(PAPER) == {"cifar10", "cifar100", "ImageNet16-120"}


def test_bench_bad_input_is_one_line(bench_run, tmp_path, monkeypatch, capsys):
    assert _cli(monkeypatch, "bench", "nb201", "--runs", "2", "--out", str(tmp_path / "a")) == 2
    assert "--synthetic SEED" in capsys.readouterr().err
    space = make_space("nb201")
    rows = [{"arch": space.sample(np.random.default_rng(i)), "valid_acc": 0.5, "test_acc": 0.5} for i in range(3)]
    part = write_table(tmp_path / "part.csv", rows)
    assert _cli(monkeypatch, "bench", "nb201", "--table", str(part), "--out", str(tmp_path / "b")) == 2
    assert "of the 15,625 cells" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at least one search"):
        BenchConfig(runs=0)
    assert _cli(monkeypatch, "bench", "nb201", "--table", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_search_on_a_table_reports_the_benchmark_not_a_retraining(bench_run, tmp_path, monkeypatch):
    table = bench_run / "synthetic-3.csv"
    out = tmp_path / "run"
    assert _cli(monkeypatch, "search", "--space", "nb201", "--strategy", "evolution", "--table", str(table),
                "--set", "trials.max_sim_seconds=3000", "--out", str(out), "-q") == 0
    result = json.loads((out / "result.json").read_text())
    from nasforge.arch import Arch

    cell = TableEvaluator(table).lookup(Arch.from_json(out / "arch.json"))
    assert next(iter(result)) == "test_acc" and result["test_acc"] == pytest.approx(cell["test_acc"])
    assert result["retrained"] is False and result["benchmark"]["valid_acc"] == pytest.approx(cell["valid_acc"])
    assert result["search_sim_seconds"] <= 3000.0 and not (out / "model.pt").exists()
    assert _cli(monkeypatch, "resume", str(out), "-q") == 0  # finished: nothing to do
    assert json.loads((out / "result.json").read_text()) == result


@pytest.mark.slow
def test_search_on_a_table_retrains_when_asked(bench_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert _cli(monkeypatch, "search", "--space", "nb201", "--strategy", "random", "--table",
                str(bench_run / "synthetic-3.csv"), "--trials", "5", "--set", "evaluator.retrain=true",
                "--set", "space.C=4", "--set", "space.N=1", "--set", "train.epochs=1", "--set", "latency.repeats=1",
                "--set", "latency.warmup=0", "--out", str(out), "-q") == 0
    result = json.loads((out / "result.json").read_text())
    assert (out / "model.pt").exists() and "latency" in result
    assert result["benchmark"]["test_acc"] != result["test_acc"]  # the table's number kept beside the retraining


def test_multi_objective_search_saves_and_plots_its_front(bench_run, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    out = tmp_path / "run"
    assert _cli(monkeypatch, "search", "--space", "nb201", "--strategy", "nsga2", "--table",
                str(bench_run / "synthetic-3.csv"), "--trials", "60", "--set", "strategy.cost=params",
                "--out", str(out), "-q") == 0
    result = json.loads((out / "result.json").read_text())
    front = result["search_info"]["pareto_front"]
    assert front and result["search_info"]["cost"] == "params"
    costs, objectives = [r["params"] for r in front], [r["objective"] for r in front]
    assert costs == sorted(costs) and objectives == sorted(objectives)  # cheaper cells score lower: a front
    from nasforge.arch import Arch

    table = TableEvaluator(bench_run / "synthetic-3.csv")
    for r in front:
        assert table.lookup(Arch.from_dict(r["arch"]))["params"] == pytest.approx(r["params"])
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert _cli(monkeypatch, "report", str(out)) == 0  # the HTML report draws the front too
    html = (out / "report.html").read_text()
    assert "Pareto front of the search" in html and f"{len(front)} architectures" in html
