"""NAS-RL (REINFORCE): log-probabilities, the policy-gradient step, the depth schedule, the
baseline, checkpoint round trip, and resume through the trial loop, on the layer space and
over any space's declared choices (one token per decision; the CLI on nb201 with a table),
including the dense space's path decisions (softmax masked to the allowed values)."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.evaluators.synthetic import SyntheticTable
from nasforge.evaluators.table import write_table
from nasforge.experiment import Experiment
from nasforge.runners.local import LocalRunner
from nasforge.spaces import make_space
from nasforge.spaces.base import InputChoice, OpChoice, SearchSpace, ValueChoice
from nasforge.spaces.layers import Layer
from nasforge.spaces.nb201 import EDGE_LABELS, PRIMITIVES
from nasforge.strategies import make_strategy
from nasforge.strategies.reinforce import ChoiceSequence, ReinforceConfig, ReinforceStrategy, moving_baseline
from nasforge.trials import Budget, run_trials


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _strategy(space, seed=0, **options) -> ReinforceStrategy:
    strategy = make_strategy("reinforce", options, "digits")
    strategy.setup(space, seed)
    return strategy


class ToySpace(SearchSpace):
    """Three decisions' worth of choices: an op (3), two of three inputs (3), a fixed width."""

    name = "toy"

    def choices(self):
        return {"op": OpChoice("op", ("a", "b", "c")), "in": InputChoice("in", 3, 2),
                "width": ValueChoice("width", (16,)), "act": ValueChoice("act", ("relu", "gelu"))}


class RuledSpace(ToySpace):
    """A toy space with a cross-choice rule (which one token per choice cannot follow)."""

    name = "ruled"

    def check_consistency(self, arch):
        if arch["op"] == "a" and arch["act"] == "gelu":
            raise ArchError("op 'a' needs act 'relu'")


class FixedSpace(SearchSpace):
    """A space whose only choice has one value: nothing to decide."""

    name = "fixed"

    def choices(self):
        return {"width": ValueChoice("width", (16,))}


def best_count(arch: Arch) -> int:
    """Edges of an nb201 cell holding nor_conv_3x3 (the best op of the tests' objective)."""
    return sum(arch[label] == "nor_conv_3x3" for label in EDGE_LABELS)


def nb201_table(path: Path) -> Path:
    """A table of all 15,625 nb201 cells whose valid accuracy grows with the nor_conv_3x3 edges."""
    space = make_space("nb201")
    rows = []
    for i, ops in enumerate(itertools.product(PRIMITIVES, repeat=len(EDGE_LABELS))):
        arch = Arch("nb201", {**dict(zip(EDGE_LABELS, ops)), "C": 16, "N": 5}, space.version)
        acc = 0.4 + 0.08 * best_count(arch) + i * 1e-7
        rows.append({"arch": arch, "valid_acc": acc, "test_acc": acc - 0.01, "train_seconds": 10.0})
    return write_table(path, rows)


@pytest.mark.parametrize("skips", [False, True])
def test_log_prob_of_a_sample_is_the_sum_of_the_log_probabilities_used(skips):
    space = make_space("layers", skips=skips, strides=[1, 2])
    strategy = _strategy(space)
    for depth in (1, 3, 5):
        arch, roll = strategy.sample(depth)
        assert len(space.layers_of(arch)) == depth
        decisions = 5 * depth + (depth * (depth - 1) // 2 if skips else 0)  # tokens + anchor decisions
        assert len(roll.probs) == decisions
        expected = float(np.sum(np.log(roll.probs)))
        assert strategy.log_prob(arch).item() == pytest.approx(expected, abs=1e-4)
        assert strategy.log_prob(arch).item() == pytest.approx(roll.log_prob.item(), abs=1e-6)


def test_log_prob_is_a_distribution_over_a_tiny_space():
    # 2 kernel heights x 2 filter counts, one layer: the four archs' probabilities sum to one
    space = make_space("layers", kernel_sizes=[1, 3], filters=[8, 16], types=["conv"], max_depth=1)
    strategy = _strategy(space)
    total = 0.0
    for kh in (1, 3):
        for kw in (1, 3):
            for f in (8, 16):
                arch = space.arch_of([Layer("conv", kh, kw, 1, 1, f)])
                total += strategy.log_prob(arch).exp().item()
    assert total == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ArchError, match="only emits conv layers"):
        strategy.log_prob(make_space("layers").arch_of([Layer("gap")]))


