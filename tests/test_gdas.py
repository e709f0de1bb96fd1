"""GDAS: hard Gumbel samples with straight-through gradients, one op per edge, the
temperature schedule, the fixed reduction cell, config checks, determinism, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import ArchError, ConfigError, TrainingError
from nasforge.experiment import Experiment
from nasforge.nn import Hard, NodeChoice, OpChoice
from nasforge.nn.choices import HardZeroWeights
from nasforge.oneshot import relax as relax_module
from nasforge.oneshot.relax import Relaxation, gumbel_hard
from nasforge.spaces import make_space
from nasforge.spaces.darts import PRIMITIVES, DartsCell, GdasReductionCell, derive_cell, edge_index, num_edges
from nasforge.strategies import get_strategy_class, make_strategy
from nasforge.strategies.gdas import GdasConfig, GdasStrategy, temperature, unchosen_mode

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


# --------------------------------------------------------------------------- the official derivation
def _hand_made_cell() -> np.ndarray:
    """Softmax-like weights of a 2-node cell where node 1's two strongest (op, input) pairs share input 2."""
    ops = {name: k for k, name in enumerate(PRIMITIVES)}
    w = np.full((num_edges(2), OPS), 0.01)
    # node 0 (inputs 0, 1)
    w[edge_index(0, 0), ops["sep_conv_3x3"]] = 0.40
    w[edge_index(0, 0), ops["dil_conv_3x3"]] = 0.30  # the 2nd pair overall: input 0 again
    w[edge_index(0, 1), ops["skip_connect"]] = 0.20
    # node 1 (inputs 0, 1, 2)
    w[edge_index(1, 0), ops["none"]] = 0.90  # none never counts
    w[edge_index(1, 1), ops["max_pool_3x3"]] = 0.25
    w[edge_index(1, 2), ops["sep_conv_5x5"]] = 0.50
    w[edge_index(1, 2), ops["avg_pool_3x3"]] = 0.30
    w[:, ops["none"]] += 1.0 - w.sum(axis=1)  # rows sum to 1 (a softmax): the rest is none's
    return w


