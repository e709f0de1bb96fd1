"""DenseNAS with two latency weights on real images: does the heavier weight give a faster network?

For each latency weight the same seeded DenseNAS search runs on the ``dense`` space with
one shared lookup table (built once, on the CPU, with fixed threads); the derived
architecture is trained from scratch with the same short recipe, scored on the test split
and timed end to end with ``nasforge.hardware.measure_latency`` (fixed threads). The table
prints, per weight: the kept blocks' widths, depth, downsampling positions, the table's
predicted and the measured latency, params and test accuracy. The derived paths are drawn
to ``docs/img/densenas_path_<weight>.png``.

Data: the CIFAR-10 subset ``../shared/data/cifar10_small.npz`` when present (stem stride 2:
16x16 after the stem), else digits (8x8, stem stride 1). Timing-sensitive: run it on a
quiet machine.

    python benchmarks/densenas.py                                     # defaults (about 5 minutes, 2 quiet cores)
    python benchmarks/densenas.py --data digits --epochs 2 --train-epochs 1 --subset 300   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nasforge.data import load_dataset
from nasforge.hardware import count_params, measure_latency
from nasforge.hardware.lut import build_table
from nasforge.report.sections.densenas import plot_path
from nasforge.spaces import make_space
from nasforge.strategies import make_strategy
from nasforge.train import TrainConfig, train_arch

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10_small.npz"


def subset(data, n: int, seed: int):
    """Keep ``n`` training images (class-mixed, seeded); valid and test stay whole."""
    if n <= 0 or n >= len(data.train):
        return data
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:n]
    return dataclasses.replace(data, train=data.train.subset(np.sort(idx.numpy())))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", choices=("auto", "cifar10", "digits"), default="auto",
                    help="auto: the CIFAR-10 subset in ../shared/data when present, else digits")
    ap.add_argument("--weights", default="0,0.5", help="two (or more) latency weights, comma-separated")
    ap.add_argument("--epochs", type=int, default=6, help="search epochs (a third of them warm-up)")
    ap.add_argument("--train-epochs", type=int, default=10, help="final training epochs of each derived network")
    ap.add_argument("--subset", type=int, default=1000, help="training images kept (0: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the table and the latency measurement")
    ap.add_argument("--repeats", type=int, default=50, help="timed runs of each final network (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--img-dir", default="docs/img", help="where the path figures go ('' to skip)")
    args = ap.parse_args(argv)

    name = args.data
    if name == "auto":
        name = "cifar10" if CIFAR.is_file() else "digits"
    data = load_dataset(name, CIFAR if name == "cifar10" else None, seed=args.seed)
    data = subset(data, args.subset, args.seed)
    stem_stride = 2 if name == "cifar10" else 1
    space = make_space("dense", stem_stride=stem_stride)
    weights = [float(w) for w in args.weights.split(",")]
    torch.set_num_threads(args.threads)
    print(f"data: {data.describe()}; space: dense small preset, stem stride {stem_stride}; "
          f"{args.epochs} search epochs, {args.train_epochs} training epochs, threads {args.threads}", flush=True)

    tic = time.time()
    table = build_table(space, data.input_shape, data.num_classes, threads=args.threads, warmup=5, repeats=30)
    table_file = Path(tempfile.mkdtemp(prefix="densenas-bench-")) / "table.json"
    table.save(table_file)
    print(f"lookup table: {len(table.entries)} entries in {time.time() - tic:.0f} s", flush=True)

    rows = []
    for w in weights:
        tic = time.time()
        strategy = make_strategy("densenas", {"epochs": args.epochs, "batch_size": args.batch_size}, name,
                                 latency={"weight": w, "table": str(table_file)})
        result = strategy.search(space, data, seed=args.seed)
        search_s = time.time() - tic
        arch = result.arch
        info = space.summary(arch)
        torch.manual_seed(args.seed)
        trained = train_arch(space, arch, data, TrainConfig(epochs=args.train_epochs, batch_size=args.batch_size,
                                                            lr=0.05, weight_decay=4e-5, cutout=0), seed=args.seed)
        lat = measure_latency(trained.model, data.input_shape, threads=args.threads, warmup=10,
                              repeats=args.repeats)
        if args.img_dir:
            out = Path(args.img_dir) / f"densenas_path_{w:g}.png"
            plot_path(space, arch, result.history[-1]["arch_weights"]["paths"], out,
                      title=f"lat_weight {w:g}: {space.describe(arch)}")
        rows.append({"w": w, "widths": info["widths"], "depth": info["depth"], "down": info["downsample_at"],
                     "pred": table.predict(space, arch), "meas": lat.median_ms, "p10": lat.p10_ms, "p90": lat.p90_ms,
                     "params": count_params(trained.model), "acc": trained.metrics["test_acc"],
                     "search_s": search_s, "arch": space.describe(arch)})
        print(f"lat_weight {w:g}: {space.describe(arch)} ({search_s:.0f} s search)", flush=True)

    print()
    print("| lat_weight | kept widths | depth | downsampling at layer | predicted ms | measured ms (p10-p90) "
          "| params | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['w']:g} | {r['widths']} | {r['depth']} | {r['down']} | {r['pred']:.3f} | "
              f"{r['meas']:.3f} ({r['p10']:.3f}-{r['p90']:.3f}) | {r['params']:,} | {100 * r['acc']:.1f}% |")
    light, heavy = rows[0], rows[-1]
    faster = heavy["p90"] < light["p10"]
    print(f"\nheaviest weight vs lightest: measured {heavy['meas']:.3f} vs {light['meas']:.3f} ms "
          f"({'faster, ranges disjoint' if faster else 'NOT measurably faster'})")
    return 0 if faster else 1


if __name__ == "__main__":
    sys.exit(main())
