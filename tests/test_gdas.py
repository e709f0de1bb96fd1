"""GDAS: hard Gumbel samples with straight-through gradients, one op per edge, the
temperature schedule, the fixed reduction cell, config checks, determinism, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import ConfigError, TrainingError
from nasforge.experiment import Experiment
from nasforge.nn import NodeChoice, OpChoice
from nasforge.oneshot import relax as relax_module
from nasforge.oneshot.relax import Relaxation, gumbel_hard
from nasforge.spaces import make_space
from nasforge.spaces.darts import PRIMITIVES, DartsCell, GdasReductionCell, num_edges
from nasforge.strategies import get_strategy_class, make_strategy
from nasforge.strategies.gdas import GdasConfig, GdasStrategy, temperature

OPS = len(PRIMITIVES)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _strategy(**options) -> GdasStrategy:
    return make_strategy("gdas", {"epochs": 2, **options}, "synthetic")


# --------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("tau", [10.0, 1.0, 0.1])
def test_sample_is_exactly_one_hot_and_index_is_its_argmax(tau):
    torch.manual_seed(0)
    alpha = nn.Parameter(torch.randn(num_edges(4), OPS))
    for _ in range(20):
        index, w = gumbel_hard(alpha, tau)
        assert w.requires_grad
        assert len(index) == num_edges(4) and all(isinstance(i, int) for i in index)
        expected = F.one_hot(torch.tensor(index), OPS).to(w.dtype)
        assert torch.equal(w.detach(), expected)  # exact values, not approximately
        assert w.detach().argmax(-1).tolist() == index


def test_samples_follow_softmax_of_alpha():
    """Gumbel-max draws are exact samples of Categorical(softmax(alpha)), whatever the temperature."""
    torch.manual_seed(1)
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    alpha = probs.log().repeat(500, 1)  # 500 edges at once
    for tau in (10.0, 0.1):
        counts = Counter()
        for _ in range(8):
            counts.update(gumbel_hard(alpha, tau).index)
        freq = torch.tensor([counts[k] for k in range(4)], dtype=torch.float) / 4000
        assert torch.allclose(freq, probs, atol=0.03), freq


def test_backward_reaches_every_op_of_the_edge():
    """Straight-through: one op ran, yet every op's alpha of the edge gets a gradient."""
    torch.manual_seed(0)
    choice = OpChoice("edge", {f"op{k}": nn.Linear(3, 3) for k in range(5)})
    relax = Relaxation(choice)
    alpha = relax.alphas["edge"]
    x = torch.randn(4, 3)
    seen = set()
    for _ in range(30):
        with torch.no_grad():
            alpha.copy_(0.5 * torch.randn(1, 5))
        relax.hard(1.0)
        index = relax.current["edge"].index
        out = choice(x)
        assert torch.equal(out, choice.candidates[index[0]](x))  # forward value is the sampled op's output
        loss = (out - 1.0).pow(2).mean()
        (grad,) = torch.autograd.grad(loss, alpha)
        assert torch.isfinite(grad).all()
        assert (grad.abs() > 0).all(), (index, grad)
        seen.add(index[0])
    assert len(seen) > 1  # several different ops were sampled and checked


def test_infinite_noise_is_resampled(monkeypatch):
    calls = []
    real = relax_module.sample_gumbel

    def flaky(like):
        calls.append(1)
        g = real(like)
        if len(calls) == 1:
            g[0, 0] = float("inf")
        return g

    monkeypatch.setattr(relax_module, "sample_gumbel", flaky)
    index, w = gumbel_hard(torch.zeros(3, OPS), 1.0)
    assert len(calls) == 2
    assert torch.isfinite(w).all() and torch.equal(w, F.one_hot(torch.tensor(index), OPS).float())


def test_nan_alphas_raise_instead_of_looping_forever():
    with pytest.raises(TrainingError, match="NaN"):
        gumbel_hard(torch.full((2, OPS), float("nan")), 1.0)


