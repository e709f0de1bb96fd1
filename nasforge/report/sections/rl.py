"""Reinforcement-learning searches: the NAS-RL controller's reward and baseline, MetaQNN's epsilon schedule."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.report.figures import escape, figure, save_figure
from nasforge.report.run import Run, Section, as_run
from nasforge.strategies.qlearning import DEFAULT_TRIALS, PAPER_SCHEDULE, epsilon_at, scaled_schedule
from nasforge.strategies.reinforce import moving_baseline

__all__ = ["finished_objectives", "metaqnn_section", "reinforce_section"]


def finished_objectives(run: Run) -> list[tuple[int, float | None, dict[str, Any]]]:
    """``(index, objective or None, arch dict)`` of the finished trials of a run, in order."""
    out = []
    for row in run.trials:
        if row.get("status") not in ("done", "failed"):
            continue
        value = (row.get("metrics") or {}).get("objective")
        out.append((row["index"], float(value) if isinstance(value, (int, float)) else None, row["arch"]))
    return out


def _best(trials: list[tuple[int, float | None, dict[str, Any]]]) -> tuple[str, str]:
    """The best objective and its trial, as text."""
    best = max((t for t in trials if t[1] is not None), key=lambda t: t[1], default=None)
    return (f"{best[1]:.4f}", str(best[0])) if best else ("none", "-")


def reinforce_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Reward of every child and the controller's moving-average baseline, replayed in trial order."""
    run = as_run(run)
    cfg = run.strategy
    trials = finished_objectives(run) if cfg.get("name") == "reinforce" else []
    if not trials:
        return None
    power = float(cfg.get("reward_power", 3.0))
    rewards = [None if v is None else math.copysign(abs(v) ** power, v) for _, v, _ in trials]
    base = moving_baseline(rewards, int(cfg.get("batch", 8)), float(cfg.get("baseline_decay", 0.95)))
    fig, (ax,) = figure(7.0, 4.0)
    xs = [i for i, r in enumerate(rewards) if r is not None]
    ax.scatter(xs, [rewards[i] for i in xs], s=10, alpha=0.6, label=f"reward (objective^{power:g})")
    bx = [i for i, b in enumerate(base) if b is not None]
    ax.plot(bx, [base[i] for i in bx], color="C3", label="moving-average baseline")
    ax.set_xlabel("child (tell order)")
    ax.set_ylabel("reward")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, out_dir / "reinforce_reward.png")
    best, where = _best(trials)
    failed = sum(1 for _, v, _ in trials if v is None)
    body = (f"<p>{len(trials)} children, {failed} failed; best objective {escape(best)} (trial {escape(where)}). "
            "The baseline is replayed from the rewards in trial order.</p>")
    return Section("NAS-RL controller (REINFORCE)", body,
                   [("reinforce_reward.png", "Reward of every child and the controller's moving-average baseline.")])


def metaqnn_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Objective of every model with its running mean, and epsilon over the search."""
    run = as_run(run)
    cfg = run.strategy
    trials = finished_objectives(run) if cfg.get("name") == "metaqnn" else []
    if not trials:
        return None
    schedule = scaled_schedule(cfg.get("schedule") or [list(p) for p in PAPER_SCHEDULE],
                               int(cfg.get("trials") or DEFAULT_TRIALS))
    fig, (ax,) = figure(7.0, 4.0)
    xs = [i for i, (_, v, _) in enumerate(trials) if v is not None]
    ys = [trials[i][1] for i in xs]
    ax.scatter(xs, ys, s=10, alpha=0.6, label="objective")
    if ys:
        window = max(1, len(ys) // 10)
        smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
        ax.plot(xs[window - 1:], smooth, color="C2", label=f"mean of last {window}")
    ax.set_xlabel("model (trial order)")
    ax.set_ylabel("objective")
    ax.grid(True, alpha=0.3)
    twin = ax.twinx()
    twin.step(range(len(trials)), [epsilon_at(schedule, i) for i in range(len(trials))], where="post",
              color="C3", label="epsilon")
    twin.set_ylabel("epsilon")
    twin.set_ylim(0, 1.05)
    ax.legend(loc="lower left")
    twin.legend(loc="lower right")
    save_figure(fig, out_dir / "metaqnn_reward.png")
    best, where = _best(trials)
    body = (f"<p>{len(trials)} models; best objective {escape(best)} (trial {escape(where)}). Epsilon schedule "
            f"scaled to {sum(n for _, n in schedule)} models: "
            f"{escape(', '.join(f'{e:g} x {n}' for e, n in schedule))}.</p>")
    return Section("MetaQNN (Q-learning)", body,
                   [("metaqnn_reward.png", "Objective of every model, its running mean, and epsilon over the search.")])
