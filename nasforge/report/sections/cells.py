"""Cell search (DARTS, GDAS, DARTS+): op weights of one edge, skip-connects and ops of the derived cell.

These show what DARTS+ watches for: the weight of every op on the shallowest edge over the
search (the paper's figure), and the skip-connects of the derived normal cell per epoch
with the epoch where early stopping fired.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from nasforge.report.figures import figure, genotype_of, integer_epochs, optional_figure, save_figure
from nasforge.report.run import Run, Section, as_run
from nasforge.report.sections.weights import op_names, space_of
from nasforge.spaces.darts import PRIMITIVES

__all__ = ["cells_section", "plot_edge_weights", "plot_op_mix", "plot_skip_counts"]

#: Ops without parameters (dashed in the edge plot; DARTS+ ignores them in its ranking).
PARAMETER_FREE = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3")


def _edge_location(edge: int, nodes: int = 8) -> tuple[int, int] | None:
    """``(node, input)`` of row ``edge`` of an ``[edges, ops]`` matrix (inverse of ``edge_index``)."""
    for node in range(nodes):
        if edge < node + 2:
            return node, edge
        edge -= node + 2
    return None


def _weight_rows(history: Sequence[dict[str, Any]], cell: str) -> list[tuple[int, list[list[float]]]]:
    """``(epoch, [edges][ops] weights)`` of the records that hold weights for ``cell``."""
    out = []
    for r in history:
        weights = r.get("arch_weights")
        if isinstance(weights, dict) and weights.get(cell):
            out.append((r["epoch"], weights[cell]))
    return out


def _cell_ops(history: Sequence[dict[str, Any]], cell: str = "normal") -> list[tuple[int, list[str]]]:
    """``(epoch, op names of the derived cell)`` of the records whose arch is a DARTS genotype."""
    out = []
    for r in history:
        genotype = genotype_of(r.get("arch"))
        if genotype is not None:
            out.append((r["epoch"], [op for op, _ in getattr(genotype, cell)]))
    return out


def plot_edge_weights(history: Sequence[dict[str, Any]], path: str | os.PathLike, cell: str = "normal",
                      edge: int = 0, primitives: Sequence[str] = PRIMITIVES) -> Path:
    """Softmax weight of each op on one edge per epoch (DARTS+'s figure; edge 0 = node 0, input 0)."""
    rows = _weight_rows(history, cell)
    if not rows:
        raise ValueError(f"no '{cell}' architecture weights in the history (not a one-shot search?)")
    edges, ops = len(rows[0][1]), len(rows[0][1][0])
    if not 0 <= edge < edges:
        raise ValueError(f"edge {edge} is out of range; the {cell} cell has {edges} edges (0..{edges - 1})")
    if len(primitives) != ops:
        raise ValueError(f"{len(primitives)} primitive names for {ops} ops per edge; pass the space's primitives")
    epochs = [e for e, _ in rows]
    fig, (ax,) = figure()
    for k, name in enumerate(primitives):
        ax.plot(epochs, [w[edge][k] for _, w in rows], marker="o", markersize=3, label=name,
                linestyle="--" if name in PARAMETER_FREE else "-")
    where = _edge_location(edge)
    ax.set_title(f"{cell} cell, edge {edge}" + (f" (node {where[0]}, input {where[1]})" if where else ""))
    ax.set_ylabel("op weight (softmax of alpha)")
    integer_epochs(ax, epochs)
    ax.legend(fontsize="small", ncols=2, loc="best")
    return save_figure(fig, path)


def plot_skip_counts(history: Sequence[dict[str, Any]], path: str | os.PathLike,
                     stop: dict[str, Any] | None = None, max_skips: int | None = None) -> Path:
    """Skip-connects in the derived normal cell per epoch; a vertical line where early stopping fired."""
    rows = _cell_ops(history, "normal")
    if not rows:
        raise ValueError("no DARTS architectures in the history to count skip-connects in")
    epochs = [e for e, _ in rows]
    counts = [ops.count("skip_connect") for _, ops in rows]
    fig, (ax,) = figure(7.0, 3.5)
    ax.step(epochs, counts, where="post", marker="o", markersize=4, label="skip-connects (normal cell)")
    top = max(counts)
    if max_skips is not None:
        ax.axhline(max_skips, color="grey", linestyle=":", label=f"DARTS+ limit ({max_skips})")
        top = max(top, max_skips)
    if stop:
        ax.axvline(stop["epoch"], color="red", linestyle="--",
                   label=f"early stop: {stop.get('criterion', '?')} (epoch {stop['epoch']})")
    ax.set_ylim(-0.1, top + 1)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("skip-connects")
    ax.set_title("skip-connects in the derived normal cell")
    integer_epochs(ax, epochs)
    span = epochs + ([stop["epoch"]] if stop else [])
    ax.set_xlim(min(span) - 0.5, max(span) + 0.5)
    ax.legend(fontsize="small", loc="upper left")
    return save_figure(fig, path)


def plot_op_mix(history: Sequence[dict[str, Any]], path: str | os.PathLike, cell: str = "normal") -> Path:
    """Stacked area: how many edges of the derived cell use each op, per epoch."""
    rows = _cell_ops(history, cell)
    if not rows:
        raise ValueError("no DARTS architectures in the history to count ops in")
    seen = {op for _, ops in rows for op in ops}
    names = [p for p in PRIMITIVES if p in seen] + sorted(seen - set(PRIMITIVES))
    epochs = [float(e) for e, _ in rows]
    series = [[ops.count(name) for _, ops in rows] for name in names]
    if len(epochs) == 1:  # an area needs two x values: widen the single epoch
        epochs = [epochs[0] - 0.5, epochs[0] + 0.5]
        series = [s * 2 for s in series]
    fig, (ax,) = figure()
    ax.stackplot(epochs, *series, labels=names, alpha=0.85)
    ax.set_ylabel(f"edges of the {cell} cell")
    ax.set_title(f"ops of the derived {cell} cell")
    integer_epochs(ax, epochs)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def early_stop(run: Run) -> dict[str, Any] | None:
    """Where DARTS+ stopped the search (from the store, else from result.json), or None."""
    info = run.meta.get("search_info") or (run.result or {}).get("search_info") or {}
    return run.meta.get("early_stop") or info.get("early_stop")


def cells_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Op weights of the shallowest edge of each cell, skip-connects and ops of the derived normal cell."""
    run = as_run(run)
    search, cfg, stop = run.search, run.strategy, early_stop(run)
    figures: list[tuple[str, str]] = []
    for cell in ("normal", "reduce"):
        rows = _weight_rows(search, cell)
        width = len(rows[0][1][0]) if rows else len(PRIMITIVES)
        names = op_names(space_of(run), width)
        figures += optional_figure(
            out_dir, f"edge_weights_{cell}_0.png",
            f"Op weights on the shallowest edge of the {cell} cell (node 0, input 0) per search epoch; "
            "dashed: parameter-free ops.",
            lambda p, c=cell, n=names: plot_edge_weights(search, p, cell=c, edge=0, primitives=n))
    limit = cfg.get("early_stop_skips") if cfg.get("early_stop") == "dartsplus" else None
    figures += optional_figure(
        out_dir, "skip_counts.png", "Skip-connects in the derived normal cell per search epoch"
        + (f"; early stop ({stop.get('criterion')}) at epoch {stop.get('epoch')}." if stop else "."),
        lambda p: plot_skip_counts(search, p, stop=stop, max_skips=limit))
    figures += optional_figure(out_dir, "op_mix.png",
                               "How many edges of the derived normal cell use each op, per search epoch.",
                               lambda p: plot_op_mix(search, p))
    if not figures:
        return None
    return Section("Cell search", "<p>Architecture weights and the derived cell over the search.</p>", figures)
