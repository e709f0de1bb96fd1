"""The derived cell drawn as a graph with matplotlib alone (no graphviz): nodes, and edges labelled with their op.

A DARTS genotype gives two cells, normal and reduction: the inputs ``c_{k-2}`` and ``c_{k-1}``
(the outputs of the two previous cells), the intermediate nodes ``0..n-1`` (each the sum of
two ops on earlier states) and the output ``c_{k}`` (their concatenation). A NAS-Bench-201
cell gives one: node 0 the input, node 3 the output, an op on every edge ``j -> i`` (``none``
edges carry nothing and are left out, as in the benchmark's pictures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasforge.report.figures import figure, genotype_of, save_figure

__all__ = ["CellGraph", "cell_graphs", "draw_cell", "plot_cell_graph"]

_FILL = {"input": "#cfe3f7", "node": "#f7f3cf", "output": "#d8f0d2"}
_LABEL_STYLE = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}


@dataclass
class CellGraph:
    """One cell: ``nodes`` as ``key -> (text, (x, y), kind)``; ``edges`` as ``(source, target, op or None)``."""

    title: str
    nodes: dict[str, tuple[str, tuple[float, float], str]] = field(default_factory=dict)
    edges: list[tuple[str, str, str | None]] = field(default_factory=list)


def _darts_cell(title: str, gene: tuple[tuple[str, int], ...]) -> CellGraph:
    """The graph of one DARTS cell: ``gene`` holds two ``(op, input)`` pairs per intermediate node."""
    n = len(gene) // 2
    graph = CellGraph(title)
    graph.nodes["s0"] = ("c_{k-2}", (0.0, 1.1), "input")
    graph.nodes["s1"] = ("c_{k-1}", (0.0, -1.1), "input")
    for i in range(n):
        graph.nodes[f"s{i + 2}"] = (str(i), (1.8 * (i + 1), 0.75 if i % 2 == 0 else -0.75), "node")
    graph.nodes["out"] = ("c_{k}", (1.8 * (n + 1), 0.0), "output")
    for k, (op, j) in enumerate(gene):
        graph.edges.append((f"s{j}", f"s{k // 2 + 2}", op))
    graph.edges += [(f"s{i + 2}", "out", None) for i in range(n)]
    return graph


def _nb201_cell(choices: dict[str, Any]) -> CellGraph | None:
    """The graph of a NAS-Bench-201 cell from its ``edge{i}<-{j}`` choices (None when there are none)."""
    edges = []
    for label, op in choices.items():
        head, _, tail = label.partition("<-")
        if head.startswith("edge") and head[4:].isdigit() and tail.isdigit():
            edges.append((int(tail), int(head[4:]), str(op)))
    if not edges:
        return None
    last = max(max(j, i) for j, i, _ in edges)
    graph = CellGraph("cell")
    for i in range(last + 1):
        kind = "input" if i == 0 else "output" if i == last else "node"
        y = 0.0 if kind != "node" else (0.75 if i % 2 else -0.75)
        graph.nodes[f"n{i}"] = (str(i) if kind == "node" else f"{i} ({kind})", (1.8 * i, y), kind)
    graph.edges = [(f"n{j}", f"n{i}", op) for j, i, op in sorted(edges) if op != "none"]
    return graph


def cell_graphs(arch: dict[str, Any] | None) -> list[CellGraph]:
    """The cells of an ``Arch.to_dict()`` record as graphs: normal and reduction for a DARTS genotype,
    one cell for NAS-Bench-201, ``[]`` for another space (or no arch)."""
    genotype = genotype_of(arch)
    if genotype is not None:
        cells = [_darts_cell("normal cell", genotype.normal)]
        if genotype.reduce:  # GDAS (FRC): a fixed, hand-designed reduction cell, not searched: no graph
            cells.append(_darts_cell("reduction cell", genotype.reduce))
        return cells
    if isinstance(arch, dict) and arch.get("space") == "nb201" and isinstance(arch.get("choices"), dict):
        graph = _nb201_cell(arch["choices"])
        return [graph] if graph is not None else []
    return []


def _bezier(p0: tuple[float, float], p1: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """A point of matplotlib's ``arc3`` curve from ``p0`` to ``p1`` (equal axis scales): the quadratic Bezier
    whose control point is the midpoint moved by ``rad * (dy, -dx)``."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t ** 2
    return a * x0 + b * cx + c * x1, a * y0 + b * cy + c * y1


