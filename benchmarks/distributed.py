"""One process against N data-parallel processes on the same global batch: correctness and cost per step.

Each row is one ``nasforge search`` (first-order DARTS or GDAS, one epoch on digits, the main
job's supernet, global batch 64) run as one process, or as N processes under torchrun
(``--nproc N``, gloo on the CPU, NCCL on GPUs), with per-rank or synchronised BatchNorm. The table
gives seconds per search step (the epoch's search time over its steps) and, against the
one-process run, the largest difference of the architecture parameters after the epoch and
whether the derived genotype is the same.

On a machine with as many cores as ranks x threads this shows the communication overhead; on
GPUs (``--device cuda``) the speed-up of N GPUs.

Usage::

    python benchmarks/distributed.py                    # 1 vs 2 processes on the CPU
    python benchmarks/distributed.py --device cuda --nproc 1,2,4,8
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def run(out: Path, strategy: str, nproc: int, sync_bn: bool, device: str, threads: int) -> dict:
    args = [sys.executable, "-m", "nasforge", "search", "--strategy", strategy, "--space", "darts", "--data", "digits",
            "--epochs", "1", "--set", "strategy.batch_size=64", "--set", "train.epochs=1", "--set", "train.layers=3",
            "--set", "train.channels=8", "--device", device, "--out", str(out), "-q"]
    if nproc > 1:
        args += ["--nproc", str(nproc), "--set", f"engine.sync_bn={str(sync_bn).lower()}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(args, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}")
    with sqlite3.connect(out / "store.sqlite") as db:
        metrics = json.loads(db.execute("select metrics from epochs where phase='search'").fetchone()[0])
    state = torch.load(out / "checkpoints" / "search.pt", map_location="cpu", weights_only=False)
    return {"seconds": metrics["seconds"], "alphas": state["alphas"],
            "arch": json.loads((out / "arch.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", default="1,2")
    parser.add_argument("--strategies", default="darts,gdas")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"# {_dt.datetime.now().isoformat(timespec='minutes')} {platform.machine()}, {cores} cores, "
          f"torch {torch.__version__}, device {args.device}, load average {os.getloadavg()[0]:.1f}")
    print("\n| method | processes | BatchNorm | s/step | vs 1 process | max abs alpha diff | same genotype |")
    print("|---|--:|---|--:|--:|--:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            base = None
            for n in (int(x) for x in args.nproc.split(",")):
                for sync in ((False,) if n == 1 else (False, True)):
                    out = Path(tmp) / f"{strategy}-{n}-{sync}"
                    r = run(out, strategy, n, sync, args.device, max(1, cores // n))
                    # digits: 1,257 training images, halves of 628/629, global batch 64: 10 steps
                    per_step = r["seconds"] / 10
                    if base is None:
                        base = r
                        base["per_step"] = per_step
                    diff = max((a - b).abs().max().item() for a, b in zip(r["alphas"], base["alphas"]))
                    print(f"| {strategy} | {n} | {'synchronised' if sync else 'per rank'} | {per_step:.3f} | "
                          f"{per_step / base['per_step']:.2f}x | {diff:.1e} | {r['arch'] == base['arch']} |",
                          flush=True)


if __name__ == "__main__":
    main()
