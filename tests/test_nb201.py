"""NAS-Bench-201: the space and its string form, the networks, the supernet with DARTS and
GDAS, the table evaluator and its errors, the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.evaluators.table import TableEvaluator, write_table
from nasforge.experiment import Experiment
from nasforge.nn import Hard, OpChoice, fixed_arch
from nasforge.oneshot.relax import Relaxation, gumbel_hard
from nasforge.spaces import SearchSpace, make_space
from nasforge.spaces.nb201 import (
    EDGE_LABELS,
    EDGES,
    EXAMPLE,
    PRIMITIVES,
    NB201Cell,
    NB201Space,
    derive_ops,
)
from nasforge.strategies import make_strategy
from nasforge.train import load_model, save_model


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _space() -> NB201Space:
    return make_space("nb201", C=4, N=1)


def _uniform(op: str) -> str:
    return f"|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|"


# --------------------------------------------------------------------------- space and strings
def test_space_has_15625_cells_and_records_its_shape():
    space = make_space("nb201")
    assert space.size() == 15625 == 5 ** 6
    assert list(space.choices())[:6] == ["edge1<-0", "edge2<-0", "edge2<-1", "edge3<-0", "edge3<-1", "edge3<-2"]
    arch = space.sample(np.random.default_rng(0))
    assert arch["C"] == 16 and arch["N"] == 5
    small = make_space("nb201", C=8, N=2).sample(np.random.default_rng(0))
    assert NB201Space.for_arch(small).C == 8 and NB201Space.for_arch(small).N == 2
    assert {small.with_choice("C", 8)} == {small}  # size-1 choices never change under mutation
    space8 = make_space("nb201", C=8, N=2)
    rng = np.random.default_rng(1)
    for _ in range(20):
        mutated = space8.mutate(small, rng)
        assert mutated["C"] == 8 and mutated["N"] == 2 and mutated != small


def test_known_string_parses_to_its_edges_and_prints_back():
    arch = NB201Space.from_string(EXAMPLE)
    assert arch["edge1<-0"] == "nor_conv_3x3"
    assert arch["edge2<-1"] == "avg_pool_3x3"
    assert arch["edge3<-0"] == "skip_connect" and arch["edge3<-2"] == "skip_connect"
    assert (arch["C"], arch["N"]) == (16, 5)  # on the class: the benchmark's skeleton
    assert NB201Space.to_string(arch) == EXAMPLE
    assert _space().from_string(EXAMPLE)["C"] == 4  # on an instance: its own C and N


def test_string_round_trip_for_random_samples():
    space = _space()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        arch = space.sample(rng)
        text = space.to_string(arch)
        assert space.from_string(text) == arch
        assert Arch.from_json(arch.to_json()) == arch  # arch.json validates against the registered space
        seen.add(text)
    assert len(seen) > 190


@pytest.mark.parametrize("text, problem", [
    ("", "1 node(s)"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node(s)"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 input(s), needs 2"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must come from a node 0..0"),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like 'op~j'"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "takes node 0 twice"),
    ("|none~0|+|none~0|none~x|+|none~0|none~1|none~2|", "must come from a node 0..1"),
    (None, "not a string"),
])
def test_malformed_strings_are_one_line_arch_errors(text, problem):
    with pytest.raises(ArchError) as info:
        NB201Space.from_string(text)
    message = str(info.value)
    assert "malformed NAS-Bench-201 arch string" in message and problem in message
    assert "\n" not in message and "write it like" in message


def test_to_string_rejects_another_spaces_arch():
    darts_arch = make_space("darts").sample(np.random.default_rng(0))
    with pytest.raises(ArchError, match="belongs to space 'darts'"):
        NB201Space.to_string(darts_arch)


@pytest.mark.parametrize("options, match", [({"C": 0}, "C=0"), ({"N": "5"}, "N='5'"), ({"depth": 3}, "no option")])
def test_bad_space_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        make_space("nb201", **options)


def test_arch_without_shape_choices_is_an_arch_error():
    arch = Arch("nb201", {label: "none" for label in EDGE_LABELS})
    with pytest.raises(ArchError, match="'C' and 'N'"):
        NB201Space.for_arch(arch)


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("op", PRIMITIVES)
def test_build_every_op_gives_logits_and_trains(op):
    space = _space()
    model = space.build(space.from_string(_uniform(op)), (1, 8, 8), 10, layers=9, channels=99, auxiliary=True)
    x = torch.randn(3, 1, 8, 8)
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()  # build options were ignored: C=4 stem
    assert model.stem[0].out_channels == 4


def test_all_none_cell_outputs_zeros_and_network_stays_defined():
    def cell(ops):  # the cell built with one op per edge (its choices fixed)
        with fixed_arch(dict(zip(EDGE_LABELS, ops))):
            return NB201Cell(4)

    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(cell(["none"] * 6)(x), torch.zeros_like(x))
    # a node fed only by none is zeros, but a later op on it still runs
    assert torch.equal(cell(["none", "none", "none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"])(x), x)
    net = make_space("nb201", C=4, N=2).build(NB201Space.from_string(_uniform("none")), (3, 7, 7), 5)
    assert torch.isfinite(net(torch.randn(2, 3, 7, 7))).all()  # odd sizes through both reductions


def test_parameter_counts_match_the_benchmark():
    """The benchmark's CIFAR-10 networks: all nor_conv_3x3 has 1.531546 M params, all none 0.073306 M."""
    space = make_space("nb201")
    for op, expected in (("nor_conv_3x3", 1_531_546), ("none", 73_306)):
        net = space.build(NB201Space.from_string(_uniform(op)), (3, 32, 32), 10)
        assert sum(p.numel() for p in net.parameters()) == expected


