"""HAQ: state features, action mapping, budget enforcement, the DDPG update, resume, the API and the CLI."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.data import synthetic_dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware.accelerators import make_accelerator
from nasforge.quant import calibrate, layer_infos, parse_budget, wrap_model
from nasforge.quant.ddpg import DDPGAgent, DDPGConfig
from nasforge.quant.env import QuantEnv, action_to_bits, finetune_steps, state_features
from nasforge.report.sections.haq import haq_section
from nasforge.strategies.haq import HaqConfig, HaqSearch, make_haq_config, quantize

# the tiny model's first and last layers hold most of its weights, so the mechanism tests search all four layers
# (first_last_bits=0) and skip the per-episode fine-tune (finetune_steps=0) for speed; the defaults (pinned at 8
# bits, one fine-tune epoch per episode) have their own tests below
TINY = {"episodes": 4, "warmup": 2, "finetune_epochs": 1, "hidden": 16, "update_batch": 8, "calib_samples": 64,
        "first_last_bits": 0, "finetune_steps": 0}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(num_samples=300, seed=0)


def mobile_net() -> nn.Module:
    """A small user model with depthwise and pointwise layers."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def trained(data):
    model = mobile_net()
    finetune_steps(model, data.x_train, data.y_train, steps=60, lr=0.05, batch_size=32, seed=0)
    return model.eval()


def make_env(model, data, budget="size=0.5", accelerator="bitserial", first_last_bits=None, **kw) -> QuantEnv:
    q = wrap_model(model)
    infos = layer_infos(q, data.input_shape)
    calibrate(q, data.x_train[:64])
    return QuantEnv(q, infos, make_accelerator(accelerator), parse_budget(budget), (data.x_train, data.y_train),
                    (data.x_valid, data.y_valid), first_last_bits=first_last_bits, **kw)


# --- environment -----------------------------------------------------------------------
def test_state_features_are_normalised(trained, data):
    env = make_env(trained, data)
    feats = state_features(env.infos)
    assert feats.shape == (4, 8) and feats.min() >= 0.0 and feats.max() <= 1.0
    assert feats[:, 0].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])  # layer index
    assert feats[:, 7].tolist() == [0.0, 1.0, 0.0, 0.0]  # only layer 1 is depthwise
    state = env.reset()
    seen = [state]
    done = False
    while not done:
        state, done = env.step(0.37)
        seen.append(state)
    arr = np.stack(seen)
    assert arr.shape == (9, 10) and arr.min() >= 0.0 and arr.max() <= 1.0
    assert arr[0, 8] == 1.0 and arr[1, 8] == 0.0  # weight flag, then activation flag
    assert arr[0, 9] == 1.0 and arr[1, 9] == pytest.approx(4 / 8)  # previous action: bits / bmax (HAQ code)


def test_action_mapping_covers_the_bit_range_evenly():
    assert action_to_bits(0.0, 2, 8) == 2 and action_to_bits(1.0, 2, 8) == 8
    counts = np.bincount([action_to_bits(a, 2, 8) for a in np.linspace(0, 1, 7001)], minlength=9)[2:]
    assert counts.min() > 900 and counts.max() < 1100  # 7 equal-width bins
    assert action_to_bits(0.5, 4, 4) == 4


@pytest.mark.parametrize("budget", ["size=0.26", "size=0.6", "size=300B", "latency=0.75", "latency=0.9",
                                    "energy=0.7"])
@pytest.mark.parametrize("accelerator", ["bitserial", "bitfusion"])
def test_budget_enforcement_always_ends_within_budget(trained, data, budget, accelerator):
    env = make_env(trained, data, budget, accelerator)
    rng = np.random.default_rng(0)
    for _ in range(25):
        raw = [tuple(int(b) for b in rng.integers(2, 9, size=2)) for _ in range(env.n_layers)]
        policy = env.enforce(raw)
        assert env.cost(policy).get(env.budget.kind) <= env.target * (1 + 1e-9)
        assert all(2 <= w <= r[0] and 2 <= a <= r[1] for (w, a), r in zip(policy, raw))  # only ever lowered
        if env.fits(raw):
            assert policy == raw


