"""The engine on real hardware: the main job, paper-configuration search steps in fp32 and bf16,
final-training throughput with and without torch.compile, and the projected cost of whole searches.

Made for one CUDA GPU (under 8 minutes on an H100/H200-class card); ``--device cpu`` runs the same
script with smaller sizes (``--quick``, the default on the CPU) so it is checked where no GPU is.

Rows:
  * main job: ``nasforge search`` with no arguments but ``--device`` (GDAS on digits, then training).
  * search steps (``benchmarks/supernet_step.py`` workers, one fresh process per row): DARTS first and
    second order and GDAS on the DARTS paper supernet (8 cells, 16 channels, batch 64, 32x32), GDAS at
    its official batch 256, ProxylessNAS on the imagenet mbconv preset at 224x224, batch 256; each in
    fp32 and bf16, with seconds per step and peak ``max_memory_allocated`` (CUDA) or RSS (CPU).
  * final training: images/s of a 20-cell, 36-channel DARTS network at batch 96 (the paper's
    evaluation network) through ``nasforge.training.weight_step``, eager and ``torch.compile``.
  * projections from the measured step times: the CIFAR-10 GDAS search at the official schedule
    (250 epochs, batch 256, 25k/25k split: 98 steps per epoch), first-order DARTS (50 epochs, batch
    64: 391 steps per epoch), against the issue's targets (1 and 2 GPU-hours; Proxyless < 0.5 s/step).

Usage::

    python benchmarks/gpu.py --device cuda            # on a GPU machine
    python benchmarks/gpu.py --device cpu             # the quick CPU version
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import supernet_step as ss  # noqa: E402

from nasforge.spaces import make_space  # noqa: E402
from nasforge.training import Engine, EngineConfig, weight_step  # noqa: E402

TARGETS = {"gdas_hours": 1.0, "darts_hours": 2.0, "proxyless_s": 0.5}
TAG = "@@TRAIN_ROW@@"
GDAS_STEPS = 250 * math.ceil(25000 / 256)
DARTS_STEPS = 50 * math.ceil(25000 / 64)


def step_rows(device: str, quick: bool, timeout: float) -> list[dict]:
    """Search-step rows in fresh worker processes (supernet_step.py's worker)."""
    paper = ss.CONFIGS["paper"]
    b256 = ss.CONFIGS["paper-b256"]
    imagenet = ss.CONFIGS["imagenet"]
    if quick:  # the CPU: the same rows on small inputs
        paper = replace(paper, input_shape=(3, 16, 16), steps=2, warmup=1)
        b256 = replace(b256, batch=64, input_shape=(3, 16, 16), steps=2, warmup=1)
        imagenet = replace(imagenet, batch=8, input_shape=(3, 64, 64), steps=2, warmup=1)
    plan = [("darts-1st", paper), ("darts-2nd", paper), ("gdas", paper), ("gdas", b256), ("proxyless", imagenet)]
    out = []
    for precision in ("32", "bf16"):
        for method, cfg in plan:
            spec = {"method": method, "config": asdict(cfg), "device": device, "precision": precision,
                    "threads": None, "seed": 0, "steps": cfg.steps, "warmup": cfg.warmup}
            print(f"step: {method} {cfg.name} {precision} ...", file=sys.stderr, flush=True)
            row = ss.run_row(spec, timeout)
            row.update(precision=precision, batch=cfg.batch, shape="x".join(map(str, cfg.input_shape)))
            out.append(row)
    return out


def train_throughput(device: str, quick: bool, compile_: bool, precision: str) -> dict:
    """Images/s of the paper's evaluation network (20 cells, 36 channels, batch 96) on random data."""
    layers, channels, batch, shape, steps, warmup = (20, 36, 96, (3, 32, 32), 30, 10) if not quick else \
        (6, 16, 32, (3, 16, 16), 4, 2)
    engine = Engine(EngineConfig(device=device, precision=precision, compile=compile_, bn_recalibration=0))
    space = make_space("darts")
    arch = space.sample(np.random.default_rng(0))
    torch.manual_seed(0)
    model = engine.module(space.build(arch, shape, 10, layers=layers, channels=channels))
    forward = engine.compile(model)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(batch, *shape, device=engine.device)
    y = torch.randint(0, 10, (batch,), device=engine.device)
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
    t_first = time.perf_counter()
    for _ in range(warmup):
        weight_step(engine, opt, params, forward, (x, y), grad_clip=5.0)
    sync()
    first = time.perf_counter() - t_first
    t0 = time.perf_counter()
    for _ in range(steps):
        weight_step(engine, opt, params, forward, (x, y), grad_clip=5.0)
    sync()
    dt = time.perf_counter() - t0
    return {"compile": compile_, "precision": precision, "layers": layers, "channels": channels, "batch": batch,
            "images_per_s": steps * batch / dt, "warmup_s": first}


def train_row(device: str, quick: bool, compile_: bool, precision: str, timeout: float) -> dict:
    """``train_throughput`` in a fresh process (a compiler crash ends that row, not the script)."""
    spec = json.dumps({"device": device, "quick": quick, "compile": compile_, "precision": precision})
    try:
        proc = subprocess.run([sys.executable, __file__, "--train-worker", spec], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"compile": compile_, "precision": precision, "error": f"timeout after {timeout:.0f}s"}
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return {"compile": compile_, "precision": precision, "error": f"exit {proc.returncode}: {tail[:80]}"}


def main_job(device: str, timeout: float) -> dict:
    """``nasforge search`` (the main job) on ``device``: wall time and the result's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "nasforge.cli", "search", "--device", device, "-q", "--out", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"], "wall_s": wall}
        result = json.loads((out / "result.json").read_text())
    return {"wall_s": wall, "test_acc": result["test_acc"], "search_s": result["search_seconds"],
            "train_s": result["train_seconds"], "arch": result["arch_summary"]}


def _median(rows: list[dict], method: str, config: str, precision: str) -> float | None:
    for r in rows:
        if r.get("method") == method and r.get("config") == config and r.get("precision") == precision \
                and "median_s" in r:
            return r["median_s"]
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes (the default on the CPU)")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per row before giving up")
    p.add_argument("--skip-main", action="store_true", help="skip the main job")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument("--train-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_worker:
        spec = json.loads(args.train_worker)
        try:
            row = train_throughput(spec["device"], spec["quick"], spec["compile"], spec["precision"])
        except Exception as exc:  # e.g. torch.compile without a working compiler: an error row
            row = {"compile": spec["compile"], "precision": spec["precision"],
                   "error": f"{type(exc).__name__}: {str(exc)[:80]}"}
        print(TAG + json.dumps(row), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible here; run with --device cpu")
    quick = args.quick or args.device == "cpu"
    started = _dt.datetime.now().astimezone()
    t_start = time.perf_counter()
    machine = ss.machine_info(args.device)
    print(f"## nasforge on {args.device}: {machine.get('gpu', machine['cpu'])}\n")
    print(f"- date: {started.isoformat(timespec='seconds')}; command: `python {shlex.join(sys.argv)}`")
    print(f"- torch {machine['torch']}, python {machine['python']}, sizes: {'quick' if quick else 'paper'}\n")

    main = None if args.skip_main else main_job(args.device, timeout=max(args.timeout, 600))
    if main is not None:
        print("| main job | wall (s) | search (s) | training (s) | test accuracy |")
        print("|---|---:|---:|---:|---:|")
        if "error" in main:
            print(f"| `nasforge search --device {args.device}` | error: {main['error']} | | | |")
        else:
            print(f"| `nasforge search --device {args.device}` | {main['wall_s']:.1f} | {main['search_s']:.1f} | "
                  f"{main['train_s']:.1f} | {100 * main['test_acc']:.2f}% |")
        print()

    rows = step_rows(args.device, quick, args.timeout)
    mem = "max_memory_allocated (MiB)" if args.device == "cuda" else "step peak RSS (MiB)"
    print(f"| step | config | batch | input | precision | s/step (median) | {mem} |")
    print("|---|---|---:|---|---|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['config']} | {r['batch']} | {r['shape']} | {r['precision']} | "
                  f"error: {r['error']} | |")
        else:
            peak = r.get("peak_abs_mib") if args.device == "cuda" else r.get("step_peak_mib")
            print(f"| {r['method']} | {r['config']} | {r['batch']} | {r['shape']} | {r['precision']} | "
                  f"{r['median_s']:.4f} | {peak:.0f} |")
    print()

    train = []
    for precision in ("32", "bf16"):
        for compile_ in (False, True):
            print(f"train: {precision} compile={compile_} ...", file=sys.stderr, flush=True)
            train.append(train_row(args.device, quick, compile_, precision, args.timeout))
    print("| final training | precision | torch.compile | images/s | first steps (s) |")
    print("|---|---|---|---:|---:|")
    for t in train:
        if "error" in t:
            print(f"| DARTS network | {t['precision']} | {t['compile']} | error: {t['error']} | |")
        else:
            print(f"| {t['layers']} cells, {t['channels']} ch, batch {t['batch']} | {t['precision']} | "
                  f"{'on' if t['compile'] else 'off'} | {t['images_per_s']:.0f} | {t['warmup_s']:.1f} |")
    print()

    projections = {}
    if not quick:
        for precision in ("32", "bf16"):
            gdas = _median(rows, "gdas", "paper-b256", precision)
            darts = _median(rows, "darts-1st", "paper", precision)
            proxy = _median(rows, "proxyless", "imagenet", precision)
            projections[precision] = {
                "gdas_hours": gdas * GDAS_STEPS / 3600 if gdas else None,
                "darts_hours": darts * DARTS_STEPS / 3600 if darts else None,
                "proxyless_s": proxy}
        print("| projection (from step times) | fp32 | bf16 | target | met (best) |")
        print("|---|---:|---:|---:|---|")
        labels = {"gdas_hours": "GDAS CIFAR-10 search, 250 epochs x 98 steps at batch 256 (GPU-hours)",
                  "darts_hours": "DARTS 1st order, 50 epochs x 391 steps at batch 64 (GPU-hours)",
                  "proxyless_s": "ProxylessNAS imagenet preset, 224x224, batch 256 (s/step)"}
        for key, label in labels.items():
            vals = [projections[pr][key] for pr in ("32", "bf16")]
            best = min((v for v in vals if v is not None), default=None)
            cells = " | ".join("-" if v is None else f"{v:.3f}" for v in vals)
            met = "-" if best is None else ("yes" if best < TARGETS[key] else "no")
            print(f"| {label} | {cells} | < {TARGETS[key]:g} | {met} |")
        print()
    print(f"- total wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": started.isoformat(), "machine": machine, "main": main,
                                               "steps": rows, "train": train, "projections": projections},
                                              indent=2, default=str))
    errors = [r for r in rows if "error" in r] + ([main] if main and "error" in main else [])
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