def test_a_reinforce_step_moves_probability_toward_the_rewarded_choice():
    space = make_space("layers", kernel_sizes=[3], filters=[16, 64], types=["conv"], max_depth=1)
    strategy = _strategy(space, batch=8, lr=0.05, start_layers=1, reward_power=1.0)
    good = space.arch_of([Layer("conv", 3, 3, 1, 1, 64)])
    before = strategy.log_prob(good).exp().item()
    for _ in range(8):
        arch = strategy.ask()
        strategy.tell(arch, {"objective": 1.0 if arch == good else 0.0})
    assert strategy.updates == 1
    after = strategy.log_prob(good).exp().item()
    assert after > before + 0.02
    for _ in range(8 * 10):
        arch = strategy.ask()
        strategy.tell(arch, {"objective": 1.0 if arch == good else 0.0})
    assert strategy.log_prob(good).exp().item() > 0.9


def test_baseline_is_a_moving_average_started_at_the_first_batch_mean():
    space = make_space("layers")
    strategy = _strategy(space, batch=2, baseline_decay=0.5, reward_power=1.0)
    rewards = [0.2, 0.4, 1.0, 0.0, 0.5]
    for r in rewards:
        strategy.tell(strategy.ask(), {"objective": r})
    # batch 1: baseline = mean(0.2, 0.4) = 0.3 -> 0.25 -> 0.325; batch 2: -> 0.6625 -> 0.33125
    assert strategy.baseline == pytest.approx(0.33125)
    assert strategy.history[2]["baseline"] == pytest.approx(0.325)
    assert moving_baseline(rewards, 2, 0.5) == pytest.approx([0.3, 0.3, 0.325, 0.325, 0.33125])
    strategy.tell(strategy.ask(), None)  # a failed child completes the batch without a gradient
    assert strategy.updates == 3 and strategy.told == []
    assert strategy.reward({"objective": 0.5}) == pytest.approx(0.5)
    assert _strategy(space).reward({"objective": -0.5}) == pytest.approx(-0.125)  # cubed, sign kept


def test_depth_grows_on_schedule_up_to_the_space_depth():
    space = make_space("layers", max_depth=4)
    strategy = _strategy(space, start_layers=2, layers_step=1, layers_every=3, batch=1)
    depths = []
    for _ in range(12):
        arch = strategy.ask()
        depths.append(len(space.layers_of(arch)))
        strategy.tell(arch, {"objective": 0.5})
    assert depths == [2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]
    assert make_strategy("reinforce", {}, "cifar10").config.layers_every == 1600  # paper schedule