def test_saved_model_rebuilds_from_its_arch_alone(tmp_path):
    space = make_space("nb201", C=4, N=1)
    arch = space.from_string(EXAMPLE)
    model = space.build(arch, (1, 8, 8), 10).eval()
    save_model(model, arch, (1, 8, 8), 10, {"layers": 6, "channels": 16, "auxiliary": False}, tmp_path / "m.pt")
    loaded, loaded_arch, shape = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 1, 8, 8)
    assert loaded_arch == arch and shape == (1, 8, 8)
    assert torch.equal(loaded(x), model(x))


# --------------------------------------------------------------------------- supernet
def test_supernet_darts_weights_reach_every_op_and_alpha():
    torch.manual_seed(0)
    space = _space()
    model = space.supernet((1, 8, 8), 10, layers=99, channels=99)
    assert sum(isinstance(c, NB201Cell) for c in model.cells) == 3  # 3 stages x N=1
    relax = Relaxation(model)
    assert relax.labels == list(EDGE_LABELS)  # one decision per edge, shared by every cell
    relax.soft()
    out = model(torch.randn(4, 1, 8, 8))
    F.cross_entropy(out, torch.arange(4)).backward()
    for alpha in relax.parameters():
        assert alpha.grad is not None and (alpha.grad.abs() > 0).all()
    for cell in (c for c in model.cells if isinstance(c, NB201Cell)):
        for edge in cell.edges:
            assert isinstance(edge, OpChoice)
            conv = edge.candidates[PRIMITIVES.index("nor_conv_3x3")][1].weight
            assert conv.grad is not None and conv.grad.abs().sum() > 0


