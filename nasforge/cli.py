"""The ``nasforge`` command: a thin layer over the Python API."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nasforge.errors import NasforgeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Neural architecture search on PyTorch. Start with `nasforge search` (GDAS on digits, about a minute on a CPU).",
)
console = Console(stderr=True)
out = Console()


def _print_version(value: bool) -> None:
    if value:
        import platform

        import torch

        from nasforge import __version__

        typer.echo(f"nasforge {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the nasforge, torch and Python versions and exit.")) -> None:
    pass


SetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                      help="Override any config field, e.g. --set strategy.epochs=10 --set train.channels=24 (repeatable).")
TrainSetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                           help="Override any config field, e.g. --set train.epochs=50 --set train.channels=24 "
                                "--set latency.device=onnxruntime (repeatable).")


DeviceOpt = typer.Option(None, "--device", help="Where networks train: auto | cpu | cuda | cuda:N | mps "
                         "(shortcut for --set engine.device=...).", show_default="auto, the GPU when there is one")
PrecisionOpt = typer.Option(None, "--precision", help="32 | bf16 (bfloat16 autocast) | 16-mixed (float16 autocast "
                            "and gradient scaling, GPU only).", show_default="32")
CompileOpt = typer.Option(False, "--compile", help="torch.compile the final training's network.")
DATA_HELP = ("Dataset: digits (embedded), cifar10, cifar100, imagenet, imagenet16, tiny-imagenet, imagefolder (your "
             "folder of images), npz (your arrays), synthetic; `nasforge list` shows the layout each expects.")
DATA_DIR_HELP = "Folder or file holding the dataset (all but digits and synthetic)."
DataWorkersOpt = typer.Option(None, "--data-workers", help="DataLoader worker processes (shortcut for --set "
                              "data.workers=N; 0: load in the main process).", show_default="0")


def _engine_overrides(device: str | None, precision: str | None = None,
                      compile_: bool = False) -> list[tuple[list[str], Any]]:
    """Config overrides of the --device/--precision/--compile options (checked when the config is resolved)."""
    out: list[tuple[list[str], Any]] = []
    for key, value in (("device", device), ("precision", precision), ("compile", True if compile_ else None)):
        if value is not None:
            out.append((["engine", key], value))
    return out


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _progress(quiet: bool):
    from nasforge.progress import RichProgress

    return RichProgress(console=console, disable=quiet)


def _per_fidelity_row(info: dict[str, Any]) -> tuple[str, str]:
    """The summary row of a multi-fidelity search: how many trials ran at each fidelity."""
    return "trials per fidelity", ", ".join(f"{k}: {v}" for k, v in info["trials_per_fidelity"].items())


def _benchmark_summary(result: dict[str, Any], exp_dir: Path) -> None:
    """The summary of a search scored from a benchmark table (no training here)."""
    table = Table(title=f"nasforge result: {exp_dir}", show_header=False)
    info = result.get("search_info") or {}
    rows = [("benchmark", result["source"]), ("space / strategy", f"{result['space']} / {result['strategy']}"),
            ("architecture", result["arch_summary"]),
            ("test accuracy (benchmark)", f"{100 * result['test_acc']:.2f}%"),
            ("search signal (benchmark)", f"{100 * result['valid_acc']:.2f}%"),
            ("search", f"{result['search_trials']} trials, {result['search_sim_seconds']:.0f} s simulated, "
                       f"{result['search_seconds']:.1f} s wall"),
            ("files", "config.yaml store.sqlite arch.json result.json (not trained: --set evaluator.retrain=true)")]
    if info.get("trials_per_fidelity"):
        rows.insert(-1, _per_fidelity_row(info))
    for key in ("stopped", "over_budget"):
        if info.get(key):
            rows.insert(-1, (key.replace("_", " "), info[key]))
    for k, v in rows:
        table.add_row(k, escape(str(v)))
    out.print(table)


#: how the summary names the runtimes a network is timed on
_RUNTIMES = {"cpu": "PyTorch eager, CPU", "cuda": "PyTorch eager, CUDA", "onnxruntime": "ONNX Runtime, CPU"}


def _summary(result: dict[str, Any], exp_dir: Path) -> None:
    if result.get("retrained") is False:
        return _benchmark_summary(result, exp_dir)
    table = Table(title=f"nasforge result: {exp_dir}", show_header=False)
    lat = result["latency"]
    rows = [
        ("dataset", result["dataset"]),
        ("space / strategy", f"{result['space']} / {result['strategy']}"),
        ("architecture", result["arch_summary"]),
        ("test accuracy", f"{100 * result['test_acc']:.2f}%"),
        ("params", f"{result['params']:,}"),
        ("FLOPs (1 image)", f"{result['flops']:,}"),
        *((f"latency ({_RUNTIMES.get(device, device)}, batch {lat['batch_size']})",
           f"{lat['median_ms']:.3f} ms median" + (" (target)" if device == result["latency"]["device"] else ""))
          for device, lat in (result.get("latencies") or {lat["device"]: lat}).items()),
        *([("search", f"{result['search_trials']} trials, {result['search_seconds']:.1f} s"
            if result.get("search_trials") else f"{result['search_epochs']} epochs, {result['search_seconds']:.1f} s")]
          if result.get("search_trials") or result.get("search_epochs") else []),  # none for a given arch
        ("final training", f"{result['train_epochs']} epochs, {result['train_seconds']:.1f} s"),
        ("files", "config.yaml store.sqlite arch.json model.pt result.json"),
    ]
    if (result.get("search_info") or {}).get("trials_per_fidelity"):
        rows.insert(-2, _per_fidelity_row(result["search_info"]))
    stop = (result.get("search_info") or {}).get("early_stop")
    if stop:
        rows.insert(-2, ("early stop", f"{stop['criterion']} at epoch {stop['epoch']}: {stop['detail']}"))
    for k, v in rows:
        table.add_row(k, escape(str(v)))
    out.print(table)


_reported_interrupt = False


def _interrupted(message: str) -> None:
    """Say how to continue after Ctrl-C and exit 130."""
    global _reported_interrupt
    console.print(message, highlight=False, soft_wrap=True)
    _reported_interrupt = True
    raise typer.Exit(130)


def _run(exp, cfg, quiet: bool, data=None) -> None:
    from nasforge import distributed
    from nasforge.pipeline import run_experiment

    ctx = distributed.context()
    try:
        with _progress(quiet or not ctx.is_main) as progress:
            result = run_experiment(exp, cfg, progress, data)
    except KeyboardInterrupt:
        _interrupted(f"interrupted; continue with: nasforge resume {exp.path}")
    except RuntimeError as exc:  # a collective failed: another rank died
        if not ctx.active:
            raise
        raise distributed.DistributedError(distributed.lost_rank_message(exc, exp.path)) from None
    finally:
        exp.close()
    if ctx.is_main:
        _summary(result, exp.path)


def _distributed_start(nproc: int | None, cfg_device: str, runner: str | None) -> bool:
    """``--nproc N`` outside torchrun: start N ranks of this command under torchrun (True: done here).
    Under torchrun: join the process group."""
    from nasforge import distributed

    if nproc is not None and runner == "ray":
        from nasforge.errors import ConfigError

        raise ConfigError("--nproc runs one search data-parallel under torchrun; --runner ray runs trials on a Ray "
                          "cluster: use one of them")
    if nproc is not None and "WORLD_SIZE" not in os.environ:
        distributed.check_nproc(nproc, cfg_device)
        code = distributed.launch(nproc, distributed.strip_nproc(sys.argv[1:]))
        if code:
            raise typer.Exit(code)
        return True
    distributed.init_from_env()
    return False


NprocOpt = typer.Option(None, "--nproc", help="Data-parallel one-shot search in N processes on this machine (one "
                        "per GPU, or gloo on CPUs; launches torchrun; several machines: run torchrun yourself).",
                        show_default="1")


@app.command()
def search(
    space: Optional[str] = typer.Option(None, help="Search space (see `nasforge list`), or your own: "
                                        "path/to/file.py:name or package.module:name.", show_default="darts"),
    strategy: Optional[str] = typer.Option(None, help="Search strategy (see `nasforge list`).", show_default="gdas"),
    data: Optional[str] = typer.Option(None, help=DATA_HELP, show_default="digits"),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    data_workers: Optional[int] = DataWorkersOpt,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Experiment directory.", show_default="runs/STRATEGY-SPACE-DATA-TIME"),
    config: Optional[Path] = typer.Option(None, help="YAML config file (sections seed, data, space, strategy, train, latency)."),
    preset: Optional[str] = typer.Option(None, help="Settings of the method's paper on this dataset, under the config "
                                         "and --set (`nasforge list presets`; shortcut for --set preset=NAME).",
                                         show_default="none"),
    seed: Optional[int] = typer.Option(None, help="Seed of every random choice.", show_default="0"),
    epochs: Optional[int] = typer.Option(None, help="Search epochs (shortcut for --set strategy.epochs=N)."),
    early_stop: Optional[str] = typer.Option(None, help="Stopping policy of cell searches: none | dartsplus."),
    trials: Optional[int] = typer.Option(None, help="Trials of a sample-based search (random, evolution; "
                                         "shortcut for --set trials.max_trials=N).", show_default="20 on digits"),
    evaluator: Optional[str] = typer.Option(None, help="How sample-based trials are scored: train | table | synthetic.", show_default="train"),
    table: Optional[Path] = typer.Option(None, help="Benchmark table file for --evaluator table (e.g. NAS-Bench-201)."),
    runner: Optional[str] = typer.Option(None, help="Where trials run: local | ray.", show_default="local"),
    address: Optional[str] = typer.Option(None, help="Address of an existing Ray cluster (implies --runner ray)."),
    workers: Optional[int] = typer.Option(None, help="Trials at the same time (ray: CPUs of a local Ray).", show_default="1"),
    gpus_per_trial: Optional[float] = typer.Option(None, "--gpus-per-trial", help="ray: GPUs each trial reserves "
                                                   "(1: each trial on its own GPU).", show_default="0"),
    cpus_per_trial: Optional[float] = typer.Option(None, "--cpus-per-trial", help="ray: CPUs each trial reserves.",
                                                   show_default="1"),
    nproc: Optional[int] = NprocOpt,
    device: Optional[str] = DeviceOpt,
    precision: Optional[str] = PrecisionOpt,
    compile_: bool = CompileOpt,
    logger: Optional[list[str]] = typer.Option(None, "--logger", help="Also log to: csv | tensorboard | mlflow "
                                               "(repeatable; shortcut for --set logging.loggers=[...])."),
    set_: Optional[list[str]] = SetOpt,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing experiment directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every epoch."),
) -> None:
    """Search an architecture, train it, measure it and save everything in one directory."""
    from nasforge.config import parse_override, read_yaml
    from nasforge.experiment import check_out_dir
    from nasforge.pipeline import load_data, resolve_config

    _setup_logging(verbose)
    raw = read_yaml(config) if config else {}
    overrides = []
    for key, value in (("space.name", space), ("strategy.name", strategy), ("data.name", data),
                       ("data.dir", str(data_dir) if data_dir else None), ("data.workers", data_workers),
                       ("preset", preset),
                       ("seed", seed), ("strategy.epochs", epochs),
                       ("strategy.early_stop", early_stop), ("trials.max_trials", trials),
                       ("evaluator.name", evaluator or ("table" if table else None)),
                       ("evaluator.path", str(table) if table else None)):
        if value is not None:
            overrides.append((key.split("."), value))
    overrides += _runner_overrides(runner, address, workers)
    overrides += [(["runner", key], value) for key, value in (("gpus_per_trial", gpus_per_trial),
                                                              ("cpus_per_trial", cpus_per_trial)) if value is not None]
    overrides += _engine_overrides(device, precision, compile_)
    if logger:
        overrides.append((["logging", "loggers"], list(logger)))
    overrides += [parse_override(s) for s in set_ or []]
    cfg = resolve_config(raw, overrides)
    if _distributed_start(nproc, cfg.engine.device, cfg.runner.name):
        return
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        space_name = cfg.space["name"].rsplit(":", 1)[-1]  # a user's space: path/to/file.py:name -> name
        out_dir = Path("runs") / f"{cfg.strategy['name']}-{space_name}-{cfg.data.name}-{stamp}"
    from nasforge import distributed

    ctx = distributed.context()
    if ctx.active:
        _check_distributed(cfg)
        out_dir = distributed.broadcast_path(out_dir)  # rank 0's name (a default one holds the time)
    if ctx.is_main:
        check_out_dir(out_dir, force)  # an --out that cannot be used fails before any data is read
    data = load_data(cfg)  # before creating the directory: a bad --data-dir leaves nothing behind
    _check_runner(cfg, data)
    _run(_create_run(out_dir, cfg, force), cfg, quiet, data)


def _create_run(out_dir: Path, cfg: Any, force: bool, arch: Any = None) -> Any:
    """The run directory, created by rank 0 (one writer per run; ``arch`` written as arch.json); the other
    ranks of a data-parallel run open it once it exists (they read its checkpoints)."""
    from nasforge import distributed
    from nasforge.experiment import Experiment
    from nasforge.pipeline import config_dict

    if distributed.is_main():
        exp = Experiment.create(out_dir, config_dict(cfg), force=force, lock=True)
        try:
            if arch is not None:
                arch.save(exp.path / "arch.json")
        except BaseException:
            exp.close()
            raise
        console.print(f"experiment: {exp.path}")
    distributed.barrier()
    return exp if distributed.is_main() else Experiment.open(out_dir)


def _check_distributed(cfg: Any) -> None:
    """A data-parallel run is a one-shot search; trials run data-parallel on Ray instead."""
    from nasforge.errors import ConfigError
    from nasforge.strategies import get_strategy_class

    if get_strategy_class(cfg.strategy["name"]).kind != "oneshot":
        raise ConfigError(f"strategy {cfg.strategy['name']} runs trials, not one data-parallel search: drop "
                          "torchrun/--nproc and use --runner ray --workers N to run trials in parallel")


def _runner_overrides(runner: str | None, address: str | None, workers: int | None) -> list[tuple[list[str], Any]]:
    """Config overrides of the --runner/--address/--workers options (an address implies ray)."""
    out: list[tuple[list[str], Any]] = []
    for key, value in (("name", runner or ("ray" if address else None)), ("address", address), ("workers", workers)):
        if value is not None:
            out.append((["runner", key], value))
    return out


def _check_runner(cfg: Any, data: Any = None) -> None:
    """Fail early (before any file is written) on a Ray address that does not answer or a bad table file."""
    if cfg.runner.name == "ray" and cfg.runner.address:
        from nasforge.runners.ray import check_address

        check_address(cfg.runner.address, cfg.runner.connect_timeout)
    if cfg.runner.name == "ray" and not cfg.runner.address and cfg.runner.gpus_per_trial > 0:
        import torch

        from nasforge.errors import ConfigError

        if torch.cuda.device_count() < cfg.runner.gpus_per_trial:  # a local Ray has this machine's GPUs
            raise ConfigError(f"--gpus-per-trial {cfg.runner.gpus_per_trial:g} but this machine has "
                              f"{torch.cuda.device_count()} GPU(s); drop it, or run against a GPU cluster with "
                              "--address HOST:PORT")
    from nasforge.strategies import get_strategy_class

    if data is not None and cfg.evaluator["name"] == "table" and get_strategy_class(cfg.strategy["name"]).kind == "sample":
        from nasforge.evaluators import make_evaluator
        from nasforge.pipeline import build_space

        from nasforge.trials import check_budget, check_fidelities

        evaluator = make_evaluator("table", {k: v for k, v in cfg.evaluator.items() if k != "name"}, build_space(cfg),
                                   data)
        check_budget(cfg.trials.budget(data.name), evaluator)  # a time budget on a table without times
        check_fidelities(get_strategy_class(cfg.strategy["name"]), evaluator)  # hyperband on a one-fidelity table


@app.command()
def resume(
    exp_dir: Path = typer.Argument(..., help="Experiment directory of an interrupted run."),
    runner: Optional[str] = typer.Option(None, help="Where the remaining trials run: local | ray.", show_default="as before"),
    address: Optional[str] = typer.Option(None, help="Address of an existing Ray cluster (implies --runner ray)."),
    workers: Optional[int] = typer.Option(None, help="Trials at the same time.", show_default="as before"),
    device: Optional[str] = typer.Option(None, "--device", help="Continue on another device: auto | cpu | cuda | "
                                         "cuda:N | mps (checkpoints load anywhere).", show_default="as before"),
    nproc: Optional[int] = NprocOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every epoch."),
) -> None:
    """Continue an interrupted run from its last checkpoint (finished phases and trials are kept)."""
    from nasforge import distributed
    from nasforge.experiment import Experiment
    from nasforge.pipeline import resolve_config

    _setup_logging(verbose)
    if _distributed_start(nproc, device or "auto", runner):
        return
    ctx = distributed.context()
    # one writer per run (rank 0 of a data-parallel resume); leftover temporary files are removed
    exp = Experiment.open(exp_dir, lock=ctx.is_main)
    distributed.barrier()
    try:
        raw = exp.read_config()
        if isinstance(raw.get("quantize"), dict):  # a `nasforge quantize` run: rerun it with its own settings
            exp.close()
            _resume_quantize(exp_dir, raw["quantize"], quiet, verbose)
            return
        cfg = resolve_config(raw, _runner_overrides(runner, address, workers) + _engine_overrides(device),
                             search=not (exp.path / "arch.json").exists())
        _check_runner(cfg)
    except BaseException:
        exp.close()
        raise
    _run(exp, cfg, quiet)


@app.command()
def train(
    arch_json: Path = typer.Argument(..., help="arch.json of a search (or one you wrote), or zoo:NAME for a "
                                     "published network (nasforge zoo list)."),
    data: str = typer.Option("digits", help=DATA_HELP),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    data_workers: Optional[int] = DataWorkersOpt,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output directory.", show_default="runs/train-DATA-TIME"),
    config: Optional[Path] = typer.Option(None, help="YAML config (its train and latency sections are used)."),
    seed: int = typer.Option(0, help="Seed."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (shortcut for --set train.epochs=N)."),
    device: Optional[str] = DeviceOpt,
    precision: Optional[str] = PrecisionOpt,
    compile_: bool = CompileOpt,
    nproc: Optional[int] = NprocOpt,
    set_: Optional[list[str]] = TrainSetOpt,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a found architecture from scratch and report test accuracy, params, FLOPs and latency."""
    from nasforge.arch import Arch
    from nasforge.config import parse_override, read_yaml
    from nasforge.experiment import check_out_dir
    from nasforge.pipeline import load_data, resolve_config

    zoo_entry = None
    if str(arch_json).startswith("zoo:"):  # a published network (nasforge zoo list)
        from nasforge.zoo import get_entry, train_overrides

        zoo_entry = get_entry(str(arch_json)[4:])
        arch = zoo_entry.arch()
    else:
        arch = Arch.from_json(arch_json)
    raw = read_yaml(config) if config else {}
    run_config = Path(arch_json).parent / "config.yaml"
    if zoo_entry is None and "space" not in raw and run_config.is_file():  # the arch of a run: its space options
        run_space = (read_yaml(run_config) or {}).get("space")
        if isinstance(run_space, dict) and run_space.get("name") == arch.space:
            raw["space"] = dict(run_space)
    overrides = [(["data", "name"], data), (["seed"], seed), (["space", "name"], arch.space)]
    if zoo_entry is not None:  # its space options and paper depth/width; a later --set still wins
        overrides += train_overrides(zoo_entry, arch)
    if data_dir:
        overrides.append((["data", "dir"], str(data_dir)))
    if data_workers is not None:
        overrides.append((["data", "workers"], data_workers))
    if epochs is not None:
        overrides.append((["train", "epochs"], epochs))
    overrides += _engine_overrides(device, precision, compile_)
    overrides += [parse_override(s) for s in set_ or []]
    cfg = resolve_config(raw, overrides, search=False)  # the architecture is given: no search
    if _distributed_start(nproc, cfg.engine.device, None):
        return
    from nasforge import distributed

    ctx = distributed.context()
    out_dir = out_dir or Path("runs") / f"train-{data}-{time.strftime('%Y%m%d-%H%M%S')}"
    if ctx.active:
        out_dir = distributed.broadcast_path(out_dir)  # rank 0's name (a default one holds the time)
    if ctx.is_main:
        check_out_dir(out_dir, force)
    dataset = load_data(cfg)
    if zoo_entry is not None:  # an arch that records the input size (layers) is made for this data
        from nasforge.zoo import fit_to_data

        arch = fit_to_data(zoo_entry, cfg, dataset.input_shape)
    _run(_create_run(out_dir, cfg, force, arch), cfg, quiet, dataset)


