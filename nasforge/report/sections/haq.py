"""HAQ section: the quantization result, bits per layer (the paper's figure), accuracy per episode."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from nasforge.quant.budget import format_value
from nasforge.report.figures import escape, figure, html_table, save_figure
from nasforge.report.run import Run, Section, as_run
from nasforge.strategies.haq import PHASE

__all__ = ["haq_section", "plot_bits", "plot_episodes"]


def plot_bits(layers: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Bars of weight and activation bits per layer (the HAQ paper's figure); depthwise layers hatched."""
    n = len(layers)
    fig, (ax,) = figure(max(6.0, 0.45 * n + 2), 3.8)
    xs = list(range(n))
    wb = [layer["wbits"] for layer in layers]
    ab = [-layer["abits"] for layer in layers]
    hatch = ["//" if layer.get("depthwise") else "" for layer in layers]
    for x, w, a, h in zip(xs, wb, ab, hatch):
        ax.bar(x, w, color="#4a90d9", hatch=h, edgecolor="black", linewidth=0.4)
        ax.bar(x, a, color="#e8963c", hatch=h, edgecolor="black", linewidth=0.4)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{i}{' dw' if layer.get('depthwise') else ''}" for i, layer in enumerate(layers)],
                       fontsize="small", rotation=90 if n > 20 else 0)
    top = max([abs(v) for v in wb + ab] + [8])
    ax.set_ylim(-top - 0.5, top + 0.5)
    ax.set_yticks([v for v in range(-top, top + 1, 2)])
    ax.set_yticklabels([str(abs(v)) for v in range(-top, top + 1, 2)])
    ax.set_xlabel("layer (dw = depthwise, hatched)")
    ax.set_ylabel("bits: weights (up), activations (down)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#4a90d9", label="weight bits"), Patch(color="#e8963c", label="activation bits"),
                       Patch(facecolor="white", edgecolor="black", hatch="//", label="depthwise")],
              fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title or "bits per layer")
    return save_figure(fig, path)


def plot_episodes(history: list[dict[str, Any]], path: Path, warmup: int | None = None) -> Path:
    """Validation accuracy of each episode's policy, with the best so far."""
    if not history:
        raise ValueError("no episodes")
    fig, (ax,) = figure(7.0, 3.5)
    eps = [r["epoch"] for r in history]
    acc = [r["metrics"].get("valid_acc") for r in history]
    best, running = [], -1.0
    for r in history:
        if r["metrics"].get("reward", -math.inf) >= running or not best:
            running = r["metrics"].get("reward", -math.inf)
            best_acc = r["metrics"].get("valid_acc")
        best.append(best_acc)
    ax.scatter(eps, acc, s=10, label="episode policy")
    ax.plot(eps, best, color="black", label="best so far")
    if warmup:
        ax.axvline(warmup - 0.5, color="grey", linestyle="--", linewidth=0.8, label="end of warm-up")
    ax.set_xlabel("episode")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title("HAQ search")
    return save_figure(fig, path)


def haq_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """The HAQ part of a report: the result, bits per layer, accuracy per episode."""
    run = as_run(run)
    result = run.result if (run.result or {}).get("kind") == "haq" else None
    history = run.epochs.get(PHASE, [])
    if result is None and not history:
        return None
    pictures = []
    rows = []
    if result is not None:
        rows = [
            ("budget", f"{result.get('budget')} -> {result.get('target_text')} on {result.get('accelerator')}"),
            ("test accuracy (fine-tuned)", f"{100 * result['test_acc']:.2f}%"),
            ("test accuracy before fine-tune", f"{100 * result['quant_test_acc_before_finetune']:.2f}%"),
            ("float test accuracy", f"{100 * result['float_test_acc']:.2f}%"),
            ("weight size", (f"{format_value('size', result['size_bytes'])} "
                             f"(8-bit: {format_value('size', result['size_8bit_bytes'])}, "
                             f"float: {format_value('size', result['size_float_bytes'])})")),
            ("modelled latency", (f"{format_value('latency', result['latency'])} "
                                  f"(8-bit: {format_value('latency', result['latency_8bit'])})")),
            ("modelled energy", (f"{format_value('energy', result['energy'])} "
                                 f"(8-bit: {format_value('energy', result['energy_8bit'])})")),
            ("within budget", "yes" if result.get("within_budget") else "NO"),
            ("best episode", f"{result.get('best_episode')} of {result.get('episodes')}"),
        ]
        plot_bits(result["layers"], out_dir / "haq_bits.png", title=f"HAQ policy ({result.get('budget')}, "
                                                                      f"{result.get('accelerator')})")
        pictures.append(("haq_bits.png", ("Weight (up) and activation (down) bits per layer of the best policy; "
                                          "depthwise layers hatched.")))
    if history:
        plot_episodes(history, out_dir / "haq_episodes.png")
        pictures.append(("haq_episodes.png", "Validation accuracy of each episode's quantized network."))
    body = ""
    if rows:
        body = html_table(rows)
        body += ("\n<table><tr><th>#</th><th>layer</th><th>dw</th><th>W bits</th><th>A bits</th><th>params</th>"
                 "<th>bound</th></tr>\n" + "\n".join(
                     f"<tr><td>{i}</td><td>{escape(layer['name'])}</td><td>{'yes' if layer['depthwise'] else ''}"
                     f"</td><td>{layer['wbits']}</td><td>{layer['abits']}</td><td>{layer['params']:,}</td>"
                     f"<td>{escape(layer.get('bound', ''))}</td></tr>"
                     for i, layer in enumerate(result["layers"])) + "\n</table>")
    else:
        body = f"<p>search not finished: {len(history)} episodes recorded.</p>"
    return Section("HAQ mixed-precision quantization", body, pictures)
