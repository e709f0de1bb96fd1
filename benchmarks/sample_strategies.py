"""Random search vs regularized evolution, and the local vs Ray runner.

Part 1 (default): on a synthetic table with a known optimum (``SyntheticTable``; space
``nb201`` when it is registered, else a built-in space of the same shape: six op
choices of five values, 15,625 archs), random search and regularized evolution get the
same budget on each of ``--seeds`` seeds (table seed = search seed, so every seed is a
new landscape); the table reports mean and std of the best objective found and of the
regret (optimum minus best found), and how often evolution beat random. Accuracy-only:
its conclusions do not depend on the machine's load. ``--plot`` draws mean regret
against trials.

Part 2 (``--real``): regularized evolution with the train evaluator on digits (darts
space, ``--real-trials`` trials), once with the local runner and once with Ray at
``--workers`` workers; wall time of both and whether both saw the same trials (they
should: tells happen in ask order). Timing-sensitive: run it on a quiet machine.

    python benchmarks/sample_strategies.py                       # part 1: 20 seeds, 100 trials each
    python benchmarks/sample_strategies.py --trials 50 --plot docs/img/sample_strategies_regret.png
    python benchmarks/sample_strategies.py --real --real-trials 30 --workers 2      # part 2 (wall time)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable
from nasforge.spaces import OpChoice, SearchSpace, make_space, space_names
from nasforge.strategies import make_strategy
from nasforge.trials import Budget, run_trials


class Toy201(SearchSpace):
    """NAS-Bench-201's shape without its networks: six edges, five ops each (15,625 archs)."""

    name = "toy201"

    def choices(self) -> dict[str, OpChoice]:
        ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
        return {f"edge{i}": OpChoice(f"edge{i}", ops) for i in range(6)}


def pick_space(name: str) -> SearchSpace:
    if name == "auto":
        name = "nb201" if "nb201" in space_names() else "toy201"
    return Toy201() if name == "toy201" else make_space(name)


def best_so_far(history: list[dict[str, Any]], n: int) -> np.ndarray:
    """Best objective after each trial (NaN before the first success), padded to ``n``."""
    out, best = np.full(n, np.nan), -np.inf
    for k, rec in enumerate(history[:n]):
        if rec["metrics"] is not None:
            best = max(best, rec["metrics"]["objective"])
        out[k] = best if best > -np.inf else np.nan
    if len(history) < n and len(history):
        out[len(history):] = out[len(history) - 1]
    return out


def part1(args: argparse.Namespace) -> None:
    space = pick_space(args.space)
    budget = Budget(sim_seconds=args.sim_seconds) if args.sim_seconds else Budget(trials=args.trials)
    strategies = {"random": {}, "evolution": {"population": args.population, "sample_size": args.sample_size}}
    best: dict[str, list[float]] = {k: [] for k in strategies}
    regret: dict[str, list[float]] = {k: [] for k in strategies}
    curves: dict[str, list[np.ndarray]] = {k: [] for k in strategies}
    trials: dict[str, list[int]] = {k: [] for k in strategies}
    tic = time.time()
    for seed in range(args.seeds):
        table = SyntheticTable(space, SyntheticConfig(seed=0 if args.fixed_table else seed))
        optimum = table.optimum()[1]
        for name, options in strategies.items():
            result = run_trials(make_strategy(name, options), space, table, budget, seed=seed)
            best[name].append(result.info["best_objective"])
            regret[name].append(optimum - result.info["best_objective"])
            trials[name].append(len(result.history))
            curves[name].append(optimum - best_so_far(result.history, args.trials if not args.sim_seconds
                                                      else max(trials[name])))
    wins = sum(e < r for e, r in zip(regret["evolution"], regret["random"]))
    ties = sum(e == r for e, r in zip(regret["evolution"], regret["random"]))
    print(f"space {space.name} ({space.size():,} archs), synthetic table, budget {budget.describe()}, "
          f"{args.seeds} seeds ({'one table' if args.fixed_table else 'table seed = search seed'}); "
          f"evolution P={args.population} S={args.sample_size}; {time.time() - tic:.1f} s")
    print(f"{'strategy':<10} {'trials':>7} {'best found (mean ± std)':>26} {'regret (mean ± std)':>24} "
          f"{'regret median':>14} {'found optimum':>14}")
    for name in strategies:
        b, r = np.asarray(best[name]), np.asarray(regret[name])
        print(f"{name:<10} {np.mean(trials[name]):>7.1f} {b.mean():>17.4f} ± {b.std():.4f} "
              f"{r.mean():>15.4f} ± {r.std():.4f} {np.median(r):>14.4f} {int((r == 0).sum()):>8}/{len(r)}")
    print(f"evolution's regret lower than random's in {wins}/{args.seeds} seeds ({ties} ties)")
    if args.plot:
        draw(curves, args.plot, space.name, budget.describe())
        print(f"wrote {args.plot}")


