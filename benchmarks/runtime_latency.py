"""Latency of one trained network on eager PyTorch and on ONNX Runtime, with different warm-ups.

The final network of a run is timed on both runtimes (``latencies`` in result.json). This shows
why: at batch 1 eager PyTorch pays a Python dispatch per layer that ONNX Runtime does not, and
the first calls of each runtime (memory arenas, kernel choice) are slow, so a short fixed
warm-up can overstate a runtime's latency. Each row: median and 90th percentile over the timed
calls after the given warm-up, each measurement in a fresh session.

    python benchmarks/runtime_latency.py runs/RUN                 # a run directory or a model.pt
    python benchmarks/runtime_latency.py runs/RUN/arch.json       # the arch at the digits profile's final size
                                                                  # (untrained: latency does not depend on weights)
    python benchmarks/runtime_latency.py runs/RUN --threads 1 --repeats 200
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from nasforge.export import load_exportable
from nasforge.hardware.latency import measure_latency

#: (label, warm-up calls, warm-up seconds)
WARMUPS = [("none", 0, 0.0), ("10 calls", 10, 0.0), ("10 calls + 0.5 s", 10, 0.5), ("10 calls + 2 s", 10, 2.0)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a run directory (its model.pt, or a quantize run's network), a model.pt, or "
                                   "an arch.json (built at --data's final-training size)")
    ap.add_argument("--data", default="digits", help="for an arch.json: the dataset giving shape and size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args(argv)

    if args.source.endswith(".json"):
        from nasforge.arch import Arch
        from nasforge.data import load_dataset
        from nasforge.spaces import get_space_class
        from nasforge.train import TrainConfig, build_options, resolve_train_config

        arch, path = Arch.from_json(args.source), args.source
        data = load_dataset(args.data)
        shape = tuple(data.input_shape)
        options = build_options(resolve_train_config(TrainConfig(), args.data))
        model = get_space_class(arch.space).for_arch(arch).build(arch, shape, data.num_classes, **options).eval()
    else:
        model, arch, shape, path = load_exportable(args.source)
    print(f"{path}: {arch.space} network, input {list(shape)}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.repeats} timed calls; torch {torch.__version__}, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\n| runtime | warm-up | median ms | p90 ms |\n|---|---|---|---|")
    for device in ("cpu", "onnxruntime"):
        for label, calls, seconds in WARMUPS:
            r = measure_latency(model, shape, device=device, batch_size=args.batch_size, warmup=calls,
                                repeats=args.repeats, threads=args.threads, warmup_seconds=seconds)
            name = "PyTorch eager (CPU)" if device == "cpu" else "ONNX Runtime (CPU)"
            print(f"| {name} | {label} | {r.median_ms:.3f} | {r.p90_ms:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