def test_state_dict_round_trip_restores_everything_and_the_next_asks():
    space = make_space("layers", skips=True, strides=[1, 2])
    a = _strategy(space, seed=3, batch=4, lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(6):  # one update and half a batch told
        a.tell(a.ask(), {"objective": float(rng.random())})
    pending = a.ask()  # asked, not told
    state = copy.deepcopy(a.state_dict())
    b = _strategy(space, seed=99, batch=4, lr=0.01)
    b.load_state_dict(state)
    assert b.baseline == a.baseline and b.pending == [pending] and b.told == a.told
    for pa, pb in zip(a.controller.parameters(), b.controller.parameters()):
        assert torch.equal(pa, pb)
    for _ in range(7):
        x, y = a.ask(), b.ask()
        assert x == y
        r = float(rng.random())
        a.tell(x, {"objective": r})
        b.tell(y, {"objective": r})
    assert a.baseline == b.baseline and a.updates == b.updates == 3


def test_setup_rejects_cross_choice_rules_without_a_decision_order_and_spaces_without_conv():
    assert ReinforceStrategy.supports(make_space("dense")) is None  # rules, and a decision order that keeps them
    reason = ReinforceStrategy.supports(RuledSpace())
    assert "'ruled' has cross-choice rules" in reason and "no decision order" in reason and "\n" not in reason
    with pytest.raises(ConfigError, match="'ruled' has cross-choice rules.*use random or evolution"):
        make_strategy("reinforce").setup(RuledSpace(), 0)
    assert "space 'fixed' has nothing to decide" in ReinforceStrategy.supports(FixedSpace())
    opaque = type("OpaqueSpace", (ToySpace,), {"name": "opaque", "choices": lambda self: {"cell": object()}})
    assert "choice 'cell' of space 'opaque' (object) has none" in ReinforceStrategy.supports(opaque())
    with pytest.raises(ConfigError, match="no 'conv'"):
        make_strategy("reinforce").setup(make_space("layers", types=["fc", "gap"], image_size=4), 0)
    with pytest.raises(ConfigError):
        make_strategy("reinforce", {"batch": 0})
    assert ReinforceConfig().lr == 6e-4 and ReinforceConfig().hidden == 35  # the paper's settings


@pytest.mark.parametrize("space_name, workers", [("layers", 1), ("layers", 3), ("nb201", 3), ("dense", 3)])
def test_a_killed_reinforce_search_resumes_to_the_uninterrupted_result(tmp_path, space_name, workers):
    space = make_space(space_name, **({"skips": True} if space_name == "layers" else {}))
    table = SyntheticTable(space)

    class Cut:
        def __init__(self, at=None):
            self.at, self.calls = at, 0

        def __call__(self, arch):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return table(arch)

    def search(path, evaluator):
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {})
        try:
            strategy = make_strategy("reinforce", {"batch": 4, "lr": 0.01, "layers_every": 6}, "digits")
            return run_trials(strategy, space, evaluator, Budget(trials=14), experiment=exp,
                              runner=LocalRunner(evaluator, workers=workers), seed=5)
        finally:
            exp.close()

    full = search(tmp_path / "full", Cut())
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "cut", Cut(at=7))
    resumed = search(tmp_path / "cut", Cut())

    def rows(path):
        exp = Experiment.open(path)
        try:
            return [(r["arch_hash"], json.dumps(r["metrics"], sort_keys=True)) for r in exp.store.trials()]
        finally:
            exp.close()

    assert rows(tmp_path / "cut") == rows(tmp_path / "full")
    assert resumed.arch == full.arch