def _route(graph: CellGraph, source: str, target: str, taken: list[tuple[float, float]]) -> float:
    """The bend (``arc3`` rad) of an edge: the one whose curve keeps farthest from the other nodes and
    whose label keeps clear of the labels placed so far, straighter when that costs nothing."""
    p0, p1 = graph.nodes[source][1], graph.nodes[target][1]
    others = [p for key, (_, p, _) in graph.nodes.items() if key not in (source, target)]
    best, best_score = 0.0, float("-inf")
    for rad in (0.0, 0.12, -0.12, 0.25, -0.25, 0.38, -0.38):
        curve = [_bezier(p0, p1, rad, t / 20) for t in range(2, 19)]
        clearance = min((min(abs(x - ox) / 0.55, abs(y - oy) / 0.3, 1.0) if abs(x - ox) < 0.55 and abs(y - oy) < 0.3
                         else 1.0) for x, y in curve for ox, oy in others) if others else 1.0
        mx, my = _bezier(p0, p1, rad, 0.5)
        crowd = sum(1 for lx, ly in taken if abs(lx - mx) < 1.0 and abs(ly - my) < 0.22)
        score = clearance - 0.6 * crowd - 0.25 * abs(rad)
        if score > best_score + 1e-9:
            best, best_score = rad, score
    return best


def draw_cell(ax, graph: CellGraph) -> None:
    """Draw ``graph`` on ``ax``: boxes for the nodes, arrows for the edges, each op written on its edge."""
    from matplotlib.patches import FancyArrowPatch

    label_at: list[tuple[float, float]] = []
    extent = [p for _, p, _ in graph.nodes.values()]
    # labelled edges first (they need room for their text), the output's dotted edges last
    for source, target, op in sorted(graph.edges, key=lambda e: e[2] is None):
        p0, p1 = graph.nodes[source][1], graph.nodes[target][1]
        rad = _route(graph, source, target, label_at if op else [])
        mx, my = _bezier(p0, p1, rad, 0.5)
        extent.append((mx, my))
        arrow = FancyArrowPatch(p0, p1, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                mutation_scale=12, shrinkA=16, shrinkB=16, linewidth=1.2,
                                color="#444" if op else "#999", linestyle="-" if op else ":", zorder=1)
        ax.add_patch(arrow)
        if op:
            label_at.append((mx, my))
            ax.text(mx, my, op, fontsize=7.5, ha="center", va="center", bbox=_LABEL_STYLE, zorder=3)
    for text, (x, y), kind in graph.nodes.values():
        ax.text(x, y, f"${text}$" if text.startswith("c_") else text, fontsize=10, ha="center", va="center",
                zorder=4, bbox={"boxstyle": "round,pad=0.4", "facecolor": _FILL[kind], "edgecolor": "#555"})
    xs, ys = [x for x, _ in extent], [y for _, y in extent]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 0.45, max(ys) + 0.45)
    ax.set_aspect("equal")  # arc3 bends in display space: equal scales keep the labels on their arcs
    ax.set_title(graph.title)
    ax.set_axis_off()


def plot_cell_graph(arch: dict[str, Any] | None, path: str | os.PathLike) -> Path:
    """Every cell of ``arch`` as a graph, one panel per cell type, as a PNG; ValueError for a space
    that has no cell (its architecture is shown as text only)."""
    graphs = cell_graphs(arch)
    if not graphs:
        raise ValueError("not a cell architecture (darts or nb201): no cell graph to draw")
    span = max(max(p[0] for _, p, _ in g.nodes.values()) for g in graphs) + 1.4  # data units across
    fig, axes = figure(max(6.0, 1.25 * span), 3.4 * len(graphs), nrows=len(graphs))
    for ax, graph in zip(axes, graphs):
        draw_cell(ax, graph)
    return save_figure(fig, path)
