"""DARTS collapse and the DARTS+ early stop, on real images.

Runs plain DARTS for many epochs and records, per epoch, the number of skip-connects in
the derived normal cell; runs DARTS+ (the same search with the DARTS+ stopping policy)
on the same setting and seed; trains both final genotypes with the same recipe and
reports their test accuracy. Each search is a real experiment directory (store, arch
weights per epoch), so `nasforge report DIR` draws the per-edge weights and the
skip-connect counts.

    python benchmarks/collapse.py                          # digits, 60 epochs
    python benchmarks/collapse.py --batch-size 32 --a-lr 3e-3 --out runs/collapse-fast   # compressed in time
    python benchmarks/collapse.py --data cifar10 --epochs 30 --data-dir ../shared/data/cifar10_small.npz
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from nasforge.experiment import Experiment
from nasforge.pipeline import config_dict, load_data, resolve_config
from nasforge.spaces import make_space
from nasforge.strategies import make_strategy
from nasforge.train import train_arch


def skip_counts(history: list[dict]) -> list[int]:
    """Skip-connects of the derived normal cell per epoch."""
    return [sum(1 for k, v in h["arch"]["choices"].items() if k.startswith("normal.") and v == "skip_connect")
            for h in history]


def run_search(out: Path, cfg, data, label: str) -> tuple[Experiment, dict]:
    exp = Experiment.create(out / label, config_dict(cfg), force=True)
    strategy = make_strategy("darts", {k: v for k, v in cfg.strategy.items() if k != "name"}, cfg.data.name)
    tic = time.time()
    result = strategy.search(make_space("darts"), data, experiment=exp, seed=cfg.seed)
    result.arch.save(exp.path / "arch.json")
    return exp, {"arch": result.arch, "history": result.history, "info": result.info, "seconds": time.time() - tic}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=60, help="epochs of the plain DARTS search")
    p.add_argument("--patience", type=int, default=10, help="DARTS+ criterion 2 patience")
    p.add_argument("--train-epochs", type=int, default=None, help="final training epochs (default: dataset profile)")
    p.add_argument("--batch-size", type=int, default=None, help="search batch size (default: dataset profile)")
    p.add_argument("--a-lr", type=float, default=None, help="architecture learning rate (default: the paper's 3e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/collapse")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    out = Path(args.out)
    base = {"seed": args.seed, "data": {"name": args.data, "dir": args.data_dir},
            "strategy": {"name": "darts", "epochs": args.epochs}}
    if args.batch_size:
        base["strategy"]["batch_size"] = args.batch_size
    if args.a_lr:
        base["strategy"]["a_lr"] = args.a_lr
    if args.train_epochs:
        base["train"] = {"epochs": args.train_epochs}
    plain_cfg = resolve_config(base)
    plus_cfg = resolve_config({**base, "strategy": {**base["strategy"], "early_stop": "dartsplus",
                                                    "early_stop_patience": args.patience}})
    data = load_data(plain_cfg)
    space = make_space("darts")
    print(f"# DARTS collapse vs DARTS+ ({dt.date.today()})")
    print(f"- command: `{shlex.join([Path(sys.executable).name] + sys.argv)}`")
    print(f"- machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data: {data.describe()}")
    rows = {}
    for label, cfg in (("darts", plain_cfg), ("dartsplus", plus_cfg)):
        exp, res = run_search(out, cfg, data, label)
        trained = train_arch(space, res["arch"], data, cfg.train, seed=cfg.seed)
        rows[label] = {
            "epochs_run": len(res["history"]),
            "early_stop": res["info"].get("early_stop"),
            "skips_per_epoch": skip_counts(res["history"]),
            "final_skips": skip_counts(res["history"])[-1],
            "genotype": space.describe(res["arch"]),
            "search_seconds": res["seconds"],
            "test_acc": trained.metrics["test_acc"],
            "params": sum(p.numel() for p in trained.model.parameters()),
            "dir": str(exp.path),
        }
        exp.close()
    print()
    print("| run | search epochs | stop | skip-connects (normal cell) at the end | test acc | params | search s |")
    print("|---|--:|---|--:|--:|--:|--:|")
    for label, r in rows.items():
        stop = r["early_stop"]
        stop_txt = f"{stop['criterion']} at epoch {stop['epoch']}" if stop else "-"
        print(f"| {label} | {r['epochs_run']} | {stop_txt} | {r['final_skips']} | {100 * r['test_acc']:.2f}% "
              f"| {r['params']:,} | {r['search_seconds']:.0f} |")
    print()
    print("skip-connects in the derived normal cell, per epoch (plain DARTS):")
    print(" ".join(str(s) for s in rows["darts"]["skips_per_epoch"]))
    print("skip-connects per epoch (DARTS+):")
    print(" ".join(str(s) for s in rows["dartsplus"]["skips_per_epoch"]))
    for label, r in rows.items():
        print(f"- {label} genotype: {r['genotype']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
