"""Do NAS-RL (REINFORCE) and MetaQNN (Q-learning) learn? A synthetic table with a known optimum.

Each method searches the layer space (digits defaults: up to 6 layers of conv/pool/fc/gap)
for a fixed number of trials, over many seeds, scored by ``LayerTable``: a fixed,
seeded accuracy for every network, additive in depth, filter counts and kernel sizes
plus a per-architecture noise drawn from the architecture's hash (so it is a table, not
a noisy oracle). Its optimum is known by construction (6 conv layers, 3x3, 64 filters).

Reported per method: mean table accuracy of the first and of the last quarter of the
sampled architectures, the best accuracy found, and the regret of the best (noise-free
optimum minus best, noise-free). Baselines: random search (``space.sample``, the random
search strategy's sampler) and a REINFORCE control with learning rate 0 (same depth
schedule, no learning), which separates learning from the growing depth.

    python benchmarks/rl_learning.py                            # 10 seeds x 400 trials (a few minutes, 1 core)
    python benchmarks/rl_learning.py --seeds 2 --trials 80      # smoke test
    python benchmarks/rl_learning.py --digits --digits-trials 12   # also a short real run of each (train evaluator)
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasforge.arch import Arch
from nasforge.spaces import make_space
from nasforge.spaces.layers import LayerSpace
from nasforge.strategies import make_strategy

ROOT = Path(__file__).resolve().parents[1]
KERNEL_SCORE = {1: -0.02, 3: 0.015, 5: 0.005, 7: -0.005}


class LayerTable:
    """Seeded synthetic accuracy of a layer-space network with a known optimum.

    clean = 0.4 + 0.03 per conv layer + per conv 0.03 * (filter index / last index)
            + kernel score of each of its two dimensions (3 best, then 5, 7, 1)
            + 0.005 per consecutive conv pair with non-decreasing filters
            - 0.005 per pool or gap layer, - 0.01 per fc layer, - 0.02 per stride > 1;
    accuracy = clean + N(0, noise^2) drawn from (table seed, arch hash).
    """

    def __init__(self, space: LayerSpace, seed: int = 0, noise: float = 0.01):
        self.space, self.seed, self.noise = space, seed, noise

    def clean(self, arch: Arch) -> float:
        sp = self.space
        layers = sp.layers_of(arch)
        score = 0.4
        prev_filters = None
        for layer in layers:
            if layer.type == "conv":
                score += 0.03 + 0.03 * sp.filters.index(layer.filters) / max(1, len(sp.filters) - 1)
                score += KERNEL_SCORE.get(layer.kernel_h, 0.0) + KERNEL_SCORE.get(layer.kernel_w, 0.0)
                score -= 0.02 * ((layer.stride_h > 1) + (layer.stride_w > 1))
                if prev_filters is not None and layer.filters >= prev_filters:
                    score += 0.005
                prev_filters = layer.filters
            else:
                score -= 0.01 if layer.type == "fc" else 0.005
                prev_filters = None
        return score

    def __call__(self, arch: Arch) -> float:
        noise = np.random.default_rng([self.seed, int(arch.hash, 16) % 2**63]).normal(0.0, self.noise)
        return self.clean(arch) + float(noise)

    def optimum(self) -> tuple[Arch, float]:
        """The best network by construction: max_depth conv layers, best kernel, most filters."""
        from nasforge.spaces.layers import Layer

        sp = self.space
        k = max(sp.kernel_sizes, key=lambda v: KERNEL_SCORE.get(v, 0.0))
        layers = sp.chain([Layer("conv", k, k, 1, 1, max(sp.filters))] * sp.max_depth)
        arch = sp.arch_of(layers)
        return arch, self.clean(arch)


def run_method(name: str, options: dict[str, Any], space: LayerSpace, table: LayerTable, trials: int,
               seed: int) -> list[tuple[Arch, float]]:
    """Drive one strategy through ask/tell for ``trials`` trials (tells in ask order)."""
    if name == "random":
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(trials):
            arch = space.sample(rng)
            out.append((arch, table(arch)))
        return out
    strategy = make_strategy(name, options, "digits")
    strategy.setup(space, seed)
    out, pending = [], []
    while len(out) < trials:
        while len(pending) < strategy.batch and len(out) + len(pending) < trials:
            pending.append(strategy.ask())
        arch = pending.pop(0)
        value = table(arch)
        strategy.tell(arch, {"objective": value})
        out.append((arch, value))
    return out


def summarize(runs: list[list[tuple[Arch, float]]], table: LayerTable) -> dict[str, float]:
    q = len(runs[0]) // 4
    first = [np.mean([v for _, v in r[:q]]) for r in runs]
    last = [np.mean([v for _, v in r[-q:]]) for r in runs]
    best = [max(v for _, v in r) for r in runs]
    best_clean = [table.clean(max(r, key=lambda t: t[1])[0]) for r in runs]
    opt = table.optimum()[1]
    return {"first": float(np.mean(first)), "last": float(np.mean(last)),
            "gain": float(np.mean(np.subtract(last, first))),
            "gain_se": float(np.std(np.subtract(last, first), ddof=1) / np.sqrt(len(runs))) if len(runs) > 1 else 0.0,
            "best": float(np.mean(best)), "best_se": float(np.std(best, ddof=1) / np.sqrt(len(runs)))
            if len(runs) > 1 else 0.0, "regret": float(np.mean(opt - np.array(best_clean))),
            "found_opt": int(sum(1 for r in runs if any(a == table.optimum()[0] for a, _ in r)))}


def plot(curves: dict[str, np.ndarray], path: Path, window: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    kernel = np.ones(window) / window
    for name, rewards in curves.items():
        mean = rewards.mean(0)
        smooth = np.convolve(mean, kernel, mode="valid")
        ax.plot(np.arange(window - 1, len(mean)), smooth, label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel("table accuracy")
    ax.set_title(f"mean over seeds, moving mean of {window} trials", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def digits_runs(trials: int, seed: int, out: Path) -> list[tuple[str, float, float, str, float]]:
    """A short real search of each method on digits with the train evaluator (CLI's code path)."""
    from nasforge.experiment import Experiment
    from nasforge.pipeline import config_dict, resolve_config, run_experiment

    rows = []
    for name in ("reinforce", "metaqnn"):
        raw = {"seed": seed, "space": {"name": "layers"}, "strategy": {"name": name},
               "evaluator": {"name": "train"}, "trials": {"max_trials": trials}, "train": {"epochs": 10}}
        if name == "metaqnn":
            raw["strategy"]["trials"] = trials
        cfg = resolve_config(raw)
        exp = Experiment.create(out / name, config_dict(cfg), force=True)
        tic = time.time()
        try:
            result = run_experiment(exp, cfg)
            objectives = [r["metrics"]["objective"] for r in exp.store.trials() if r["metrics"]]
        finally:
            exp.close()
        rows.append((name, float(np.max(objectives)), float(result["test_acc"]), result["arch_summary"],
                     time.time() - tic))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=400, help="trials per search")
    p.add_argument("--noise", type=float, default=0.01, help="per-architecture noise of the table")
    p.add_argument("--table-seed", type=int, default=0)
    p.add_argument("--reinforce-lr", type=float, default=0.01,
                   help="controller learning rate (the paper's 6e-4 is for 12,800 children)")
    p.add_argument("--reinforce-batch", type=int, default=8, help="children per controller update (paper m=8)")
    p.add_argument("--start-layers", type=int, default=3, help="NAS-RL's first depth (+1 every trials/4)")
    p.add_argument("--plot", default=str(ROOT / "docs/img/rl_reward.png"), help="PNG of reward over trials ('' off)")
    p.add_argument("--digits", action="store_true", help="also a short real search of each on digits")
    p.add_argument("--digits-trials", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)

    space = make_space("layers")
    table = LayerTable(space, args.table_seed, args.noise)
    opt_arch, opt = table.optimum()
    every = max(1, args.trials // 4)
    reinforce = {"lr": args.reinforce_lr, "batch": args.reinforce_batch, "start_layers": args.start_layers,
                 "layers_every": every, "layers_step": 1}
    methods: dict[str, tuple[str, dict[str, Any]]] = {
        "reinforce": ("reinforce", reinforce),
        "reinforce lr=0 (control)": ("reinforce", {**reinforce, "lr": 0.0}),
        "metaqnn": ("metaqnn", {"trials": args.trials, "count": "models"}),  # as recorded in docs/benchmarks.md
        "random": ("random", {}),
    }
    results, curves, seconds = {}, {}, {}
    for label, (name, options) in methods.items():
        tic = time.time()
        runs = [run_method(name, options, space, table, args.trials, seed) for seed in range(args.seeds)]
        seconds[label] = time.time() - tic
        results[label] = summarize(runs, table)
        curves[label] = np.array([[v for _, v in r] for r in runs])

    print(f"layer space (digits defaults), {args.seeds} seeds x {args.trials} trials, table noise {args.noise}; "
          f"optimum {opt:.4f}: {space.describe(opt_arch)}")
    print(f"{'method':<26} {'first 1/4':>9} {'last 1/4':>9} {'gain (se)':>15} {'best (se)':>15} "
          f"{'regret':>7} {'opt found':>9} {'seconds':>8}")
    for label, r in results.items():
        print(f"{label:<26} {r['first']:>9.4f} {r['last']:>9.4f} {r['gain']:>+8.4f} ({r['gain_se']:.4f}) "
              f"{r['best']:>8.4f} ({r['best_se']:.4f}) {r['regret']:>7.4f} {r['found_opt']:>5}/{args.seeds:<3} "
              f"{seconds[label]:>8.1f}")
    if args.plot:
        plot(curves, Path(args.plot), window=max(1, args.trials // 20))
        print(f"plot: {args.plot}")
    if args.digits:
        out = Path(tempfile.mkdtemp(prefix="rl_digits_"))
        print(f"\nreal searches on digits (train evaluator, {args.digits_trials} trials, then 10 training epochs):")
        print(f"{'method':<10} {'best valid':>10} {'test acc':>9} {'seconds':>8}  architecture")
        for name, valid, test, arch, secs in digits_runs(args.digits_trials, 0, out):
            print(f"{name:<10} {valid:>10.4f} {test:>9.4f} {secs:>8.1f}  {arch}")
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{dt.date.today()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
