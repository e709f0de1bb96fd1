"""How well does a latency lookup table predict measured end-to-end latency?

For each device: build the table of a space (every candidate op at every position's input
shape), sample N architectures, measure each one end to end on the same device, and report
the mean absolute percentage error and Spearman's rank correlation of predicted vs measured.

    python benchmarks/latency_table.py                       # mbconv on digits-size input, cpu + onnxruntime
    python benchmarks/latency_table.py --data cifar10 --data-dir ../shared/data/cifar10_small.npz
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from nasforge.data import load_dataset
from nasforge.hardware.lut import build_table, check_table
from nasforge.progress import RichProgress
from nasforge.spaces import make_space


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbconv")
    ap.add_argument("--devices", default="cpu,onnxruntime")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--archs", type=int, default=30, help="sampled architectures measured end to end")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="docs/img/latency_table_check.png")
    ap.add_argument("--json", default=None, help="also write the raw rows here")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    data = load_dataset(args.data, args.data_dir)
    shape = tuple(data.input_shape)
    space = make_space(args.space)
    print(f"# {args.space} space, input {list(shape)}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.archs} sampled archs; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    results = {}
    with RichProgress() as progress:
        for device in args.devices.split(","):
            t0 = time.perf_counter()
            table = build_table(space, shape, data.num_classes, device=device, batch_size=args.batch_size,
                                warmup=args.warmup, repeats=args.repeats, threads=args.threads, progress=progress)
            build_s = time.perf_counter() - t0
            checked = check_table(space, table, n=args.archs, seed=args.seed, warmup=args.warmup,
                                  repeats=args.repeats, progress=progress)
            results[device] = {"entries": len(table.entries), "build_s": build_s, "overhead_ms": table.overhead_ms,
                               **checked}

    print("\n| device | entries | build (s) | call overhead (ms) | measured range (ms) | MAPE | Spearman |")
    print("|---|---|---|---|---|---|---|")
    for device, r in results.items():
        meas = [row["measured_ms"] for row in r["rows"]]
        print(f"| {device} | {r['entries']} | {r['build_s']:.1f} | {r['overhead_ms']:.3f} | "
              f"{min(meas):.3f} - {max(meas):.3f} | {100 * r['mape']:.1f}% | {r['spearman']:.3f} |")

    if args.plot:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5 * len(results), 4.2))
        for i, (device, r) in enumerate(results.items()):
            ax = fig.add_subplot(1, len(results), i + 1)
            meas = [row["measured_ms"] for row in r["rows"]]
            pred = [row["predicted_ms"] for row in r["rows"]]
            ax.scatter(meas, pred, s=14)
            lo, hi = min(meas + pred), max(meas + pred)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel("measured (ms)")
            ax.set_ylabel("predicted from table (ms)")
            ax.set_title(f"{device}: MAPE {100 * r['mape']:.1f}%, Spearman {r['spearman']:.2f}", fontsize=9)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
