"""The main job: search, derive, train the found architecture, measure it, save it.

``RunConfig`` is the whole configuration of a run (the content of ``config.yaml``);
``run_experiment`` executes it in an experiment directory and is idempotent: each
phase whose output already exists is skipped, and an interrupted phase continues from
its last checkpoint, so ``nasforge resume DIR`` is just running it again.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from nasforge.arch import Arch
from nasforge.config import apply_override, load_section, option, to_dict
from nasforge.data import Dataset, dataset_names, load_dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware import count_flops, count_params, measure_latency
from nasforge.hardware.penalty import LatencyConfig
from nasforge.profiles import fill_auto
from nasforge.progress import Progress
from nasforge.registry import check_supported
from nasforge.spaces import SearchSpace, make_space
from nasforge.strategies import Strategy, make_strategy
from nasforge.train import TrainConfig, build_options, save_model, train_arch
from nasforge.training import Engine, EngineConfig, check_engine
from nasforge.runners import RunnerConfig
from nasforge.trials import TrialsConfig, search_options
from nasforge.utils import environment_info

log = logging.getLogger(__name__)

#: The strategy of `nasforge search` with no arguments: GDAS holds the main job's bars
#: (under 5 minutes on 2 cores, >= 95% on digits) with far more room than DARTS
#: (docs/benchmarks.md).
DEFAULT_STRATEGY = "gdas"


@dataclass
class DataConfig:
    name: str = option("digits", help="dataset: digits (embedded), synthetic, cifar10, cifar100, imagenet, "
                       "imagenet16, tiny-imagenet, imagefolder, npz (see `nasforge list`)")
    dir: str | None = option(None, help="folder or file holding the dataset (all but digits and synthetic)")
    valid_fraction: float | None = option(None, lo=0.0, hi=0.9, help="share of the training set held out (auto)")
    workers: int = option(0, lo=0, hi=256, help="DataLoader worker processes (0: load in the main process)")
    image_size: int | None = option(None, lo=4, hi=1024, help="input side of image folders (auto: imagenet 224, "
                                    "imagefolder the median short side)")


@dataclass
class LoggingConfig:
    loggers: list[str] = option([], help="standard loggers besides the store: csv, tensorboard, mlflow (several at "
                                         "once)")
    mlflow_uri: str | None = option(None, help="MLflow tracking URI (auto: $MLFLOW_TRACKING_URI, else a file store "
                                               "in DIR/mlruns)")
    mlflow_experiment: str = option("nasforge", help="MLflow experiment the run is logged in")


@dataclass
class RunConfig:
    """Everything a run needs; written to ``config.yaml`` fully resolved."""

    seed: int = option(0, lo=0, hi=2**31 - 1, help="seed of every random choice")
    #: settings preset applied under this config (``nasforge list presets``); None: none
    preset: str | None = option(None, help="settings preset (e.g. paper) filled in under this config")
    data: DataConfig = field(default_factory=DataConfig)
    space: dict[str, Any] = field(default_factory=lambda: {"name": "darts"})
    strategy: dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_STRATEGY})
    train: TrainConfig = field(default_factory=TrainConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    # sample-based strategies (random, evolution...): how trials are scored, budgeted and run
    evaluator: dict[str, Any] = field(default_factory=lambda: {"name": "train"})
    trials: TrialsConfig = field(default_factory=TrialsConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    # device, precision, torch.compile, BatchNorm recalibration of every network the run trains
    engine: EngineConfig = field(default_factory=EngineConfig)
    # CSV files, TensorBoard events (nasforge.loggers)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


SECTIONS = tuple(f.name for f in fields(RunConfig))


def resolve_config(raw: dict[str, Any] | None = None, overrides: list[tuple[list[str], Any]] = (),
                   search: bool = True) -> RunConfig:
    """Check a raw config (YAML mapping plus ``--set`` overrides) and fill its "auto" fields.

    With ``search`` (a run that will search) the strategy and evaluator must support the space.
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw or {}).items()}
    for path, value in overrides:
        apply_override(raw, path, value)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"unknown config section '{key}'; valid sections are {list(SECTIONS)}")
    if raw.get("preset") is not None:  # the preset's settings go under the config and --set
        from nasforge.presets import apply_preset, find_preset

        names = {k: (raw.get(k) or {}).get("name") if isinstance(raw.get(k), dict) else None
                 for k in ("strategy", "data")}
        raw = apply_preset(raw, find_preset(str(raw["preset"]), names["strategy"] or DEFAULT_STRATEGY,
                                            names["data"] or "digits"))
    for key in ("data", "space", "strategy", "train", "latency", "evaluator", "trials", "runner", "engine", "logging"):
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"config section '{key}' must be a mapping, got {raw[key]!r}")
    cfg = RunConfig(
        seed=load_section(RunConfig, {"seed": raw["seed"]} if "seed" in raw else {}, "config").seed,
        preset=None if raw.get("preset") is None else str(raw["preset"]),
        data=load_section(DataConfig, raw.get("data"), "data"),
        train=load_section(TrainConfig, raw.get("train"), "train"),
        latency=load_section(LatencyConfig, raw.get("latency"), "latency"),
        trials=load_section(TrialsConfig, raw.get("trials"), "trials"),
        runner=load_section(RunnerConfig, raw.get("runner"), "runner"),
        engine=load_section(EngineConfig, raw.get("engine"), "engine"),
        logging=load_section(LoggingConfig, raw.get("logging"), "logging"),
    )
    check_engine(cfg.engine)
    from nasforge.loggers import check_loggers

    check_loggers(cfg.logging.loggers)  # an unknown logger or a missing package fails before a run directory exists  # a device, precision or compile this machine lacks fails before a run directory exists
    from nasforge.hardware.latency import check_device

    check_device(cfg.latency.device, "latency.device")  # not after the whole search and training
    if cfg.data.name not in dataset_names():
        raise ConfigError(f"unknown dataset '{cfg.data.name}'; choose one of {dataset_names()}")
    space = dict(raw.get("space") or {})
    space.setdefault("name", "darts")
    from nasforge.spaces.modular import is_space_reference, normalize_reference

    if is_space_reference(space["name"]):  # a user's space: recorded so resume/train/export find it again
        space["name"] = normalize_reference(space["name"])
    strategy = dict(raw.get("strategy") or {})
    strategy.setdefault("name", DEFAULT_STRATEGY)
    # a strategy's defaults for a section it runs with ({"space": {"layers": {...}}}), under the config
    from nasforge.strategies import get_strategy_class

    for section, by_name in getattr(get_strategy_class(strategy["name"]), "section_defaults", {}).items():
        target = space if section == "space" else raw.setdefault(section, {})
        for key, value in by_name.get(target.get("name", "train" if section == "evaluator" else None), {}).items():
            target.setdefault(key, value)
    # Instantiate once to check names, options and ranges; store the resolved options.
    space_obj = make_space(space["name"], **{k: v for k, v in space.items() if k != "name"})
    strat = make_strategy(strategy["name"], {k: v for k, v in strategy.items() if k != "name"}, cfg.data.name,
                          latency=cfg.latency)
    if search:  # an incompatible pair fails before a run directory exists
        check_supported(type(strat), space_obj)
    cfg.space = space
    cfg.strategy = {"name": strategy["name"], **to_dict(strat.config)}
    fill_auto(cfg.train, cfg.data.name, "train")
    if cfg.latency.table:  # a missing or corrupt table fails before a run directory exists
        from nasforge.hardware.lut import LatencyTable

        LatencyTable.load(cfg.latency.table)
    cfg.trials.fill_auto(cfg.data.name)
    if "trials" in cfg.strategy and "trials" not in strategy and cfg.trials.max_trials:
        cfg.strategy["trials"] = cfg.trials.max_trials  # schedules over the budget (MetaQNN's epsilon) span it
    from nasforge.evaluators import EVALUATORS, resolve_evaluator_options

    evaluator = dict(raw.get("evaluator") or {})
    evaluator.setdefault("name", "train")
    cfg.evaluator = {"name": evaluator["name"], **resolve_evaluator_options(
        evaluator["name"], {k: v for k, v in evaluator.items() if k != "name"}, cfg.data.name)}
    if search and strat.kind == "sample":  # only sample-based strategies use the evaluator
        check_supported(EVALUATORS.get(evaluator["name"]), space_obj)
    return cfg


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(cfg)