@app.command()
def export(
    source: Path = typer.Argument(..., help="An experiment directory (a search, train or quantize run), a model.pt, "
                                  "or an arch.json (any space)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (checked with ONNX Runtime) | pt2 (torch.export "
                            "program) | json (the architecture)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder to write into, or a file named like the "
                                           "format (x.onnx, x.pt2, x.json).", show_default="next to the source"),
    opset: int = typer.Option(18, help="ONNX opset (below 18 the legacy exporter writes the file)."),
    data: str = typer.Option("digits", help="For an arch.json without a trained model.pt beside it: the dataset "
                                            "giving input shape and classes (the network is exported untrained)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Export a network to ONNX (checked against PyTorch with ONNX Runtime) or a torch.export program, its
    latency beside it; or its architecture as JSON."""
    from nasforge.arch import Arch
    from nasforge.experiment import check_export_dir, check_out_file, check_writable
    from nasforge.export import EXPORT_FORMATS, check_format, export_model, load_exportable, write_latency
    from nasforge.train import load_model

    from nasforge.data.datasets import check_data_dir

    check_format(fmt, with_json=True)  # torchscript and unknown formats fail before anything is loaded
    check_data_dir(data, data_dir)  # not ignored when a trained model.pt makes the dataset unnecessary
    suffix = EXPORT_FORMATS.get(fmt, ".json")
    out_file = None
    if out_dir is not None and out_dir.suffix == suffix and not out_dir.is_dir():
        out_file = out_dir  # --out x.onnx / x.pt2 / x.json: that file
        check_out_file(out_file, f"model{suffix}")
    elif out_dir is not None:
        check_export_dir(out_dir)  # a file in the way or an unwritable folder fails before any export
    if source.suffix == ".json":
        arch = Arch.from_json(source)
        trained = source.parent / "model.pt"
        model = None
        if trained.is_file():
            model, saved_arch, input_shape = load_model(trained)
            if saved_arch != arch:
                model = None
        if model is None and fmt != "json":
            from nasforge.data import load_dataset
            from nasforge.spaces import get_space_class

            dataset = load_dataset(data, str(data_dir) if data_dir else None)
            input_shape = tuple(dataset.input_shape)
            model = get_space_class(arch.space).for_arch(arch).build(arch, input_shape, dataset.num_classes).eval()
            console.print(f"note: no trained model.pt for this arch beside {source}; exporting an untrained "
                          f"network for {data} input {list(input_shape)}")
    else:
        model, arch, input_shape, source = load_exportable(source)  # a quantize run: its quantized network
    target = out_dir if out_dir is not None and out_file is None else source.parent
    check_writable(out_file or target)
    if fmt == "json":
        written = {"path": str(arch.save(out_file or Path(target) / "arch.export.json")), "format": "json"}
    else:
        written = export_model(model, input_shape, target, fmt, opset=opset, path=out_file)
        written["latency"] = str(write_latency(model, input_shape, written))
    diff = written.get("max_abs_diff")
    message = f"wrote {written['path']}"
    if diff is not None:
        how = f"{written['exporter']} exporter; " if fmt == "onnx" else ""
        message += f" ({how}max |{'onnxruntime' if fmt == 'onnx' else 'torch.export'} - pytorch| = {diff:.2e})"
    if "latency" in written:
        message += f"; latency in {written['latency']}"
    out.print(message, highlight=False, soft_wrap=True)


# --- command: latency (lookup tables; hardware layer) ---
@app.command()
def latency(
    space: str = typer.Option("mbconv", help="Search space whose ops are measured (see `nasforge list`; "
                                             "or path/to/file.py:name)."),
    device: Optional[str] = typer.Option(None, help="Target: cpu | cuda | onnxruntime (shortcut for --set "
                                         "latency.device=...).", show_default="cpu"),
    data: str = typer.Option("digits", help="Dataset giving the input shape and classes (see --data of search)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Table file.", show_default="latency_tables/SPACE-DEVICE-CxHxW.json"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size of every measurement.", show_default="1"),
    threads: Optional[int] = typer.Option(None, help="CPU threads while timing.", show_default="PyTorch's"),
    warmup: Optional[int] = typer.Option(None, help="Untimed runs before each measurement.", show_default="10"),
    repeats: Optional[int] = typer.Option(None, help="Timed runs per entry (median kept).", show_default="50"),
    check: int = typer.Option(0, help="Also measure N sampled architectures end to end and report the predictor's error."),
    seed: int = typer.Option(0, help="Seed of the architectures sampled by --check."),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                                             help="Override a config field, as in search: space.KEY (a space option, "
                                                  "e.g. --set space.preset=imagenet), latency.KEY (e.g. --set "
                                                  "latency.repeats=100), data.KEY (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Build a latency lookup table: every candidate op of a space timed on the target device."""
    from nasforge.config import apply_override, load_section, parse_override
    from nasforge.errors import ConfigError
    from nasforge.experiment import check_out_file
    from nasforge.hardware.latency import check_device
    from nasforge.hardware.lut import build_table, check_table
    from nasforge.hardware.penalty import LatencyConfig
    from nasforge.pipeline import DataConfig, RunConfig, load_data
    from nasforge.spaces import make_space

    raw: dict[str, Any] = {"space": {"name": space}, "data": {"name": data}, "latency": {}}
    if data_dir is not None:
        raw["data"]["dir"] = str(data_dir)
    for key, value in (("device", device), ("batch_size", batch_size), ("threads", threads), ("warmup", warmup),
                       ("repeats", repeats)):
        if value is not None:
            raw["latency"][key] = value
    for item in set_ or []:
        keys, value = parse_override(item)
        if keys[0] not in raw or len(keys) < 2:
            raise ConfigError(f"--set {item!r}: nasforge latency takes space.KEY (a space option, e.g. "
                              "space.preset=imagenet), latency.KEY (e.g. latency.repeats=100) or data.KEY")
        apply_override(raw, keys, value)
    cfg = load_section(LatencyConfig, raw["latency"], "latency")
    check_device(cfg.device, "--device")  # a device this machine lacks fails before anything is measured
    if out_file is not None:
        check_out_file(out_file)  # a directory or an unwritable place fails before anything is measured
    space_name = raw["space"].pop("name")
    search_space = make_space(space_name, **raw["space"])
    dataset = load_data(RunConfig(data=load_section(DataConfig, raw["data"], "data")))
    shape = tuple(dataset.input_shape)
    short = space_name.rsplit(":", 1)[-1]  # a user's space: file.py:name -> name
    target = out_file or Path("latency_tables") / f"{short}-{cfg.device}-{'x'.join(map(str, shape))}.json"
    check_out_file(target)
    with _progress(quiet) as progress:
        table = build_table(search_space, shape, dataset.num_classes, device=cfg.device, batch_size=cfg.batch_size,
                            warmup=cfg.warmup, repeats=cfg.repeats, threads=cfg.threads, progress=progress)
        table.save(target)
        checked = check_table(search_space, table, n=check, seed=seed, warmup=cfg.warmup, repeats=cfg.repeats,
                              progress=progress) if check else None
    out.print(f"wrote {target}: {len(table.entries)} entries on {table.device_name} "
              f"({table.threads} threads, batch {table.batch_size}, call overhead {table.overhead_ms:.3f} ms)",
              highlight=False, soft_wrap=True)
    if checked:
        out.print(f"predictor vs measured on {checked['n']} sampled architectures: "
                  f"MAPE {100 * checked['mape']:.1f}%, Spearman {checked['spearman']:.3f}", highlight=False)
        if checked["warning"]:
            console.print(f"[yellow]warning:[/yellow] {escape(checked['warning'])}", highlight=False, soft_wrap=True)


def _resume_quantize(exp_dir: Path, q: dict[str, Any], quiet: bool, verbose: bool) -> None:
    """Continue an interrupted quantize run: the same command with the settings in its config.yaml."""
    model = Path(q.get("model", ""))
    source = model.parent if (model.parent / "config.yaml").is_file() else model
    data = q.get("data") or {}
    sets = [f"haq.{k}={json.dumps(v)}" for k, v in (q.get("haq") or {}).items()]
    engine = q.get("engine") or {}
    quantize_cmd(model_or_run=source, budget=str(q.get("budget")), accelerator=q.get("accelerator", "bitserial"),
                 episodes=None, data=data.get("name"), data_dir=Path(data["dir"]) if data.get("dir") else None,
                 out_dir=exp_dir, finetune_epochs=None, seed=q.get("seed", 0), device=engine.get("device"),
                 precision=engine.get("precision"), set_=sets, force=False, quiet=quiet, verbose=verbose,
                 preset=q.get("preset"))


# --- command: quantize (HAQ) ---
@app.command("quantize")
def quantize_cmd(
    model_or_run: Path = typer.Argument(..., help="A run directory (uses its model.pt) or a model.pt file."),
    budget: str = typer.Option(..., "--budget", "-b", help="size=0.25 | latency=0.5 | energy=0.5 (fraction of the "
                               "8-bit model) or absolute: size=12kB, latency=0.5ms, energy=2uJ."),
    accelerator: str = typer.Option("bitserial", help="Hardware model of latency/energy: bitserial | bitfusion, "
                                    "or onnxruntime (latency measured on this CPU's int8 kernels)."),
    episodes: Optional[int] = typer.Option(None, help="Search episodes (shortcut for --set haq.episodes=N).", show_default="100"),
    data: Optional[str] = typer.Option(None, help="Dataset: digits, cifar10, synthetic.", show_default="the run's, else digits"),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output directory; an interrupted one with the same "
                                           "settings is resumed.", show_default="runs/haq-KIND-TIME"),
    finetune_epochs: Optional[int] = typer.Option(None, help="Epochs of the final fine-tune of the best policy.", show_default="3"),
    seed: int = typer.Option(0, help="Seed."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the fine-tunes and evaluations run: auto | cpu "
                                         "| cuda | cuda:N | mps.", show_default="auto, the GPU when there is one"),
    precision: Optional[str] = PrecisionOpt,
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                                             help="Override a HAQ option, e.g. --set haq.finetune_steps=20 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every episode."),
    preset: Optional[str] = typer.Option(None, help="HAQ settings of the paper/official code for the data "
                                         "(`nasforge list presets`), under --episodes and --set."),
) -> None:
    """Search a mixed-precision (per-layer weight/activation bits) policy with HAQ under a budget and fine-tune it."""
    from nasforge.config import load_section, parse_override, read_yaml
    from nasforge.data import load_dataset
    from nasforge.errors import ConfigError, ExperimentError
    from nasforge.experiment import Experiment, check_out_dir
    from nasforge.quant.budget import format_value, parse_budget
    from nasforge.strategies.haq import HaqSearch, haq_config_dict, make_haq_config
    from nasforge.train import load_model
    from nasforge.training import Engine, EngineConfig

    _setup_logging(verbose)
    engine_options = {k: v for (_, k), v in _engine_overrides(device, precision)}
    engine = Engine(load_section(EngineConfig, engine_options, "engine"))  # a bad device fails before any file
    path = model_or_run / "model.pt" if model_or_run.is_dir() else model_or_run
    parsed_budget = parse_budget(budget)
    out_dir = out_dir or Path("runs") / f"haq-{parsed_budget.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if force or not (out_dir / "config.yaml").is_file():  # not a resume: the --out must be usable
        check_out_dir(out_dir, force)
    options: dict[str, Any] = {}
    if episodes is not None:
        options["episodes"] = episodes
    if finetune_epochs is not None:
        options["finetune_epochs"] = finetune_epochs
    for text in set_ or []:
        keys, value = parse_override(text)
        if keys[0] == "haq":
            keys = keys[1:]
        if len(keys) != 1:
            raise ConfigError(f"--set {text!r} must look like haq.key=value, e.g. haq.finetune_steps=20")
        options[keys[0]] = value
    run_cfg = {}
    if model_or_run.is_dir() and (model_or_run / "config.yaml").is_file():
        run_cfg = read_yaml(model_or_run / "config.yaml")
    run_data = run_cfg.get("data") if isinstance(run_cfg.get("data"), dict) else {}
    data_name = data or run_data.get("name") or "digits"
    if preset:  # the preset's haq settings under --episodes/--finetune-epochs/--set
        from nasforge.presets import find_preset

        options = {**find_preset(preset, "haq", data_name).settings.get("haq", {}), **options}
    cfg = make_haq_config(options)
    data_path = data_dir or (run_data.get("dir") if not data else None)
    data_seed = run_cfg.get("seed", seed) if isinstance(run_cfg.get("seed", seed), int) else seed
    model, _, input_shape = load_model(path)
    dataset = load_dataset(data_name, data_path, seed=data_seed)
    config = {"quantize": {"model": str(path.resolve()), "budget": str(parsed_budget), "accelerator": accelerator,
                           "seed": seed, "data": {"name": data_name, "dir": str(data_path) if data_path else None,
                                                  "seed": data_seed},
                           "haq": haq_config_dict(cfg)}}
    if engine_options:  # recorded only when chosen, so runs made before the option resume as they were
        config["quantize"]["engine"] = engine_options
    if preset:
        config["quantize"]["preset"] = preset
    search = HaqSearch(model, dataset, parsed_budget, accelerator=accelerator, config=cfg, seed=seed,
                       input_shape=input_shape, engine=engine)  # checks the budget before anything is written
    exp = None
    if (out_dir / "config.yaml").is_file() and not force:
        previous = read_yaml(out_dir / "config.yaml")
        if previous != config:
            raise ExperimentError(f"{out_dir} holds another run; pass --force to overwrite it or --out to choose "
                                  "another (the same command with the same settings resumes it)")
        exp = Experiment.open(out_dir, lock=True)  # one writer per run
        console.print(f"resuming: {exp.path}")
    if exp is None:
        exp = Experiment.create(out_dir, config, force=force, lock=True)
        console.print(f"experiment: {exp.path}")
    try:
        with _progress(quiet) as progress:
            result = search.run(exp, progress).metrics
    except KeyboardInterrupt:
        _interrupted(f"interrupted; continue with the same command (--out {exp.path})")
    finally:
        exp.close()
    table = Table(title=f"nasforge quantize: {exp.path}", show_header=False)
    kind = result["budget_kind"]
    rows = [
        ("budget", f"{result['budget']} = {result['target_text']} ({result['accelerator']})"),
        ("test accuracy", f"{100 * result['test_acc']:.2f}% (float {100 * result['float_test_acc']:.2f}%, "
                          f"before fine-tune {100 * result['quant_test_acc_before_finetune']:.2f}%)"),
        ("weight size", f"{format_value('size', result['size_bytes'])} (8-bit {format_value('size', result['size_8bit_bytes'])})"),
        (f"latency ({'measured' if result['accelerator'] == 'onnxruntime' else 'model'})", f"{format_value('latency', result['latency'])} (8-bit {format_value('latency', result['latency_8bit'])})"),
        ("energy (model)", f"{format_value('energy', result['energy'])} (8-bit {format_value('energy', result['energy_8bit'])})"),
        (f"within {kind} budget", "yes" if result["within_budget"] else "no"),
        ("bits W/A per layer", " ".join(f"{w}/{a}{'dw' if layer['depthwise'] else ''}"
                                        for (w, a), layer in zip(result["policy"], result["layers"]))),
        ("files", "config.yaml store.sqlite result.json quantized.pt (nasforge report DIR for plots)"),
    ]
    for k, v in rows:
        table.add_row(k, escape(str(v)))
    out.print(table)


