"""The one training engine: devices and precision, the fit loop and its resume, BatchNorm recalibration,
checkpoints that load anywhere, and the engine options of the CLI."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_cli import run_main
import torch
from torch import nn

from nasforge import training
from nasforge.data import iterate_batches, load_dataset, synthetic_dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.pipeline import config_dict, resolve_config, run_experiment
from nasforge.spaces import make_space
from nasforge.train import TrainConfig, load_model, save_model, train_arch
from nasforge.training import Engine, EngineConfig, FitConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY_TRAIN = TrainConfig(epochs=1, batch_size=32, layers=3, channels=4, cutout=0, drop_path=0.0, auxiliary=False)


def _cli(capsys, *args) -> tuple[int, str]:
    """``nasforge ARGS`` in-process: (exit code, stderr)."""
    capsys.readouterr()
    code = run_main(*args)
    return code, capsys.readouterr().err


class _Net(nn.Module):
    """A small conv + BatchNorm network on 8x8 images."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))

    def forward(self, x):
        return self.body(x)


def _tensors(n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return x, y


# --------------------------------------------------------------------------- devices and precision
def test_bad_device_or_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_config({"engine": {"device": "tpu"}})
    with pytest.raises(ConfigError, match="engine.precision='fp8' is not allowed"):
        resolve_config({"engine": {"precision": "fp8"}})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_config({"engine": {"device": "cuda"}})
        with pytest.raises(ConfigError, match="16-mixed needs a GPU"):
            resolve_config({"engine": {"device": "cpu", "precision": "16-mixed"}})
    cfg = resolve_config({"engine": {"device": "cpu", "precision": 32}})
    assert cfg.engine.device == "cpu" and cfg.engine.precision == "32"
    assert config_dict(cfg)["engine"]["bn_recalibration"] == 20


def test_compile_that_cannot_run_is_a_config_error(monkeypatch):
    reason = training.compile_unavailable(torch.device("cpu"))  # the real check runs without error
    assert reason is None or isinstance(reason, str)
    monkeypatch.setattr(training, "compile_unavailable", lambda device: "no C++ compiler")
    with pytest.raises(ConfigError, match="--compile: no C\\+\\+ compiler"):
        resolve_config({"engine": {"compile": True}})
    resolve_config({"engine": {"compile": False}})  # only checked when asked for


@pytest.mark.parametrize("args,needle", [
    (("--device", "tpu"), "unknown device 'tpu'"),
    (("--precision", "fp8"), "engine.precision"),
    (("--device", "cpu", "--precision", "16-mixed"), "16-mixed needs a GPU"),
    (("--device", "cuda:x"), "the GPU index must be a number"),
])
def test_cli_bad_engine_options_are_one_error_line_and_no_run_directory(capsys, tmp_path, args, needle):
    for command in (("search", "--data", "synthetic"), ("train", _arch_json(tmp_path), "--data", "synthetic")):
        out = tmp_path / "out"
        code, err = _cli(capsys, *command, *args, "--out", out, "-q")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
        assert not out.exists()


def test_cli_cuda_without_a_gpu_and_unavailable_compile_leave_no_run_directory(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    if not torch.cuda.is_available():
        code, err = _cli(capsys, "search", "--data", "synthetic", "--device", "cuda", "--out", out, "-q")
        assert code == 2 and err.strip().startswith("error:") and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    monkeypatch.setattr(training, "compile_unavailable", lambda device: "torch.compile is unavailable here")
    code, err = _cli(capsys, "search", "--data", "synthetic", "--compile", "--out", out, "-q")
    assert code == 2 and "error: --compile: torch.compile is unavailable here" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _arch_json(tmp_path: Path) -> Path:
    space = make_space("darts", nodes=1)
    return space.sample(np.random.default_rng(0)).save(tmp_path / "arch.json")


def test_device_cpu_run_equals_the_default_run(capsys, tmp_path):
    """`--device cpu` on a CPU machine is the default run: same architecture, same test accuracy."""
    if torch.cuda.is_available():
        pytest.skip("the default device is the GPU here")
    common = ("search", "--data", "synthetic", "--strategy", "random", "--evaluator", "synthetic", "--trials", "3",
              "--set", "train.epochs=1", "-q")
    assert _cli(capsys, *common, "--out", tmp_path / "default")[0] == 0
    assert _cli(capsys, *common, "--device", "cpu", "--out", tmp_path / "cpu")[0] == 0
    a, b = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("default", "cpu"))
    assert a["arch"] == b["arch"] and a["test_acc"] == b["test_acc"] and a["test_loss"] == b["test_loss"]
    import yaml

    assert yaml.safe_load((tmp_path / "cpu" / "config.yaml").read_text())["engine"]["device"] == "cpu"
    assert yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())["engine"]["device"] == "auto"