def load_data(cfg: RunConfig) -> Dataset:
    return load_dataset(cfg.data.name, cfg.data.dir, seed=cfg.seed, valid_fraction=cfg.data.valid_fraction,
                        workers=cfg.data.workers, image_size=cfg.data.image_size)


def build_space(cfg: RunConfig) -> SearchSpace:
    return make_space(cfg.space["name"], **{k: v for k, v in cfg.space.items() if k != "name"})


def build_strategy(cfg: RunConfig) -> Strategy:
    return make_strategy(cfg.strategy["name"], {k: v for k, v in cfg.strategy.items() if k != "name"}, cfg.data.name,
                         latency=cfg.latency)


def measure_model(model: Any, input_shape: tuple[int, ...], cfg: LatencyConfig) -> dict[str, Any]:
    """Params, FLOPs (one image) and measured latency of a trained network: ``latency`` on the target device,
    ``latencies`` on every runtime of ``cfg.runtimes`` too (eager PyTorch and ONNX Runtime, each warmed up for
    ``cfg.warmup_seconds``; a runtime this machine lacks is left out)."""
    import importlib.util

    def timed(device: str) -> dict[str, Any]:
        return measure_latency(model, input_shape, device=device, batch_size=cfg.batch_size, warmup=cfg.warmup,
                               repeats=cfg.repeats, threads=cfg.threads, warmup_seconds=cfg.warmup_seconds).to_dict()

    lat = timed(cfg.device)
    latencies = {cfg.device: lat}
    for device in cfg.runtimes:
        if device in latencies or (device == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None):
            continue
        if device == "cuda" and not torch.cuda.is_available():
            continue
        latencies[device] = timed(device)
    return {"params": count_params(model), "flops": count_flops(model, input_shape), "latency": lat,
            "latencies": latencies}