def test_official_pairs_derivation_on_a_hand_made_weight_matrix():
    """AutoDL-Projects' genotype(): top-2 (op, input) pairs per node over all non-none ops, so both may come
    from one input; DARTS's rule keeps two different inputs."""
    w = _hand_made_cell()
    pairs = derive_cell(w, 2, rule="pairs")
    assert pairs == (("sep_conv_3x3", 0), ("dil_conv_3x3", 0), ("avg_pool_3x3", 2), ("sep_conv_5x5", 2))
    darts = derive_cell(w, 2, rule="darts")
    assert darts == (("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 1), ("sep_conv_5x5", 2))
    # a direct transcription of the official loop agrees on random matrices (ties go to the earlier pair)
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = rng.random((num_edges(4), OPS))
        gene = []
        for node in range(4):
            edges = [(op, j, w[edge_index(node, j), k]) for j in range(node + 2)
                     for k, op in enumerate(PRIMITIVES) if op != "none"]
            top = sorted(edges, key=lambda e: -e[-1])[:2]
            gene += sorted(((op, j) for op, j, _ in top), key=lambda p: (p[1], PRIMITIVES.index(p[0])))
        assert derive_cell(w, 4, rule="pairs") == tuple(gene)
    with pytest.raises(ConfigError, match="pairs"):
        derive_cell(w, 4, rule="nope")


def test_gdas_derives_pairs_by_default_and_darts_on_request():
    space = make_space("darts", nodes=2)
    net = space.supernet((1, 8, 8), 3, layers=3, channels=4)
    w = np.log(_hand_made_cell())  # softmax(log w) = w / sum(w): the same order per row
    arches = {}
    for rule in ("pairs", "darts"):
        strategy = _strategy(derive=rule) if rule != "pairs" else _strategy()
        strategy.relax = Relaxation(net)
        with torch.no_grad():
            for cell in ("normal", "reduce"):
                strategy.relax.alphas[f"{cell}.0"].copy_(torch.tensor(w[:2]))
                strategy.relax.alphas[f"{cell}.1"].copy_(torch.tensor(w[2:]))
        arches[rule] = strategy.derive(space)
    assert _strategy().config.derive == "pairs"
    a = arches["pairs"]
    assert (list(a["normal.0.inputs"]), a["normal.0.op0"], a["normal.0.op1"]) == ([0, 0], "sep_conv_3x3",
                                                                                 "dil_conv_3x3")
    assert (list(a["reduce.1.inputs"]), a["reduce.1.op0"], a["reduce.1.op1"]) == ([2, 2], "avg_pool_3x3",
                                                                                 "sep_conv_5x5")
    assert list(arches["darts"]["normal.1.inputs"]) == [1, 2]
    space.validate(a)


def test_two_ops_on_one_input_build_train_and_round_trip(tmp_path):
    """An arch holding two ops on one input is valid, builds both ops on that state, trains both, and
    survives arch.json; sampled archs still keep two distinct inputs (the DARTS paper's space)."""
    from nasforge.arch import Arch
    from nasforge.nn.choices import FixedNode

    space = make_space("darts", nodes=2)
    rng = np.random.default_rng(0)
    values = space.sample(rng).as_dict()
    values.update({"normal.1.inputs": [2, 2], "normal.1.op0": "sep_conv_3x3", "normal.1.op1": "sep_conv_3x3",
                   "reduce.0.inputs": [1, 1], "reduce.0.op0": "max_pool_3x3", "reduce.0.op1": "dil_conv_5x5"})
    arch = Arch("darts", values)
    space.validate(arch)
    path = tmp_path / "arch.json"
    arch.save(path)
    assert Arch.from_json(path) == arch
    assert space.genotype(arch).normal[2:] == (("sep_conv_3x3", 2), ("sep_conv_3x3", 2))
    torch.manual_seed(0)
    net = space.build(arch, (1, 8, 8), 3, layers=3, channels=4)
    nodes = [m for m in net.modules() if isinstance(m, FixedNode)]
    assert any(n.inputs == [2, 2] for n in nodes) and any(n.inputs == [1, 1] for n in nodes)
    twin = next(n for n in nodes if n.inputs == [2, 2])
    before = [p.detach().clone() for p in twin.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(net(x), y).backward()
    assert all(op_param.grad is not None and op_param.grad.abs().sum() > 0 for op_param in twin.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, twin.parameters()))  # both ops trained
    # a decreasing or out-of-range list is still refused, in one line
    bad = dict(values, **{"normal.1.inputs": [2, 1]})
    with pytest.raises(ArchError, match="increasing order"):
        space.validate(Arch("darts", bad))
    assert all(len(set(space.sample(np.random.default_rng(s))["normal.1.inputs"])) == 2 for s in range(30))


# --------------------------------------------------------------------------- unchosen ops (forward_gdas)
def test_zero_weight_unchosen_ops_match_the_official_forward():
    """Official NAS-Bench-201 forward_gdas: sum(w_k * op_k(x) if k == chosen else w_k); the value is the chosen
    op's output exactly, and every unchosen hard weight gets d loss / d out summed as its gradient."""
    torch.manual_seed(0)
    choice = OpChoice("edge", {f"op{k}": nn.Linear(3, 3) for k in range(4)})
    relax = Relaxation(choice)
    x = torch.randn(5, 3)
    target = torch.randn(5, 3)
    for _ in range(10):
        relax.hard(1.0)
        hard = relax.current["edge"]
        i = hard.index[0]
        weights = hard.weights.detach().clone().requires_grad_(True)
        relax.set({"edge": HardZeroWeights(hard.index, weights)})
        out = choice(x)
        assert torch.equal(out, choice.candidates[i](x))
        (out - target).pow(2).sum().backward()
        # direct: the official formula on the same weights
        w2 = hard.weights.detach().clone().requires_grad_(True)
        direct = sum(w2[0, k] * choice.candidates[k](x) if k == i else w2[0, k] for k in range(4))
        (direct - target).pow(2).sum().backward()
        assert torch.allclose(weights.grad, w2.grad)
        upstream = (2 * (out - target)).sum()
        for k in range(4):
            if k != i:
                assert torch.allclose(weights.grad[0, k], upstream.detach())
        # plain Hard: the unchosen weights get nothing
        w3 = hard.weights.detach().clone().requires_grad_(True)
        relax.set({"edge": Hard(hard.index, w3)})
        (choice(x) - target).pow(2).sum().backward()
        assert all(w3.grad[0, k] == 0 for k in range(4) if k != i)
        choice.zero_grad()


def test_unchosen_mode_follows_the_official_code_per_space(data):
    assert unchosen_mode("auto", make_space("nb201", C=4, N=1)) == "zero_weight"
    assert unchosen_mode("auto", make_space("darts")) == "skip"
    assert unchosen_mode("skip", make_space("nb201", C=4, N=1)) == "skip"
    for space, kind in ((make_space("nb201", C=4, N=1), HardZeroWeights), (make_space("darts", nodes=2), Hard)):
        strategy = _strategy(epochs=1, layers=3, channels=4)
        result = strategy.search(space, data, seed=0)
        assert result.info["unchosen"] == ("zero_weight" if kind is HardZeroWeights else "skip")
        strategy.decide()
        assert all(type(d) is kind for d in strategy.relax.current.values())


def test_final_bn_relu_and_nesterov_defaults(data):
    cfg = _strategy().config
    assert cfg.w_nesterov is True and cfg.w_wd == 5e-4 and cfg.final_bn_relu is False
    net = _strategy(final_bn_relu=True, layers=3, channels=4).build_supernet(make_space("darts"), data)
    assert isinstance(net.lastact[0], nn.BatchNorm2d) and isinstance(net.lastact[1], nn.ReLU)
    assert _strategy(layers=3, channels=4).build_supernet(make_space("darts"), data).lastact is None
    # pooling candidates: DARTS's search model adds BN, the official GDAS search cell (pool_bn=false) does not
    k = PRIMITIVES.index("max_pool_3x3")
    for pool_bn, kind in ((True, nn.Sequential), (False, nn.MaxPool2d)):
        net = _strategy(pool_bn=pool_bn, layers=3, channels=4).build_supernet(make_space("darts"), data)
        node = next(m for m in net.modules() if isinstance(m, NodeChoice))
        assert type(node.edges[0][k]) is kind


# --------------------------------------------------------------------------- presets
PRESETS = [("paper", "gdas", "cifar10"), ("paper", "gdas", "cifar100"), ("paper-frc", "gdas", "cifar10"),
           ("nb201", "gdas", "cifar10"), ("paper", "darts", "cifar100"), ("dartsplus", "darts", "cifar10"),
           ("paper", "darts", "cifar10")]


def test_gdas_paper_preset_is_the_official_config():
    from nasforge.pipeline import resolve_config

    cfg = resolve_config({"preset": "paper", "strategy": {"name": "gdas"}, "data": {"name": "cifar10"}})
    s = cfg.strategy
    assert (s["epochs"], s["batch_size"], s["layers"], s["channels"]) == (250, 256, 6, 16)
    assert (s["w_nesterov"], s["w_wd"], s["final_bn_relu"], s["tau_max"], s["tau_min"]) == (True, 5e-4, True, 10.0, 0.1)
    assert (s["a_lr"], s["a_wd"], s["derive"], s["pool_bn"]) == (3e-4, 1e-3, "pairs", False)
    assert cfg.data.valid_fraction == 0.0
    # the official 6-cell supernet: normal, normal, reduce, normal, reduce, normal
    net = make_space("darts").supernet((3, 32, 32), 10, layers=6, channels=16, final_bn_relu=True)
    assert [c.reduction for c in net.cells] == [False, False, True, False, True, False]
    frc = resolve_config({"preset": "paper-frc", "strategy": {"name": "gdas"}, "data": {"name": "cifar100"}})
    assert frc.strategy["fixed_reduce"] is True
    with pytest.raises(ConfigError, match="gdas/cifar10"):
        resolve_config({"preset": "paper", "strategy": {"name": "gdas"}, "data": {"name": "imagenet16"}})


@pytest.mark.slow
@pytest.mark.parametrize("name, strategy_name, dataset", PRESETS)
def test_preset_resolves_and_runs_one_step(name, strategy_name, dataset):
    """Each preset of GDAS and DARTS(+), on random data of its input shape and class count: one loop step."""
    from nasforge.data import synthetic_dataset
    from nasforge.oneshot.loop import make_optimizers, search_step
    from nasforge.pipeline import build_space, resolve_config
    from nasforge.progress import Progress

    cfg = resolve_config({"preset": name, "strategy": {"name": strategy_name, "batch_size": 2},
                          "data": {"name": dataset}})
    strategy = make_strategy(strategy_name, {k: v for k, v in cfg.strategy.items() if k != "name"}, dataset)
    space = build_space(cfg)
    classes = 100 if dataset == "cifar100" else 10
    data = synthetic_dataset(num_samples=5 * classes, num_classes=classes, input_shape=(3, 32, 32), seed=0)
    strategy.setup(space, data, None, Progress())
    model = strategy.build_supernet(space, data)
    strategy.init_arch(space, model)
    params = list(model.parameters())
    make_optimizers(strategy, params)
    strategy.epoch_started(0)
    x, y = data.x_train[:2], data.y_train[:2]
    before = [a.detach().clone() for a in strategy.alphas]
    res, arch = search_step(strategy, strategy.engine, model, params, (x, y), (x, y))
    assert res.finite and math.isfinite(arch["arch_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, strategy.alphas))
    arch = strategy.derive(space)
    type(space).validate_arch(arch)  # the arch's own space (GDAS (FRC): the darts space with reduce_cell=gdas_frc)
    assert (arch.as_dict().get("reduce_cell") == "gdas_frc") == bool(cfg.strategy.get("fixed_reduce"))
