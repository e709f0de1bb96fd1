"""DenseNAS: the two-stage schedule, sampling, the rescaling of sampled op parameters, the
latency objective from a lookup table, derivation, determinism and resume, the report, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware.lut import LatencyTable, space_fingerprint
from nasforge.oneshot.dense import all_paths
from nasforge.report.sections.densenas import densenas_section
from nasforge.spaces import make_space
from nasforge.spaces.dense import OPS, DenseSpace
from nasforge.hardware.penalty import LatencyConfig
from nasforge.strategies import densenas as densenas_module
from nasforge.strategies import get_strategy_class, make_strategy
from nasforge.strategies.densenas import TABLE_FILE, DenseNasStrategy, rescale_

TINY = dict(widths=[4, 6, 8, 10], scales=[0, 0, 1, 1], stages=[0, 1, 2, 2], layers=[0, 1, 1, 1], connections=2,
            last=8, search_head=False)  # the head fixed (MBConv k3 e3): exact counts; searched heads: TINY_HEADS
TINY_HEADS = {**TINY, "search_head": True}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def fake_table(space: DenseSpace, path: Path, shape=(1, 8, 8), classes=10) -> Path:
    """A deterministic lookup table: each piece costs its width-and-kernel-dependent made-up ms."""
    entries = {}
    for key in space.latency_parts(shape, classes):
        if key.startswith("block"):
            b, op = key[5:].split(":")
            kernel, expand = int(op.split("_")[1][1:]), int(op.split("_")[2][1:])
            entries[key] = 0.01 * space.widths[int(b)] * expand * kernel / 3
        elif key.startswith(("head", "tail")):
            entries[key] = 0.05 * (1 + len(key))
        else:
            entries[key] = 0.2
    table = LatencyTable(space="dense", space_version=1, fingerprint=space_fingerprint(space), input_shape=shape,
                         num_classes=classes, device="cpu", device_name="test", batch_size=1, threads=1,
                         overhead_ms=0.1, entries=entries)
    return table.save(path)


def _strategy(latency=None, **options) -> DenseNasStrategy:
    """A short DenseNAS; without ``latency`` (the run's latency section) it searches for accuracy alone."""
    return make_strategy("densenas", {"epochs": 3, **options}, "synthetic", latency=latency or {"weight": 0.0})


class _Spy(DenseNasStrategy):
    """Keeps a copy of the architecture parameters at the start of every epoch."""

    def epoch_started(self, epoch):
        self.snapshots = getattr(self, "snapshots", [])
        self.snapshots.append([p.detach().clone() for p in self.arch_parameters()])
        super().epoch_started(epoch)


# --------------------------------------------------------------------------- pieces
def test_registration_and_defaults():
    assert get_strategy_class("densenas") is DenseNasStrategy and DenseNasStrategy.kind == "oneshot"
    strategy = make_strategy("densenas", {}, "digits")
    cfg, lat = strategy.config, strategy.latency_config
    assert (cfg.a_beta1, cfg.a_wd, cfg.arch_op_samples) == (0.5, 1e-3, 2)
    assert (lat.form(densenas_module.DEFAULT_FORM), densenas_module.DEFAULT_WEIGHT, lat.base) == ("log", 0.15, 15.0)
    assert cfg.epochs == 10 and cfg.batch_size == 64  # digits profile
    with pytest.raises(ConfigError, match="latency.weight"):
        make_strategy("densenas", {}, "digits", latency={"weight": -1})
    with pytest.raises(ConfigError, match="strategy.lat_weight is now latency.weight"):
        make_strategy("densenas", {"lat_weight": 0.2}, "digits")


def test_rescale_keeps_the_sampled_mass_and_the_others():
    torch.manual_seed(0)
    old = torch.randn(4, len(OPS))
    new = old + torch.randn(4, len(OPS))
    idx = torch.tensor([[0, 3], [1, 6], [2, 5], [0, 1]])
    new[:, :] = torch.where(torch.zeros_like(new, dtype=torch.bool).scatter(1, idx, True), new, old)
    alpha = new.clone()
    rescale_(alpha, old, idx)
    assert torch.allclose(alpha.gather(1, idx).logsumexp(1), old.gather(1, idx).logsumexp(1), atol=1e-6)
    mask = torch.zeros_like(alpha, dtype=torch.bool).scatter(1, idx, True)
    assert torch.equal(alpha[~mask], old[~mask])  # unsampled ops keep their parameters
    # within the pair, the update's preference survives the shift
    assert torch.allclose((alpha.gather(1, idx)[:, 0] - alpha.gather(1, idx)[:, 1]),
                          (new.gather(1, idx)[:, 0] - new.gather(1, idx)[:, 1]), atol=1e-6)


def test_sampling_draws_the_configured_number_of_heads_and_ops():
    torch.manual_seed(0)
    space = DenseSpace()
    strategy = _strategy(head_samples=2)
    strategy.init_arch(space)
    incoming = strategy.sample_incoming(strategy.path_probs(), uniform=False)
    assert len(incoming) == space.tail
    for j, (sources, w) in enumerate(incoming, start=1):
        assert len(sources) == min(2, len(space.predecessors[j]))
        assert set(sources) <= set(space.predecessors[j])
        assert w.sum().item() == pytest.approx(1.0)
    idx, layer_ops = strategy.sample_ops(2, uniform=False)
    assert idx.shape == (len(space.layer_index), 2) and all(len(set(r)) == 2 for r in idx.tolist())
    assert all(w.sum().item() == pytest.approx(1.0) for _, w in layer_ops)
    everything = _strategy(head_samples=0)
    everything.init_arch(space)
    assert [s for s, _ in everything.sample_incoming(everything.path_probs(), True)] == space.predecessors[1:]


def test_expected_latency_is_the_mean_over_paths_of_the_table_prediction(tmp_path, data):
    space = DenseSpace(**TINY)
    strategy = _strategy({"weight": 0.5, "table": str(fake_table(space, tmp_path / "t.json"))})
    torch.manual_seed(1)
    strategy.init_arch(space)
    with torch.no_grad():
        for b in strategy.betas:
            b.normal_()
        strategy.alpha.normal_()
    strategy.setup_latency(space, data, None, None)
    table = strategy.table
    probs = [p.detach() for p in strategy.path_probs()]
    op_p = torch.softmax(strategy.alpha.detach(), -1)
    total = 0.0
    for path in all_paths(space.successors):
        p_path = math.prod(probs[a][space.successors[a].index(b)].item() for a, b in zip(path, path[1:]))
        # each layer at its expected op latency = the mean over op choices of the table's prediction
        lat = table.overhead_ms + table.get("stem") + table.get("classifier")
        for a, b in zip(path, path[1:]):
            lat += table.get(f"tail:{a}" if b == space.tail else f"head:{a}>{b}")
            if b != space.tail:
                for k, (blk, _) in enumerate(space.layer_index):
                    if blk == b:
                        lat += sum(op_p[k, o].item() * (0.0 if op == "skip" else table.get(f"block{b}:{op}"))
                                   for o, op in enumerate(OPS))
        total += p_path * lat
    assert strategy.expected_latency().item() == pytest.approx(total, rel=1e-5)
    # a deterministic distribution gives exactly the table's prediction of that arch
    with torch.no_grad():
        for b in strategy.betas:
            b.copy_(torch.tensor([50.0] + [0.0] * (len(b) - 1)))
        strategy.alpha.copy_(torch.zeros_like(strategy.alpha))
        strategy.alpha[:, 1] = 50.0
    arch = strategy.derive(space)
    assert space.path(arch) == [0, 1, 2, 3, 4]
    assert strategy.expected_latency().item() == pytest.approx(table.predict(space, arch), rel=1e-5)


def test_latency_term_pulls_towards_cheaper_paths(tmp_path, data):
    space = DenseSpace(**TINY)
    strategy = _strategy({"weight": 50.0, "table": str(fake_table(space, tmp_path / "t.json"))}, a_lr=0.05)
    torch.manual_seed(0)
    strategy.init_arch(space)
    strategy.setup_latency(space, data, None, None)
    model = space.supernet(data.input_shape, data.num_classes)
    opt = torch.optim.Adam(strategy.arch_parameters(), lr=0.05, betas=(0.5, 0.999))
    before = strategy.expected_latency().item()
    for k in range(8):
        strategy.a_opt = opt
        strategy.arch_step(model, (data.x_train[:16], data.y_train[:16]))
    assert strategy.expected_latency().item() < before * 0.95
    skip = torch.softmax(strategy.alpha.detach(), -1)[:, OPS.index("skip")]
    assert (skip > 1 / len(OPS)).all()  # skip (no latency) gained in every layer


# --------------------------------------------------------------------------- searches
def test_warmup_trains_weights_only_then_alternates(data):
    strategy = _Spy(_strategy(epochs=3, warmup_fraction=0.34).config)
    result = strategy.search(make_space("dense", **TINY), data, seed=0)
    assert [h["metrics"]["stage"] for h in result.history] == ["warmup", "search", "search"]
    first, second, third = strategy.snapshots
    assert all(torch.equal(a, b) for a, b in zip(first, second))       # warm-up: architecture untouched
    assert not all(torch.equal(a, b) for a, b in zip(second, third))   # then it moves
    assert "arch_loss" not in result.history[0]["metrics"] and "arch_loss" in result.history[1]["metrics"]
    space = make_space("dense", **TINY)
    space.validate(result.arch)
    net = space.build(result.arch, data.input_shape, data.num_classes)
    assert net(data.x_train[:2]).shape == (2, data.num_classes)
    weights = result.history[-1]["arch_weights"]
    assert len(weights["paths"]) == space.tail and len(weights["ops"]) == len(space.layer_index)


def test_wrong_space_is_a_config_error(data):
    with pytest.raises(ConfigError, match="--space dense"):
        _strategy().search(make_space("darts"), data, seed=0)


def test_resume_replays_exactly_and_reuses_the_table(tmp_path, data):
    space_opts = dict(TINY_HEADS)  # searched heads: their parameters and table entries resume too
    table = fake_table(make_space("dense", **space_opts), tmp_path / "table.json")

    def run(name, callbacks=()):
        path = tmp_path / name
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {}, force=True)
        strategy = _Spy(_strategy(epochs=3).config)
        strategy.latency_config = LatencyConfig(weight=0.3, table=str(table))
        return strategy, strategy.search(make_space("dense", **space_opts), data, experiment=exp, seed=4,
                                         callbacks=callbacks)

    full, full_result = run("full")

    def stop(strategy, epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("cut", [stop])
    resumed, resumed_result = run("cut")
    assert resumed_result.arch == full_result.arch
    for a, b in zip(full.arch_parameters(), resumed.arch_parameters()):
        assert torch.equal(a, b)
    assert [h["metrics"]["train_loss"] for h in resumed_result.history] == \
           [h["metrics"]["train_loss"] for h in full_result.history]
    assert resumed_result.info["predicted_latency_ms"] == full_result.info["predicted_latency_ms"]


def test_table_is_built_into_the_run_and_reused(tmp_path, data):
    space = make_space("dense", **TINY)
    exp = Experiment.create(tmp_path / "run", {}, force=True)
    strategy = _strategy({"weight": 0.2, "warmup": 0, "repeats": 2}, epochs=1)
    result = strategy.search(space, data, experiment=exp, seed=0)
    path = tmp_path / "run" / TABLE_FILE
    table = LatencyTable.load(path)
    table.check(space, data.input_shape, "cpu")
    assert set(table.entries) == set(space.latency_parts(data.input_shape, data.num_classes))
    assert result.info["predicted_latency_ms"] == pytest.approx(table.predict(space, result.arch))
    again = _strategy({"weight": 0.2}, epochs=1)
    again.setup_latency(space, data, exp, None)
    assert again.table.entries == table.entries  # loaded, not re-measured
    other = make_space("dense", **{**TINY, "last": 12})
    with pytest.raises(ConfigError, match="another configuration"):
        _strategy({"table": str(path), "weight": 0.2}).setup_latency(other, data, None, None)


def test_report_section_draws_the_path(tmp_path, data):
    exp = Experiment.create(tmp_path / "run", {"space": {"name": "dense"}}, force=True)
    result = _strategy(epochs=2).search(make_space("dense", **TINY), data, experiment=exp, seed=0)
    result.arch.save(tmp_path / "run" / "arch.json")
    exp.close()
    out = tmp_path / "run" / "report"
    out.mkdir()
    title, body, pictures = densenas_section(tmp_path / "run", out)
    assert title == "DenseNAS path" and "stem 4" in body
    (name, caption), = pictures
    assert (out / name).stat().st_size > 5000 and "Viterbi" in caption
    other = Experiment.create(tmp_path / "darts", {}, force=True)
    other.close()
    assert densenas_section(tmp_path / "darts", out) is None


@pytest.mark.slow
def test_cli_search_with_densenas_end_to_end(tmp_path: Path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    proc = subprocess.run(
        [sys.executable, "-m", "nasforge.cli", "search", "--space", "dense", "--strategy", "densenas",
         "--data", "synthetic", "--set", "strategy.epochs=2", "--set", "latency.repeats=2",
         "--set", "train.epochs=1", "--out", str(out), "-q"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "dense" and result["strategy"] == "densenas" and result["search_epochs"] == 2
    assert (out / TABLE_FILE).is_file() and result["search_info"]["predicted_latency_ms"] > 0
    from nasforge.train import load_model

    model, arch, shape = load_model(out / "model.pt")
    assert arch.space == "dense" and model(torch.zeros(1, *shape)).shape == (1, 10)
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "report", str(out)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "DenseNAS path" in (out / "report.html").read_text()


# --------------------------------------------------------------------------- the official forward, BN, presets
def test_all_connections_run_weighted_as_the_official_code():
    """Default (head_samples 0): every incoming connection runs; a block sums p(i->j) head_ij(x_i) unnormalised,
    the tail mixes its 1x1 convs by softmax_i p(i->T) (official Conv1_1_Block); checked against a direct
    computation of the supernet's modules."""
    torch.manual_seed(0)
    space = DenseSpace(**TINY)
    strategy = _strategy()
    assert strategy.config.head_samples == 0
    strategy.init_arch(space)
    with torch.no_grad():
        for b in strategy.betas:
            b.normal_()
    probs = strategy.path_probs()
    incoming = strategy.sample_incoming(probs, uniform=False)
    assert [s for s, _ in incoming] == space.predecessors[1:]
    sup = space.supernet((1, 8, 8), 5).eval()
    with torch.no_grad():  # non-zero residual branches, so every head and layer matters
        for p in sup.parameters():
            p.add_(0.1 * torch.randn_like(p))
    layer_ops = [([OPS.index("mb_k5_e3")], torch.ones(1)) for _ in space.layer_index]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = sup(x, incoming, layer_ops)
        p = lambda i, j: float(probs[i][space.successors[i].index(j)])  # noqa: E731
        feats = {0: sup.stem(x)}
        k = 0
        for j in range(1, space.tail):
            h = sum(p(i, j) * sup.heads[f"{i}_{j}"](feats[i]) for i in space.predecessors[j])
            for _ in range(space.layers[j]):
                h = sup.layers[k]["mb_k5_e3"](h)
                k += 1
            feats[j] = h
        tail_in = space.predecessors[space.tail]
        mix = torch.softmax(torch.tensor([p(i, space.tail) for i in tail_in]), 0)
        expected = sup.classifier(sum(m * sup.tails[str(i)](feats[i]) for m, i in zip(mix, tail_in)))
    assert torch.allclose(out, expected, atol=1e-5)
    # block 3 has two incoming connections; its weights are the raw probabilities (they do not sum to 1)
    sources, w = incoming[2]
    assert sources == [1, 2] and not math.isclose(float(w.detach().sum()), 1.0, abs_tol=1e-3)
    # the architecture gradient reaches every beta through the connection weights
    strategy_loss = sup(x, strategy.sample_incoming(strategy.path_probs(), False), layer_ops).sum()
    grads = torch.autograd.grad(strategy_loss, strategy.betas, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g, b in zip(grads, strategy.betas) if len(b) > 1)


def test_search_valid_accuracy_recalibrates_the_derived_paths_batchnorm(data):
    """The loop re-estimates BN on the derived sub-network before scoring it (engine.bn_recalibration)."""
    from nasforge.oneshot.loop import SearchLoop
    from nasforge.progress import Progress
    from nasforge.training import Engine, EngineConfig

    space = DenseSpace(**TINY)

    def stats(recal):
        strategy = _strategy(epochs=1, batch_size=32)
        loop = SearchLoop(strategy, space, data, None, Progress(), 0, (), Engine(EngineConfig(bn_recalibration=recal)))
        bn = loop.model.stem[1]
        before = bn.running_mean.clone()
        loop.valid_accuracy(0)
        return before, bn.running_mean.clone(), bn.num_batches_tracked.item()

    before, after, n = stats(3)
    assert n == 3 and not torch.allclose(before, after)  # fresh statistics from 3 batches
    before, after, n = stats(0)
    assert n == 0 and torch.equal(before, after)  # off: untouched


@pytest.mark.slow
def test_paper_preset_resolves_and_runs_one_step(tmp_path):
    """The imagenet preset (official search settings, the imagenet-sized dense space) on random 224x224 data:
    one loop step (architecture pass batch, then a weight batch) with the preset's latency loss."""
    from nasforge.data import synthetic_dataset
    from nasforge.oneshot.loop import make_optimizers, search_step
    from nasforge.pipeline import resolve_config
    from nasforge.progress import Progress

    big = DenseSpace("imagenet")
    table = fake_table(big, tmp_path / "t.json", shape=(3, 224, 224), classes=10)
    cfg = resolve_config({"preset": "paper", "strategy": {"name": "densenas", "batch_size": 2},
                          "data": {"name": "imagenet"}, "latency": {"table": str(table)}})
    assert cfg.space == {"name": "dense", "preset": "imagenet"}
    assert (cfg.strategy["epochs"], cfg.strategy["a_lr"], cfg.strategy["w_lr"]) == (150, 3e-4, 0.2)
    assert (cfg.latency.loss, cfg.latency.weight, cfg.train.epochs) == ("log", 0.15, 240)
    strategy = make_strategy("densenas", {k: v for k, v in cfg.strategy.items() if k != "name"}, "imagenet",
                             latency=cfg.latency)
    data = synthetic_dataset(num_samples=20, num_classes=2, input_shape=(3, 224, 224), seed=0)
    strategy.setup(big, data, None, Progress())
    model = strategy.build_supernet(big, data)
    strategy.init_arch(big, model)
    params = list(model.parameters())
    make_optimizers(strategy, params)
    x, y = data.x_train[:2], data.y_train[:2]
    before = [b.detach().clone() for b in strategy.betas]
    res, arch = search_step(strategy, strategy.engine, model, params, (x, y), (x, y))
    assert res.finite and math.isfinite(arch["arch_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, strategy.betas))


def test_searched_heads_sampled_mixed_rescaled_and_derived(tmp_path, data):
    """Per connection into a block a row of head-op parameters (official alpha_head_weights): one op per weight
    step, two mixed by their softmax in an architecture step, re-offset after it; the expected latency weights
    each head's table latency by its op probabilities; derivation keeps the best op of the path's connections."""
    from nasforge.spaces.dense import HEAD_OPS

    space = DenseSpace(**TINY_HEADS)
    table = fake_table(space, tmp_path / "t.json")
    strategy = _strategy({"weight": 0.5, "table": str(table)}, epochs=3)
    torch.manual_seed(0)
    strategy.init_arch(space)
    assert strategy.alpha_head.shape == (len(strategy.edges), len(HEAD_OPS))
    assert any(p is strategy.alpha_head for p in strategy.arch_parameters())
    incoming = strategy.sample_incoming(strategy.path_probs(), False)
    idx, head_ops = strategy.sample_heads(2, False, incoming)
    assert idx.shape == (len(strategy.edges), 2)
    for j, ((sources, _), ops) in enumerate(zip(incoming, head_ops), start=1):
        assert len(ops) == len(sources)
        for i, op in zip(sources, ops):
            if j == space.tail:
                assert op is None
            else:
                assert op[0] == idx[strategy.edge_index[(i, j)]].tolist()
                assert float(op[1].detach().sum()) == pytest.approx(1)
    with torch.no_grad():
        strategy.alpha_head.normal_()
        strategy.alpha.normal_()
    strategy.setup_latency(space, data, None, None)
    lat = LatencyTable.load(table)
    probs = [p.detach() for p in strategy.path_probs()]
    op_p = torch.softmax(strategy.alpha.detach(), -1)
    head_p = torch.softmax(strategy.alpha_head.detach(), -1)
    total = 0.0
    for path in all_paths(space.successors):
        weight = math.prod(float(probs[a][space.successors[a].index(b)]) for a, b in zip(path, path[1:]))
        cost = lat.overhead_ms + lat.get("stem") + lat.get("classifier")
        for a, b in zip(path, path[1:]):
            if b == space.tail:
                cost += lat.get(f"tail:{a}")
                continue
            e = strategy.edge_index[(a, b)]
            cost += sum(float(head_p[e, k]) * lat.get(f"head:{a}>{b}:{op}") for k, op in enumerate(HEAD_OPS))
            for k, (blk, _) in enumerate(space.layer_index):
                if blk == b:
                    cost += sum(float(op_p[k, o]) * (lat.get(f"block{b}:{OPS[o]}") if OPS[o] != "skip" else 0.0)
                                for o in range(len(OPS)))
        total += weight * cost
    assert float(strategy.expected_latency()) == pytest.approx(total, rel=1e-5)
    arch = strategy.derive(space)
    path = space.path(arch)
    for a, b in zip(path, path[1:-1]):
        assert arch[f"block{b}.head"] == HEAD_OPS[int(strategy.alpha_head[strategy.edge_index[(a, b)]].argmax())]
    # one architecture step: per connection at most the two sampled head ops move, re-offset to their old mass
    from nasforge.oneshot.loop import make_optimizers

    step = _strategy(epochs=3, a_wd=0.0)  # CE only, no decay: only the sampled entries get a gradient
    step.setup_latency(space, data, None, None)
    step.init_arch(space)
    model = space.supernet((1, 8, 8), 10)
    make_optimizers(step, list(model.parameters()))
    old = step.alpha_head.detach().clone()
    step.arch_step(model, (data.x_train[:16], data.y_train[:16]))
    new = step.alpha_head.detach()
    for r_old, r_new in zip(old, new):
        moved = r_old != r_new
        assert 1 <= int(moved.sum()) <= 2
        assert float(r_new[moved].logsumexp(0)) == pytest.approx(float(r_old[moved].logsumexp(0)), abs=1e-5)
    # a search moves the head parameters and its records hold them
    result = _strategy({"weight": 0.5, "table": str(table)}, epochs=3).search(space, data, seed=0)
    assert set(result.history[-1]["arch_weights"]["heads"]) == {f"{i}>{j}" for i, j in strategy.edges}
    space.validate(result.arch)