def finished_at() -> str:
    """Now, as result.json records it: ISO 8601 in UTC, e.g. ``2026-12-06T10:15:02+00:00``."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def search_time(store: Any, search_epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one search time of result.json (``search_seconds``: the search's wall clock where it measured it,
    else the sum of its epochs) and ``search_info`` without a second copy of it."""
    info = dict(store.get_meta("search_info", {}) or {})
    wall = info.pop("wall_seconds", None)
    seconds = wall if wall is not None else sum(e["metrics"].get("seconds", 0.0) for e in search_epochs)
    return {"search_seconds": seconds, "search_info": info}


def run_experiment(exp: Experiment, cfg: RunConfig, progress: Progress | None = None,
                   data: Dataset | None = None) -> dict[str, Any]:
    """Search -> arch.json -> train -> model.pt -> measure -> result.json (skipping finished phases)."""
    progress = progress or Progress()
    data = data if data is not None else load_data(cfg)
    space = build_space(cfg)
    from nasforge import distributed

    if not distributed.is_main():  # another rank of a data-parallel search: the search only, rank 0 writes
        return _search_rank(exp, cfg, progress, data, space)
    store = exp.store
    store.set_meta("dataset", data.describe())
    engine = Engine(cfg.engine)
    versions = environment_info(str(engine.device))
    store.set_meta("versions", versions)
    from nasforge.loggers import make_logger

    loggers = [make_logger(name, exp.path, store) for name in cfg.logging.loggers]
    store.listeners.extend(loggers)
    try:
        return _run_phases(exp, cfg, progress, data, space, engine, versions)
    finally:
        for logger in loggers:
            store.listeners.remove(logger)
            logger.close()


def _search_rank(exp: Experiment, cfg: RunConfig, progress: Progress, data: Dataset,
                 space: SearchSpace) -> dict[str, Any]:
    """What a rank other than 0 runs: its share of the one-shot search and of the final training."""
    engine = Engine(cfg.engine)
    if (exp.path / "arch.json").exists():
        arch = Arch.from_json(exp.path / "arch.json")
    else:
        strategy = build_strategy(cfg)
        arch = strategy.search(space, data, experiment=exp, progress=progress, seed=cfg.seed, engine=engine).arch
    if not (exp.path / "model.pt").exists():
        train_arch(space, arch, data, cfg.train, experiment=exp, progress=progress, seed=cfg.seed, engine=engine)
    return {}


