"""The table evaluator on the benchmarks' own file formats (generated small files), and tables without times."""

from __future__ import annotations

import bz2
import pickle

import numpy as np
import pytest

from nb201_files import accuracy, epoch_seconds, write_benchmark
from nasforge.errors import ConfigError
from nasforge.evaluators import make_evaluator
from nasforge.evaluators.table import TableEvaluator, write_table
from nasforge.spaces import make_space
from nasforge.trials import Budget, TrialsConfig, run_trials
from nasforge.strategies import make_strategy

SPACE = make_space("nb201")
ARCHS = [SPACE.to_string(SPACE.sample(np.random.default_rng(i))) for i in range(4)]


@pytest.fixture(params=["pth", "pbz2", "folder"])
def bench(request, tmp_path):
    name = {"pth": "NAS-Bench-201-v1_0-test.pth", "pbz2": "NATS-tss-v1_0-test.pickle.pbz2",
            "folder": "NATS-tss-v1_0-test-simple"}[request.param]
    return write_benchmark(tmp_path / name, ARCHS, request.param)


def test_reads_each_format_with_the_papers_protocol(bench):
    for dataset, signal, report, split in (("cifar10", "cifar10-valid", "cifar10", "ori-test"),
                                           ("cifar100", "cifar100", "cifar100", "x-test"),
                                           ("ImageNet16-120", "ImageNet16-120", "ImageNet16-120", "x-test")):
        ev = TableEvaluator(bench, "nb201", dataset=dataset)
        for i, arch in enumerate(ARCHS):
            row = ev(arch)
            seeds = {"cifar10-valid": [111, 777]}.get(signal, [111])
            want_valid = np.mean([accuracy(i, signal, "12", "x-valid", s) for s in seeds]) / 100
            assert row["valid_acc"] == pytest.approx(want_valid) == row["objective"]
            want_test = np.mean([accuracy(i, report, "200", split, s) for s in (777, 888)]) / 100
            assert row["test_acc"] == pytest.approx(want_test)
            assert row["valid_acc_200"] == pytest.approx(
                np.mean([accuracy(i, signal, "200", "x-valid", s) for s in (777, 888)]) / 100)
            # train-all-time of the 12-epoch schedule plus one validation pass (0.5 s per epoch)
            assert row["train_seconds"] == pytest.approx(12 * epoch_seconds(i, signal) + 0.5)
            assert row["params"] == pytest.approx(0.1 + i / 100) and row["flops"] == pytest.approx(15 + i)
            assert row["latency"] == pytest.approx(0.01 + i / 1000)
        assert ev.has_time


def test_options_epochs_split_seeds(bench):
    ev200 = TableEvaluator(bench, dataset="cifar100", epochs=200)
    assert ev200(ARCHS[1])["valid_acc"] == pytest.approx(
        np.mean([accuracy(1, "cifar100", "200", "x-valid", s) for s in (777, 888)]) / 100)
    assert ev200(ARCHS[1])["train_seconds"] == pytest.approx(200 * epoch_seconds(1, "cifar100") + 0.5)
    valtest = TableEvaluator(bench, dataset="cifar100", split="ori-test")
    assert valtest(ARCHS[2])["valid_acc"] == pytest.approx(accuracy(2, "cifar100", "12", "ori-test", 111) / 100)
    assert TableEvaluator(bench, dataset="cifar10", split="valid")(ARCHS[0])["valid_acc"] == \
        TableEvaluator(bench, dataset="cifar10")(ARCHS[0])["valid_acc"]
    rnd = TableEvaluator(bench, dataset="cifar10", seeds="random")
    by_seed = sorted({round(rnd(ARCHS[3], seed=s)["valid_acc"], 9) for s in range(4)})
    assert by_seed == pytest.approx(sorted(accuracy(3, "cifar10-valid", "12", "x-valid", s) / 100 for s in (111, 777)))
    assert rnd(ARCHS[3], seed=0) == rnd(ARCHS[3], seed=2)  # a function of the trial's seed
    best, value = TableEvaluator(bench, dataset="cifar100").optimum("test_acc")
    want = max(range(4), key=lambda i: i % 7)
    assert best == ARCHS[want] and value == pytest.approx(
        np.mean([accuracy(want, "cifar100", "200", "x-test", s) for s in (777, 888)]) / 100)