def test_size_budget_below_all_2_bit_is_a_clear_error(trained, data):
    with pytest.raises(ConfigError, match=r"below the smallest achievable .* \(all layers at 2 bits\); raise --budget"):
        make_env(trained, data, "size=0.2")
    with pytest.raises(ConfigError, match="latency budget"):
        make_env(trained, data, "latency=1ns")


def test_bit_range_and_options_are_checked():
    with pytest.raises(ConfigError, match="1..32"):
        make_haq_config({"bmin": 0})
    with pytest.raises(ConfigError, match="out of range"):
        make_haq_config({"bmax": 33})
    with pytest.raises(ConfigError, match="swap"):
        HaqConfig(bmin=6, bmax=4)
    with pytest.raises(ConfigError, match="unknown config key"):
        make_haq_config({"episode": 3})


# --- agent ------------------------------------------------------------------------------
def test_ddpg_update_reduces_the_critic_loss_on_a_toy_problem():
    rng = np.random.default_rng(0)
    agent = DDPGAgent(3, DDPGConfig(hidden=32, batch_size=32, capacity=500), seed=0)
    for _ in range(500):  # one-step episodes: Q(s, a) = reward = -(a - s0)^2
        s = rng.uniform(0, 1, 3).astype(np.float32)
        a = float(rng.uniform())
        agent.buffer.add(s, a, -(a - s[0]) ** 2, s, True)
    first = [agent.update()[0] for _ in range(10)]
    for _ in range(300):
        agent.update()
    last = [agent.update()[0] for _ in range(10)]
    assert np.mean(last) < 0.5 * np.mean(first)


def test_agent_state_round_trip_continues_identically():
    a, b = DDPGAgent(4, DDPGConfig(hidden=8, batch_size=4, warmup=0), seed=3), None
    for i in range(10):
        a.buffer.add(np.full(4, i / 10, np.float32), 0.5, float(i), np.zeros(4, np.float32), i % 3 == 0)
    a.update()
    b = DDPGAgent(4, DDPGConfig(hidden=8, batch_size=4, warmup=0), seed=99)
    b.load_state_dict(a.state_dict())
    s = np.full(4, 0.2, np.float32)
    assert [a.act(s, 5), a.update()] == [b.act(s, 5), b.update()]


# --- search -----------------------------------------------------------------------------
def test_quantize_a_plain_user_module(trained, data):
    result = quantize(trained, data, "size=0.4", config=TINY, seed=0)
    m = result.metrics
    assert len(result.policy) == 4 and m["within_budget"]
    assert m["size_bytes"] <= m["target"] == pytest.approx(0.4 * m["size_8bit_bytes"])
    assert all(2 <= w <= 8 and 2 <= a <= 8 for w, a in result.policy)
    assert [layer["depthwise"] for layer in m["layers"]] == [False, True, False, False]
    assert 0.0 <= m["test_acc"] <= 1.0 and m["float_test_acc"] > 0.5
    assert len(result.history) == 4 and result.history[1]["delta"] is None
    assert [r["delta"] for r in result.history[2:]] == pytest.approx([0.5, 0.495])  # 0.5 * 0.99 ** (episode - warmup)


def test_weight_only_search_keeps_the_fixed_activation_bits(trained, data):
    result = quantize(trained, data, "size=0.3", config=dict(TINY, episodes=3, warmup=1, abits=6, finetune_epochs=0))
    assert [a for _, a in result.policy] == [6, 6, 6, 6]
    assert all(r["raw_policy"][i][1] == 6 for r in result.history for i in range(4))
    assert result.metrics["test_acc"] == result.metrics["quant_test_acc_before_finetune"]  # no fine-tune