def _benchmark_row(cfg: RunConfig, space: SearchSpace, arch: Arch, data: Dataset) -> dict[str, Any] | None:
    """The table's numbers of the found cell when a sample-based search scored cells from a benchmark table."""
    from nasforge.strategies import get_strategy_class

    if cfg.evaluator.get("name") != "table" or get_strategy_class(cfg.strategy["name"]).kind != "sample":
        return None
    from nasforge.evaluators import make_evaluator

    evaluator = make_evaluator("table", {k: v for k, v in cfg.evaluator.items() if k != "name"}, space, data)
    protocol = getattr(evaluator, "protocol", None)
    return {"source": evaluator.source, **({"dataset": protocol.dataset} if protocol is not None else {}),
            **evaluator.lookup(arch)}


def _benchmark_result(cfg: RunConfig, space: SearchSpace, arch: Arch, store: Any, row: dict[str, Any],
                      versions: dict[str, Any]) -> dict[str, Any]:
    """result.json of a search on a benchmark table: the table's test accuracy of the found cell first."""
    info = store.get_meta("search_info", {})
    return {
        "test_acc": row["test_acc"],
        "valid_acc": row["valid_acc"],
        "source": row["source"],
        "retrained": False,
        "note": "test_acc and valid_acc are the benchmark table's numbers of the found cell (not trained here; "
                "--set evaluator.retrain=true trains it on --data)",
        "space": space.name,
        "strategy": cfg.strategy["name"],
        "arch": arch.to_dict(),
        "arch_summary": space.describe(arch),
        "benchmark": row,
        "search_trials": len(store.trials()),
        "search_sim_seconds": info.get("sim_seconds", 0.0),
        **search_time(store, []),
        "finished": finished_at(),
        "versions": versions,
    }


def _run_phases(exp: Experiment, cfg: RunConfig, progress: Progress, data: Dataset, space: SearchSpace,
                engine: Engine, versions: dict[str, Any]) -> dict[str, Any]:
    """The phases of ``run_experiment``: search, training, measurement (finished ones skipped)."""
    store = exp.store

    if (exp.path / "arch.json").exists():
        arch = Arch.from_json(exp.path / "arch.json")
    else:
        strategy = build_strategy(cfg)
        check_supported(type(strategy), space)
        extra = search_options(cfg, space, data, engine=engine) if strategy.kind == "sample" else {}
        if "engine" in inspect.signature(strategy.search).parameters:
            extra["engine"] = engine
        result = strategy.search(space, data, experiment=exp, progress=progress, seed=cfg.seed, **extra)
        arch = result.arch
        store.set_meta("search_info", result.info)
        if result.info.get("pareto_front"):  # a multi-objective search: its front as a figure
            from nasforge.strategies.optuna import plot_front

            plot_front(result.info, exp.path / "pareto.png")
        arch.save(exp.path / "arch.json")

    final = exp.read_json("result.json")
    benchmark = _benchmark_row(cfg, space, arch, data)
    if benchmark is not None and not cfg.evaluator.get("retrain"):
        if final is None:  # the table's numbers are the result: the found cell is not trained on other data
            final = _benchmark_result(cfg, space, arch, store, benchmark, versions)
            exp.write_json("result.json", final)
        return final
    if final is not None and (exp.path / "model.pt").exists():
        return final

    trained = train_arch(space, arch, data, cfg.train, experiment=exp, progress=progress, seed=cfg.seed,
                         engine=engine)
    save_model(trained.model, arch, data.input_shape, data.num_classes, build_options(cfg.train), exp.path / "model.pt")
    measured = measure_model(trained.model, data.input_shape, cfg.latency)
    search_epochs = store.epochs("search")
    search_trials = store.trials()
    result = {
        "dataset": data.describe(),
        **({"benchmark": benchmark} if benchmark is not None else {}),
        "space": space.name,
        "strategy": cfg.strategy["name"] if search_epochs or search_trials else "none (architecture given)",
        "arch": arch.to_dict(),
        "arch_summary": space.describe(arch),
        "test_acc": trained.metrics["test_acc"],
        "test_loss": trained.metrics["test_loss"],
        **measured,
        "search_epochs": len(search_epochs),
        **search_time(store, search_epochs),
        "search_trials": len(search_trials),
        "train_epochs": trained.metrics["epochs"],
        "train_seconds": sum(h.get("seconds", 0.0) for h in trained.metrics["history"]),
        "finished": finished_at(),
        "versions": versions,
    }
    exp.write_json("result.json", result)
    return result
