"""``nasforge bench nb201``: NAS-Bench-201's search protocol as one command.

N independent searches per strategy on a benchmark table (the NAS-Bench-201 ``.pth``, a
NATS-Bench topology folder/file, a CSV/JSON table, or a synthetic table written for the
purpose), each under the paper's simulated budget of 12,000 seconds (or a number of
trials); then, per strategy, the mean and standard deviation of the chosen cells'
200-epoch test accuracy beside the paper's numbers, a regret-over-time plot (the table's
best test accuracy minus that of the cell chosen so far), and the optimum of the table.

The protocol follows the benchmark's code (``simulate_train_eval``): a query answers with
the search signal of one seed's run (``seeds=random``, picked by the trial's seed) and
costs that run's training time plus one validation pass; every query is charged, repeats
too (``dedupe`` off); a search picks the cell with the best signal; the cell is reported
by its 200-epoch test accuracy (mean over the benchmark's seeds). A query that would end
past the budget is not counted (``--overshoot`` counts it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from nasforge.errors import ConfigError

#: NAS-Bench-201 paper (Dong & Yang, ICLR 2020), Table 5: accuracy in percent, mean and std over 500 runs
#: of each non-weight-sharing method under the 12,000 s budget: (validation, test) per dataset; "optimal"
#: is the best cell of the benchmark. ``bohb`` has no nasforge strategy (the paper's BO entry).
PAPER: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    "cifar10": {"evolution": ((91.19, 0.31), (93.92, 0.30)), "random": ((90.93, 0.36), (93.70, 0.36)),
                "reinforce": ((91.09, 0.37), (93.85, 0.37)), "bohb": ((90.82, 0.53), (93.61, 0.52)),
                "optimal": ((91.61, 0.0), (94.37, 0.0))},
    "cifar100": {"evolution": ((71.81, 1.12), (71.84, 0.99)), "random": ((70.93, 1.09), (71.04, 1.07)),
                 "reinforce": ((71.61, 1.12), (71.71, 1.09)), "bohb": ((70.74, 1.29), (70.85, 1.28)),
                 "optimal": ((73.49, 0.0), (73.51, 0.0))},
    "ImageNet16-120": {"evolution": ((45.15, 0.89), (45.54, 1.03)), "random": ((44.45, 1.10), (44.57, 1.25)),
                       "reinforce": ((45.05, 1.02), (45.24, 1.18)), "bohb": ((44.26, 1.36), (44.42, 1.49)),
                       "optimal": ((46.77, 0.0), (47.31, 0.0))},
}
#: the paper's simulated search budget in seconds
PAPER_BUDGET = 12000.0


@dataclass
class BenchConfig:
    """What ``run_bench`` does."""

    strategies: list[str] = field(default_factory=lambda: ["random", "evolution"])
    runs: int = 10
    sim_seconds: float | None = PAPER_BUDGET
    trials: int | None = None
    seed: int = 0
    overshoot: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy name -> its options

    def __post_init__(self) -> None:
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs < 1:
            raise ConfigError(f"--runs {self.runs!r}: run at least one search per strategy")
        if not self.strategies:
            raise ConfigError("no strategy to benchmark; pass --strategy NAME (e.g. evolution)")
        if self.trials is not None:
            self.sim_seconds = None


def _summary(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def run_bench(evaluator: Any, config: BenchConfig, progress: Optional[Callable[[str, int, int], None]] = None
              ) -> dict[str, Any]:
    """``config.runs`` searches per strategy on ``evaluator`` (a ``TableEvaluator``); a JSON-ready summary."""
    from nasforge.registry import check_supported
    from nasforge.strategies import make_strategy
    from nasforge.trials import Budget, run_trials

    space = evaluator.space
    budget = Budget(trials=config.trials, sim_seconds=config.sim_seconds, charge_repeats=True, max_repeats=None,
                    overshoot=config.overshoot)
    rows = evaluator.all_rows()
    best_test_arch, best_test = evaluator.optimum("test_acc")
    best_valid_arch, best_valid = evaluator.optimum("valid_acc_200" if "valid_acc_200" in rows[best_test_arch]
                                                    else "valid_acc")
    grid = np.linspace(0.0, config.sim_seconds or float(config.trials), 101)
    out: dict[str, Any] = {"strategies": {}, "optimum": {
        "test_acc": best_test, "test_arch": best_test_arch, "valid_acc": best_valid, "valid_arch": best_valid_arch}}
    options = {name: bench_options(name, config.options.get(name)) for name in config.strategies}
    for name in config.strategies:
        make_strategy(name, options[name])  # a bad name or option fails before any run
        check_supported(type(make_strategy(name, options[name])), space)
    for name in config.strategies:
        tests, valids, trials, sims, archs, curves = [], [], [], [], [], []
        tic = time.time()
        for run in range(config.runs):
            strategy = make_strategy(name, options[name])
            result = run_trials(strategy, space, evaluator, budget, seed=config.seed + run, dedupe=False)
            chosen = rows[evaluator.key(result.arch)]
            tests.append(chosen["test_acc"])
            valids.append(chosen.get("valid_acc_200", chosen["valid_acc"]))
            trials.append(len(result.history))
            sims.append(result.info["sim_seconds"])
            archs.append(evaluator.key(result.arch))
            curves.append(_regret_curve(result.history, rows, evaluator, best_test, grid, config.sim_seconds))
            if progress is not None:
                progress(name, run + 1, config.runs)
        out["strategies"][name] = {
            "test_acc": _summary(tests), "valid_acc": _summary(valids), "trials": _summary(trials),
            "sim_seconds": _summary(sims), "regret": _summary([best_test - t for t in tests]),
            "found_optimum": sum(1 for a in archs if a == best_test_arch), "wall_seconds": time.time() - tic,
            "runs": [{"seed": config.seed + i, "arch": a, "test_acc": t, "valid_acc": v}
                     for i, (a, t, v) in enumerate(zip(archs, tests, valids))],
            "regret_curve": {"x": grid.tolist(), "mean": _nanmean(curves)},
        }
    return out


def bench_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """A strategy's options in the protocol: its ``nb201`` preset's strategy settings where it has one
    (BOHB: NATS-Bench's run), under the options given (``--set``)."""
    from nasforge.presets import PRESETS

    preset = PRESETS.get(("nb201", name, "cifar10"))
    base = dict(preset.settings.get("strategy", {})) if preset is not None else {}
    return {**base, **(options or {})}


def _nanmean(curves: list[np.ndarray]) -> list[float | None]:
    """Mean of each column over the runs that have a value there (None where none has)."""
    a = np.asarray(curves, dtype=float)
    have = (~np.isnan(a)).sum(axis=0)
    total = np.where(np.isnan(a), 0.0, a).sum(axis=0)
    return [float(t / n) if n else None for t, n in zip(total, have)]


def _regret_curve(history: list[dict[str, Any]], rows: dict[str, dict[str, float]], evaluator: Any,
                  best_test: float, grid: np.ndarray, sim_seconds: float | None) -> np.ndarray:
    """Regret (optimum test accuracy minus the chosen cell's) after each grid point of simulated time
    (or trials); NaN before the first counted trial. The chosen cell is the search's answer so far
    (``incumbents``: the best at the highest fidelity evaluated, for a multi-fidelity search)."""
    from nasforge.trials import incumbents

    xs, regrets, spent = [], [], 0.0
    for k, (rec, inc) in enumerate(zip(history, incumbents(history))):
        m = rec["metrics"]
        if m is None or rec.get("over_budget"):
            continue
        spent += float(m.get("train_seconds", 0.0))
        xs.append(spent if sim_seconds else k + 1)
        regrets.append(best_test - rows[evaluator.key(_arch(inc))]["test_acc"])
    curve = np.full(len(grid), np.nan)
    if xs:
        idx = np.searchsorted(np.asarray(xs), grid, side="right") - 1
        ok = idx >= 0
        curve[ok] = np.asarray(regrets)[idx[ok]]
    return curve


def _arch(record: dict[str, Any]) -> Any:
    from nasforge.arch import Arch

    return Arch.from_dict(record["arch"], validate=False)


def paper_row(dataset: str, strategy: str) -> dict[str, Any] | None:
    """The paper's (validation, test) mean and std of ``strategy`` on ``dataset`` (percent), if it has one."""
    entry = PAPER.get(dataset, {}).get(strategy)
    if entry is None:
        return None
    (vm, vs), (tm, ts) = entry
    return {"valid_mean": vm, "valid_std": vs, "test_mean": tm, "test_std": ts}


def attach_paper(summary: dict[str, Any], dataset: str | None, budget_is_papers: bool) -> None:
    """Put the paper's numbers beside each strategy (and whether ours is within one paper std)."""
    summary["paper"] = {"source": "NAS-Bench-201 (Dong & Yang, ICLR 2020), Table 5; 500 runs, 12,000 s",
                        "dataset": dataset, "rows": PAPER.get(dataset or "", {})}
    for name, res in summary["strategies"].items():
        row = paper_row(dataset or "", name)
        res["paper"] = row
        if row is not None and budget_is_papers:
            res["within_paper_std"] = abs(100 * res["test_acc"]["mean"] - row["test_mean"]) <= row["test_std"]


def plot_regret(summary: dict[str, Any], path: Path, xlabel: str) -> Path:
    """Mean regret over simulated time (or trials) per strategy, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, res in summary["strategies"].items():
        curve = res["regret_curve"]
        ax.plot(curve["x"], [100 * v if v is not None else float("nan") for v in curve["mean"]], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("regret of the chosen cell (test accuracy, points)")
    ax.set_yscale("log")
    ax.set_title(f"mean regret over {summary['runs']} runs ({summary['dataset'] or Path(summary['table']).name})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def synthetic_table(path: Path, seed: int = 0, seconds: float = 60.0, epochs: int = 12) -> Path:
    """Every NAS-Bench-201 cell scored by a ``SyntheticTable`` (seed ``seed``), written as a CSV table,
    with its learning curve over ``epochs`` epochs as ``valid_acc@E``/``train_seconds@E`` columns
    (E = 1..epochs; the table's fidelities, for multi-fidelity strategies)."""
    from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable
    from nasforge.evaluators.table import write_table
    from nasforge.spaces import make_space

    space = make_space("nb201")
    table = SyntheticTable(space, SyntheticConfig(seed=seed, seconds=seconds, epochs=epochs))
    curves = table.learning_curves()
    rows = []
    for arch in all_cells(space):
        m = table(arch)
        at = table.indices(arch)
        rows.append({"arch": arch, "valid_acc": m["valid_acc"], "test_acc": m["test_acc"],
                     "train_seconds": m["train_seconds"], "params": synthetic_params(arch),
                     **{f"valid_acc@{e}": float(v) for e, v in enumerate(curves["valid_acc"][at], start=1)},
                     **{f"train_seconds@{e}": float(t) for e, t in enumerate(curves["train_seconds"][at], start=1)}})
    return write_table(path, rows, space)


def synthetic_params(arch: Any) -> float:
    """A made-up parameter count of a cell (millions) for synthetic tables: 0.07 plus 0.2 per 3x3
    convolution edge and 0.03 per 1x1 one (the shape, not the values, of the benchmark's counts)."""
    ops = [v for k, v in arch.as_dict().items() if k.startswith("edge")]
    return 0.07 + 0.2 * ops.count("nor_conv_3x3") + 0.03 * ops.count("nor_conv_1x1")


def all_cells(space: Any) -> Any:
    """Every cell of the NAS-Bench-201 space (15,625), in the benchmark's op order."""
    import itertools

    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    for combo in itertools.product(ops, repeat=6):
        yield space.from_string("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*combo))


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------
import typer  # noqa: E402

bench_app = typer.Typer(no_args_is_help=True, help="Benchmark protocols: N independent searches on a tabular "
                        "benchmark, compared with the published numbers.")


@bench_app.command("nb201")
def nb201(
    strategy: Optional[list[str]] = typer.Option(None, "--strategy", help="Strategy to benchmark (repeatable).",
                                                 show_default="random, evolution"),
    dataset: str = typer.Option("cifar10", help="cifar10 | cifar100 | ImageNet16-120 (benchmark files)."),
    runs: int = typer.Option(10, help="Independent searches per strategy (the paper: 500)."),
    table: Optional[Path] = typer.Option(None, help="NAS-Bench-201 .pth, NATS-Bench topology folder or "
                                         ".pickle.pbz2, or a CSV/JSON table covering every cell."),
    synthetic: Optional[int] = typer.Option(None, help="No benchmark file: a synthetic table of every cell with "
                                            "this seed (written to the output folder)."),
    epochs: int = typer.Option(12, help="Epochs of the search signal: 12 (the paper) or 200."),
    split: str = typer.Option("x-valid", help="Split of the search signal: x-valid (valid) or ori-test."),
    sim_seconds: float = typer.Option(PAPER_BUDGET, help="Simulated search budget in seconds (the paper: 12000)."),
    trials: Optional[int] = typer.Option(None, help="A budget of trials instead of simulated time."),
    overshoot: bool = typer.Option(False, "--overshoot", help="Count the query that ends past the budget."),
    seed: int = typer.Option(0, help="Seed of the first run (run i has seed + i)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", metavar="STRATEGY.KEY=VALUE",
                                             help="A strategy option, e.g. --set evolution.population=20."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder.",
                                             show_default="runs/bench-nb201-DATASET-TIME"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress."),
) -> None:
    """NAS-Bench-201's protocol: N searches per strategy, mean +- std of the chosen cells' test accuracy
    beside the paper's, a regret plot and the table's optimum (JSON, PNG and a printed table)."""
    from rich.console import Console
    from rich.table import Table

    from nasforge.config import parse_override
    from nasforge.evaluators.nb201data import dataset_name, is_benchmark_path
    from nasforge.evaluators.table import TableEvaluator

    console = Console(stderr=True)
    out = Console(width=max(Console().width, 110))  # the table's rows on one line each, also in a log file
    if (table is None) == (synthetic is None):
        raise ConfigError("pass the benchmark with --table FILE (NAS-Bench-201 .pth, NATS-Bench folder or "
                          ".pickle.pbz2, or a CSV/JSON table), or --synthetic SEED for a synthetic table")
    options: dict[str, dict[str, Any]] = {}
    for text in set_ or []:
        keys, value = parse_override(text)
        if len(keys) != 2:
            raise ConfigError(f"--set {text}: name a strategy option as STRATEGY.KEY=VALUE (e.g. evolution.population=20)")
        options.setdefault(keys[0], {})[keys[1]] = value
    config = BenchConfig(strategies=list(strategy or ["random", "evolution"]), runs=runs,
                         sim_seconds=sim_seconds, trials=trials, seed=seed, overshoot=overshoot, options=options)
    for name in options:
        if name not in config.strategies:
            raise ConfigError(f"--set {name}.*: '{name}' is not benchmarked here; add --strategy {name}")
    official = table is not None and is_benchmark_path(table)
    ds = dataset_name(dataset) if official else None
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = Path("runs") / f"bench-nb201-{ds or ('synthetic' if table is None else table.stem)}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = synthetic_table(out_dir / f"synthetic-{synthetic}.csv", seed=int(synthetic))
    evaluator = TableEvaluator(table, "nb201", dataset=ds or "cifar10", epochs=epochs, split=split, seeds="random")
    console.print(f"benchmark: {evaluator.source}", highlight=False, soft_wrap=True)
    if len(evaluator) < 15625:
        raise ConfigError(f"{evaluator.source} covers {len(evaluator)} of the 15,625 cells; the protocol needs all "
                          "of them (use the full benchmark file)")

    def progress(name: str, done: int, total: int) -> None:
        if not quiet and (done == total or done % max(1, total // 10) == 0):
            console.print(f"{name}: {done}/{total} runs", highlight=False)

    import torch

    torch.set_num_threads(1)  # the searches' models (a REINFORCE controller) are tiny: threads only contend
    summary = run_bench(evaluator, config, progress)
    summary.update({"dataset": ds, "table": str(table), "source": evaluator.source, "runs": runs,
                    "budget": f"{config.trials} trials" if config.trials else f"{config.sim_seconds:g} s simulated",
                    "protocol": {"epochs": epochs, "split": split, "seeds": "random", "dedupe": False,
                                 "repeats": "charge", "overshoot": overshoot},
                    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    attach_paper(summary, ds, config.trials is None and config.sim_seconds == PAPER_BUDGET and epochs == 12)
    (out_dir / "bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot = plot_regret(summary, out_dir / "regret.png", "simulated search time (s)" if not config.trials else "trials")
    grid = Table(title=f"NAS-Bench-201 protocol: {summary['source']}, {runs} runs, {summary['budget']}")
    for col in ("strategy", "test acc (%)", "valid acc (%)", "paper test (%)", "trials", "regret (pts)"):
        grid.add_column(col)
    for name, res in summary["strategies"].items():
        paper = res.get("paper")
        grid.add_row(name, f"{100 * res['test_acc']['mean']:.2f} ± {100 * res['test_acc']['std']:.2f}",
                     f"{100 * res['valid_acc']['mean']:.2f} ± {100 * res['valid_acc']['std']:.2f}",
                     f"{paper['test_mean']:.2f} ± {paper['test_std']:.2f}" if paper else "-",
                     f"{res['trials']['mean']:.0f}", f"{100 * res['regret']['mean']:.2f}")
    opt = summary["optimum"]
    paper_opt = paper_row(ds or "", "optimal")
    grid.add_row("optimum of the table", f"{100 * opt['test_acc']:.2f}", f"{100 * opt['valid_acc']:.2f}",
                 f"{paper_opt['test_mean']:.2f}" if paper_opt else "-", "", "0")
    out.print(grid)
    console.print(f"written: {out_dir / 'bench.json'} {plot}", highlight=False, soft_wrap=True)