@pytest.mark.slow
def test_cli_reinforce_search_and_report(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasforge.cli", "search", "--space", "layers", "--strategy", "reinforce",
           "--evaluator", "synthetic", "--trials", "16", "--out", str(out), "--set", "train.epochs=1",
           "--set", "strategy.batch=4", "--set", "latency.repeats=1", "--set", "latency.warmup=0", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "result.json").read_text())["space"] == "layers"
    done = subprocess.run([sys.executable, "-m", "nasforge.cli", "report", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "report" / "reinforce_reward.png").is_file()
    assert "NAS-RL controller (REINFORCE)" in (out / "report.html").read_text()


# --------------------------------------------------------------------------- any space's declared choices
def test_choice_sequence_skips_single_valued_choices_and_indexes_input_combinations():
    seq = ChoiceSequence(ToySpace())
    assert seq.labels == ["op", "in", "act"] and seq.sizes == [3, 3, 2] and seq.fixed == {"width": 16}
    assert seq.values[1] == ((0, 1), (0, 2), (1, 2))  # the sorted combinations of 2 of 3 inputs
    arch = seq.arch([2, 1, 0])
    assert arch == Arch("toy", {"op": "c", "in": (0, 2), "width": 16, "act": "relu"})
    ToySpace().validate(arch)
    assert seq.indices(arch) == [2, 1, 0]
    assert seq.indices(Arch.from_dict(arch.to_dict(), validate=False)) == [2, 1, 0]  # lists from JSON match the tuples
    with pytest.raises(ArchError, match="choice 'in': .* is not a value of the space"):
        seq.indices(arch.with_choice("in", [1, 0]))
    with pytest.raises(ArchError, match="belongs to space 'nb201'"):
        seq.indices(make_space("nb201").sample(np.random.default_rng(0)))


def test_choice_controller_is_a_distribution_over_every_arch_of_a_tiny_space():
    space = ToySpace()
    strategy = _strategy(space, seed=1)
    assert list(strategy.controller.heads) == ["0", "1", "2"] and not hasattr(strategy.controller, "v")
    archs = [strategy.sequence.arch(ix) for ix in itertools.product(range(3), range(3), range(2))]
    total = sum(strategy.log_prob(a).exp().item() for a in archs)
    assert total == pytest.approx(1.0, abs=1e-5)
    for _ in range(5):
        arch, roll = strategy.sample()
        space.validate(arch)
        assert len(roll.probs) == 3
        assert strategy.log_prob(arch).item() == pytest.approx(float(np.sum(np.log(roll.probs))), abs=1e-5)


@pytest.mark.parametrize("name", ["nb201", "darts", "mbconv"])
def test_controller_emits_valid_archs_of_every_space_with_one_token_per_choice(name):
    space = make_space(name)
    strategy = _strategy(space, seed=2, batch=4, lr=0.01)
    tokens = [label for label, c in space.choices().items() if c.size > 1]
    assert strategy.sequence.labels == tokens
    seen = set()
    for i in range(12):
        arch = strategy.ask()
        space.validate(arch)
        seen.add(arch)
        strategy.tell(arch, {"objective": 0.5 + 0.01 * i})
    assert strategy.updates == 3 and len(seen) > 1 and "depth" not in strategy.history[0]
    assert np.isfinite(strategy.log_prob(arch).item())


def test_reinforce_on_nb201_raises_the_probability_of_the_best_op():
    space = make_space("nb201")
    strategy = _strategy(space, seed=0, batch=8, lr=0.01, reward_power=1.0)
    best = PRIMITIVES.index("nor_conv_3x3")
    before = [p[best] for p in strategy.probabilities().values()]
    assert before == pytest.approx([0.2] * 6, abs=0.05)
    for _ in range(8 * 12):
        arch = strategy.ask()
        strategy.tell(arch, {"objective": best_count(arch) / 6})
    after = [p[best] for p in strategy.probabilities().values()]
    assert all(a > b for a, b in zip(after, before)) and np.mean(after) > 0.5


def test_choice_state_dict_round_trip_restores_the_next_asks():
    space = make_space("nb201")
    a = _strategy(space, seed=3, batch=4, lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(6):
        a.tell(a.ask(), {"objective": float(rng.random())})
    pending = a.ask()
    state = copy.deepcopy(a.state_dict())
    b = _strategy(space, seed=99, batch=4, lr=0.01)
    b.load_state_dict(state)
    assert b.baseline == a.baseline and b.pending == [pending] and b.told == a.told
    for _ in range(7):
        x, y = a.ask(), b.ask()
        assert x == y
        r = float(rng.random())
        a.tell(x, {"objective": r})
        b.tell(y, {"objective": r})
    assert a.baseline == b.baseline and a.updates == b.updates == 3
    for pa, pb in zip(a.controller.parameters(), b.controller.parameters()):
        assert torch.equal(pa, pb)


def test_cli_reinforce_on_nb201_with_the_table_evaluator(tmp_path):
    from test_cli import run_main

    table = nb201_table(tmp_path / "nb201.csv")
    out = tmp_path / "run"
    code = run_main("search", "--space", "nb201", "--strategy", "reinforce", "--evaluator", "table", "--table", table,
                    "--trials", "16", "--out", out, "--data", "synthetic", "--set", "space.C=4", "--set", "space.N=1",
                    "--set", "train.epochs=1", "--set", "strategy.batch=4", "--set", "latency.repeats=1",
                    "--set", "latency.warmup=0", "-q")
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "nb201" and result["strategy"] == "reinforce"
    exp = Experiment.open(out)
    try:
        trials = exp.store.trials()
    finally:
        exp.close()
    assert len(trials) == 16
    arch = Arch.from_json(out / "arch.json")
    assert (arch["C"], arch["N"]) == (4, 1)
    best = max(trials, key=lambda r: r["metrics"]["objective"])
    assert best["metrics"]["objective"] == pytest.approx(0.4 + 0.08 * best_count(arch), abs=1e-2)


# --------------------------------------------------------------------------- the dense space's path decisions
DENSE_TINY = dict(widths=[4, 6, 8, 10], scales=[0, 0, 1, 1], stages=[0, 1, 2, 2], layers=[0, 1, 1, 1],
                  connections=2, last=8)  # 441 archs; blocks 1 and 2 have one possible input


def dense_archs(space) -> list[Arch]:
    """Every architecture of a dense space, from its decision order."""
    out, todo = [], [{}]
    while todo:
        values = todo.pop()
        step = space.next_decision(values)
        if step is None:
            out.append(space.complete(values))
        else:
            todo += [{**values, step[0]: v} for v in step[1]]
    return out


def dense_objective(space, arch) -> float:
    """A hand objective: half for ending the path at the last block, half for the share of the
    kept blocks' stacking layers holding mb_k3_e6."""
    path = space.path(arch)
    ops = [arch[f"block{b}.layer{l}"] for b in path[1:-1] for l in range(space.layers[b])]
    return 0.5 * (path[-2] == space.tail - 1) + 0.5 * float(np.mean([o == "mb_k3_e6" for o in ops]))


def test_masked_controller_is_a_distribution_over_exactly_the_valid_dense_archs():
    space = make_space("dense", **DENSE_TINY)
    strategy = _strategy(space, seed=1)
    # a head per choice of two or more values (block{i}.input holds -1 too), in choices() order
    assert strategy.sequence.labels == [label for label, c in space.choices().items() if c.size > 1]
    archs = dense_archs(space)
    assert len(archs) == space.size() == 441
    total = sum(strategy.log_prob(a).exp().item() for a in archs)
    assert total == pytest.approx(1.0, abs=1e-4)
    for _ in range(20):
        arch, roll = strategy.sample()
        space.validate(arch)
        path = space.path(arch)
        # tokens: tail.input, one op per kept layer, and the inputs of blocks with two predecessors
        assert len(roll.probs) == 1 + sum(space.layers[b] for b in path[1:-1]) + sum(b == 3 for b in path)
        assert strategy.log_prob(arch).item() == pytest.approx(float(np.sum(np.log(roll.probs))), abs=1e-5)
        probs = strategy.probabilities(arch)
        assert next(iter(probs)) == "tail.input" and all(sum(p) == pytest.approx(1.0, abs=1e-6) for p in probs.values())
        if "block3.input" in probs:
            assert probs["block3.input"][0] == 0.0  # -1 (dropped) is never allowed on the path
    on_path = space.arch_from_path([0, 1, 3, 4], {(1, 0): "mb_k3_e3", (3, 0): "skip"})
    with pytest.raises(ArchError, match="'block3.input': -1 is not allowed after the earlier decisions"):
        strategy.log_prob(on_path.with_choice("block3.input", -1))
    with pytest.raises(ArchError, match="'block1.input': -1 is not allowed"):
        strategy.log_prob(on_path.with_choice("block1.input", -1))


def test_reinforce_on_dense_emits_only_valid_archs_and_learns_a_path_and_an_op():
    space = make_space("dense")
    strategy = _strategy(space, seed=0, batch=8, lr=0.05, reward_power=1.0)
    last = strategy.sequence.values[strategy.sequence.labels.index("tail.input")].index(space.tail - 1)
    before = strategy.probabilities()["tail.input"][last]
    scores, paths = [], set()
    for _ in range(8 * 12):
        arch = strategy.ask()
        space.validate(arch)
        paths.add(tuple(space.path(arch)))
        scores.append(dense_objective(space, arch))
        strategy.tell(arch, {"objective": scores[-1]})
    assert strategy.updates == 12 and len(paths) > 10
    after = strategy.probabilities()["tail.input"][last]
    assert before < 0.4 and after > 0.9
    assert np.mean(scores[-24:]) > np.mean(scores[:24]) + 0.25


def test_dense_state_dict_round_trip_restores_the_next_asks():
    space = make_space("dense")
    a = _strategy(space, seed=3, batch=4, lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(6):
        a.tell(a.ask(), {"objective": float(rng.random())})
    state = copy.deepcopy(a.state_dict())
    b = _strategy(space, seed=99, batch=4, lr=0.01)
    b.load_state_dict(state)
    for _ in range(10):
        x, y = a.ask(), b.ask()
        assert x == y
        r = float(rng.random())
        a.tell(x, {"objective": r})
        b.tell(y, {"objective": r})
    assert a.baseline == b.baseline and a.updates == b.updates == 4
    for pa, pb in zip(a.controller.parameters(), b.controller.parameters()):
        assert torch.equal(pa, pb)


def test_cli_reinforce_on_dense_with_the_synthetic_evaluator(tmp_path, strategy="reinforce"):
    from test_cli import run_main

    out = tmp_path / "run"
    code = run_main("search", "--space", "dense", "--strategy", strategy, "--evaluator", "synthetic", "--trials", "8",
                    "--out", out, "--data", "synthetic", "--set", "train.epochs=1", "--set", "latency.repeats=1",
                    "--set", "latency.warmup=0", "-q")
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "dense" and result["strategy"] == strategy
    arch = Arch.from_json(out / "arch.json")
    make_space("dense").validate(arch)


# --------------------------------------------------------------------------- the paper's settings
def test_depth_grows_by_two_every_1600_children_up_to_max_layers():
    """NAS-RL sec. 4.1: start at 6 layers, +2 every 1,600 children; the cap is a parameter."""
    space = make_space("layers", image_size=32, max_depth=20)
    strategy = _strategy(space, start_layers=6, layers_every=1600)
    assert strategy.config.layers_step == 2  # the paper's step is the default
    assert [strategy.depth(c) for c in (0, 1599, 1600, 3199, 3200, 11199, 11200, 12799)] == \
        [6, 6, 8, 8, 10, 18, 20, 20]
    capped = _strategy(space, start_layers=6, layers_every=1600, max_layers=15)
    assert [capped.depth(c) for c in (3200, 4800, 6400, 8000)] == [10, 12, 14, 15]
    with pytest.raises(ConfigError, match="max_layers=21 exceeds the layer space's max_depth=20"):
        _strategy(space, max_layers=21)
    # MetaQNN's grammar ties kernels to the representation: NAS-RL's token-by-token controller is refused
    assert "use space.grammar=nasrl" in ReinforceStrategy.supports(make_space("layers", grammar="metaqnn"))


def test_reward_is_the_cube_of_the_best_valid_accuracy_of_the_last_5_epochs():
    """The train evaluator scores the valid split after each of the last ``valid_epochs`` epochs;
    ``objective=best`` takes their best (reinforce's default), which the controller cubes."""
    from nasforge.data import synthetic_dataset
    from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator
    from nasforge.pipeline import resolve_config

    cfg = resolve_config({"space": {"name": "layers"}, "strategy": {"name": "reinforce"}})
    assert (cfg.evaluator["valid_epochs"], cfg.evaluator["objective"]) == (5, "best")
    data = synthetic_dataset(num_samples=120, num_classes=3, noise=1.5)
    space = make_space("layers")
    arch = space.arch_of(space.chain([Layer("conv", 3, 3, 1, 1, 24), Layer("gap")]))
    config = dict(epochs=7, batch_size=16, lr=0.05)
    last = TrainEvaluator(space, data, TrainEvalConfig(**config))(arch, seed=1)
    best = TrainEvaluator(space, data, TrainEvalConfig(**config, valid_epochs=5, objective="best"))(arch, seed=1)
    assert len(best["valid_accs"]) == 5 and best["valid_accs"][-1] == best["valid_acc"] == last["valid_acc"]
    assert best["objective"] == max(best["valid_accs"]) and last["objective"] == last["valid_acc"]
    strategy = _strategy(space)
    assert strategy.reward(best) == pytest.approx(max(best["valid_accs"]) ** 3)
    with pytest.raises(ConfigError, match="objective=best needs the per-epoch valid accuracies"):
        TrainEvalConfig(objective="best")


def test_metaqnn_restarts_a_model_no_better_than_chance_with_a_lower_learning_rate():
    """MetaQNN sec. 5: a model no better than a random predictor after its first epoch is trained again
    with the learning rate x0.4, at most 5 times. Constant (zero) images on balanced classes: every
    network predicts one class for all, exactly chance, so all 5 restarts happen."""
    from nasforge.data import synthetic_dataset
    from nasforge.data.augment import Augment
    from nasforge.data.datasets import _split_and_build
    from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator

    labels = np.arange(200) % 2
    data = _split_and_build("zeros", np.zeros((200, 1, 8, 8), np.float32), labels, 0, 0.25, ["a", "b"], Augment(),
                            test_fraction=0.2, mean_std=((0.0,), (1.0,)))
    space = make_space("layers", grammar="metaqnn", batch_norm=False)
    arch = space.arch_of(space.chain([Layer("conv", 1, 1, 1, 1, 64)]))
    config = TrainEvalConfig(epochs=2, batch_size=32, optimizer="adam", lr=0.001, restarts=5, lr_schedule="step")
    metrics = TrainEvaluator(space, data, config)(arch, seed=0)
    assert metrics["restarts"] == 5 and metrics["valid_acc"] == 0.5
    learnable = TrainEvaluator(space, synthetic_dataset(num_samples=120, num_classes=3), config)(arch, seed=0)
    assert learnable["restarts"] == 0


@pytest.mark.slow
def test_reinforce_paper_preset_resolves_and_runs_one_trial():
    """The preset on random data of CIFAR-10's shape, one trial of one step (the paper's 50 epochs cut short)."""
    from nasforge.data import synthetic_dataset
    from nasforge.pipeline import build_space, build_strategy, resolve_config
    from nasforge.trials import search_options

    cfg = resolve_config({"preset": "paper", "data": {"name": "cifar10"}, "strategy": {"name": "reinforce"}},
                         [(["evaluator", "steps"], 1), (["evaluator", "batch_size"], 8),
                          (["trials", "max_trials"], 1)])
    assert cfg.strategy["layers_step"] == 2 and cfg.strategy["layers_every"] == 1600
    assert cfg.evaluator["valid_epochs"] == 5 and cfg.evaluator["nesterov"] and cfg.evaluator["epochs"] == 50
    data = synthetic_dataset(num_samples=100, num_classes=10, input_shape=(3, 32, 32))
    space = build_space(cfg)
    result = build_strategy(cfg).search(space, data, seed=0, **search_options(cfg, space, data))
    assert len(space.layers_of(result.arch)) == 6 and space.skips
