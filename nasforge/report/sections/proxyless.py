"""ProxylessNAS section: per-layer op probabilities, latency per epoch, the accuracy/latency trade-off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from nasforge.report.figures import escape, figure, integer_epochs, optional_figure, save_figure
from nasforge.report.run import Run, Section, as_run
from nasforge.strategies.proxyless import TRADEOFF_FILE, ProxylessStrategy

__all__ = ["plot_latency", "plot_layer_probs", "plot_tradeoff", "proxyless_section"]


def _layer_rows(history: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, dict[str, float]]]]:
    out = []
    for r in history:
        weights = r.get("arch_weights")
        if isinstance(weights, dict) and isinstance(weights.get("layers"), dict):
            out.append((r["epoch"], weights["layers"]))
    return out


def plot_layer_probs(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per searchable layer: each op's probability per epoch."""
    rows = _layer_rows(history)
    if not rows:
        raise ValueError("no per-layer op probabilities recorded")
    labels = list(rows[-1][1])
    ncols = min(4, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = figure(3.2 * ncols, 2.4 * nrows + 0.6, ncols=ncols, nrows=nrows)
    epochs = [e for e, _ in rows]
    for ax, label in zip(axes, labels):
        ops = list(rows[-1][1][label])
        for op in ops:
            ax.plot(epochs, [w.get(label, {}).get(op, float("nan")) for _, w in rows], marker="o", markersize=2,
                    label=op, linestyle="--" if op == "zero" else "-")
        ax.set_title(label, fontsize="small")
        integer_epochs(ax, epochs)
        ax.set_ylim(0, 1)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    handles, names = max((ax.get_legend_handles_labels() for ax in axes[:len(labels)]), key=lambda h: len(h[1]))
    fig.legend(handles, names, loc="outside lower center", ncols=min(7, len(names)), fontsize="small")
    fig.suptitle("op probability per layer (softmax of alpha) per search epoch")
    return save_figure(fig, path)


def plot_latency(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Expected latency (softmax-weighted), the derived network's table latency and the target, per epoch."""
    rows = [(r["epoch"], r["metrics"]) for r in history if "expected_latency_ms" in (r.get("metrics") or {})]
    if not rows:
        raise ValueError("no expected latency recorded")
    epochs = [e for e, _ in rows]
    fig, (ax,) = figure(7.0, 3.5)
    ax.plot(epochs, [m["expected_latency_ms"] for _, m in rows], marker="o", markersize=3, label="expected E[lat]")
    ax.plot(epochs, [m.get("derived_latency_ms", float("nan")) for _, m in rows], marker="s", markersize=3,
            label="derived network (table)")
    target = rows[-1][1].get("target_latency_ms")
    if isinstance(target, (int, float)):
        ax.axhline(target, color="grey", linestyle=":", label=f"target {target:.3g} ms")
    warm = [e for e, m in rows if m.get("phase") == "warmup"]
    if warm:
        ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="grey", alpha=0.12, label="warm-up (weights only)")
    ax.set_ylabel("latency (ms, lookup table)")
    ax.set_title("latency of the search")
    integer_epochs(ax, epochs)
    ax.legend(fontsize="small", loc="best")
    return save_figure(fig, path)


def plot_tradeoff(points: Sequence[dict[str, Any]], path: Path, highlight: str | None = None) -> Path:
    """Test accuracy against measured latency of the networks found at several latency weights."""
    if not points:
        raise ValueError("no trade-off points")
    fig, (ax,) = figure(6.0, 4.0)
    xs = [p["measured_latency_ms"] for p in points]
    ys = [100 * p["test_acc"] for p in points]
    ax.plot(xs, ys, color="lightgrey", zorder=1)
    for p, x_, y_ in zip(points, xs, ys):
        mine = highlight is not None and p.get("run") == highlight
        ax.scatter([x_], [y_], s=60 if mine else 30, zorder=2, color="red" if mine else "C0")
        ax.annotate(f"w={p['latency_weight']:g}", (x_, y_), textcoords="offset points", xytext=(4, 4),
                    fontsize="small")
    ax.set_xlabel("measured latency (ms, median)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ProxylessNAS: accuracy vs latency by latency weight")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def proxyless_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """Per-layer op probabilities and latency per epoch of a proxyless search; the trade-off plot if present."""
    run = as_run(run)
    history = run.search if run.strategy.get("name") == ProxylessStrategy.name else []
    pictures: list[tuple[str, str]] = []
    pictures += optional_figure(out_dir, "proxyless_layer_probs.png",
                                "Probability of each op of every searchable layer per search epoch (dashed: "
                                "zero, the layer skipped).", lambda p: plot_layer_probs(history, p))
    pictures += optional_figure(out_dir, "proxyless_latency.png",
                                "Expected latency of the supernet (softmax-weighted lookup table) and the table "
                                "latency of the derived network per epoch.", lambda p: plot_latency(history, p))
    data = run.read_json(TRADEOFF_FILE)
    points: list[dict[str, Any]] = []
    if isinstance(data, dict):
        try:
            points = data.get("points", [])
            plot_tradeoff(points, out_dir / "proxyless_pareto.png", highlight=data.get("this_run"))
            pictures.append(("proxyless_pareto.png", "Test accuracy against measured latency of the networks "
                                                      "found with different latency weights (red: this run)."))
        except (OSError, ValueError, KeyError, TypeError):
            points = []
    if not pictures:
        return None
    last = history[-1]["metrics"] if history else {}
    body = "<p>ProxylessNAS search on the mbconv space."
    if "expected_latency_ms" in last:
        body += (f" Last epoch: expected latency {last['expected_latency_ms']:.4f} ms, derived network "
                 f"{last.get('derived_latency_ms', float('nan')):.4f} ms (table), target "
                 f"{last.get('target_latency_ms', float('nan')):.4f} ms.")
    body += "</p>"
    if points:
        rows = "".join(f"<tr><td>{p['latency_weight']:g}</td><td>{p['measured_latency_ms']:.4f}</td>"
                       f"<td>{100 * p['test_acc']:.2f}%</td><td><code>{escape(p.get('arch_summary', ''))}"
                       "</code></td></tr>" for p in points)
        body += ("<table><tr><th>latency weight</th><th>measured latency (ms)</th><th>test accuracy</th>"
                 f"<th>architecture</th></tr>{rows}</table>")
    return Section("ProxylessNAS", body, pictures)
