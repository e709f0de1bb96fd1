"""ProxylessNAS: binarized paths (one op per layer in a weight step, one path's memory),
the two-path gradient and re-offset, expected latency, the latency losses, table errors,
REINFORCE, resume, and the CLI end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.data import synthetic_dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware.lut import LatencyTable, space_fingerprint
from nasforge.nn import OpChoice, Paths, Zero
from nasforge.oneshot.binary import rescale_two_paths, sample_two, two_path_alpha_grad
from nasforge.oneshot.relax import Relaxation
from nasforge.spaces import make_space
from nasforge.spaces.mbconv import ZERO, op_spec
from nasforge.strategies import get_strategy_class, make_strategy
from nasforge.hardware.penalty import LatencyPenalty, ModuleLatency
from nasforge.strategies.proxyless import ProxylessStrategy
from nasforge.training import weight_step

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(num_samples=200, seed=0)


def fake_table(space, shape=SHAPE, num_classes=10, device="cpu") -> LatencyTable:
    """A table with made-up but op-dependent entries (no timing: fast and deterministic)."""
    entries = {}
    for key in space.latency_parts(shape, num_classes):
        if ":" in key:  # a candidate: "layers.{i}.op:{op}"
            kernel, expansion = op_spec(key.split(":")[1])
            entries[key] = 0.01 * kernel * expansion
        else:  # "rest": the stem, head and shortcuts
            entries[key] = 0.05
    return LatencyTable(space=space.name, space_version=space.version, fingerprint=space_fingerprint(space),
                        input_shape=tuple(shape), num_classes=num_classes, device=device, device_name="test",
                        batch_size=1, threads=1, overhead_ms=0.02, entries=entries, created=time.time())


@pytest.fixture()
def table_path(tmp_path):
    path = tmp_path / "table.json"
    fake_table(make_space("mbconv")).save(path)
    return str(path)


def _strategy(table_path, latency=None, **options) -> ProxylessStrategy:
    """A short ProxylessNAS on ``table_path``; ``latency``: more keys of the run's latency section."""
    return make_strategy("proxyless", {"epochs": 2, "warmup_epochs": 0, "batch_size": 32, **options}, "synthetic",
                         latency={"table": table_path, **(latency or {})})


def _hooked(model) -> Counter:
    calls: Counter = Counter()
    for li, layer in enumerate(model.layers):
        for k, op in enumerate(layer.op.candidates):
            op.register_forward_hook(lambda mod, inp, out, key=(li, k): calls.update([key]))
    return calls


def _prepared(strategy, space, model, table_path):
    """The strategy's relaxation and latency model for ``model``, as the loop sets them up."""
    strategy.table, strategy.experiment = LatencyTable.load(table_path), None
    strategy.init_arch(space, model)
    return strategy


# --------------------------------------------------------------------------- binarized mixed op
def test_registered_as_oneshot():
    cls = get_strategy_class("proxyless")
    assert cls is ProxylessStrategy and cls.kind == "oneshot"