def test_resume_ends_where_an_uninterrupted_run_ends(trained, data, tmp_path, monkeypatch):
    cfg = dict(TINY, episodes=5, warmup=2, finetune_steps=2)
    full = quantize(trained, data, "latency=0.8", config=cfg, seed=1,
                    experiment=Experiment.create(tmp_path / "full", {"x": 1}))
    original = HaqSearch._episode

    def crash_at_3(self, agent, episode):
        if episode == 3:
            raise KeyboardInterrupt
        return original(self, agent, episode)

    exp = Experiment.create(tmp_path / "cut", {"x": 1})
    monkeypatch.setattr(HaqSearch, "_episode", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        quantize(trained, data, "latency=0.8", config=cfg, seed=1, experiment=exp)
    monkeypatch.setattr(HaqSearch, "_episode", original)
    assert len(exp.store.epochs("haq")) == 3
    resumed = quantize(trained, data, "latency=0.8", config=cfg, seed=1, experiment=Experiment.open(tmp_path / "cut"))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)
    assert resumed.policy == full.policy
    assert resumed.metrics["test_acc"] == full.metrics["test_acc"]


def _tiny_nasforge_run(tmp_path: Path, data) -> Path:
    """A darts network trained for one epoch with nasforge.train, saved as a run directory."""
    import yaml

    from nasforge.spaces import make_space
    from nasforge.train import TrainConfig, build_options, save_model, train_arch

    space = make_space("darts")
    arch = space.sample(np.random.default_rng(0))
    cfg = TrainConfig(epochs=1, batch_size=64, layers=2, channels=4, cutout=0, drop_path=0.0, auxiliary=False)
    trained = train_arch(space, arch, data, cfg, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    save_model(trained.model, arch, data.input_shape, data.num_classes, build_options(cfg), run / "model.pt")
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data": {"name": "synthetic"}}))
    return run


def test_quantize_a_network_found_by_nasforge(tmp_path, data):
    from nasforge.train import load_model

    run = _tiny_nasforge_run(tmp_path, data)
    model, _, shape = load_model(run / "model.pt")
    result = quantize(model, data, "energy=0.5", accelerator="bitfusion", config=dict(TINY, episodes=2, warmup=1),
                      input_shape=shape)
    assert result.metrics["within_budget"] and len(result.policy) == len(result.metrics["layers"]) > 5
    assert result.metrics["energy"] <= 0.5 * result.metrics["energy_8bit"] * (1 + 1e-9)


def test_model_without_quantizable_layers(data):
    with pytest.raises(ConfigError, match="no nn.Conv2d or nn.Linear"):
        quantize(nn.Sequential(nn.Flatten(), nn.Softmax(dim=1)), data, "size=0.5", config=TINY)


# --- CLI ----------------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*args)`` -> (exit code, stdout, stderr) of an in-process ``nasforge`` call."""
    from nasforge.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["nasforge", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, ANSI.sub("", out), ANSI.sub("", err)

    return call


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data):
    return _tiny_nasforge_run(tmp_path_factory.mktemp("haqcli"), data)


@pytest.mark.parametrize("args, message", [
    (["--budget", "size"], "must look like KIND=VALUE"),
    (["--budget", "size=0.01"], "below the smallest achievable"),
    (["--budget", "size=0.5", "--set", "haq.bmin=0"], "haq.bmin=0 is out of range"),
    (["--budget", "size=0.5", "--accelerator", "tpu"], "unknown accelerator"),
])
def test_cli_errors_are_one_line(cli, run_dir, tmp_path, args, message):
    code, _, err = cli("quantize", str(run_dir), "--out", str(tmp_path / "q"), *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not (tmp_path / "q").exists()  # nothing written for bad input


@pytest.mark.slow
def test_cli_quantize_end_to_end_and_report(cli, run_dir, tmp_path):
    out = tmp_path / "q"
    args = ["quantize", str(run_dir), "--budget", "size=0.5", "--episodes", "3", "--finetune-epochs", "1",
            "--set", "haq.warmup=1", "--set", "haq.hidden=16", "--out", str(out), "-q"]
    code, stdout, err = cli(*args)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["within_budget"] and result["size_bytes"] <= result["target"]
    assert (out / "quantized.pt").is_file() and "test accuracy" in stdout
    exp = Experiment.open(out)
    assert [r["epoch"] for r in exp.store.epochs("haq")] == [0, 1, 2]
    exp.close()
    code, _, err = cli(*args)  # same settings: resumes (nothing left to search) and finishes again
    assert code == 0 and "resuming" in err
    assert json.loads((out / "result.json").read_text())["policy"] == result["policy"]
    code, _, err = cli("resume", str(out), "-q")  # `nasforge resume` knows a quantize run too
    assert code == 0 and "resuming" in err, err
    assert json.loads((out / "result.json").read_text())["policy"] == result["policy"]
    code, _, err = cli(*[a if a != "size=0.5" else "size=0.6" for a in args])
    assert code == 2 and "--force" in err
    code, _, err = cli("report", str(out))
    assert code == 0, err
    page = (out / "report.html").read_text()
    assert "HAQ mixed-precision quantization" in page and (out / "report" / "haq_bits.png").is_file()
    assert haq_section(run_dir, tmp_path) is None  # not a quantize run


# --- the official code's behaviour -------------------------------------------------------------
def test_reward_is_the_official_scale_on_a_known_case(trained, data):
    """HAQ code: ``reward = (acc - org_acc) * 0.1`` with top-1 accuracies in percent."""
    env = make_env(trained, data)
    env.org_acc = 0.90
    assert env.reward(0.85) == pytest.approx(-0.5)  # (85 - 90) * 0.1
    assert env.reward(0.90) == 0.0 and env.reward(0.923) == pytest.approx(0.23)


def test_first_and_last_layers_are_pinned_to_8_bits(trained, data):
    env = make_env(trained, data, "size=0.8", first_last_bits=8)
    assert env.pinned == {0, 3}
    rng = np.random.default_rng(0)
    for _ in range(20):
        raw = [tuple(int(b) for b in rng.integers(2, 9, size=2)) for _ in range(4)]
        policy = env.enforce(raw)
        assert policy[0] == policy[-1] == (8, 8) and env.fits(policy)
        assert all(w <= r[0] and a <= r[1] for (w, a), r in zip(policy[1:3], raw[1:3]))  # the others only lowered
    with pytest.raises(ConfigError, match=r"all layers at 2 bits, first and last at 8\); raise --budget"):
        make_env(trained, data, "size=0.5", first_last_bits=8)  # 0.5 < (72 + 160 + 200 / 4) / 432
    assert make_env(trained, data, "size=0.5").pinned == set()  # first_last_bits=None: searched


def test_the_per_episode_fine_tune_is_on_by_default(trained, data):
    search = HaqSearch(trained, data, "size=0.9", config={"calib_samples": 64})
    assert HaqConfig().finetune_steps is None and HaqConfig().first_last_bits == 8
    n = len(data.y_train)
    assert search.env.finetune_steps == math.ceil(min(20000, n) / 64) > 0  # one epoch (HAQ: 20k images)
    assert search.agent_capacity() == 128 * 4  # HAQ: rmsize 128 per layer
    policy = [(8, 8), (3, 3), (3, 3), (8, 8)]
    tuned = search.env.evaluate(policy, seed=0)
    weights = search.qmodel[3].layer.weight.detach().clone()  # fine-tuned
    search.env.finetune_steps = 0
    plain = search.env.evaluate(policy, seed=0)
    assert not torch.equal(weights, search.qmodel[3].layer.weight)  # evaluate restored the float weights
    assert tuned != plain


def test_kmeans_search_under_a_size_budget(trained, data):
    result = quantize(trained, data, "size=0.5", config=dict(TINY, quantizer="kmeans", episodes=3, warmup=1))
    assert result.metrics["within_budget"] and result.metrics["quantizer"] == "kmeans"
    assert all(a == 32 for _, a in result.policy)  # activations stay float
    for (w, _), layer in zip(result.policy, [m for m in result.model.modules() if hasattr(m, "w_labels")]):
        assert layer.quantized_weight().unique().numel() <= 2**w
    with pytest.raises(ConfigError, match="kmeans has no integer kernels"):
        HaqSearch(trained, data, "latency=0.5", config=dict(TINY, quantizer="kmeans"))
    with pytest.raises(ConfigError, match="k-means quantizes weights only"):
        make_haq_config({"quantizer": "kmeans", "abits": 4})


def test_latency_measured_on_onnxruntime_int8_kernels(trained, data):
    pytest.importorskip("onnxruntime")
    from nasforge.quant.ort import OrtInt8Accelerator

    search = HaqSearch(trained, data, "latency=1.0", accelerator="onnxruntime",
                       config=dict(TINY, ort_repeats=5))
    acc = search.accelerator
    assert isinstance(acc, OrtInt8Accelerator) and set(acc.table) == {f.name for f in search.infos}
    assert all(v["int8"] > 0 and v["float"] > 0 for v in acc.table.values())
    info = search.infos[1]
    assert acc.layer_cost(info, 2, 3) == acc.layer_cost(info, 8, 8) == (acc.table[info.name]["int8"], 0.0)
    assert acc.layer_cost(info, 32, 8)[0] == acc.table[info.name]["float"]  # above 8 bits: the float kernel
    # every 2-8-bit policy runs the same int8 kernels: the measured latency does not depend on the widths
    assert search.env.cost([(2, 2)] * 4).latency == search.env.cost([(8, 8)] * 4).latency == search.env.target
    result = search.run()
    assert result.metrics["within_budget"] and result.metrics["energy"] is None
    with pytest.raises(ConfigError, match="measures latency, not energy"):
        HaqSearch(trained, data, "energy=0.5", accelerator="onnxruntime", config=TINY)
    with pytest.raises(ConfigError, match="onnxruntime"):
        HaqSearch(trained, data, "latency=0.5", accelerator="tpu", config=TINY)


@pytest.mark.parametrize("name", ["paper", "paper-kmeans"])
def test_haq_presets_resolve_and_run_one_episode(name):
    """The presets hold the official settings and run (one episode, small batches) on their input shape."""
    from nasforge.presets import find_preset

    preset = find_preset(name, "haq", "imagenet")
    cfg = make_haq_config(preset.settings["haq"])
    assert (cfg.episodes, cfg.warmup, cfg.finetune_images, cfg.finetune_lr) == (600, 20, 20000, 1e-3)
    assert cfg.quantizer == ("linear" if name == "paper" else "kmeans")
    small = synthetic_dataset(num_samples=24, num_classes=4, input_shape=(3, 224, 224), seed=0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4),
                          nn.ReLU(), nn.Conv2d(4, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    overrides = {"episodes": 1, "warmup": 1, "batch_size": 4, "final_batch_size": 4, "calib_samples": 4,
                 "finetune_images": 8, "finetune_epochs": 0, "hidden": 8, "update_batch": 4}
    result = quantize(model, small, "size=0.9", config={**preset.settings["haq"], **overrides})
    assert result.metrics["within_budget"] and result.history[0]["valid_acc"] is not None
    if name == "paper":
        assert result.policy[0] == result.policy[-1] == (8, 8)


def test_cli_preset_for_quantize(cli, run_dir, tmp_path):
    code, _, err = cli("quantize", str(run_dir), "--budget", "size=0.5", "--preset", "paper",
                       "--out", str(tmp_path / "q"))
    assert code == 2 and "preset 'paper' has no settings for haq on synthetic" in err and "haq/imagenet" in err
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_cli_measured_latency_run_exports_as_qdq_onnx(cli, run_dir, tmp_path):
    """`--accelerator onnxruntime`: latency measured (energy not), and `nasforge export` of the run is QDQ ONNX."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", str(run_dir), "--budget", "latency=1.0", "--accelerator", "onnxruntime",
                            "--episodes", "1", "--finetune-epochs", "0", "--set", "haq.warmup=1",
                            "--set", "haq.hidden=8", "--set", "haq.ort_repeats=3", "--set", "haq.finetune_steps=1",
                            "--out", str(out), "-q")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["within_budget"] and result["energy"] is None and result["accelerator"] == "onnxruntime"
    assert "latency (measured)" in stdout and "not measured" in stdout
    assert {layer["bound"] for layer in result["layers"]} == {"int8 kernel"}
    code, _, err = cli("export", str(out), "--out", str(tmp_path / "export"))
    assert code == 0, err
    ops = [n.op_type for n in onnx.load(str(tmp_path / "export" / "model.onnx")).graph.node]
    assert ops.count("QuantizeLinear") >= len(result["layers"]) and "DequantizeLinear" in ops