def test_supernet_gdas_hard_sample_runs_only_the_chosen_ops():
    torch.manual_seed(0)
    model = _space().supernet((1, 8, 8), 10)
    relax = Relaxation(model)
    conv1, conv3 = PRIMITIVES.index("nor_conv_1x1"), PRIMITIVES.index("nor_conv_3x3")
    index = [conv3, conv1, conv3, conv3, conv1, conv3]
    decisions = {}
    for label, k in zip(EDGE_LABELS, index):
        p = F.softmax(relax.alphas[label], -1)
        decisions[label] = Hard([k], F.one_hot(torch.tensor([k]), len(PRIMITIVES)).float() + (p - p.detach()))
    relax.set(decisions)
    out = model(torch.randn(4, 1, 8, 8))
    F.cross_entropy(out, torch.arange(4)).backward()
    cell = next(c for c in model.cells if isinstance(c, NB201Cell))
    for e, k in enumerate(index):
        other = conv1 if k == conv3 else conv3
        assert cell.edges[e].candidates[k][1].weight.grad is not None
        assert cell.edges[e].candidates[other][1].weight.grad is None  # never ran
    assert all((a.grad.abs().sum() > 0) for a in relax.parameters())  # straight-through: every edge learns
    # the GDAS sampler draws one op per edge of the stacked [6, 5] rows
    relax.hard(1.0)
    assert all(len(relax.current[label].index) == 1 for label in EDGE_LABELS)
    assert len(gumbel_hard(torch.zeros(6, 5), 1.0).index) == len(EDGES)


def test_derivation_is_per_edge_argmax_with_none_allowed():
    w = np.zeros((6, 5))
    expected = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_3x3"]
    for e, op in enumerate(expected):
        w[e, PRIMITIVES.index(op)] = 1.0
    w[0, 3] = 0.99  # none stays the strongest of edge 0
    arch = _space().derive(torch.tensor(w))
    assert [arch[label] for label in EDGE_LABELS] == expected
    assert (arch["C"], arch["N"]) == (4, 1)
    assert derive_ops(np.full((6, 5), 0.2))[0] == "none"  # ties: the earlier op, as numpy's argmax
    with pytest.raises(ValueError):
        derive_ops(np.zeros((14, 8)))


# --------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("name, options", [("darts", {}), ("darts", {"order": 2}), ("gdas", {})])
def test_strategy_runs_one_epoch_on_nb201(data, name, options):
    strategy = make_strategy(name, {"epochs": 1, **options}, "synthetic")
    result = strategy.search(_space(), data, seed=0)
    assert result.arch.space == "nb201" and (result.arch["C"], result.arch["N"]) == (4, 1)
    record = result.history[-1]
    assert list(record["arch_weights"]) == ["normal"]
    weights = np.array(record["arch_weights"]["normal"])
    assert weights.shape == (6, 5) and np.allclose(weights.sum(1), 1.0)
    assert len(strategy.alphas) == 6 and not torch.equal(torch.cat(strategy.alphas), torch.zeros(6, 5))
    assert result.arch == _space().derive(torch.tensor(weights))