def test_only_the_sampled_op_runs_in_the_supernet():
    torch.manual_seed(0)
    strategy = _strategy()
    model = make_space("darts").supernet((1, 8, 8), 10, layers=3, channels=4)
    calls = Counter()
    for m in model.modules():
        if isinstance(m, NodeChoice):
            for j, ops in enumerate(m.edges):
                for k, op in enumerate(ops):
                    op.register_forward_hook(lambda mod, inp, out, key=(id(m), j, k): calls.update([key]))
    strategy.relax = Relaxation(model)
    with torch.no_grad():
        for a in strategy.alphas:
            a.copy_(torch.randn_like(a))
    strategy.forward(model, torch.randn(2, 1, 8, 8))
    nodes = [m for m in model.modules() if isinstance(m, NodeChoice)]
    assert len(nodes) == 3 * 4  # 3 cells of 4 nodes
    for node in nodes:
        index = strategy.relax.current[node.label].index  # one sample per label, shared by its cells
        for j in range(node.n_inputs):
            ran = {k: calls[(id(node), j, k)] for k in range(OPS) if calls[(id(node), j, k)]}
            assert ran == {index[j]: 1}


def test_strategy_forward_samples_afresh_each_call():
    torch.manual_seed(0)
    strategy = _strategy()
    strategy.relax = Relaxation(make_space("darts").supernet((1, 8, 8), 10, layers=3, channels=4))
    draws = set()
    for _ in range(5):
        strategy.decide()
        draws.add(tuple(tuple(d.index) for d in strategy.relax.current.values()))
    assert len(draws) > 1


# --------------------------------------------------------------------------- temperature
def test_temperature_is_linear_from_tau_max_to_tau_min():
    strategy = GdasStrategy(GdasConfig(epochs=5, tau_max=10.0, tau_min=0.1))
    taus = []
    for epoch in range(5):
        strategy.epoch_started(epoch)
        taus.append(strategy.tau)
    assert taus[0] == 10.0 and taus[-1] == 0.1
    assert taus == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])
    steps = [b - a for a, b in zip(taus, taus[1:])]
    assert steps == pytest.approx([steps[0]] * 4)
    assert temperature(0, 1, 10.0, 0.1) == 10.0  # a one-epoch search stays at tau_max


def test_epoch_metrics_record_the_temperature(data):
    strategy = make_strategy("gdas", {"epochs": 3, "tau_max": 4.0, "tau_min": 1.0}, "synthetic")
    result = strategy.search(make_space("darts"), data, seed=0)
    assert [h["metrics"]["tau"] for h in result.history] == [4.0, 2.5, 1.0]


# --------------------------------------------------------------------------- config
def test_order_2_is_rejected_with_a_clear_error():
    with pytest.raises(ConfigError, match="first order"):
        make_strategy("gdas", {"order": 2}, "synthetic")
    with pytest.raises(ConfigError, match="first order"):
        GdasConfig(order=2)


def test_config_defaults_and_registration():
    assert get_strategy_class("gdas") is GdasStrategy and GdasStrategy.description
    cfg = make_strategy("gdas", {}, "cifar10").config
    assert (cfg.tau_max, cfg.tau_min, cfg.fixed_reduce, cfg.order) == (10.0, 0.1, False, 1)
    assert (cfg.a_lr, cfg.a_wd, cfg.a_beta1, cfg.a_beta2) == (3e-4, 1e-3, 0.5, 0.999)
    assert (cfg.w_lr, cfg.w_lr_min, cfg.w_momentum) == (0.025, 0.001, 0.9)
    with pytest.raises(ConfigError, match="tau_min"):
        make_strategy("gdas", {"tau_max": 0.5, "tau_min": 1.0}, "synthetic")
    with pytest.raises(ConfigError, match="tau_min"):
        make_strategy("gdas", {"tau_min": 0.0}, "synthetic")


# --------------------------------------------------------------------------- fixed reduction cell
class _Spy(GdasStrategy):
    """Keeps the architecture parameters as they were before the first step."""

    def epoch_started(self, epoch):
        if epoch == 0:
            self.initial = [a.detach().clone() for a in self.alphas]
        super().epoch_started(epoch)


def test_fixed_reduce_supernet_has_no_mixed_ops_in_reduction_cells(data):
    strategy = _strategy(fixed_reduce=True)
    model = strategy.build_supernet(make_space("darts"), data)
    reductions = [c for c in model.cells if c.reduction]
    normals = [c for c in model.cells if not c.reduction]
    assert reductions and normals
    for cell in reductions:
        assert isinstance(cell, GdasReductionCell)
        assert not any(isinstance(m, NodeChoice) for m in cell.modules())
    for cell in normals:
        assert isinstance(cell, DartsCell)
    # it has only normal-cell choices, runs and keeps the shapes
    strategy.relax = Relaxation(model)
    assert all(label.startswith("normal.") for label in strategy.relax.labels)
    assert strategy.forward(model, data.x_train[:3]).shape == (3, data.num_classes)
    # without the option, reduction cells are searched
    plain = _strategy().build_supernet(make_space("darts"), data)
    assert all(isinstance(c, DartsCell) for c in plain.cells)