def test_weight_step_runs_one_op_per_layer_and_updates_only_it(table_path, data):
    space = make_space("mbconv")
    torch.manual_seed(0)
    model = space.supernet(SHAPE, 10)
    strategy = _prepared(_strategy(table_path, alpha_init_std=0.0), space, model, table_path)
    calls = _hooked(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    torch.manual_seed(1)
    weight_step(strategy.engine, opt, list(model.parameters()), lambda x: strategy.train_forward(model, x, False),
                (data.x_train[:16], data.y_train[:16]), grad_clip=5.0)
    ran = {li: [k for (l2, k), n in calls.items() if l2 == li] for li in range(len(model.layers))}
    for li, layer in enumerate(model.layers):
        assert len(ran[li]) <= 1 and all(calls[(li, k)] == 1 for k in ran[li])
        assert len(ran[li]) == 1  # exactly one candidate ran (zero included: it outputs zeros)
        for k, op in enumerate(layer.op.candidates):
            changed = any(not torch.equal(p, before[f"layers.{li}.op.candidates.{k}.{n}"])
                          for n, p in op.named_parameters())
            assert changed == (k in ran[li])  # unsampled ops: no grad, no decay, no momentum


def _saved_bytes(fn) -> int:
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_weight_step_memory_is_that_of_one_compact_network():
    """The autograd graph of a supernet forward holds exactly what the stand-alone sampled network holds."""
    space = make_space("mbconv")
    torch.manual_seed(0)
    model = space.supernet(SHAPE, 10)
    relax = Relaxation(model)
    x = torch.randn(16, *SHAPE)
    for indices in ([0, 6, 3, 5, 6, 1], [5, 5, 5, 5, 5, 5], [6, 6, 6, 2, 6, 6]):
        arch = space.arch({label: relax.names[label][k] for label, k in zip(relax.labels, indices)})
        single = space.build(arch, SHAPE, 10)
        y = torch.zeros(16, dtype=torch.long)
        relax.set({label: Paths([k]) for label, k in zip(relax.labels, indices)})
        one = _saved_bytes(lambda m=model: F.cross_entropy(m(x), y))
        ref = _saved_bytes(lambda m=single: F.cross_entropy(m(x), y))
        assert one == ref
    relax.soft()  # the same supernet relaxed as DARTS does: every op of every layer runs
    full = _saved_bytes(lambda: model(x).sum())
    assert full > 3 * one


def test_two_path_forward_gate_gradients():
    torch.manual_seed(0)
    ops = {f"op{k}": nn.Linear(3, 3) for k in range(4)}
    ops["zero"] = Zero()
    mixed = OpChoice("layer", ops)
    relax = Relaxation(mixed)
    x = torch.randn(5, 3)
    calls = Counter()
    for k, op in enumerate(mixed.candidates):
        op.register_forward_hook(lambda m, i, o, k=k: calls.update([k]))
    gates = torch.tensor([[1.0, 0.0]], requires_grad=True)
    relax.set({"layer": Paths([2], [0], gates)})
    out = mixed(x)
    assert torch.allclose(out, mixed.candidates[2](x))  # binary gate: the output is the active path's
    assert calls == Counter({2: 2, 0: 1})  # the two sampled ops (+ the check above), nothing else
    target = torch.randn(5, 3)
    loss = (out - target).pow(2).sum()
    (g,) = torch.autograd.grad(loss, gates)
    grad_out = 2 * (out - target)
    expected = torch.stack([(mixed.candidates[2](x) * grad_out).sum(), (mixed.candidates[0](x) * grad_out).sum()])
    assert torch.allclose(g[0], expected.detach(), atol=1e-5)
    assert mixed.candidates[0].weight.grad is None  # the inactive path runs without autograd
    # zero: alone it outputs zeros (a residual layer passes its input); in a pair its gate gradient is 0
    relax.set({"layer": Paths([4])})
    assert torch.equal(mixed(x), torch.zeros_like(x))
    gates = torch.tensor([[1.0, 0.0]], requires_grad=True)
    relax.set({"layer": Paths([4], [1], gates)})
    out = mixed(x)
    (g,) = torch.autograd.grad((out * grad_out).sum() + gates.sum() * 0, gates)
    assert g[0, 0] == 0 and g[0, 1] != 0


def test_two_path_alpha_gradient_matches_the_formula():
    alpha = torch.tensor([0.5, -0.2, 0.1, 0.3, -1.0])
    involved = (3, 1)
    gate_grads = torch.tensor([0.7, -0.4])
    grad = two_path_alpha_grad(alpha, involved, gate_grads)
    e = torch.exp(alpha[list(involved)])
    p = e / e.sum()
    expected = torch.zeros(5)
    for i in range(2):
        for j in range(2):
            delta = 1.0 if i == j else 0.0
            expected[involved[i]] += gate_grads[j] * p[j] * (delta - p[i])
    assert torch.allclose(grad, expected)
    assert grad[[0, 2, 4]].abs().sum() == 0
    assert torch.isclose(grad.sum(), torch.tensor(0.0), atol=1e-7)  # a softmax Jacobian sums to zero


def test_rescale_keeps_unsampled_probabilities():
    alpha = torch.tensor([0.4, -0.3, 1.2, 0.0, 0.7])
    probs_before = torch.softmax(alpha, 0)
    old = alpha[[1, 3]].clone()
    alpha[1] += 0.9  # an update that moves the two sampled alphas arbitrarily
    alpha[3] -= 0.25
    rescale_two_paths(alpha, (1, 3), old)
    probs_after = torch.softmax(alpha, 0)
    assert torch.allclose(probs_after[[0, 2, 4]], probs_before[[0, 2, 4]], atol=1e-6)
    assert torch.isclose(probs_after[[1, 3]].sum(), probs_before[[1, 3]].sum(), atol=1e-6)
    assert probs_after[1] > probs_before[1]  # the update itself survives the re-offset


@pytest.mark.parametrize("latency_loss", ["none", "add", "mul"])
def test_binary_arch_step_moves_only_the_sampled_pairs(table_path, data, latency_loss):
    space = make_space("mbconv")
    torch.manual_seed(0)
    model = space.supernet(SHAPE, 10)
    strategy = _prepared(_strategy(table_path, {"loss": latency_loss}, alpha_init_std=0.3), space, model,
                         table_path)
    alphas = [a[0] for a in strategy.relax.parameters()]  # one row per layer
    a_opt = torch.optim.Adam(strategy.relax.parameters(), lr=0.05, betas=(0.0, 0.999))
    before = [torch.softmax(a.detach(), 0).clone() for a in alphas]
    state = torch.get_rng_state()
    pairs = [sample_two(a) for a in alphas]
    torch.set_rng_state(state)  # binary_step draws the same pairs
    calls = _hooked(model)
    loss = strategy.binary_step(model, a_opt, (data.x_valid[:16], data.y_valid[:16]))
    assert math.isfinite(loss)
    moved = 0
    for li, (a, p0, pair) in enumerate(zip(alphas, before, pairs)):
        p1 = torch.softmax(a.detach(), 0)
        rest = [k for k in range(len(a)) if k not in pair]
        assert torch.allclose(p1[rest], p0[rest], atol=1e-6)
        assert torch.isclose(p1[list(pair)].sum(), p0[list(pair)].sum(), atol=1e-6)
        moved += int(not torch.allclose(p1, p0))
        ran = {k for (l2, k) in calls if l2 == li}
        assert ran <= set(pair)  # at most the two sampled ops ran
    assert moved > 0


# --------------------------------------------------------------------------- latency
def test_expected_latency_equals_the_hand_sum(table_path):
    space = make_space("mbconv")
    table = LatencyTable.load(table_path)
    net = space.supernet(SHAPE, 10)
    relax = Relaxation(net)
    model = ModuleLatency(space, net, table)
    torch.manual_seed(0)
    probs = {label: torch.softmax(torch.randn(1, len(names)), 1) for label, names in relax.names.items()}
    hand = table.overhead_ms + table.entries["rest"]
    for i, (label, names) in enumerate(relax.names.items()):
        for j, op in enumerate(names):
            hand += float(probs[label][0, j]) * (0.0 if op == ZERO else table.entries[f"layers.{i}.op:{op}"])
    assert abs(float(model.expected(probs)) - hand) < 1e-9
    # a one-hot distribution gives the table's prediction for that architecture
    arch = space.sample(__import__("numpy").random.default_rng(0))
    indices = {label: [list(names).index(arch[label])] for label, names in relax.names.items()}
    one_hot = {label: F.one_hot(torch.tensor(i), len(relax.names[label])).float() for label, i in indices.items()}
    assert abs(float(model.expected(one_hot)) - table.predict(space, arch)) < 1e-9
    assert abs(model.of_choice(indices) - table.predict(space, arch)) < 1e-9
    assert model.smallest == pytest.approx(table.predict(space, space.uniform_arch(ZERO)))
    assert model.largest == pytest.approx(table.predict(space, space.uniform_arch("mb_k7_e6")))


@pytest.mark.parametrize("form", ["add", "mul"])
def test_latency_loss_alone_lowers_expected_latency(table_path, form):
    space = make_space("mbconv")
    model = ModuleLatency(space, space.supernet(SHAPE, 10), LatencyTable.load(table_path))
    torch.manual_seed(0)
    alphas = {label: nn.Parameter(0.01 * torch.randn(m.shape)) for label, m in model.matrices.items()}
    opt = torch.optim.Adam(alphas.values(), lr=0.05)
    target = (model.smallest * model.largest) ** 0.5
    probs = lambda: {label: torch.softmax(a, 1) for label, a in alphas.items()}  # noqa: E731
    start = float(model.expected(probs()))
    ce = torch.tensor(1.0)  # CE off: a constant
    for _ in range(100):
        opt.zero_grad()
        loss = LatencyPenalty(form, 0.5, target)(ce, model.expected(probs()))
        loss.backward()
        opt.step()
    end = float(model.expected(probs()))
    assert end < start - 0.5 * (start - model.smallest)


def test_table_errors(tmp_path, data):
    space = make_space("mbconv")
    other = make_space("mbconv", widths=[16, 48])
    path = tmp_path / "other.json"
    fake_table(other).save(path)
    with pytest.raises(ConfigError, match="another configuration"):
        _strategy(str(path)).search(space, data, seed=0)
    fake_table(space, device="onnxruntime").save(path)
    with pytest.raises(ConfigError, match="onnxruntime"):
        _strategy(str(path)).search(space, data, seed=0)
    fake_table(space, shape=(3, 8, 8)).save(path)
    with pytest.raises(ConfigError, match="input shape"):
        _strategy(str(path)).search(space, data, seed=0)
    table = fake_table(space)
    del table.entries["layers.5.op:mb_k5_e3"]  # stage1.layer2's candidate
    table.save(path)
    with pytest.raises(ConfigError, match="layers.5.op:mb_k5_e3"):
        _strategy(str(path)).search(space, data, seed=0)
    table = fake_table(space)
    table.save(path)
    smallest = ModuleLatency(space, space.supernet(SHAPE, 10), table).smallest
    with pytest.raises(ConfigError, match=f"smallest network.*{smallest:.4f} ms"):
        _strategy(str(path), {"target_ms": smallest * 0.9}).search(space, data, seed=0)
    with pytest.raises(ConfigError, match="relaxes a space written with choice modules"):
        _strategy(str(path)).search(make_space("layers"), data, seed=0)


def test_config_defaults_and_checks():
    strategy = make_strategy("proxyless", {}, "digits")
    cfg = strategy.config
    assert (cfg.a_lr, cfg.a_beta1, cfg.a_beta2, cfg.a_eps) == (0.02, 0.0, 0.999, 1e-8)
    lat = strategy.latency_config  # the run's latency section: auto loss and weight take the paper's
    assert (lat.loss, lat.weight, lat.alpha) == ("auto", None, 0.2) and strategy.latency_weight() == 0.3
    assert cfg.warmup_epochs == cfg.epochs // 4
    assert make_strategy("proxyless", {}, latency={"loss": "add"}).latency_weight() == 0.1
    assert make_strategy("proxyless", {"grad_estimator": "reinforce"}).latency_weight() == 0.1
    with pytest.raises(ConfigError, match=r"strategy.latency_weight is now latency.weight"):
        make_strategy("proxyless", {"latency_weight": 0.3})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        make_strategy("proxyless", {"epochs": 3, "warmup_epochs": 3})
    with pytest.raises(ConfigError, match="grad_estimator"):
        make_strategy("proxyless", {"grad_estimator": "ppo"})


# --------------------------------------------------------------------------- search loop
def test_search_records_and_derives(tmp_path, table_path, data):
    exp = Experiment.create(tmp_path / "run", {"strategy": {"name": "proxyless"}}, force=True)
    strategy = _strategy(table_path, {"loss": "add", "weight": 1.0}, epochs=3, warmup_epochs=1)
    result = strategy.search(make_space("mbconv"), data, experiment=exp, seed=0)
    rows = exp.store.epochs("search")
    assert [r["metrics"]["phase"] for r in rows] == ["warmup", "search", "search"]
    assert "arch_loss" not in rows[0]["metrics"] and "arch_loss" in rows[1]["metrics"]
    for r in rows:
        layers = r["arch_weights"]["layers"]
        assert list(layers) == [f"stage{i}.layer{j}" for i in range(2) for j in range(3)]
        assert all(abs(sum(p.values()) - 1) < 1e-6 for p in layers.values())
        assert r["metrics"]["expected_latency_ms"] > 0 and 0 <= r["metrics"]["valid_acc"] <= 1
    # derivation: argmax of alpha per layer
    for label in rows[-1]["arch_weights"]["layers"]:
        probs = rows[-1]["arch_weights"]["layers"][label]
        assert result.arch[label] == max(probs, key=probs.get)
    assert rows[-1]["arch"] == result.arch.to_dict()
    assert (tmp_path / "run" / "latency_table.json").is_file()  # the given table is kept with the run
    from nasforge.report import write_report

    write_report(tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "ProxylessNAS" in html and (tmp_path / "run" / "report" / "proxyless_layer_probs.png").is_file()
    assert (tmp_path / "run" / "report" / "proxyless_latency.png").is_file()
    assert not (tmp_path / "run" / "report" / "proxyless_pareto.png").exists()
    points = [{"run": f"w{w}", "latency_weight": w, "measured_latency_ms": 1.0 / (1 + w), "test_acc": 0.9 - 0.1 * w,
               "arch_summary": "x"} for w in (0, 1)]
    (tmp_path / "run" / "proxyless_tradeoff.json").write_text(json.dumps({"points": points, "this_run": "w1"}))
    write_report(tmp_path / "run")
    assert (tmp_path / "run" / "report" / "proxyless_pareto.png").is_file()
    assert "latency weight" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("estimator", ["binary", "reinforce", "full_v2"])
def test_resume_replays_exactly(tmp_path, table_path, data, estimator):
    # full_v2 also runs the official schedules: separate warm-up lr, a search epoch without arch steps
    extra = {"warmup_lr": 0.05, "arch_delay_epochs": 1, "epochs": 4} if estimator == "full_v2" else {}

    def run(name, callbacks=()):
        path = tmp_path / name
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {}, force=True)
        strategy = _strategy(table_path, **{"epochs": 3, "warmup_epochs": 1, "grad_estimator": estimator,
                                            "rl_samples": 2, **extra})
        return strategy, strategy.search(make_space("mbconv"), data, experiment=exp, seed=2, callbacks=callbacks)

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
    assert resumed.baseline == full.baseline
    if estimator == "reinforce":
        assert full.baseline is not None
        assert "arch_reward" in full_result.history[-1]["metrics"]
    strip = lambda h: [{k: v for k, v in r["metrics"].items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_result.history) == strip(full_result.history)


def test_reinforce_favours_the_rewarded_ops(table_path, data):
    """With accuracy flat, the latency reward alone must push probability to cheaper ops."""
    space = make_space("mbconv")
    model = space.supernet(SHAPE, 10)
    strategy = _prepared(_strategy(table_path, {"loss": "add", "weight": 1.0}, grad_estimator="reinforce",
                                   rl_samples=8, a_lr=0.1, alpha_init_std=0.0), space, model, table_path)
    torch.manual_seed(0)
    a_opt = torch.optim.Adam(strategy.relax.parameters(), lr=0.1, betas=(0.0, 0.999))
    with torch.no_grad():
        start = float(strategy.latency.expected(strategy.probs()))
    for _ in range(15):
        strategy.reinforce_step(model, a_opt, (data.x_valid[:8], data.y_valid[:8]))
    with torch.no_grad():
        assert float(strategy.latency.expected(strategy.probs())) < start


@pytest.mark.slow
def test_cli_search_with_proxyless_end_to_end(tmp_path: Path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    proc = subprocess.run(
        [sys.executable, "-m", "nasforge.cli", "search", "--space", "mbconv", "--strategy", "proxyless",
         "--set", "strategy.epochs=2", "--set", "train.epochs=3", "--out", str(out), "-q"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "mbconv" and result["strategy"] == "proxyless" and result["search_epochs"] == 2
    assert result["test_acc"] > 0.5 and result["latency"]["median_ms"] > 0
    assert result["search_info"]["predicted_latency_ms"] > 0
    assert (out / "latency_table.json").is_file()
    from nasforge.train import load_model

    model, arch, shape = load_model(out / "model.pt")
    assert arch.space == "mbconv" and model(torch.randn(1, *shape)).shape == (1, 10)
    # resume of a finished run reuses everything (the saved table included) and exits cleanly
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "resume", str(out), "-q"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "search", "--space", "mbconv", "--strategy",
                           "proxyless", "--set", "latency.target_ms=0.000001", "--out",
                           str(tmp_path / "bad"), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "error:" in proc.stderr + proc.stdout


# --------------------------------------------------------------------------- the official code's variants
def _single_choice(with_zero=True):
    torch.manual_seed(0)
    ops = {f"op{k}": nn.Linear(3, 3) for k in range(3)}
    if with_zero:
        ops["zero"] = Zero()
    model = OpChoice("layer", ops)
    strategy = make_strategy("proxyless", {"epochs": 2, "grad_estimator": "full_v2"}, "synthetic",
                             latency={"weight": 0.0})
    strategy.relax = Relaxation(model)
    strategy.latency, strategy.penalty = None, LatencyPenalty()
    with torch.no_grad():
        strategy.relax.alphas["layer"].copy_(torch.tensor([[0.3, -0.2, 0.5, 0.1][:len(ops)]]))
    return model, strategy


def test_full_v2_alpha_gradient_matches_a_direct_computation():
    """Official full_v2 on a hand-made choice: one path runs; dL/dg_k = <o_k(x), dL/dy> for every candidate k;
    dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) over the full softmax (SGD lr 1 exposes the gradient)."""
    model, strategy = _single_choice()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 0, 1])
    alpha = strategy.relax.alphas["layer"]
    for seed in range(6):
        old = alpha.detach().clone()
        torch.manual_seed(seed)
        active = int(torch.multinomial(torch.softmax(old[0], 0), 1))  # the draw the step will make
        torch.manual_seed(seed)
        strategy.full_v2_step(model, torch.optim.SGD([alpha], lr=1.0), (x, y))
        grad = old - alpha.detach()
        if active == 3:  # zero drawn: the official code leaves the choice alone
            assert torch.equal(grad, torch.zeros_like(grad))
            continue
        outs = [model.candidates[k](x).detach() for k in range(3)] + [torch.zeros(6, 3)]
        out = outs[active].clone().requires_grad_(True)
        (gy,) = torch.autograd.grad(F.cross_entropy(out, y), out)
        gates = torch.stack([(o * gy).sum() for o in outs])
        p = torch.softmax(old[0], 0)
        expected = torch.tensor([sum(gates[j] * p[j] * (float(i == j) - p[i]) for j in range(4)) for i in range(4)])
        assert torch.allclose(grad[0], expected, atol=1e-6), (seed, active)
        assert expected.abs().sum() > 0 and float(expected.sum()) == pytest.approx(0.0, abs=1e-6)
        with torch.no_grad():
            alpha.copy_(old)  # each draw from the same parameters
    assert all(c.weight.grad is None for c in model.candidates[:3])  # no weight gradients in the arch step


def test_binary_step_leaves_a_choice_alone_when_its_active_op_is_zero():
    model, strategy = _single_choice()
    alpha = strategy.relax.alphas["layer"]
    with torch.no_grad():
        alpha.copy_(torch.tensor([[-30.0, -30.0, 0.0, 30.0]]))  # the pair is (op2, zero), zero active
    old = alpha.detach().clone()
    strategy.binary_step(model, torch.optim.SGD([alpha], lr=1.0), (torch.randn(6, 3), torch.zeros(6).long()))
    assert torch.equal(alpha.detach(), old)


def test_full_v2_refuses_multi_input_choices(data):
    strategy = make_strategy("proxyless", {"epochs": 2, "grad_estimator": "full_v2", "batch_size": 32},
                             "synthetic", latency={"weight": 0.0})
    with pytest.raises(ConfigError, match="full_v2 gates single-op choices"):
        strategy.search(make_space("darts", nodes=2), data, seed=0)


def test_full_v2_search_on_mbconv_runs_and_moves_alphas(table_path, data):
    strategy = _strategy(table_path, epochs=2, grad_estimator="full_v2")
    result = strategy.search(make_space("mbconv"), data, seed=0)
    assert math.isfinite(result.history[-1]["metrics"]["arch_loss"])
    assert any(a.detach().abs().max() > 1e-2 for a in strategy.arch_parameters())


def test_separate_warmup_and_search_schedules(table_path, data):
    """warmup_lr: the warm-up's cosine from warmup_lr to 0 over its own steps, then the search's from w_lr;
    arch_delay_epochs: the first search epoch has no architecture step (official ``if epoch > 0``)."""
    strategy = _strategy(table_path, epochs=4, warmup_epochs=2, warmup_lr=0.05, w_lr=0.025, w_lr_min=0.0,
                         arch_delay_epochs=1)
    cfg = strategy.config
    strategy.steps_per_epoch = n = 10
    assert strategy.scheduled_lr(0, 0) == pytest.approx(0.05)
    assert strategy.scheduled_lr(1, 5) == pytest.approx(0.025 * (1 + math.cos(math.pi * 15 / 20)))
    assert strategy.scheduled_lr(2, 0) == pytest.approx(0.025)  # the search's own cosine starts afresh
    assert strategy.scheduled_lr(3, 5) == pytest.approx(0.0125 * (1 + math.cos(math.pi * 15 / 20)))
    assert strategy.warmup_epochs() == 3 and cfg.warmup_epochs == 2
    result = strategy.search(make_space("mbconv"), data, seed=0)
    n = strategy.steps_per_epoch
    assert n == math.ceil((len(data.train) - len(data.train) // 2) / 32)
    rows = [r["metrics"] for r in result.history]
    for e, m in enumerate(rows):  # the lr of each epoch's last weight step
        assert m["lr"] == pytest.approx(strategy.scheduled_lr(e, n - 1))
    assert [m["phase"] for m in rows] == ["warmup", "warmup", "search", "search"]
    assert ["arch_loss" in m for m in rows] == [False, False, False, True]


def test_label_smoothing_is_the_official_loss():
    strategy = make_strategy("proxyless", {"label_smoothing": 0.1}, "synthetic")
    logits, y = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    soft = F.one_hot(y, 4).float() * 0.9 + 0.1 / 4  # official cross_entropy_with_label_smoothing
    expected = (-soft * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(strategy.train_loss(logits, y), expected)
    assert make_strategy("proxyless", {}, "synthetic").config.label_smoothing == 0.0


def test_mul_loss_in_ms_is_the_official_formula_and_auto_unit():
    ce, e, t = torch.tensor(2.0), torch.tensor(95.0), 80.0
    official = 0.2 * 2.0 * (math.log(95.0) / math.log(80.0)) ** 0.3  # mul#log, alpha 0.2, beta 0.3, ms
    assert float(LatencyPenalty("mul", 0.3, t, 0.2, scale=1.0)(ce, e)) == pytest.approx(official)
    us = 0.2 * 2.0 * (math.log(95e3) / math.log(80e3)) ** 0.3
    assert float(LatencyPenalty("mul", 0.3, t, 0.2)(ce, e)) == pytest.approx(us)


def test_auto_log_unit_is_ms_when_every_network_takes_over_a_millisecond(tmp_path):
    space = make_space("mbconv")
    table = fake_table(space)
    slow = LatencyTable(**{**table.__dict__, "overhead_ms": 2.0})
    for name, tab, scale in (("fast", table, 1000.0), ("slow", slow, 1.0)):
        path = tmp_path / f"{name}.json"
        tab.save(path)
        strategy = _prepared(_strategy(str(path)), space, space.supernet(SHAPE, 10), str(path))
        assert strategy.penalty.scale == scale
    strategy = _prepared(_strategy(str(path), {"log_unit": "us"}), space, space.supernet(SHAPE, 10), str(path))
    assert strategy.penalty.scale == 1000.0


def test_flops_objective_counts_the_derived_network_and_lowers_expected_flops(data):
    from nasforge.hardware.cost import count_flops
    from nasforge.strategies.proxyless import build_flops_table

    space = make_space("mbconv")
    table = build_flops_table(space, SHAPE, 10)
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(3):  # the table's sum is the network's count
        arch = space.sample(rng)
        assert table.predict(space, arch) == pytest.approx(count_flops(space.build(arch, SHAPE, 10), SHAPE) / 1e6,
                                                           rel=1e-6)
    strategy = make_strategy("proxyless", {"epochs": 2, "warmup_epochs": 0, "batch_size": 32,
                                           "objective": "flops", "a_lr": 0.2},
                             "synthetic", latency={"loss": "add", "weight": 5.0})
    result = strategy.search(space, data, seed=0)
    first, last = result.history[0]["metrics"], result.history[-1]["metrics"]
    assert "expected_mflops" in last and "expected_latency_ms" not in last
    assert last["expected_mflops"] < first["expected_mflops"] < strategy.latency.largest
    assert result.info["target_mflops"] == pytest.approx(math.sqrt(strategy.latency.smallest
                                                                   * strategy.latency.largest))
    with pytest.raises(ConfigError, match="strategy.target_mflops=0.001 is below the smallest network"):
        make_strategy("proxyless", {"epochs": 2, "objective": "flops", "target_mflops": 0.001, "batch_size": 32},
                      "synthetic").search(space, data, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("dataset,shape", [("imagenet", (3, 224, 224)), ("cifar10", (3, 32, 32))])
def test_paper_presets_resolve_and_run_one_step(tmp_path, dataset, shape):
    """Each preset resolves and runs one loop step (an architecture and a weight step) on random data of its
    input shape (batch 2), its latency term on a made-up table of the preset's space."""
    from nasforge.oneshot.loop import make_optimizers, search_step
    from nasforge.pipeline import resolve_config
    from nasforge.progress import Progress

    cfg = resolve_config({"preset": "paper", "strategy": {"name": "proxyless", "batch_size": 2},
                          "data": {"name": dataset}})
    space = make_space(cfg.space["name"], **{k: v for k, v in cfg.space.items() if k != "name"})
    table = fake_table(space, shape=shape, num_classes=2)
    path = tmp_path / "table.json"
    LatencyTable(**{**table.__dict__, "overhead_ms": 50.0}).save(path)  # a phone-like network: over 1 ms
    cfg.latency.table = str(path)
    strategy = make_strategy("proxyless", {k: v for k, v in cfg.strategy.items() if k != "name"}, dataset,
                             latency=cfg.latency)
    if dataset == "imagenet":
        cfg_s = strategy.config
        assert (cfg_s.grad_estimator, cfg_s.arch_every, cfg_s.a_lr) == ("full_v2", 5, 1e-3)
        assert (strategy.config.warmup_epochs, strategy.config.epochs, cfg.latency.log_unit) == (40, 160, "ms")
    data = synthetic_dataset(num_samples=10, num_classes=2, input_shape=shape, seed=0)
    strategy.setup(space, data, None, Progress())
    model = strategy.build_supernet(space, data)
    strategy.init_arch(space, model)
    params = list(model.parameters())
    make_optimizers(strategy, params)
    strategy.epoch_started(strategy.config.warmup_epochs + 1)
    x, y = data.x_train[:2], data.y_train[:2]
    before = [a.detach().clone() for a in strategy.arch_parameters()]
    res, arch = search_step(strategy, strategy.engine, model, params, (x, y), (x, y))
    assert res.finite and math.isfinite(arch["arch_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, strategy.arch_parameters()))


def test_the_loop_s_weight_steps_use_label_smoothing(monkeypatch) -> None:
    """The shared loop's weight step takes the method's own loss (ProxylessNAS: smoothed cross-entropy)."""
    from nasforge.oneshot import loop

    seen = []
    real = loop.weight_step

    def spy(*args, **kwargs):
        seen.append(args[6] if len(args) > 6 else kwargs.get("loss_fn"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "weight_step", spy)
    strategy = make_strategy("proxyless", {"epochs": 1, "batch_size": 16, "label_smoothing": 0.1}, "synthetic",
                             latency={"loss": "none"})
    strategy.search(make_space("mbconv"), synthetic_dataset(num_samples=120, seed=0), seed=0)
    assert seen and all(fn is not None and fn.__func__ is type(strategy).train_loss for fn in seen)
