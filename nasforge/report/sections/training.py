"""Loss and accuracy curves of the search (supernet) and of the final training, for every method."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from nasforge.report.figures import figure, integer_epochs, optional_figure, save_figure
from nasforge.report.run import Run, Section, as_run

__all__ = ["plot_training", "training_section"]


def plot_training(history_train: Sequence[dict[str, Any]], path: str | os.PathLike,
                  title: str = "final training") -> Path:
    """Loss (left) and accuracy (right) curves of per-epoch records (any ``*loss`` / ``*acc`` metric)."""
    rows = [(r["epoch"], r.get("metrics") or {}) for r in history_train]
    if not rows:
        raise ValueError("no epochs to plot")
    keys = list(dict.fromkeys(k for _, m in rows for k, v in m.items() if isinstance(v, (int, float))))
    losses = [k for k in keys if k.endswith("loss")]
    accs = [k for k in keys if k.endswith("acc")]
    epochs = [e for e, _ in rows]
    fig, (left, right) = figure(9.0, 3.5, ncols=2)
    for ax, names, label in ((left, losses, "loss"), (right, accs, "accuracy")):
        for key in names:
            ax.plot(epochs, [m.get(key, float("nan")) for _, m in rows], marker="o", markersize=3, label=key)
        ax.set_ylabel(label)
        integer_epochs(ax, epochs)
        if names:
            ax.legend(fontsize="small", loc="best")
    right.set_ylim(0, 1.02)
    fig.suptitle(title)
    return save_figure(fig, path)


def training_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Supernet curves of the search and curves of the final training, where recorded."""
    run = as_run(run)
    figures = optional_figure(out_dir, "search_curves.png", "Supernet loss and accuracy during the search.",
                              lambda p: plot_training(run.search, p, title="search (supernet)"))
    figures += optional_figure(out_dir, "training.png", "Loss and accuracy of the final training.",
                               lambda p: plot_training(run.train, p))
    return Section("Loss and accuracy", "", figures) if figures else None
