"""ProxylessNAS accuracy/latency trade-off: one search per latency weight, then the same
short training of each derived network, its measured CPU latency and test accuracy.

Data: the CIFAR-10 subset of ``../shared/data/cifar10_small.npz`` when present (mbconv
preset ``cifar``), else the embedded digits (preset ``small``); ``--data`` picks. One
latency lookup table is measured first (``--threads`` threads, batch 1) and shared by all
searches, so every weight optimises against the same numbers. Each search writes an
experiment directory under ``--out`` (``nasforge report DIR`` draws the run with the
Pareto plot); the summary goes to ``--out/proxyless_tradeoff.json`` and the plot to
``--png``. Latency is measured with ``nasforge.hardware.measure_latency`` at fixed threads
after training, so it is a wall-clock result: run it on quiet cores.

Usage::

    python benchmarks/proxyless_tradeoff.py                       # defaults (about 10 min on 2 quiet cores)
    python benchmarks/proxyless_tradeoff.py --data digits --search-epochs 2 --train-epochs 1 --weights 0,3
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from nasforge.data import load_dataset
from nasforge.experiment import Experiment
from nasforge.hardware import count_flops, measure_latency
from nasforge.hardware.lut import build_table
from nasforge.profiles import fill_auto
from nasforge.report.sections.proxyless import plot_tradeoff
from nasforge.spaces import make_space
from nasforge.strategies import make_strategy
from nasforge.strategies.proxyless import TRADEOFF_FILE
from nasforge.train import TrainConfig, train_arch

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_small.npz"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("auto", "cifar10", "digits"), default="auto",
                   help="auto: the CIFAR-10 subset when ../shared/data has it, else digits")
    p.add_argument("--data-path", default=str(CIFAR), help="the CIFAR-10 .npz (or folder)")
    p.add_argument("--weights", default=None,
                   help="comma-separated latency weights, one search each (default: cifar 0,0.1,0.3,1; "
                        "digits 0,0.3,1,3)")
    p.add_argument("--loss", choices=("add", "mul"), default="add", help="latency loss form (see docs/proxyless.md)")
    p.add_argument("--search-epochs", type=int, default=None, help="search epochs incl. warm-up (default: cifar 6, digits 12)")
    p.add_argument("--train-epochs", type=int, default=None, help="training epochs of each derived net (default: cifar 4, digits 10)")
    p.add_argument("--batch", type=int, default=32, help="search batch size")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training, the table and the latency")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs before each latency measurement")
    p.add_argument("--repeats", type=int, default=100, help="timed runs per latency measurement (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/proxyless-tradeoff", help="folder of the runs and the JSON summary")
    p.add_argument("--png", default=str(ROOT / "docs" / "img" / "proxyless_pareto.png"), help="Pareto plot file")
    args = p.parse_args(argv)

    name = args.data
    if name == "auto":
        name = "cifar10" if Path(args.data_path).exists() else "digits"
    text = args.weights or ("0,0.1,0.3,1" if name == "cifar10" else "0,0.3,1,3")
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        weights = []
    if not weights or min(weights) < 0:
        p.error("--weights needs one or more non-negative numbers")
    torch.set_num_threads(args.threads)
    data = load_dataset(name, args.data_path if name == "cifar10" else None, seed=args.seed)
    preset = "cifar" if name == "cifar10" else "small"
    search_epochs = args.search_epochs or (6 if name == "cifar10" else 12)
    train_epochs = args.train_epochs or (4 if name == "cifar10" else 10)
    space = make_space("mbconv", preset=preset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()

    print(f"measuring the latency table ({space.name}, preset {preset}, {args.threads} thread(s)) ...",
          file=sys.stderr, flush=True)
    table = build_table(space, data.input_shape, data.num_classes, device="cpu", threads=args.threads,
                        warmup=args.warmup, repeats=args.repeats)
    table_path = table.save(out / "latency_table.json")

    points = []
    for w in weights:
        run = f"w{w:g}"
        print(f"search + training at latency weight {w:g} ...", file=sys.stderr, flush=True)
        exp = Experiment.create(out / run, {"benchmark": "proxyless_tradeoff", "latency_weight": w,
                                            "data": {"name": name}, "space": {"name": "mbconv", "preset": preset},
                                            "strategy": {"name": "proxyless"}}, force=True)
        strategy = make_strategy("proxyless", {"epochs": search_epochs, "batch_size": args.batch}, name,
                                 latency={"loss": args.loss, "weight": w, "table": str(table_path)})
        ts = time.perf_counter()
        result = strategy.search(space, data, experiment=exp, seed=args.seed)
        search_s = time.perf_counter() - ts
        arch = result.arch
        arch.save(exp.path / "arch.json")
        train_cfg = fill_auto(TrainConfig(epochs=train_epochs, batch_size=64, lr=0.05), name, "train")
        train_cfg.cutout = 0
        tt = time.perf_counter()
        trained = train_arch(space, arch, data, train_cfg, experiment=exp, seed=args.seed)
        train_s = time.perf_counter() - tt
        lat = measure_latency(trained.model, data.input_shape, device="cpu", batch_size=1, warmup=args.warmup,
                              repeats=args.repeats, threads=args.threads)
        point = {"run": run, "latency_weight": w, "measured_latency_ms": lat.median_ms,
                 "latency_p10_ms": lat.p10_ms, "latency_p90_ms": lat.p90_ms,
                 "predicted_latency_ms": result.info["predicted_latency_ms"],
                 "test_acc": trained.metrics["test_acc"], "flops": count_flops(trained.model, data.input_shape),
                 "params": sum(p.numel() for p in trained.model.parameters()),
                 "arch": arch.to_dict(), "arch_summary": space.describe(arch),
                 "search_s": search_s, "train_s": train_s}
        exp.write_json("result.json", {k: v for k, v in point.items() if k != "run"})
        exp.close()
        points.append(point)

    total = time.perf_counter() - t0
    summary = {"date": started.isoformat(timespec="seconds"), "command": "python " + shlex.join(sys.argv),
               "machine": f"{cpu_name()}, {os.cpu_count()} logical CPUs", "torch": torch.__version__,
               "threads": args.threads, "data": data.describe(), "preset": preset, "loss": args.loss,
               "search_epochs": search_epochs, "train_epochs": train_epochs, "batch": args.batch,
               "table": {"entries": len(table.entries), "overhead_ms": table.overhead_ms,
                         "smallest_ms": strategy.latency.smallest, "largest_ms": strategy.latency.largest,
                         "target_ms": strategy.target_ms},
               "total_s": total, "points": points}
    (out / TRADEOFF_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    for point in points:
        (out / point["run"] / TRADEOFF_FILE).write_text(json.dumps({**summary, "this_run": point["run"]}, indent=2))
    png = plot_tradeoff(points, Path(args.png))

    print(f"## ProxylessNAS trade-off ({data.describe()})\n")
    print(f"- date {summary['date']}; command `{summary['command']}`")
    print(f"- machine {summary['machine']}, torch {torch.__version__}, {args.threads} thread(s); "
          f"1-min load average at end {os.getloadavg()[0]:.2f}")
    print(f"- mbconv preset {preset}; search {search_epochs} epochs (batch {args.batch}, loss {args.loss}, target "
          f"{strategy.target_ms:.3f} ms = geometric mean of the smallest {strategy.latency.smallest:.3f} and "
          f"largest {strategy.latency.largest:.3f} ms); training {train_epochs} epochs; total {total:.0f} s\n")
    print("| latency weight | measured latency ms (p10-p90) | table latency ms | test acc | FLOPs | "
          "search s | train s | architecture |")
    print("|--:|--:|--:|--:|--:|--:|--:|---|")
    for pt in points:
        print(f"| {pt['latency_weight']:g} | {pt['measured_latency_ms']:.3f} ({pt['latency_p10_ms']:.3f}-"
              f"{pt['latency_p90_ms']:.3f}) | {pt['predicted_latency_ms']:.3f} | {100 * pt['test_acc']:.2f}% | "
              f"{pt['flops']:,} | {pt['search_s']:.0f} | {pt['train_s']:.0f} | {pt['arch_summary']} |")
    lat = [pt["measured_latency_ms"] for pt in points]
    falls = all(b < a for a, b in zip(lat, lat[1:]))
    print(f"\nmeasured latency falls as the weight rises: {'yes' if falls else 'NO'}; plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
