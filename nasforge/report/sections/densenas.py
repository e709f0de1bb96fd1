"""DenseNAS section: the derived path drawn over the dense space."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nasforge.arch import Arch
from nasforge.report.figures import escape, figure, save_figure
from nasforge.report.run import Run, Section, as_run
from nasforge.spaces.dense import SKIP, DenseSpace

__all__ = ["densenas_section", "plot_path"]

def plot_path(space: DenseSpace, arch: Arch, path_probs: Sequence[Sequence[float]] | None,
              path: str | Path, title: str = "") -> Path:
    """Blocks on a grid (x: position in the chain, y: width, shaded by stage), every connection
    with its transition probability as line width, and the kept path highlighted."""
    from matplotlib.patches import FancyArrowPatch

    kept = space.path(arch)
    tail = space.tail
    widths = list(space.widths) + [space.widths[-1] * 1.25]
    fig, (ax,) = figure(9.0, 4.5)
    stages = list(space.stages) + [space.stages[-1] + 1]
    for s in sorted(set(stages)):
        xs = [i for i, st in enumerate(stages) if st == s]
        scale = space.scales[min(xs[0], tail - 1)]
        ax.axvspan(xs[0] - 0.45, xs[-1] + 0.45, color=f"C{s % 10}", alpha=0.08)
        label = "tail" if xs[0] == tail else f"stage {s}\n/{space.stem_stride * 2 ** scale}"
        ax.text((xs[0] + xs[-1]) / 2, max(widths) * 1.12, label, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max(widths) * 1.25)
    ax.set_xlim(-0.6, tail + 0.6)
    to_px, to_data = ax.transData, ax.transData.inverted()

    def arc_middle(a: tuple[float, float], b: tuple[float, float], rad: float) -> tuple[float, float]:
        """Midpoint of matplotlib's arc3 curve (a quadratic Bezier defined in display space)."""
        (x1, y1), (x2, y2) = to_px.transform(a), to_px.transform(b)
        mx, my = (x1 + x2) / 2 + rad * (y2 - y1) / 2, (y1 + y2) / 2 - rad * (x2 - x1) / 2
        return tuple(to_data.transform((mx, my)))

    on_path = set(zip(kept, kept[1:]))
    for i, succ in enumerate(space.successors):
        for k, j in enumerate(succ):
            p = float(path_probs[i][k]) if path_probs is not None else 1.0 / len(succ)
            chosen = (i, j) in on_path
            rad = 0.0 if j == i + 1 else 0.25
            ax.add_patch(FancyArrowPatch((i, widths[i]), (j, widths[j]), connectionstyle=f"arc3,rad={rad}",
                                         arrowstyle="-", linewidth=0.4 + 5.0 * p, alpha=0.9 if chosen else 0.35,
                                         color="crimson" if chosen else "grey", zorder=2 if chosen else 1))
            if path_probs is not None and (chosen or p >= 0.5):
                tx, ty = arc_middle((i, widths[i]), (j, widths[j]), rad)
                ax.text(tx, ty, f"{p:.2f}", fontsize=6, color="crimson" if chosen else "dimgrey",
                        ha="center", va="bottom")
    for n in range(tail + 1):
        inside = n in kept
        ax.scatter([n], [widths[n]], s=90 if inside else 40, zorder=3,
                   color="crimson" if inside else "white", edgecolors="black")
        if 0 < n < tail and inside:
            depth = sum(arch[f"block{n}.layer{l}"] != SKIP for l in range(space.layers[n]))
            ax.annotate(f"{space.widths[n]} x{depth}", (n, widths[n]), textcoords="offset points", xytext=(0, -14),
                        ha="center", fontsize=7)
    ax.set_xticks(range(tail + 1), ["0"] + [str(i) for i in range(1, tail)] + ["tail"])
    ax.set_xlabel("block (x: chain position; label under a kept block: width x kept stacking layers)")
    ax.set_ylabel("width (channels)")
    ax.set_title(title or f"DenseNAS path: {space.describe(arch)}", fontsize=9)
    return save_figure(fig, path)


def densenas_section(run: Run | str | os.PathLike, out_dir: Path) -> Section | None:
    """The derived path over the dense space, with the last epoch's transition probabilities."""
    run = as_run(run)
    search = run.search
    arch_dict = run.arch if run.arch is not None else (search[-1].get("arch") if search else None)
    if not isinstance(arch_dict, dict) or arch_dict.get("space") != DenseSpace.name:
        return None
    try:
        arch = Arch.from_dict(arch_dict, validate=False)
        space = DenseSpace.for_arch(arch)
        space.validate(arch)
    except Exception:  # a damaged record: no section rather than a failed report
        return None
    weights = next((r["arch_weights"] for r in reversed(search)
                    if isinstance(r.get("arch_weights"), dict) and "paths" in r["arch_weights"]), None)
    probs = weights["paths"] if weights else None
    name = "densenas_path.png"
    plot_path(space, arch, probs, out_dir / name)
    summary = space.summary(arch)
    body = (f"<p><code>{escape(space.describe(arch))}</code></p>"
            f"<p>kept blocks (widths): {summary['widths']}; depth {summary['depth']} MBConv layers; "
            f"downsampling at layers {summary['downsample_at']}.</p>")
    caption = ("Blocks of the dense space (x: position, y: width, shading: stage and its downsampling); "
               "line width: transition probability" + (" after the last search epoch" if probs else "")
               + "; red: the Viterbi path kept in the architecture.")
    return Section("DenseNAS path", body, [(name, caption)])