@app.command()
def report(
    exp_dir: Path = typer.Argument(..., help="Experiment directory (finished or not)."),
) -> None:
    """Write DIR/report.html (one self-contained file): the result, the cell graph, op-weight heatmaps, plots."""
    from nasforge.report import write_report

    path = write_report(exp_dir)
    out.print(str(path), highlight=False, soft_wrap=True)


@app.command()
def compare(
    run_dirs: list[str] = typer.Argument(..., help="Run directories; globs allowed (e.g. 'runs/*')."),
    out_file: Path = typer.Option(Path("compare.html"), "--out", help="The HTML page to write."),
) -> None:
    """Compare runs on one self-contained HTML page: table, accuracy vs latency and search time, search curves."""
    from nasforge.report.compare import write_compare

    def warn(line: str) -> None:
        console.print(f"warning: {escape(_error_line(line))}", highlight=False, soft_wrap=True, emoji=False)

    path = write_compare(run_dirs, out_file, warn=warn)
    out.print(str(path), highlight=False, soft_wrap=True)


@app.command("list")
def list_(what: Optional[str] = typer.Argument(None, help="presets: the settings presets instead.")) -> None:
    """List search spaces, strategies, datasets, evaluators, runners, and which strategy searches which space."""
    if what is not None:
        if what != "presets":
            from nasforge.errors import ConfigError

            raise ConfigError(f"nasforge list {what}: unknown; use `nasforge list` or `nasforge list presets`")
        _list_presets()
        return
    from nasforge.data import dataset_names
    from nasforge.spaces import get_space_class, space_names
    from nasforge.strategies import get_strategy_class, strategy_names

    table = Table(title="nasforge")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("what")
    for name in space_names():
        table.add_row("space", name, get_space_class(name).description)
    for name in strategy_names():
        table.add_row("strategy", name, get_strategy_class(name).description)
    from nasforge.data.datasets import DATASETS

    for name in dataset_names():
        table.add_row("dataset", name, DATASETS.description(name))
    from nasforge.evaluators import evaluator_description, evaluator_names

    for name in evaluator_names():
        table.add_row("evaluator", name, evaluator_description(name))
    from nasforge.runners import RUNNERS

    for name in RUNNERS.names():
        table.add_row("runner", name, RUNNERS.description(name))
    out.print(table)
    from nasforge.registry import support_matrix

    mark = "✓" if (out.encoding or "").lower().startswith("utf") else "x"
    grid = Table(title=f"strategy x space ({mark}: the strategy can search the space)")
    grid.add_column("strategy")
    for name in space_names():
        grid.add_column(name, justify="center")
    for name, row in support_matrix().items():
        grid.add_row(name, *(mark if row[space] is None else "" for space in space_names()))
    out.print(grid)


