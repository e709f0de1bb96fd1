"""Evaluators at lower fidelities (``nasforge.fidelity``): benchmark files' learning curves, tables with
``valid_acc@E`` columns, the synthetic table's simulated curve, and the train evaluator's shorter runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from nb201_files import accuracy, eval_seconds, train_seconds, write_benchmark
from nasforge.errors import ConfigError
from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable
from nasforge.evaluators.table import TableEvaluator, write_table
from nasforge.fidelity import Fidelities, fidelities_of
from nasforge.spaces import make_space

SPACE = make_space("nb201")
ARCHS = [SPACE.to_string(SPACE.sample(np.random.default_rng(i))) for i in range(4)]
VALID_SEEDS = (111, 777)  # the cifar10-valid 12-epoch runs of the generated files


def _acc(index: int, epoch: int, seed: int) -> float:
    """The generated cifar10-valid x-valid accuracy (fraction) of cell ``index`` after ``epoch`` of 12."""
    return accuracy(index, "cifar10-valid", "12", "x-valid", seed) * epoch / 12 / 100.0


def _cost(index: int, epoch: int, seed: int) -> float:
    """simulate_train_eval(iepoch=epoch - 1): the first ``epoch`` epoch times plus their mean valid time."""
    return (sum(train_seconds(index, "cifar10-valid", i, ramp=True) for i in range(epoch)) +
            sum(eval_seconds(i, seed, ramp=True) for i in range(epoch)) / epoch)


@pytest.fixture(scope="module", params=["pth", "folder"])
def bench(request, tmp_path_factory):
    name = {"pth": "NAS-Bench-201-v1_0-test.pth", "folder": "NATS-tss-v1_0-test-simple"}[request.param]
    return write_benchmark(tmp_path_factory.mktemp("bench") / name, ARCHS, request.param, ramp=True)


def test_benchmark_file_answers_each_epoch_of_the_signal(bench):
    ev = TableEvaluator(bench)
    assert fidelities_of(ev) == Fidelities(1, 12, "epochs")
    for index in (1, 3):
        full = ev(ARCHS[index])
        for epoch in (1, 6, 12):
            m = ev(ARCHS[index], fidelity=epoch)
            assert m["valid_acc"] == m["objective"] == pytest.approx(np.mean([_acc(index, epoch, s)
                                                                              for s in VALID_SEEDS]))
            assert m["train_seconds"] == pytest.approx(np.mean([_cost(index, epoch, s) for s in VALID_SEEDS]))
            assert {k: v for k, v in m.items() if k not in ("objective", "valid_acc", "train_seconds")} == \
                {k: v for k, v in full.items() if k not in ("objective", "valid_acc", "train_seconds")}
        assert ev(ARCHS[index], fidelity=12) == full  # the schedule's length is the full fidelity, exactly
        assert ev(ARCHS[index], fidelity=1)["valid_acc"] < ev(ARCHS[index], fidelity=6)["valid_acc"] < full["valid_acc"]
    # the 200-epoch schedule: 1..200, test_acc as at full fidelity
    ev200 = TableEvaluator(bench, epochs=200, dataset="cifar100")
    assert ev200.fidelities.describe() == "1..200 epochs"
    assert ev200(ARCHS[2], fidelity=200) == ev200(ARCHS[2])
    assert ev200(ARCHS[2], fidelity=50)["test_acc"] == ev200(ARCHS[2])["test_acc"]
    # test_acc as the objective stays test_acc
    assert TableEvaluator(bench, metric="test_acc")(ARCHS[0], fidelity=1)["objective"] == ev(ARCHS[0])["test_acc"]


def test_benchmark_file_seeds_random_reads_the_trial_seeds_curve(bench):
    rnd = TableEvaluator(bench, seeds="random")
    for seed in range(4):
        run_seed = VALID_SEEDS[seed % 2]
        m = rnd(ARCHS[3], seed=seed, fidelity=4)
        assert m["valid_acc"] == pytest.approx(_acc(3, 4, run_seed))
        assert m["train_seconds"] == pytest.approx(_cost(3, 4, run_seed))
        assert rnd(ARCHS[3], seed=seed, fidelity=12) == rnd(ARCHS[3], seed=seed)
    assert rnd(ARCHS[3], seed=0, fidelity=4)["valid_acc"] != rnd(ARCHS[3], seed=1, fidelity=4)["valid_acc"]


def test_fidelity_not_offered_is_one_line(bench):
    ev = TableEvaluator(bench)
    for bad in (0, 13, 2.5, "3", True):
        with pytest.raises(ConfigError, match=r"fidelity .* is not offered by benchmark .*1\.\.12 epochs"):
            ev(ARCHS[0], fidelity=bad)


def test_benchmark_file_converts_to_a_table_with_its_curves(bench, tmp_path):
    ev = TableEvaluator(bench)
    back = TableEvaluator(ev.to_table(tmp_path / "c.csv"))
    assert back.fidelities == Fidelities(1, 12, levels=tuple(range(1, 13)))
    for arch in ARCHS:
        assert back(arch) == pytest.approx(ev(arch))
        for epoch in (1, 7, 12):
            assert back(arch, fidelity=epoch) == pytest.approx(ev(arch, fidelity=epoch))
    assert "valid_acc@1" not in TableEvaluator(ev.to_table(tmp_path / "d.csv", curves=False)).rows[ARCHS[0]]
    assert TableEvaluator(tmp_path / "d.csv").fidelities is None


# --- CSV/JSON tables ------------------------------------------------------------
def _rows(levels=(1, 4, 12), times=True):
    rows = []
    for i, arch in enumerate(ARCHS):
        row = {"arch": arch, "valid_acc": 0.8 + i / 100, "test_acc": 0.7 + i / 100, "params": 1.0 + i}
        if times:
            row["train_seconds"] = 100.0 + i
        row.update({f"valid_acc@{e}": 0.5 + i / 100 + e / 100 for e in levels})
        if times:
            row.update({f"train_seconds@{e}": 10.0 * e + i for e in levels})
        rows.append(row)
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_table_with_fidelity_columns_round_trips(tmp_path, suffix):
    path = write_table(tmp_path / f"t{suffix}", _rows())
    ev = TableEvaluator(path)
    assert ev.fidelities == Fidelities(1, 12, levels=(1, 4, 12)) and ev.fidelities.values() == (1, 4, 12)
    m = ev(ARCHS[2], fidelity=4)
    assert m == pytest.approx({"objective": 0.56, "valid_acc": 0.56, "test_acc": 0.72, "train_seconds": 42.0,
                               "params": 3.0})
    assert ev(ARCHS[2]) == pytest.approx({"objective": 0.82, "valid_acc": 0.82, "test_acc": 0.72,
                                          "train_seconds": 102.0, "params": 3.0})
    assert "valid_acc@4" not in ev.rows[ARCHS[2]]  # the curve is not part of the full-fidelity metrics
    assert TableEvaluator(path, metric="test_acc")(ARCHS[2], fidelity=1)["objective"] == pytest.approx(0.72)
    with pytest.raises(ConfigError, match="fidelity 2 is not offered by table .* 1, 4, 12 epochs"):
        ev(ARCHS[0], fidelity=2)
    again = TableEvaluator(ev.to_table(tmp_path / f"again{suffix}"))
    assert again.fidelities == ev.fidelities
    for arch in ARCHS:
        assert again.curve(arch) == ev.curve(arch) and again(arch) == ev(arch)
    # without times: fidelities without train_seconds
    bare = TableEvaluator(write_table(tmp_path / f"bare{suffix}", _rows(times=False)))
    assert bare(ARCHS[1], fidelity=12) == pytest.approx({"objective": 0.63, "valid_acc": 0.63, "test_acc": 0.71,
                                                         "params": 2.0})


def test_table_without_fidelity_columns_has_none(tmp_path):
    path = write_table(tmp_path / "t.csv", _rows(levels=()))
    ev = TableEvaluator(path)
    assert ev.fidelities is None and fidelities_of(ev) is None and ev.curve(ARCHS[0]) == {}
    with pytest.raises(ConfigError, match="one fidelity only"):
        ev(ARCHS[0], fidelity=1)


def _csv(tmp_path, header: list[str], rows: list[list]) -> str:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(",".join(str(v) for v in r) for r in [header, *rows]) + "\n")
    return path


def test_bad_fidelity_columns_are_one_line(tmp_path):
    a, b = ARCHS[0], ARCHS[1]
    base = ["arch", "valid_acc", "test_acc"]
    for column in ("valid_acc@x", "valid_acc@0", "train_seconds@1.5", "valid_acc@"):
        with pytest.raises(ConfigError, match=rf"column '{column}' is not a per-fidelity column; name it "
                                              r"\w+@E with E a whole number"):
            TableEvaluator(_csv(tmp_path, base + [column], [[a, 0.8, 0.7, 0.5]]))
    with pytest.raises(ConfigError, match=r"row 3 lacks valid_acc@2 .*give every row every per-fidelity column"):
        TableEvaluator(_csv(tmp_path, base + ["valid_acc@1", "valid_acc@2"],
                            [[a, 0.8, 0.7, 0.5, 0.6], [b, 0.8, 0.7, 0.5, ""]]))
    with pytest.raises(ConfigError, match=r"row 2 lacks train_seconds@1 \(the table has training times"):
        TableEvaluator(_csv(tmp_path, base + ["train_seconds", "valid_acc@1"], [[a, 0.8, 0.7, 9.0, 0.5]]))
    with pytest.raises(ConfigError, match="train_seconds@2 but no valid_acc@2"):
        TableEvaluator(_csv(tmp_path, base + ["valid_acc@1", "train_seconds@1", "train_seconds@2"],
                            [[a, 0.8, 0.7, 0.5, 1.0, 2.0]]))
    with pytest.raises(ConfigError, match="train_seconds@1 but no valid_acc@E columns"):
        TableEvaluator(_csv(tmp_path, base + ["train_seconds@1"], [[a, 0.8, 0.7, 1.0]]))
    with pytest.raises(ConfigError, match=r"valid_acc@1='x' is not a number"):
        TableEvaluator(_csv(tmp_path, base + ["valid_acc@1"], [[a, 0.8, 0.7, "x"]]))
    js = tmp_path / "bad.json"
    js.write_text(json.dumps({a: {"valid_acc": 0.8, "test_acc": 0.7, "valid_acc@1": 0.5},
                              b: {"valid_acc": 0.8, "test_acc": 0.7}}))
    with pytest.raises(ConfigError, match=r"entry '.*' lacks valid_acc@1"):
        TableEvaluator(js)
    with pytest.raises(ConfigError, match="column 'valid_acc@one' is not a per-fidelity column"):
        write_table(tmp_path / "w.csv", [{"arch": a, "valid_acc": 0.8, "test_acc": 0.7, "valid_acc@one": 0.5}])


# --- the synthetic table ----------------------------------------------------------
def test_synthetic_learning_curve():
    table = SyntheticTable(SPACE, SyntheticConfig(seed=1))
    assert table.fidelities == Fidelities(1, 12) and fidelities_of(table) is table.fidelities
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(400)]
    curves = np.array([[table(a, fidelity=e)["valid_acc"] for e in range(1, 13)] for a in archs])
    final = np.array([table(a)["valid_acc"] for a in archs])
    for a, curve in zip(archs[:50], curves):
        full = table(a)
        assert table(a, fidelity=12) == full and curve[-1] == full["valid_acc"]  # bit for bit
        m = table(a, fidelity=3)
        assert m["objective"] == m["valid_acc"] == curve[2] and m["test_acc"] == full["test_acc"]
        assert [table(a, fidelity=e)["train_seconds"] for e in (1, 6, 12)] == \
            pytest.approx([full["train_seconds"] * e / 12 for e in (1, 6, 12)], rel=1e-15)
        lc = table.learning_curve(a)
        assert np.array_equal(lc["valid_acc"], curve)
    means = curves.mean(axis=0)
    assert np.all(np.diff(means) > 0) and means[0] < means[-1] - 0.1  # rises on average
    rho = [spearmanr(curves[:, e - 1], final)[0] for e in (1, 6, 11)]
    assert 0.5 < rho[0] < rho[1] < rho[2] < 1.0 and rho[0] < 0.85
    # deterministic: a fresh table gives the same curve
    again = SyntheticTable(SPACE, SyntheticConfig(seed=1))
    assert [again(archs[7], fidelity=e) for e in (1, 5)] == [table(archs[7], fidelity=e) for e in (1, 5)]
    assert SyntheticTable(SPACE, SyntheticConfig(seed=2))(archs[7], fidelity=1) != table(archs[7], fidelity=1)
    with pytest.raises(ConfigError, match="fidelity 13 is not offered by the synthetic table"):
        table(archs[0], fidelity=13)
    short = SyntheticTable(SPACE, SyntheticConfig(seed=1, epochs=4))
    assert short.fidelities.high == 4 and short(archs[0], fidelity=4) == short(archs[0]) == table(archs[0])
    one = SyntheticTable(SPACE, SyntheticConfig(seed=1, epochs=1))
    assert one(archs[0], fidelity=1) == table(archs[0])


def test_synthetic_benchmark_table_has_the_curves(tmp_path):
    from nasforge.bench import synthetic_table

    path = synthetic_table(tmp_path / "s.csv", seed=3, seconds=60.0, epochs=4)
    ev = TableEvaluator(path)
    table = SyntheticTable(SPACE, SyntheticConfig(seed=3, seconds=60.0, epochs=4))
    assert ev.fidelities.values() == (1, 2, 3, 4)
    for arch in ARCHS:
        for epoch in (1, 2, 4):
            m, want = ev(arch, fidelity=epoch), table(SPACE.from_string(arch), fidelity=epoch)
            assert (m["valid_acc"], m["train_seconds"]) == (want["valid_acc"], want["train_seconds"])
        assert ev(arch, fidelity=4) == ev(arch)


# --- the train evaluator ---------------------------------------------------------------
def test_train_evaluator_trains_the_fidelitys_epochs():
    from nasforge.data import load_dataset
    from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator
    from nasforge.spaces.layers import Layer

    data = load_dataset("digits", seed=0)
    space = make_space("layers")
    arch = space.arch_of(space.chain([Layer("conv", 3, 3, 1, 1, 24), Layer("gap")]))
    ev = TrainEvaluator(space, data, TrainEvalConfig(epochs=3, batch_size=128, lr=0.05))
    assert ev.fidelities == Fidelities(1, 3)
    full = ev(arch, seed=0)
    one = ev(arch, seed=0, fidelity=1)
    assert full["epochs"] == 3 and one["epochs"] == 1 and one["steps"] * 3 == full["steps"]
    assert one["train_seconds"] < full["train_seconds"]
    assert ev(arch, seed=0, fidelity=3)["valid_acc"] == full["valid_acc"]
    # fidelity=2 is a whole 2-epoch run (its schedule spans 2 epochs), as a 2-epoch evaluator's
    two = TrainEvaluator(space, data, TrainEvalConfig(epochs=2, batch_size=128, lr=0.05))(arch, seed=0)
    assert ev(arch, seed=0, fidelity=2)["valid_acc"] == two["valid_acc"]
    with pytest.raises(ConfigError, match=r"fidelity 4 is not offered by the train evaluator \(1\.\.3 epochs\)"):
        ev(arch, fidelity=4)
    best = TrainEvaluator(space, data, TrainEvalConfig(epochs=3, batch_size=128, lr=0.05, valid_epochs=2,
                                                       objective="best"))(arch, seed=0, fidelity=2)
    assert best["epochs"] == 2 and len(best["valid_accs"]) == 2 and best["valid_accs"][-1] == two["valid_acc"]