def test_fixed_reduce_search_learns_only_normal_alphas(data):
    space = make_space("darts")
    strategy = _Spy(make_strategy("gdas", {"epochs": 2, "fixed_reduce": True}, "synthetic").config)
    result = strategy.search(space, data, seed=0)
    assert all(label.startswith("normal.") for label in strategy.relax.labels)  # no reduce alphas at all
    assert not torch.equal(strategy.alphas[0].detach(), strategy.initial[0])  # normal cell searched
    # the arch records the fixed reduction cell and has no reduce choices (no stand-in)
    arch = result.arch.as_dict()
    assert arch["reduce_cell"] == "gdas_frc" and not any(k.startswith("reduce.") for k in arch)
    make_space("darts", reduce_cell="gdas_frc").validate(result.arch)
    assert result.info["fixed_reduce"] is True and "gdas_frc" in result.info["reduce_cell"]
    assert all(set(h["arch_weights"]) == {"normal"} for h in result.history)
    assert str(space.genotype(result.arch)).endswith("reduce[gdas_frc]")
    # the final network (built from the arch by the configured, searched darts space) has the FRC itself
    net = space.build(result.arch, data.input_shape, data.num_classes, layers=3, channels=4)
    frc = [c for c in net.cells if c.reduction]
    assert frc and all(isinstance(c, GdasReductionCell) for c in frc)
    assert all(m.affine for c in frc for m in c.modules() if isinstance(m, nn.BatchNorm2d))  # a trained network's BN
    assert net(data.x_train[:2]).shape == (2, data.num_classes)


def test_fixed_reduce_works_with_any_node_count(data):
    """The FRC has its own four outputs; the searched normal cell may have any number of nodes."""
    result = _strategy(fixed_reduce=True, epochs=1).search(make_space("darts", nodes=3), data, seed=0)
    assert result.arch["reduce_cell"] == "gdas_frc" and "normal.2.inputs" in result.arch.as_dict()
    net = make_space("darts", nodes=3).build(result.arch, data.input_shape, data.num_classes, layers=3, channels=4)
    assert net(data.x_train[:2]).shape == (2, data.num_classes)


# --------------------------------------------------------------------------- whole searches
def test_seeded_search_is_deterministic(data):
    runs = []
    for _ in range(2):
        strategy = _Spy(_strategy().config)
        result = strategy.search(make_space("darts"), data, seed=5)
        runs.append((strategy, result))
    (s1, r1), (s2, r2) = runs
    for a, b in zip(s1.alphas, s2.alphas):
        assert torch.equal(a, b)
    assert r1.arch == r2.arch
    assert [h["metrics"]["train_loss"] for h in r1.history] == [h["metrics"]["train_loss"] for h in r2.history]
    # and the search did move both cells' alphas
    assert all(not torch.equal(a.detach(), i) for a, i in zip(s1.alphas, s1.initial))


def test_resume_replays_exactly(tmp_path, data):
    def run(name, callbacks=()):
        path = tmp_path / name
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {}, force=True)
        strategy = _strategy(epochs=3)
        return strategy, strategy.search(make_space("darts"), data, experiment=exp, seed=2, callbacks=callbacks)

    full, full_result = run("full")

    def stop(strategy, epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("cut", [stop])
    resumed, resumed_result = run("cut")
    assert resumed_result.arch == full_result.arch
    for a, b in zip(full.alphas, resumed.alphas):
        assert torch.equal(a, b)
    assert [h["metrics"]["tau"] for h in resumed_result.history] == [10.0, 5.05, 0.1]


def test_cli_search_with_gdas_end_to_end(tmp_path: Path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    proc = subprocess.run(
        [sys.executable, "-m", "nasforge.cli", "search", "--strategy", "gdas", "--data", "synthetic",
         "--set", "strategy.epochs=1", "--set", "train.epochs=1", "--out", str(out), "-q"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["strategy"] == "gdas" and result["search_epochs"] == 1
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["strategy"]["name"] == "gdas" and config["strategy"]["tau_max"] == 10.0