def _list_presets() -> None:
    from nasforge.presets import PRESETS, flatten, preset_names

    preset_names()  # loads the strategies' presets
    table = Table(title="presets (nasforge search --preset NAME --strategy S --data D; docs/presets.md)")
    for col in ("preset", "strategy", "data", "settings"):
        table.add_column(col)
    for (name, strategy, dataset), p in sorted(PRESETS.items()):
        table.add_row(name, strategy, dataset, ", ".join(f"{k}={v}" for k, v in flatten(p.settings).items()))
    out.print(table)


# --- command group: bench (benchmark protocols, nasforge/bench.py) ---
from nasforge.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")


# --- command group: zoo (published architectures, nasforge/zoo.py) ---
zoo_app = typer.Typer(no_args_is_help=True, help="Published architectures (DARTS, GDAS, ProxylessNAS, DenseNAS, "
                      "MetaQNN, NAS-RL): list them, build one; train one with `nasforge train zoo:NAME`.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list() -> None:
    """List the zoo's networks: the space that builds them and their paper's parameter count."""
    from nasforge.zoo import ENTRIES, LEFT_OUT, ZOO_SPACE

    table = Table(title="nasforge zoo (nasforge zoo build NAME; nasforge train zoo:NAME)")
    for column in ("name", "network", "space", "input", "paper params"):
        table.add_column(column, no_wrap=column == "name")  # a name is what `zoo build` takes: never broken
    for entry in ENTRIES.values():
        params = f"{entry.paper_params / 1e6:.2f}M" if entry.paper_params else "not given"
        space = "built in zoo.py" if entry.space == ZOO_SPACE else f"{entry.space} space"
        table.add_row(entry.name, escape(entry.title), space, "x".join(map(str, entry.input_shape)), params)
    out.print(table)
    out.print("left out: " + "; ".join(f"{k} ({v})" for k, v in LEFT_OUT.items()), highlight=False, soft_wrap=True)


@zoo_app.command("build")
def zoo_build(
    name: str = typer.Argument(..., help="A zoo network (nasforge zoo list)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Also write DIR/arch.json and DIR/zoo.json."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing DIR/arch.json."),
) -> None:
    """Build a zoo network at its paper's input size and print params, FLOPs and where it comes from."""
    from nasforge.zoo import summary, write_build

    info = write_build(name, out_dir, force) if out_dir is not None else summary(name)
    table = Table(title=f"nasforge zoo: {info['name']}", show_header=False)
    paper = f"{info['paper_params']:,}" if info["paper_params"] else "not given"
    rows = [("network", info["title"]), ("paper", info["paper"]), ("source", info["source"]),
            ("built by", info["how"]), ("architecture", info["arch_summary"]),
            ("input", f"{'x'.join(map(str, info['input_shape']))}, {info['num_classes']} classes"),
            ("params", f"{info['params']:,} (paper: {paper}; {info['note']})"),
            ("FLOPs (1 image)", f"{info['flops']:,} ({info['macs']:,} multiply-adds"
                                + (f"; paper {info['paper_macs']:,}" if info["paper_macs"] else "") + ")")]
    if out_dir is not None:
        rows.append(("files", f"{out_dir}/arch.json {out_dir}/zoo.json"))
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    out.print(table)


#: longest error line printed (a huge value or path is cut, with the count of what was left out)
MAX_ERROR_CHARS = 500


def _error_line(message: str) -> str:
    """``message`` on one line (whitespace runs folded), cut to ``MAX_ERROR_CHARS``."""
    line = " ".join(str(message).split())
    if len(line) > MAX_ERROR_CHARS:
        cut = MAX_ERROR_CHARS - 40
        line = f"{line[:cut]}... ({len(line) - cut} more characters)"
    return line


def _fail(message: str, code: int) -> None:
    console.print(f"[red]error:[/red] {escape(_error_line(message))}", highlight=False, soft_wrap=True,
                  emoji=False)
    sys.exit(code)


def main() -> None:
    """Entry point: run the app, turning user errors, usage errors, disk faults and Ctrl-C into one line
    and a non-zero exit (2 for bad input, 3 for training that cannot go on, 130 for Ctrl-C)."""
    try:  # typer >= 0.23 vendors click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older typer on click
        from click import exceptions as click_errors

    global _reported_interrupt
    _reported_interrupt = False  # per call (main may run several times in one process)
    try:
        code = app(standalone_mode=False, prog_name="nasforge")
    except NasforgeError as exc:
        _fail(str(exc), exc.exit_code)
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help())
        sys.exit(exc.exit_code)
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "nasforge"
        _fail(f"{exc.format_message().rstrip('.')}; see '{where} --help'", exc.exit_code)
    except click_errors.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        console.print("interrupted", highlight=False)
        sys.exit(130)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # output piped into a program that stopped reading
            sys.exit(1)
        from nasforge.utils import disk_error

        where = Path(exc.filename).parent if getattr(exc, "filename", None) else Path.cwd()
        error = disk_error(exc, where)
        if error is None:
            raise
        _fail(str(error), error.exit_code)
    if code == 130 and not _reported_interrupt:  # Ctrl-C outside a run (typer turns it into exit 130)
        console.print("interrupted", highlight=False)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
