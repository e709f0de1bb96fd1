"""Architecture weights of every edge per epoch, as heatmaps (one-shot searches: DARTS, GDAS, ...).

The store records, per search epoch, the softmax weights of the candidates of every row of
the relaxation, by group (``{"normal": [[...], ...], "reduce": ...}`` for a DARTS cell). Each
cell type becomes one small-multiples figure: one panel per edge, epochs down, ops across, one
colour scale for the whole figure (its smallest to its largest weight), the strongest op of
each epoch dotted. A DARTS cell's panels sit on a grid of node (rows) by input (columns); a
NAS-Bench-201 cell's of target by source node. Other spaces' choices share one figure, a panel
each. (ProxylessNAS's per-layer records are drawn by its own section.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from nasforge.report.figures import escape, optional_figure, save_figure
from nasforge.report.run import Run, Section, as_run

__all__ = ["Panel", "draw_weight_heatmaps", "heatmap_panels", "op_names", "plot_weight_heatmaps", "space_of",
           "weight_groups", "weights_section"]

#: Most panels drawn in one figure (a space with more choices shows its first ones, and says so).
MAX_PANELS = 48

Panel = tuple[str, list[list[float]], Sequence[str], "tuple[int, int] | None"]  # title, [epochs][ops], names, cell


def _is_matrix(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(r, list) and r for r in value)
            and all(isinstance(x, (int, float)) for r in value for x in r))


def weight_groups(history: Sequence[dict[str, Any]]) -> dict[str, tuple[list[int], list[list[list[float]]]]]:
    """``group -> (epochs, [epoch][row][op] weights)`` for every group recorded as rows of candidate weights
    in every record that has it, with the same shape throughout (dict-shaped records are left out)."""
    found: dict[str, tuple[list[int], list[list[list[float]]]]] = {}
    shapes: dict[str, list[int]] = {}
    for r in history:
        weights = r.get("arch_weights")
        if not isinstance(weights, dict):
            continue
        for group, value in weights.items():
            if not _is_matrix(value):
                continue
            shape = [len(row) for row in value]
            if shapes.setdefault(group, shape) != shape:
                continue  # a record of another shape (not expected): keep the first shape's records
            epochs, values = found.setdefault(group, ([], []))
            epochs.append(r["epoch"])
            values.append(value)
    return found


def op_names(space: str, width: int) -> Sequence[str]:
    """The candidates' names where the space's standard candidate list has this width, else ``op0..``."""
    if space == "darts":
        from nasforge.spaces.darts import PRIMITIVES
    elif space == "nb201":
        from nasforge.spaces.nb201 import PRIMITIVES
    else:
        PRIMITIVES = ()
    return PRIMITIVES if len(PRIMITIVES) == width else [f"op{k}" for k in range(width)]


def _darts_nodes(rows: int) -> int | None:
    """Intermediate nodes of a DARTS cell with ``rows`` edges (2 + 3 + ... ), None when no count fits."""
    nodes, total = 0, 0
    while total < rows:
        total += nodes + 2
        nodes += 1
    return nodes if total == rows else None


def heatmap_panels(space: str, group: str, epochs_values: list[list[list[float]]]) -> list[Panel]:
    """The panels of one group: per row (edge) its ``[epochs][ops]`` weights, a title and a grid cell."""
    n_rows = len(epochs_values[0])
    per_row = [[epoch[row] for epoch in epochs_values] for row in range(n_rows)]
    out: list[Panel] = []
    nodes = _darts_nodes(n_rows) if space == "darts" and group in ("normal", "reduce") else None
    if nodes is not None:
        row = 0
        for node in range(nodes):
            for source in range(node + 2):
                name = ("c_{k-2}", "c_{k-1}")[source] if source < 2 else str(source - 2)
                out.append((f"${name}$ → {node}" if source < 2 else f"{name} → {node}", per_row[row],
                            op_names(space, len(per_row[row][0])), (node, source)))
                row += 1
        return out
    if space == "nb201" and n_rows == 6:
        from nasforge.spaces.nb201 import EDGES

        return [(f"{j} → {i}", per_row[k], op_names(space, len(per_row[k][0])), (i - 1, j))
                for k, (i, j) in enumerate(EDGES)]
    for k, rows in enumerate(per_row):
        title = group if n_rows == 1 else f"{group}[{k}]"
        out.append((title, rows, op_names(space, len(rows[0])), None))
    return out


def draw_weight_heatmaps(panels: Sequence[Panel], epochs: Sequence[int], title: str = ""):
    """Small multiples: per panel a heatmap of op weights, epochs down and ops across, on one colour
    scale; a dot marks each epoch's strongest op. Panels with a grid cell are placed there (a cell's
    grid: op names under the last row only); others fill rows of six. The figure.

    Laid out by hand in inches (no constrained layout: with dozens of panels it is most of the time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no architecture weights to draw")
    panels = list(panels)[:MAX_PANELS]
    grid = all(p[3] is not None for p in panels)
    if grid:
        cells = [p[3] for p in panels]
        nrows, ncols = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
    else:
        ncols = min(6, len(panels))
        nrows = -(-len(panels) // ncols)
        cells = [divmod(k, ncols) for k in range(len(panels))]
    widest = max(len(p[2]) for p in panels)
    longest = max(len(str(n)) for p in panels for n in p[2])
    label_h = 0.2 + 0.058 * longest  # rotated op names, inches
    panel_w, panel_h = max(1.0, 0.2 * widest), min(2.4, 0.35 + 0.07 * len(epochs))
    gap_w, gap_h = 0.45, 0.35 + (0.0 if grid else label_h)
    left, right, top_m, bottom = 0.7, 1.35, 0.55 if title else 0.3, label_h + 0.15
    width = left + ncols * panel_w + (ncols - 1) * gap_w + right
    height = top_m + nrows * panel_h + (nrows - 1) * gap_h + bottom
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    top = max(max(max(row) for row in p[1]) for p in panels)
    low = min(min(min(row) for row in p[1]) for p in panels)
    low, top = (low, top) if top - low > 1e-9 else (low - 1e-3, top + 1e-3)  # a flat matrix still has a scale
    step = max(1, len(epochs) // 4)
    ticks = list(range(0, len(epochs), step))
    if ticks[-1] != len(epochs) - 1:  # the last epoch labelled too, in place of a tick too close to it
        ticks[-1 if len(ticks) > 1 and len(epochs) - 1 - ticks[-1] < step / 2 else len(ticks):] = [len(epochs) - 1]
    occupied = set(cells)
    image = None
    for (name, values, names, _), (r, c) in zip(panels, cells):
        x0 = (left + c * (panel_w + gap_w)) / width
        y0 = 1 - (top_m + r * (panel_h + gap_h) + panel_h) / height
        ax = fig.add_axes((x0, y0, panel_w / width, panel_h / height))
        image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", vmin=low, vmax=top,
                          extent=(-0.5, len(names) - 0.5, len(epochs) - 0.5, -0.5))
        best = [max(range(len(row)), key=row.__getitem__) for row in values]
        ax.scatter(best, range(len(values)), s=6, color="white", edgecolors="black", linewidths=0.3)
        ax.set_title(name, fontsize="small", pad=3)
        if not grid or r == nrows - 1 or (r + 1, c) not in occupied:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6.5)
        else:
            ax.set_xticks([])  # the panel below names the ops (fewer tick artists: faster to draw)
        ax.set_yticks(ticks)
        ax.set_yticklabels([str(epochs[t]) for t in ticks], fontsize=6.5)
        if c == 0 or (r, c - 1) not in occupied:
            ax.set_ylabel("epoch", fontsize="small")
    if image is not None:
        bar_h = min(3.0, height - top_m - bottom)
        cax = fig.add_axes(((width - right + 0.2) / width, 1 - (top_m + bar_h) / height, 0.15 / width,
                            bar_h / height))
        fig.colorbar(image, cax=cax, label="op weight (softmax of alpha)")
    if title:
        fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return fig


def plot_weight_heatmaps(panels: Sequence[Panel], epochs: Sequence[int], path: str | os.PathLike,
                         title: str = "") -> Path:
    """``draw_weight_heatmaps`` as a PNG at ``path``."""
    return save_figure(draw_weight_heatmaps(panels, epochs, title), path)


def space_of(run: Run) -> str:
    """The space the search ran on: its derived architectures' space name, else the config's."""
    for r in reversed(run.search):
        if isinstance(r.get("arch"), dict) and isinstance(r["arch"].get("space"), str):
            return r["arch"]["space"]
    return str(run.section("space").get("name", ""))


def weights_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Heatmaps of every edge's op weights over the search epochs, one figure per record group."""
    run = as_run(run)
    groups = weight_groups(run.search)
    if not groups:
        return None
    space = space_of(run)
    # a cell space's groups are cell types (one figure each, panels on the cell's grid); others' are choices
    cell_groups = {g: v for g, v in groups.items() if space in ("darts", "nb201") and len(v[1][0]) > 1}
    rest = {g: v for g, v in groups.items() if g not in cell_groups}
    figures: list[tuple[str, str]] = []
    notes: list[str] = []
    for group, (epochs, values) in cell_groups.items():
        panels = heatmap_panels(space, group, values)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", group)
        figures += optional_figure(
            out_dir, f"weights_heatmap_{slug}.png",
            f"Op weights of every edge of the '{group}' cell per search epoch (one panel per edge: epochs down, ops "
            "across; a dot marks each epoch's strongest op).",
            lambda p, ps=panels, es=epochs, g=group: plot_weight_heatmaps(ps, es, p,
                                                                          title=f"{g}: op weights per epoch"))
        if len(panels) > MAX_PANELS:
            notes.append(f"'{group}' has {len(panels)} edges; the first {MAX_PANELS} are drawn")
    if rest:
        epochs = max((v[0] for v in rest.values()), key=len)
        panels = [p for g, (es, values) in rest.items() if es == epochs for p in heatmap_panels(space, g, values)]
        figures += optional_figure(
            out_dir, "weights_heatmap_choices.png",
            "Candidate weights of every choice per search epoch (one panel per choice: epochs down, candidates "
            "across; a dot marks each epoch's strongest candidate).",
            lambda p: plot_weight_heatmaps(panels, epochs, p, title="candidate weights per epoch"))
        if len(panels) > MAX_PANELS:
            notes.append(f"{len(panels)} choices; the first {MAX_PANELS} are drawn")
    if not figures:
        return None
    body = "<p>The architecture weights the search recorded at every epoch, for every edge.</p>"
    body += "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return Section("Architecture weights per epoch", body, figures)