def test_bf16_autocast_on_the_cpu_runs_a_final_training_epoch():
    data = synthetic_dataset(num_samples=160, seed=0)
    space = make_space("darts", nodes=1)
    arch = space.sample(np.random.default_rng(0))
    engine = Engine(EngineConfig(device="cpu", precision="bf16"))
    dtypes = []
    original = engine.autocast

    def autocast():
        ctx = original()
        dtypes.append(torch.get_autocast_dtype("cpu"))
        return ctx

    engine.autocast = autocast
    result = train_arch(space, arch, data, TINY_TRAIN, seed=0, engine=engine)
    history = result.metrics["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert 0.0 <= result.metrics["test_acc"] <= 1.0 and math.isfinite(result.metrics["test_loss"])
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, not a bf16 model


# --------------------------------------------------------------------------- the fit loop
def _fit(model, x, y, epochs, **kwargs):
    def batches(epoch):
        return iterate_batches(x, y, 16, generator=torch.Generator().manual_seed(100 + epoch))

    def seed_epoch(epoch):
        torch.manual_seed(7 + epoch)

    cfg = FitConfig(epochs=epochs, batch_size=16, lr=0.1)
    return fit(model, batches, math.ceil(len(y) / 16), cfg, seed_epoch=seed_epoch, **kwargs)


def test_fit_resumed_after_an_interruption_ends_identical_to_an_uninterrupted_fit():
    x, y = _tensors()
    torch.manual_seed(0)
    full = _Net()
    _, full_history = _fit(full, x, y, 3)

    class Stop(Exception):
        pass

    class Bar:
        steps = 0

        def advance(self, n=1, **fields):
            Bar.steps += n
            if Bar.steps == 9:  # in the middle of epoch 1 (6 steps per epoch)
                raise Stop

    saved = {}
    torch.manual_seed(0)
    cut = _Net()
    with pytest.raises(Stop):
        _fit(cut, x, y, 3, progress_bar=Bar(), log_epoch=lambda e, m: saved.setdefault("log", []).append(m),
             checkpoint=lambda e, state: saved.update(state=pickle.loads(pickle.dumps(state))))
    assert saved["state"]["epoch"] == 0
    torch.manual_seed(123)  # the resumed process starts elsewhere: the epochs reseed themselves
    again = _Net()
    _, history = _fit(again, x, y, 3, resume=saved["state"], history=saved["log"])
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), again.state_dict().values()))
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in history] == \
           [{k: v for k, v in h.items() if k not in drop} for h in full_history]


def test_the_schedule_is_per_step_so_one_epoch_anneals_fully(monkeypatch):
    x, y = _tensors(160)
    lrs = []
    original = training.set_lr

    def spy(opt, lr):
        lrs.append(lr)
        original(opt, lr)

    monkeypatch.setattr(training, "set_lr", spy)
    _, history = _fit(_Net(), x, y, 1)
    assert len(lrs) == 10 and lrs[0] == 0.1
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.003
    assert history[0]["lr"] == lrs[-1] and history[0]["samples"] == 160


def test_a_nan_loss_is_a_training_error_naming_the_fix():
    from nasforge.errors import TrainingError

    x, y = _tensors()
    x[:] = float("nan")
    with pytest.raises(TrainingError, match="NaN/inf at epoch 0 step 0; lower it"):
        _fit(_Net(), x, y, 1, nan_hint="lower it")


# --------------------------------------------------------------------------- BatchNorm recalibration
def test_recalibrate_bn_resets_statistics_and_keeps_the_random_stream():
    x, y = _tensors()
    model = _Net()
    bn = model.body[1]
    bn.running_mean.fill_(100.0)
    torch.manual_seed(3)
    used = training.recalibrate_bn(model, model, iterate_batches(x, y, 16), max_batches=4)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))  # the caller's random stream is untouched
    assert used == 4 and not model.training and bn.momentum == 0.1
    assert bn.running_mean.abs().max() < 50
    assert int(bn.num_batches_tracked) == 4


