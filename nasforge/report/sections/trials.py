"""Sample-based searches (random, evolution, REINFORCE, MetaQNN, Hyperband...): objective per trial, best so far,
top trials; a multi-fidelity search's trials are coloured by fidelity and its best is the incumbent at the highest
fidelity."""

from __future__ import annotations

import os
from pathlib import Path

from nasforge.report.figures import describe_arch, escape, figure, save_figure
from nasforge.fidelity import fidelity_label, fidelity_order
from nasforge.report.run import Run, Section, as_run
from nasforge.trials import incumbents

__all__ = ["trials_section"]


def _fidelity_cell(trial: dict) -> str:
    return f"<td>{escape(fidelity_label(trial.get('fidelity')))}</td>"


def trials_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Plots and a table of a sample-based search's trials (None when the run has none)."""
    run = as_run(run)
    trials = run.trials
    if not trials:
        return None
    finished = [t for t in trials if t["status"] in ("done", "failed")]
    multi = any(t.get("fidelity") is not None for t in trials)
    done = [t for t in finished if t["status"] == "done"]
    pictures: list[tuple[str, str]] = []
    if done:
        fig, (ax,) = figure(8.0, 4.0)
        xs = [t["index"] for t in done]
        ys = [t["metrics"]["objective"] for t in done]
        fresh = [(x, y) for t, x, y in zip(done, xs, ys) if t["duplicate_of"] is None]
        dups = [(x, y) for t, x, y in zip(done, xs, ys) if t["duplicate_of"] is not None]
        if multi:
            for fid in sorted({t.get("fidelity") for t in done}, key=fidelity_order):
                pts = [(x, y) for t, x, y in zip(done, xs, ys) if t["duplicate_of"] is None and t.get("fidelity") == fid]
                ax.scatter([x for x, _ in pts], [y for _, y in pts], s=12, alpha=0.7,
                           label=f"fidelity {fidelity_label(fid)}")
        else:
            ax.scatter([x for x, _ in fresh], [y for _, y in fresh], s=12, alpha=0.6, label="trial objective")
        if dups:
            ax.scatter([x for x, _ in dups], [y for _, y in dups], s=18, facecolors="none", edgecolors="grey",
                       label="duplicate (from the store)")
        failed = [t["index"] for t in finished if t["status"] == "failed"]
        if failed:
            ax.scatter(failed, [min(ys)] * len(failed), marker="x", color="red", label="failed")
        best_xs, best_ys = [], []
        for t, inc in zip(finished, incumbents(finished)):  # the search's answer so far (highest fidelity first)
            if inc is not None:
                best_xs.append(t["index"])
                best_ys.append(inc["metrics"]["objective"])
        ax.step(best_xs, best_ys, where="post", color="black", label="best so far" + (
            " (at the highest fidelity)" if multi else ""))
        ax.set_xlabel("trial")
        ax.set_ylabel("objective")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
        ax.set_title("sample-based search: objective per trial")
        save_figure(fig, out_dir / "trials.png")
        pictures.append(("trials.png", "Objective of every trial (dots), best so far (line); hollow: duplicates "
                                       "answered from the store; red x: failed trials."))
        timed = [t for t in done if t["duplicate_of"] is None and "train_seconds" in t["metrics"]]
        if timed:
            fig, (ax,) = figure(8.0, 3.5)
            total, xs2, ys2 = 0.0, [], []
            for t, inc in zip(timed, incumbents(timed)):
                total += float(t["metrics"]["train_seconds"])
                xs2.append(total)
                ys2.append(inc["metrics"]["objective"])
            ax.step(xs2, ys2, where="post", color="black")
            ax.set_xlabel("simulated / training time (s, sum of train_seconds)")
            ax.set_ylabel("best objective so far")
            ax.grid(True, alpha=0.3)
            save_figure(fig, out_dir / "trials_time.png")
            pictures.append(("trials_time.png", "Best objective against the training time spent on evaluated "
                                                "trials (NAS-Bench-201's simulated search time)."))
    info = (run.result or {}).get("search_info") or {}
    if info.get("pareto_front") and info.get("cost"):  # a multi-objective search (nsga2): its front
        from nasforge.strategies.optuna import plot_front

        plot_front(info, out_dir / "pareto.png")
        pictures.append(("pareto.png", f"Pareto front of the search: objective (higher is better) against "
                                       f"{info['cost']} (lower is better); {len(info['pareto_front'])} architectures "
                                       "no other trial beats on both."))
    # the highest fidelity's trials rank first (a one-fidelity search: all at the full one)
    top = sorted(done, key=lambda t: (-fidelity_order(t.get("fidelity")), -t["metrics"]["objective"], t["index"]))[:10]
    rows = "\n".join(
        f"<tr><td>{t['index']}</td>{_fidelity_cell(t) if multi else ''}<td>{t['metrics']['objective']:.4f}</td>"
        f"<td>{escape(t['metrics'].get('train_seconds', ''))}</td>"
        f"<td><code>{escape(describe_arch(t['arch']))}</code></td></tr>" for t in top)
    counts = {s: sum(1 for t in trials if t["status"] == s) for s in ("done", "failed", "pending", "running")}
    dup_count = sum(1 for t in trials if t["duplicate_of"] is not None)
    body = (f"<p>{len(trials)} trials: {counts['done']} done ({dup_count} answered from the store as duplicates), "
            f"{counts['failed']} failed, {counts['pending'] + counts['running']} unfinished.</p>"
            f"<table><tr><th>trial</th>{'<th>fidelity</th>' if multi else ''}<th>objective</th><th>train_seconds</th>"
            "<th>architecture</th></tr>"
            f"{rows}</table>")
    return Section("Trials (sample-based search)", body, pictures)