def test_converted_table_reads_back(bench, tmp_path):
    ev = TableEvaluator(bench, dataset="ImageNet16-120")
    out = ev.to_table(tmp_path / "in16.csv")
    back = TableEvaluator(out)
    for arch in ARCHS:
        assert back(arch) == pytest.approx(ev(arch))


def test_bad_benchmark_files_are_one_line(tmp_path):
    good = write_benchmark(tmp_path / "b.pth", ARCHS, "pth", datasets=("cifar10-valid", "cifar10"))
    with pytest.raises(ConfigError, match="no 12-epoch results on 'cifar100'.*choose a dataset it holds"):
        TableEvaluator(good, dataset="cifar100")
    with pytest.raises(ConfigError, match="unknown; use one of"):
        TableEvaluator(good, dataset="svhn")
    with pytest.raises(ConfigError, match="12 or 200"):
        TableEvaluator(good, epochs=90)
    less_only = write_benchmark(tmp_path / "l.pickle.pbz2", ARCHS, "pbz2", hps=("12",))
    with pytest.raises(ConfigError, match="no 200-epoch results"):
        TableEvaluator(less_only)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="is not a NAS-Bench-201 .pth"):
        TableEvaluator(tmp_path / "junk.pth")
    import torch

    torch.save({"state_dict": {}}, tmp_path / "model.pth")
    with pytest.raises(ConfigError, match="no 'meta_archs'"):
        TableEvaluator(tmp_path / "model.pth")
    sss = {"meta_archs": ["64:64:64:64:64"], "arch2infos": {0: {}}, "evaluated_indexes": set()}
    (tmp_path / "sss.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(sss)))
    with pytest.raises(ConfigError, match="size space"):
        TableEvaluator(tmp_path / "sss.pickle.pbz2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a NATS-Bench archive"):
        TableEvaluator(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        TableEvaluator(tmp_path / "missing.pth")


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    evil = {"meta_archs": ARCHS, "arch2infos": {0: Boom()}, "evaluated_indexes": set()}
    (tmp_path / "evil.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(evil)))
    with pytest.raises(ConfigError, match="refusing to load"):
        TableEvaluator(tmp_path / "evil.pickle.pbz2")
    import torch

    torch.save(evil, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match=r"is not a NAS-Bench-201 .pth \(.*unsupported GLOBAL .*system"):
        TableEvaluator(tmp_path / "evil.pth")
    # numpy arrays are data: an object array's items are checked like the rest
    arrays = {"meta_archs": ARCHS, "arch2infos": {0: {}}, "evaluated_indexes": set(), "x": np.arange(3.0)}
    (tmp_path / "arrays.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(arrays)))
    with pytest.raises(ConfigError, match="no 12-epoch results"):  # read past the arrays, to the missing results
        TableEvaluator(tmp_path / "arrays.pickle.pbz2")
    evil_array = {**arrays, "x": np.array([Boom()], dtype=object)}
    (tmp_path / "evil_array.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(evil_array)))
    with pytest.raises(ConfigError, match="refusing to load"):
        TableEvaluator(tmp_path / "evil_array.pickle.pbz2")


def test_cell_missing_from_an_archive_folder(tmp_path):
    folder = write_benchmark(tmp_path / "NATS-tss-simple", ARCHS, "folder")
    (folder / "000002.pickle.pbz2").unlink()
    ev = TableEvaluator(folder)
    assert ARCHS[1] in ev and ARCHS[2] not in ev
    with pytest.raises(ConfigError, match="is not in benchmark"):
        ev(ARCHS[2])


def test_a_table_without_times_works_but_not_with_a_time_budget(tmp_path):
    rows = [{"arch": a, "valid_acc": 0.5 + i / 10, "test_acc": 0.4 + i / 10} for i, a in enumerate(ARCHS)]
    path = write_table(tmp_path / "t.csv", rows)
    ev = TableEvaluator(path)
    assert not ev.has_time and "train_seconds" not in ev(ARCHS[0])
    mixed = write_table(tmp_path / "m.json", [{**rows[0], "train_seconds": 5.0}, rows[1]])
    with pytest.raises(ConfigError, match="lacks train_seconds while"):
        TableEvaluator(mixed)
    # a search with a trial budget works; a simulated-time budget is refused in one line
    full = [{"arch": SPACE.to_string(a), "valid_acc": 0.5, "test_acc": 0.5}
            for a in _all_archs()]
    table = write_table(tmp_path / "all.csv", full)
    ev = make_evaluator("table", {"path": str(table)}, SPACE)
    result = run_trials(make_strategy("random"), SPACE, ev, Budget(trials=5), seed=0)
    assert result.info["trials"] == 5
    with pytest.raises(ConfigError, match="no train_seconds.*cannot be used"):
        run_trials(make_strategy("random"), SPACE, ev, Budget(sim_seconds=100), seed=0)
    cfg = TrialsConfig(max_sim_seconds=100)
    with pytest.raises(ConfigError, match="cannot be used"):
        from nasforge.trials import check_budget

        check_budget(cfg.budget(), ev)


def _all_archs():
    import itertools

    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    for combo in itertools.product(ops, repeat=6):
        yield SPACE.from_string("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*combo))


def test_cli_bad_benchmark_input_is_one_line_before_any_file(tmp_path, monkeypatch, capsys):
    from nasforge.cli import main

    def run(*args):
        monkeypatch.setattr("sys.argv", ["nasforge", "search", "--space", "nb201", "--strategy", "random",
                                         "--out", str(tmp_path / "run"), "-q", *args])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
        assert not (tmp_path / "run").exists()
        return err

    bench = write_benchmark(tmp_path / "b.pth", ARCHS, "pth", datasets=("cifar10-valid", "cifar10"))
    assert "no 12-epoch results on 'cifar100'" in run("--table", str(bench), "--set", "evaluator.dataset=cifar100")
    assert "evaluator.epochs=90 is not allowed" in run("--table", str(bench), "--set", "evaluator.epochs=90")
    rows = [{"arch": a, "valid_acc": 0.5, "test_acc": 0.5} for a in ARCHS]
    untimed = write_table(tmp_path / "t.csv", rows)
    assert "cannot be used" in run("--table", str(untimed), "--set", "trials.max_sim_seconds=12000")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert "is not a NAS-Bench-201 .pth" in run("--table", str(tmp_path / "junk.pth"))


def test_a_budget_that_could_never_end_is_refused():
    from nasforge.evaluators.synthetic import SyntheticTable

    table = SyntheticTable(SPACE)
    with pytest.raises(ConfigError, match="could never end"):
        run_trials(make_strategy("random"), SPACE, table, Budget(sim_seconds=100.0, max_repeats=None), seed=0)
    # charged repeats, a cap, or no dedupe (every repeat evaluated and charged) all end
    for budget, dedupe in ((Budget(sim_seconds=300.0, max_repeats=None, charge_repeats=True), True),
                           (Budget(sim_seconds=300.0, max_repeats=3), True),
                           (Budget(sim_seconds=300.0, max_repeats=None), False)):
        result = run_trials(make_strategy("random"), SPACE, table, budget, seed=0, dedupe=dedupe)
        assert 0 < result.info["sim_seconds"] <= 300.0


def test_over_budget_trials_are_recounted_on_resume(tmp_path):
    from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable
    from nasforge.experiment import Experiment

    table = SyntheticTable(SPACE, SyntheticConfig(seconds=50.0))
    budget = Budget(sim_seconds=400.0)
    exp = Experiment.create(tmp_path / "run", {})
    first = run_trials(make_strategy("evolution", {"population": 3}), SPACE, table, budget, experiment=exp, seed=1)
    exp.close()
    over = [r["index"] for r in first.history if r.get("over_budget")]
    assert over == [len(first.history) - 1] and first.info["sim_seconds"] <= 400.0
    assert first.info["best_trial"] not in over
    exp = Experiment.open(tmp_path / "run")
    again = run_trials(make_strategy("evolution", {"population": 3}), SPACE, table, budget, experiment=exp, seed=1)
    exp.close()
    assert [r.get("over_budget", False) for r in again.history] == [r.get("over_budget", False) for r in first.history]
    assert again.info["sim_seconds"] == pytest.approx(first.info["sim_seconds"])
    assert again.info["best_trial"] == first.info["best_trial"]
