"""Multi-fidelity search on real training: random search vs Hyperband vs BOHB at equal training time.

Each strategy searches the NAS-Bench-201 cell space with the ``train`` evaluator (real
training on real images: scikit-learn's digits by default, or ``--data cifar10-small``
for the 5,000-image CIFAR-10 subset of ``../shared/data``) under the same budget of
measured training seconds (``trials.max_sim_seconds``: the sum of the trials'
``train_seconds``). Random search trains every trial for the full ``--epochs``; Hyperband
and BOHB train most trials for 1 or ``epochs/3`` epochs and promote the best. The chosen
cell of every search is then trained again for the full ``--epochs`` with ``--rescore``
fresh seeds, so the table's accuracy is the cell's (not the search's lucky seed's).
Columns: trials and their fidelities, and the chosen cells' mean rescored valid accuracy.

    python benchmarks/multi_fidelity.py                          # digits, 3 seeds, 60 s of training each
    python benchmarks/multi_fidelity.py --seeds 5 --budget 120 --data cifar10-small

Timing-sensitive only through the budget (a loaded machine trains fewer epochs in it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nasforge.data import load_dataset
from nasforge.evaluators.train import TrainEvalConfig, TrainEvaluator
from nasforge.spaces import make_space
from nasforge.strategies import make_strategy
from nasforge.trials import Budget, run_trials

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_small.npz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", help="digits, or cifar10-small (../shared/data/cifar10_small.npz)")
    p.add_argument("--strategies", default="random,hyperband,bohb")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per search")
    p.add_argument("--epochs", type=int, default=9, help="full fidelity: epochs of a full trial")
    p.add_argument("--rescore", type=int, default=2, help="fresh training seeds per chosen cell")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.data == "cifar10-small":
        if not SHARED.exists():
            sys.exit(f"{SHARED} is absent; run on digits")
        data = load_dataset("npz", data_dir=SHARED)
    else:
        data = load_dataset(args.data)
    space = make_space("nb201", C=8, N=1)
    config = TrainEvalConfig(epochs=args.epochs, batch_size=64, layers=None, channels=None)
    evaluator = TrainEvaluator(space, data, config)
    rows = []
    for name in args.strategies.split(","):
        chosen, trials, fids, wall = [], [], {}, 0.0
        for seed in range(args.seeds):
            tic = time.time()
            result = run_trials(make_strategy(name), space, evaluator, Budget(sim_seconds=args.budget), seed=seed)
            wall += time.time() - tic
            trials.append(len(result.history))
            for key, n in result.info.get("trials_per_fidelity", {"full": len(result.history)}).items():
                fids[key] = fids.get(key, 0) + n
            arch = result.arch
            scores = [evaluator(arch, seed=1000 + k)["valid_acc"] for k in range(args.rescore)]
            chosen.append(float(np.mean(scores)))
            print(f"{name} seed {seed}: {len(result.history)} trials, chosen {space.describe(arch)} "
                  f"rescored {chosen[-1]:.4f}", flush=True)
        rows.append((name, np.mean(trials), fids, np.mean(chosen), np.std(chosen), wall / args.seeds))
    load = os.getloadavg()[0]
    print(f"\n{dt.date.today()} {platform.node()} {os.cpu_count()} cores, torch {torch.__version__}, load {load:.1f}; "
          f"data {data.name}, nb201 C=8 N=1, full fidelity {args.epochs} epochs, budget {args.budget:g} s of "
          f"training per search, {args.seeds} seeds, {args.rescore} rescoring seeds")
    print("| strategy | trials per search | trials per fidelity (all seeds) | chosen cell's valid acc (rescored) "
          "| wall s per search |")
    print("|---|--:|---|--:|--:|")
    for name, n, fids, mean, std, wall in rows:
        per = ", ".join(f"{k}: {v}" for k, v in fids.items())  # in fidelity order, as the searches count them
        print(f"| {name} | {n:.1f} | {per} | {100 * mean:.2f} ± {100 * std:.2f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
