"""NAS-RL (REINFORCE): log-probabilities, the policy-gradient step, the depth schedule, the
baseline, checkpoint round trip, and resume through the trial loop."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from nasforge.errors import ArchError, ConfigError
from nasforge.evaluators.synthetic import SyntheticTable
from nasforge.experiment import Experiment
from nasforge.runners.local import LocalRunner
from nasforge.spaces import make_space
from nasforge.spaces.layers import Layer
from nasforge.strategies import make_strategy
from nasforge.strategies.reinforce import ReinforceConfig, ReinforceStrategy, moving_baseline
from nasforge.trials import Budget, run_trials


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _strategy(space, seed=0, **options) -> ReinforceStrategy:
    strategy = make_strategy("reinforce", options, "digits")
    strategy.setup(space, seed)
    return strategy


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


def test_setup_rejects_other_spaces_and_spaces_without_conv():
    with pytest.raises(ConfigError, match="needs the layer space.*--space layers"):
        make_strategy("reinforce").setup(make_space("darts"), 0)
    with pytest.raises(ConfigError, match="no 'conv'"):
        make_strategy("reinforce").setup(make_space("layers", types=["fc", "gap"], image_size=4), 0)
    with pytest.raises(ConfigError):
        make_strategy("reinforce", {"batch": 0})
    assert ReinforceConfig().lr == 6e-4 and ReinforceConfig().hidden == 35  # the paper's settings


@pytest.mark.parametrize("workers", [1, 3])
def test_a_killed_reinforce_search_resumes_to_the_uninterrupted_result(tmp_path, workers):
    space = make_space("layers", skips=True)
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