def test_gdas_resume_on_nb201_ends_where_an_uninterrupted_run_ends(tmp_path, data):
    def run(name, callbacks=()):
        path = tmp_path / name
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {}, force=True)
        strategy = make_strategy("gdas", {"epochs": 3}, "synthetic")
        return strategy, strategy.search(_space(), data, experiment=exp, seed=1, callbacks=callbacks)

    def stop(strategy, epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    full, full_result = run("full")
    with pytest.raises(KeyboardInterrupt):
        run("cut", [stop])
    resumed, resumed_result = run("cut")
    assert resumed_result.arch == full_result.arch
    assert all(torch.equal(a, b) for a, b in zip(full.alphas, resumed.alphas))
    assert [h["metrics"]["train_loss"] for h in resumed_result.history] == \
        [h["metrics"]["train_loss"] for h in full_result.history]


def test_darts_only_options_are_rejected_on_nb201(data):
    # (DARTS+ early stopping runs on nb201 with its op names: tests/test_stopping.py)
    with pytest.raises(ConfigError, match="fixed_reduce"):
        make_strategy("gdas", {"epochs": 1, "fixed_reduce": True}, "synthetic").search(_space(), data)


def test_space_without_choice_modules_is_rejected(data):
    class Plain(SearchSpace):
        name = "plain"

    with pytest.raises(ConfigError, match="relaxes a space written with choice modules"):
        make_strategy("darts", {"epochs": 1}, "synthetic").search(Plain(), data)


# --------------------------------------------------------------------------- table evaluator
def _rows(n: int = 12, seed: int = 0) -> list[dict]:
    space = make_space("nb201")
    rng = np.random.default_rng(seed)
    archs = list({space.sample(rng) for _ in range(n * 2)})[:n]
    return [{"arch": a, "valid_acc": 0.5 + i / 100, "test_acc": 0.4 + i / 200, "train_seconds": 100.0 + i,
             **({"params": 1000 + i} if i % 2 else {})} for i, a in enumerate(archs)]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_table_round_trip(tmp_path, suffix):
    rows = _rows()
    path = write_table(tmp_path / f"table{suffix}", rows)
    evaluator = TableEvaluator(path, make_space("nb201"))
    assert len(evaluator) == len(rows)
    for row in rows:
        metrics = evaluator(row["arch"])
        assert metrics["objective"] == metrics["valid_acc"] == pytest.approx(row["valid_acc"])
        assert metrics["test_acc"] == pytest.approx(row["test_acc"])
        assert metrics["train_seconds"] == pytest.approx(row["train_seconds"])
        assert metrics.get("params") == row.get("params")
    by_test = TableEvaluator(path, "nb201", metric="test_acc")
    assert by_test(rows[3]["arch"])["objective"] == pytest.approx(rows[3]["test_acc"])
    # any C/N: the table scores the cell; a string works too
    small = make_space("nb201", C=4, N=1).arch_from_ops(make_space("nb201").ops(rows[0]["arch"]))
    assert evaluator(small)["valid_acc"] == pytest.approx(rows[0]["valid_acc"])
    assert evaluator(NB201Space.to_string(rows[0]["arch"]))["valid_acc"] == pytest.approx(rows[0]["valid_acc"])


def test_json_mapping_form(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({EXAMPLE: {"valid_acc": 0.9, "test_acc": 0.88, "train_seconds": 12.5, "flops": 3}}))
    metrics = TableEvaluator(path)(NB201Space.from_string(EXAMPLE))
    assert metrics == {"objective": 0.9, "valid_acc": 0.9, "test_acc": 0.88, "train_seconds": 12.5, "flops": 3.0}


HEADER = "arch,valid_acc,test_acc,train_seconds\n"


@pytest.mark.parametrize("name, text, match", [
    ("empty.csv", "", "is empty"),
    ("blank.json", "  \n", "is empty"),
    ("header.csv", HEADER, "has no rows"),
    ("nolist.json", "[]", "has no rows"),
    ("columns.csv", f"arch,valid_acc\n{EXAMPLE},0.9\n", r"lacks column\(s\) \['test_acc'\]"),
    ("malformed.csv", f"{HEADER}{EXAMPLE},0.9,0.8,10\n|nor_conv_3x3~0|,0.9,0.8,10\n", "row 3: malformed NAS-Bench-201"),
    ("unknown_op.csv", f"{HEADER}{_uniform('conv_9x9')},0.9,0.8,10\n", "row 2: .*unknown op 'conv_9x9'"),
    ("number.csv", f"{HEADER}{EXAMPLE},high,0.8,10\n", "row 2: valid_acc='high' is not a number"),
    ("nan.csv", f"{HEADER}{EXAMPLE},nan,0.8,10\n", "row 2: valid_acc='nan' is not finite"),
    ("missing.csv", f"{HEADER}{EXAMPLE},0.9,,10\n", r"row 2 lacks \['test_acc'\]"),
    ("dup.csv", f"{HEADER}{EXAMPLE},0.9,0.8,10\n{EXAMPLE} ,0.9,0.8,10\n", "row 3 repeats .*first at row 2"),
    ("syntax.json", "[{", "not valid JSON"),
    ("row.json", json.dumps([{"arch": EXAMPLE, "valid_acc": 0.9}]), r"row 1 lacks \['test_acc'\]"),
    ("scalar.json", "3", "must hold a list of rows"),
    ("table.txt", HEADER, "must be a .csv or .json"),
])
def test_bad_tables_are_config_errors_naming_file_and_row(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        TableEvaluator(path, "nb201")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_arch_not_in_table(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TableEvaluator(tmp_path / "nope.csv")
    path = write_table(tmp_path / "t.csv", _rows(3))
    evaluator = TableEvaluator(path)
    other = NB201Space.from_string(_uniform("avg_pool_3x3"))
    assert other not in evaluator
    with pytest.raises(ConfigError, match=r"is not in table .*t\.csv \(3 rows\); add its row"):
        evaluator(other)


def test_table_options_are_checked(tmp_path):
    path = write_table(tmp_path / "t.csv", _rows(2))
    with pytest.raises(ConfigError, match="metric 'params'"):
        TableEvaluator(path, "nb201", metric="params")
    with pytest.raises(ConfigError, match="arch string form"):
        TableEvaluator(path, "darts")
    with pytest.raises(ConfigError, match=r"lacks \['test_acc'\]"):  # train_seconds is optional
        write_table(tmp_path / "x.csv", [{"arch": EXAMPLE, "valid_acc": 1}])


def test_the_table_evaluator_by_name(tmp_path):
    from nasforge.evaluators import make_evaluator

    rows = _rows(4)
    path = write_table(tmp_path / "t.json", rows)
    evaluator = make_evaluator("table", {"path": str(path), "metric": "test_acc"}, make_space("nb201"))
    assert isinstance(evaluator, TableEvaluator)
    assert evaluator(rows[1]["arch"])["objective"] == pytest.approx(rows[1]["test_acc"])


def test_from_api_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    with pytest.raises(ConfigError, match="pip install nats_bench"):
        TableEvaluator.from_api(None)
    with pytest.raises(ConfigError, match="12 or 200"):
        TableEvaluator.from_api(None, epochs=50)
    with pytest.raises(ConfigError, match="does not exist"):
        TableEvaluator.from_api(tmp_path / "NATS-tss.pickle")


def test_from_api_maps_the_benchmark_answers(tmp_path, monkeypatch):
    """A stand-in for the nats_bench API (same calls and keys): percentages become fractions."""
    import types

    known = NB201Space.to_string(NB201Space.from_string(EXAMPLE))
    calls = []

    class FakeApi:
        def query_index_by_arch(self, arch):
            return 7 if arch == known else -1

        def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
            calls.append((index, dataset, hp, is_random))
            return {"valid-accuracy": 91.5, "test-accuracy": 90.25, "train-all-time": 1234.5}

        def get_cost_info(self, index, dataset, hp="12"):
            return {"params": 0.86, "flops": 121.8, "latency": 0.0123}

    def create(path, space, fast_mode=False, verbose=True):
        assert space == "tss" and path == str(tmp_path / "bench")
        return FakeApi()

    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=create))
    (tmp_path / "bench").mkdir()
    evaluator = TableEvaluator.from_api(tmp_path / "bench", dataset="cifar100", epochs=200)
    metrics = evaluator(NB201Space.from_string(EXAMPLE))
    assert metrics == {"objective": 0.915, "valid_acc": 0.915, "test_acc": 0.9025, "train_seconds": 1234.5,
                       "params": 0.86, "flops": 121.8, "latency": 0.0123}
    assert calls == [(7, "cifar100", "200", False)]
    with pytest.raises(ConfigError, match="is not in benchmark"):
        evaluator(NB201Space.from_string(_uniform("none")))


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["gdas", "darts"])
def test_cli_search_on_nb201_digits_end_to_end(tmp_path: Path, strategy):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    proc = subprocess.run(
        [sys.executable, "-m", "nasforge.cli", "search", "--space", "nb201", "--strategy", strategy,
         "--data", "digits", "--set", "space.C=4", "--set", "space.N=1", "--set", "strategy.epochs=1",
         "--set", "train.epochs=1", "--out", str(out), "-q"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "nb201" and result["strategy"] == strategy and result["search_epochs"] == 1
    arch = Arch.from_json(out / "arch.json")
    assert (arch["C"], arch["N"]) == (4, 1)
    assert result["arch_summary"].startswith(NB201Space.to_string(arch))
    model, loaded_arch, shape = load_model(out / "model.pt")
    assert loaded_arch == arch and model(torch.randn(2, *shape)).shape == (2, 10)