def draw(curves: dict[str, list[np.ndarray]], path: str, space: str, budget: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, runs in curves.items():
        n = min(len(c) for c in runs)
        stack = np.vstack([c[:n] for c in runs])
        mean = np.nanmean(stack, axis=0)
        sd = np.nanstd(stack, axis=0)
        xs = np.arange(1, n + 1)
        ax.plot(xs, mean, label=name)
        ax.fill_between(xs, np.maximum(mean - sd, 0), mean + sd, alpha=0.2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("trials")
    ax.set_ylabel("regret (optimum - best so far)")
    ax.set_title(f"synthetic table on {space}: mean ± std over seeds ({budget})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)


def part2(args: argparse.Namespace) -> None:
    from nasforge.data import load_dataset
    from nasforge.evaluators import make_evaluator
    from nasforge.runners import RunnerConfig

    data = load_dataset("digits", seed=0)
    space = make_space("darts")
    options = {"steps": args.real_steps} if args.real_steps else {}
    evaluator = make_evaluator("train", options, space, data)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    histories = {}
    for label, runner in (("local", RunnerConfig(name="local")),
                          (f"ray x{args.workers}", RunnerConfig(name="ray", workers=args.workers))):
        strategy = make_strategy("evolution", {"population": args.population, "sample_size": args.sample_size})
        tic = time.time()
        result = run_trials(strategy, space, evaluator, Budget(trials=args.real_trials), runner=runner, seed=0)
        wall = time.time() - tic
        histories[label] = [h["arch_hash"] for h in result.history]
        evaluated = [h for h in result.history if h["duplicate_of"] is None and h["metrics"]]
        rows.append((label, len(result.history), wall, result.info["wall_seconds"],
                     sum(h["metrics"]["train_seconds"] for h in evaluated), result.info["best_objective"]))
    print(f"evolution + train evaluator on digits (darts space), {args.real_trials} trials, "
          f"load average at start {load:.2f}, torch threads {__import__('torch').get_num_threads()} (local)")
    print(f"{'runner':<10} {'trials':>6} {'wall incl. start (s)':>21} {'search wall (s)':>16} "
          f"{'sum of trial train s':>21} {'best valid acc':>15}")
    for label, n, wall, search, train, acc in rows:
        print(f"{label:<10} {n:>6} {wall:>21.1f} {search:>16.1f} {train:>21.1f} {acc:>15.4f}")
    labels = list(histories)
    same = histories[labels[0]] == histories[labels[1]]
    print(f"same trial sequence on both runners: {same}")
    print(f"speed-up (search wall, local / ray): {rows[0][3] / rows[1][3]:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="auto", help="nb201 | toy201 | any registered space (auto: nb201 if present)")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--trials", type=int, default=100, help="trials per search (part 1)")
    p.add_argument("--sim-seconds", type=float, default=None, help="budget in simulated seconds instead of trials")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--sample-size", type=int, default=3)
    p.add_argument("--fixed-table", action="store_true", help="one table (seed 0) for every search seed")
    p.add_argument("--plot", default=None, help="PNG of mean regret against trials")
    p.add_argument("--real", action="store_true", help="part 2: train evaluator on digits, local vs Ray")
    p.add_argument("--real-trials", type=int, default=30)
    p.add_argument("--real-steps", type=int, default=None, help="SGD steps per trial (default: profile's 2 epochs)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    print(f"# {dt.date.today()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}")
    if args.real:
        part2(args)
    else:
        part1(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