def test_one_epoch_final_training_on_digits_scores_well_thanks_to_bn_recalibration():
    """Without fresh statistics this network scores about 10% (its running averages lag far behind)."""
    data = load_dataset("digits", seed=0)
    space = make_space("darts")
    arch = space.sample(np.random.default_rng(0))
    cfg = TrainConfig(epochs=1, batch_size=64, layers=3, channels=8, cutout=0, drop_path=0.0, auxiliary=False)
    result = train_arch(space, arch, data, cfg, seed=0, engine=Engine(EngineConfig(device="cpu")))
    assert result.metrics["test_acc"] > 0.5, result.metrics["test_acc"]


# --------------------------------------------------------------------------- checkpoints load anywhere
def test_model_and_checkpoints_are_saved_on_the_cpu_and_loaded_with_map_location(tmp_path, monkeypatch):
    data = synthetic_dataset(num_samples=160, seed=0)
    space = make_space("darts", nodes=1)
    arch = space.sample(np.random.default_rng(0))
    exp = Experiment.create(tmp_path / "run", {})
    result = train_arch(space, arch, data, TINY_TRAIN, seed=0, experiment=exp, engine=Engine(EngineConfig("cpu")))
    path = save_model(result.model, arch, data.input_shape, data.num_classes,
                      {"layers": 3, "channels": 4, "auxiliary": False}, tmp_path / "model.pt")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    assert all(t.device.type == "cpu" for t in blob["state_dict"].values())

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model, loaded, _ = load_model(path)
    state = exp.load_checkpoint("train")
    exp.close()
    assert calls == ["cpu", "cpu"]
    assert loaded == arch and state["epoch"] == 0 and set(state) >= {"model", "opt", "engine"}
    result.model.eval()
    x = data.x_test[:4]
    assert torch.equal(model(x), result.model(x))
    assert all(torch.equal(state["model"][name], p) for name, p in result.model.named_parameters())


# --------------------------------------------------------------------------- the engine reaches every trainer
def test_run_experiment_gives_the_engine_to_strategies_that_take_it_and_to_the_train_evaluator(tmp_path, monkeypatch):
    import nasforge.pipeline as pipeline
    from nasforge.strategies.base import SearchResult
    from nasforge.trials import search_options

    cfg = resolve_config({"data": {"name": "synthetic"}, "space": {"name": "darts", "nodes": 1},
                          "train": {"epochs": 1, "layers": 3, "channels": 4}, "engine": {"device": "cpu"}})
    seen = {}

    class TakesEngine:
        kind = "oneshot"

        def search(self, space, data, *, experiment=None, progress=None, seed=0, engine=None):
            seen["engine"] = engine
            return SearchResult(space.sample(np.random.default_rng(0)), {})

    monkeypatch.setattr(pipeline, "build_strategy", lambda cfg: TakesEngine())
    run_experiment(Experiment.create(tmp_path / "run", config_dict(cfg)), cfg)
    assert isinstance(seen["engine"], Engine) and seen["engine"].device.type == "cpu"

    data = synthetic_dataset(num_samples=160, seed=0)
    options = search_options(cfg, pipeline.build_space(cfg), data, engine=Engine(cfg.engine))
    evaluator = options["evaluator"]
    assert evaluator.engine_config is cfg.engine
    assert pickle.loads(pickle.dumps(evaluator)).engine_config == cfg.engine  # Ray ships it to workers


def test_quantize_checks_its_engine_options_before_writing_anything(capsys, tmp_path):
    space = make_space("darts", nodes=1)
    arch = space.sample(np.random.default_rng(0))
    data = synthetic_dataset(num_samples=160, seed=0)
    build = {"layers": 3, "channels": 4, "auxiliary": False}
    model = space.build(arch, data.input_shape, data.num_classes, **build)
    path = save_model(model, arch, data.input_shape, data.num_classes, build, tmp_path / "model.pt")
    for args, needle in ((("--device", "tpu"), "unknown device 'tpu'"), (("--precision", "fp8"), "engine.precision")):
        out = tmp_path / "q"
        code, err = _cli(capsys, "quantize", path, "--budget", "size=0.5", "--data", "synthetic", *args, "--out", out)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
        assert not out.exists()
