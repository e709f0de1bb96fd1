"""The shared one-shot loop: every one-shot method runs through it, resumes exactly mid-epoch,
runs in bf16 on the CPU, and checkpoints load on the CPU."""

from __future__ import annotations

import pytest
import torch

from nasforge.data import synthetic_dataset
from nasforge.experiment import Experiment
from nasforge.oneshot.loop import SearchLoop
from nasforge.progress import Progress
from nasforge.spaces import make_space
from nasforge.strategies import make_strategy
from nasforge.strategies.oneshot import OneShotStrategy
from nasforge.training import Engine, EngineConfig
from test_densenas import TINY
from test_densenas import fake_table as dense_table
from test_proxyless import fake_table as mbconv_table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(num_samples=160, seed=0)


def _method(name: str, tmp_path, **extra):
    """(strategy, space) of a short run of each one-shot method on tiny synthetic data."""
    latency = None
    if name.startswith("proxyless"):
        table = tmp_path / "mbconv_table.json"
        mbconv_table(make_space("mbconv")).save(table)
        options = {"epochs": 3, "warmup_epochs": 1, "batch_size": 16}
        latency = {"table": str(table), "loss": "mul"}
        options.update({"grad_estimator": "reinforce", "rl_samples": 2} if name == "proxyless-rl"
                       else {"arch_every": 2})
        space = make_space("mbconv")
    elif name == "densenas":
        space = make_space("dense", **TINY)
        table = dense_table(space, tmp_path / "dense_table.json")
        options = {"epochs": 3, "warmup_fraction": 0.34, "batch_size": 16}
        latency = {"weight": 0.2, "table": str(table)}
    elif name == "gdas-nb201":
        options, space = {"epochs": 2, "batch_size": 16}, make_space("nb201")
        name = "gdas"
    else:
        options = {"epochs": 2, "batch_size": 16}
        space = make_space("darts")
    strategy = make_strategy(name.split("-")[0], {**options, **extra}, "synthetic", latency=latency)
    return strategy, space


class _StopAt:
    """Interrupts the search right after the mid-epoch checkpoint at (epoch, tick)."""

    def __init__(self, epoch: int, tick: int):
        self.epoch, self.tick = epoch, tick

    def __call__(self, strategy, epoch, record):
        pass

    def step_checkpointed(self, strategy, epoch, tick):
        if (epoch, tick) == (self.epoch, self.tick):
            raise KeyboardInterrupt


METHODS = ["darts", "darts-2nd", "gdas", "gdas-nb201", "proxyless", "proxyless-rl", "densenas"]


@pytest.mark.parametrize("name", METHODS)
def test_every_one_shot_method_resumes_mid_epoch_exactly(tmp_path, small, name):
    extra = {"order": 2} if name == "darts-2nd" else {}
    base = "darts" if name == "darts-2nd" else name
    full, space = _method(base, tmp_path, **extra)
    assert isinstance(full, OneShotStrategy)
    full_result = full.search(space, small, seed=5)

    exp = Experiment.create(tmp_path / "cut", {}, force=True)
    cut, _ = _method(base, tmp_path, checkpoint_steps=2, **extra)
    with pytest.raises(KeyboardInterrupt):
        cut.search(space, small, experiment=exp, seed=5, callbacks=[_StopAt(1, 2)])
    state = exp.load_checkpoint("search")
    assert state["epoch"] == 0 and state["partial"]["epoch"] == 1 and state["partial"]["tick"] == 2
    resumed, _ = _method(base, tmp_path, checkpoint_steps=2, **extra)
    resumed_result = resumed.search(space, small, experiment=exp, seed=5)

    assert resumed_result.arch == full_result.arch
    for a, b in zip(full.arch_parameters(), resumed.arch_parameters()):
        assert torch.equal(a, b)
    last_full, last_resumed = full_result.history[-1]["metrics"], resumed_result.history[-1]["metrics"]
    for key in last_full:
        if key != "seconds":
            assert last_resumed[key] == last_full[key], key
    assert [e["epoch"] for e in exp.store.epochs("search")] == list(range(len(full_result.history)))


def test_the_loop_owns_optimisers_and_schedule(small, tmp_path):
    strategy, space = _method("darts", tmp_path)
    loop = SearchLoop(strategy, space, small, None, Progress(), 0, (),
                      Engine(EngineConfig(device="cpu")))
    assert strategy.w_opt is loop.w_opt and strategy.a_opt is loop.a_opt
    assert {id(p) for p in loop.a_opt.param_groups[0]["params"]} == {id(a) for a in strategy.arch_parameters()}
    assert loop.w_steps == min(loop.n_w, loop.n_a)


def test_device_cpu_equals_the_default_engine(small, tmp_path):
    a, space = _method("gdas", tmp_path)
    b, _ = _method("gdas", tmp_path)
    ra = a.search(space, small, seed=2)
    rb = b.search(space, small, seed=2, engine=Engine(EngineConfig(device="cpu")))
    assert ra.arch == rb.arch
    assert all(torch.equal(x, y) for x, y in zip(a.arch_parameters(), b.arch_parameters()))


@pytest.mark.parametrize("name", ["darts", "gdas", "proxyless", "densenas"])
def test_bf16_autocast_on_the_cpu_runs_a_search(small, tmp_path, name):
    strategy, space = _method(name, tmp_path, epochs=1) if name != "proxyless" else \
        _method(name, tmp_path, epochs=2, warmup_epochs=0)
    result = strategy.search(space, small, seed=0, engine=Engine(EngineConfig(device="cpu", precision="bf16")))
    metrics = result.history[-1]["metrics"]
    assert metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert 0.0 <= metrics["valid_acc"] <= 1.0
    assert all(a.dtype == torch.float32 for a in strategy.arch_parameters())  # parameters stay float32


def test_search_checkpoint_loads_with_cpu_tensors(small, tmp_path):
    exp = Experiment.create(tmp_path / "run", {}, force=True)
    strategy, space = _method("darts", tmp_path, epochs=1)
    strategy.search(space, small, experiment=exp, seed=0)
    state = exp.load_checkpoint("search")
    tensors = [t for t in state["model"].values()] + list(state["alphas"])
    assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_bn_recalibration_changes_only_the_recorded_valid_accuracy(small, tmp_path):
    off, space = _method("darts", tmp_path)
    on, _ = _method("darts", tmp_path)
    r_off = off.search(space, small, seed=1, engine=Engine(EngineConfig(device="cpu", bn_recalibration=0)))
    r_on = on.search(space, small, seed=1, engine=Engine(EngineConfig(device="cpu", bn_recalibration=4)))
    assert r_off.arch == r_on.arch  # the search itself never reads running statistics
    assert all(torch.equal(x, y) for x, y in zip(off.arch_parameters(), on.arch_parameters()))
    assert [h["metrics"]["train_loss"] for h in r_off.history] == [h["metrics"]["train_loss"] for h in r_on.history]
