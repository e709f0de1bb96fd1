"""Runs side by side: ``nasforge compare RUN_DIR... --out FILE.html``.

One self-contained HTML page (its figures inlined as base64 PNGs): a table of every run
(method, space, data, test accuracy, params, FLOPs, measured latency, search cost and time),
accuracy against latency and against search time with the Pareto front marked, and the
search curves of all runs overlaid (supernet validation accuracy per epoch for one-shot
searches, best objective so far per trial for sample-based ones). A directory that is not a
run is skipped with a warning; only when no run is left is it an error.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nasforge.errors import ExperimentError, NasforgeError
from nasforge.report.figures import describe_arch, escape, figure, figure_html, png_bytes, shareable
from nasforge.report.page import CSS
from nasforge.report.run import Run, load_run
from nasforge.utils import atomic_write_text, pareto_front

__all__ = ["COMPARE_HTML", "RunRow", "collect_runs", "expand_paths", "pareto_front", "render_compare", "run_row",
           "write_compare"]

#: Default output of ``nasforge compare`` (in the current directory).
COMPARE_HTML = "compare.html"

_GLOB_CHARS = set("*?[")


@dataclass
class RunRow:
    """What the comparison shows of one run; ``None`` where the run has not recorded it (yet)."""

    run: Run
    name: str
    status: str
    method: str
    space: str
    data: str
    test_acc: float | None
    params: int | None
    flops: int | None
    latency_ms: float | None
    latency_device: str
    search_amount: str  # "2 epochs", "8 trials"
    search_seconds: float | None
    sim_seconds: float | None  # simulated search time of table / synthetic evaluators
    train_seconds: float | None
    arch: dict[str, Any] | None
    arch_text: str  # the run's own summary (a genotype, an NB201 string) or the arch's choices


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _method(run: Run) -> str:
    """The strategy, with the settings that change what it is (DARTS order, early stop, the evaluator)."""
    r, cfg = run.result or {}, run.strategy
    name = str(r.get("strategy") or cfg.get("name") or "?")
    extra = []
    if name == "darts" and cfg.get("order") == 2:
        extra.append("2nd order")
    if cfg.get("early_stop") not in (None, "none"):
        extra.append(f"early stop {cfg['early_stop']}")
    evaluator = run.section("evaluator").get("name")
    if run.trials and evaluator:
        extra.append(f"{evaluator} evaluator")
    return name + (f" ({', '.join(extra)})" if extra else "")


def _status(run: Run) -> str:
    if run.result is not None:
        return "finished"
    if run.arch is not None:
        return "final training not finished"
    if run.search or run.trials:
        return "search not finished"
    return "nothing recorded yet"


def run_row(run: Run, name: str | None = None) -> RunRow:
    """The comparison's row of ``run``: read from result.json where finished, else from the store."""
    r = run.result or {}
    info = r.get("search_info") if isinstance(r.get("search_info"), dict) else {}
    latency = r.get("latency") if isinstance(r.get("latency"), dict) else {}
    if r.get("search_trials") or run.trials:
        amount = f"{r.get('search_trials') or len(run.trials)} trials"
    elif "search_epochs" in r:
        amount = f"{r['search_epochs']} epochs"
    else:
        amount = f"{len(run.search)} epochs" if run.search else ""
    search_seconds = _number(r.get("search_seconds"))
    if search_seconds is None and run.search:
        search_seconds = sum(float(e["metrics"].get("seconds", 0.0)) for e in run.search)
    arch = run.arch if run.arch is not None else (run.search[-1].get("arch") if run.search else None)
    device = str(latency.get("device", ""))
    if latency.get("threads"):
        device += f", {latency['threads']} threads"
    return RunRow(
        run=run, name=name or run.path.name, status=_status(run), method=_method(run),
        space=str(r.get("space") or run.section("space").get("name") or "?"),
        data=str(run.section("data").get("name") or r.get("dataset") or "?"),
        test_acc=_number(r.get("test_acc")), params=r.get("params") if isinstance(r.get("params"), int) else None,
        flops=r.get("flops") if isinstance(r.get("flops"), int) else None,
        latency_ms=_number(latency.get("median_ms")), latency_device=device, search_amount=amount,
        search_seconds=search_seconds, sim_seconds=_number(info.get("sim_seconds")),
        train_seconds=_number(r.get("train_seconds")),
        arch=arch, arch_text=str(r.get("arch_summary") or describe_arch(arch)))


def expand_paths(args: Sequence[str | os.PathLike], warn: Callable[[str], None]) -> list[Path]:
    """The directories named by ``args``, globs expanded (for shells that leave them, or quoted ones),
    in the order given, each once; a glob that matches nothing is a warning."""
    seen: set[Path] = set()
    out: list[Path] = []
    for arg in args:
        text = os.fspath(arg)
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                warn(f"{text} matches nothing; skipped")
            paths = [Path(m) for m in matches]
        else:
            paths = [Path(text).expanduser()]
        for path in paths:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                out.append(path)
    return out


def collect_runs(args: Sequence[str | os.PathLike], warn: Callable[[str], None]) -> list[Run]:
    """Every run directory among ``args`` (globs allowed); another path is named in one warning and skipped.
    ExperimentError when no run is left."""
    runs: list[Run] = []
    for path in expand_paths(args, warn):
        if not (path / "config.yaml").is_file():
            what = "does not exist" if not path.exists() else "is not a directory" if not path.is_dir() else \
                "is not a run directory (no config.yaml)"
            warn(f"{path} {what}; skipped")
            continue
        try:
            runs.append(load_run(path))
        except NasforgeError as exc:  # not a run, or a damaged store: say which and go on
            warn(f"skipped {path}: {' '.join(str(exc).split())}")
    if not runs:
        given = " ".join(os.fspath(a) for a in args) or "(none)"
        raise ExperimentError(f"no run to compare among {given}; pass run directories written by "
                              "'nasforge search' or 'nasforge train' (their --out), e.g. nasforge compare runs/*")
    return runs


def _names(runs: Sequence[Run]) -> list[str]:
    """Short unique names: the directory names, or the paths below their common folder when those clash."""
    names = [r.path.name for r in runs]
    if len(set(names)) == len(names):
        return names
    full = [r.path.resolve() for r in runs]
    common = Path(os.path.commonpath(full)) if len(full) > 1 else full[0].parent
    return [os.fspath(p.relative_to(common)) if p != common else p.name for p in full]


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def _scatter(rows: Sequence[RunRow], colors: Sequence[Any], cost: Callable[[RunRow], float | None], xlabel: str,
             title: str, log: bool = False) -> tuple[bytes, list[int]] | None:
    """Test accuracy against a cost, one point per finished run, the Pareto front marked and joined;
    the PNG and the indices (into ``rows``) on the front. None when no run has both values."""
    idx = [k for k, r in enumerate(rows) if r.test_acc is not None and cost(r) is not None]
    if not idx:
        return None
    points = [(float(cost(rows[k])), 100 * float(rows[k].test_acc)) for k in idx]  # type: ignore[arg-type]
    front = [idx[k] for k in pareto_front(points)]
    fig, (ax,) = figure(7.0, 4.5)
    many = len(idx) > 12  # then the points' own labels name them; the legend only explains the front
    for k, (x, y) in zip(idx, points):
        ax.scatter([x], [y], s=36, color=colors[k], zorder=3, label=None if many else rows[k].name)
        ax.annotate(rows[k].name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    line = sorted((points[idx.index(k)] for k in front), key=lambda p: (p[0], -p[1]))
    ax.scatter([x for x, _ in line], [y for _, y in line], s=150, facecolors="none", edgecolors="red",
               linewidths=1.4, zorder=4, label="Pareto front")
    if len(line) > 1:
        ax.step([x for x, _ in line], [y for _, y in line], where="post", color="red", alpha=0.5, linewidth=1,
                zorder=2)
    if log and min(x for x, _ in points) > 0 and max(x for x, _ in points) / min(x for x, _ in points) > 20:
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the names beside the points
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")
    return png_bytes(fig), front


def _curves(rows: Sequence[RunRow], colors: Sequence[Any]) -> bytes | None:
    """Search curves overlaid: supernet valid accuracy per epoch (one-shot runs), best objective so far
    per trial (sample-based runs); one panel for each kind present."""
    epochs = [(k, [(e["epoch"], e["metrics"]["valid_acc"]) for e in r.run.search
                   if isinstance((e.get("metrics") or {}).get("valid_acc"), (int, float))]) for k, r in enumerate(rows)]
    epochs = [(k, pts) for k, pts in epochs if pts]
    trials = []
    for k, r in enumerate(rows):
        best, pts = float("-inf"), []
        for t in sorted(r.run.trials, key=lambda t: t["index"]):
            value = (t.get("metrics") or {}).get("objective") if t.get("status") == "done" else None
            if isinstance(value, (int, float)):
                best = max(best, float(value))
            if best > float("-inf"):
                pts.append((t["index"], best))
        if pts:
            trials.append((k, pts))
    panels = [p for p in (("epochs", epochs), ("trials", trials)) if p[1]]
    if not panels:
        return None
    fig, axes = figure(6.0 * len(panels), 4.0, ncols=len(panels))
    for ax, (kind, series) in zip(axes, panels):
        for k, pts in series:
            xs, ys = [x for x, _ in pts], [y for _, y in pts]
            if kind == "epochs":
                ax.plot(xs, ys, marker="o", markersize=3, color=colors[k], label=rows[k].name)
            else:
                ax.step(xs, ys, where="post", color=colors[k], label=rows[k].name)
        if kind == "epochs":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("search epoch")
            ax.set_ylabel("supernet valid accuracy")
            ax.set_title("one-shot searches: validation accuracy per epoch")
        else:
            ax.set_xlabel("trial")
            ax.set_ylabel("best objective so far")
            ax.set_title("sample-based searches: best so far per trial")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    return png_bytes(fig)


def _cell(value: Any, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}>{escape(value)}</td>"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def _seconds(value: float | None) -> str:
    """Seconds with the precision they need (``0.017 s``, ``1.5 s``, ``439 s``)."""
    if value is None:
        return ""
    return f"{value:.2g} s" if value < 1 else f"{value:.1f} s" if value < 100 else f"{value:,.0f} s"


def _table(rows: Sequence[RunRow], fronts: dict[str, list[int]]) -> str:
    head = ("run", "status", "method", "space", "data", "test accuracy", "params", "FLOPs (1 image)",
            "latency (median)", "latency measured on", "search", "search time", "simulated search time",
            "final training time", "Pareto front")
    lines = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for k, r in enumerate(rows):
        marks = ", ".join(name for name, front in fronts.items() if k in front)
        lines.append(
            ('<tr class="front">' if marks else "<tr>")
            + _cell(r.name) + _cell(r.status) + _cell(r.method) + _cell(r.space) + _cell(r.data)
            + _cell(_fmt(None if r.test_acc is None else 100 * r.test_acc, ".2f", "%"), "num")
            + _cell("" if r.params is None else f"{r.params:,}", "num")
            + _cell("" if r.flops is None else f"{r.flops:,}", "num")
            + _cell(_fmt(r.latency_ms, ".3f", " ms"), "num") + _cell(r.latency_device)
            + _cell(r.search_amount) + _cell(_seconds(r.search_seconds), "num")
            + _cell(_seconds(r.sim_seconds), "num") + _cell(_seconds(r.train_seconds), "num")
            + _cell(marks) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def render_compare(runs: Sequence[Run]) -> str:
    """The comparison page of ``runs`` (in the order given), figures inlined."""
    rows = [run_row(run, name) for run, name in zip(runs, _names(runs))]
    colors = _colors(len(rows))
    notes: list[str] = []
    devices = {r.latency_device for r in rows if r.latency_ms is not None}
    if len(devices) > 1:
        notes.append("latencies were measured on different devices or thread counts ("
                     + "; ".join(sorted(devices)) + "): compare them with care")
    datasets = {r.data for r in rows}
    if len(datasets) > 1:
        notes.append(f"the runs use different datasets ({', '.join(sorted(datasets))}): their accuracies are not "
                     "directly comparable")
    unfinished = [r.name for r in rows if r.test_acc is None]
    if unfinished:
        notes.append(f"no test accuracy yet for {', '.join(unfinished)} (not finished): left out of the scatter plots")
    figures: list[str] = []
    fronts: dict[str, list[int]] = {}
    latency = _scatter(rows, colors, lambda r: r.latency_ms, "measured latency (ms, median)",
                       "test accuracy vs latency")
    if latency is not None:
        fronts["accuracy/latency"] = latency[1]
        figures.append(figure_html(latency[0], "Test accuracy against measured latency; circled in red and joined: "
                                               "the Pareto front (no other run is both more accurate and faster)."))
    cost = _scatter(rows, colors, lambda r: r.search_seconds, "search time (s, wall clock)",
                    "test accuracy vs search time", log=True)
    if cost is not None:
        fronts["accuracy/search time"] = cost[1]
        caption = ("Test accuracy against the search's wall-clock time; circled in red and joined: the Pareto front "
                   "(no other run is both more accurate and cheaper to search).")
        if any(r.sim_seconds is not None for r in rows):
            caption += (" Table and synthetic evaluators answer without training, so their wall time is no training "
                        "cost: the table gives their simulated search time.")
        figures.append(figure_html(cost[0], caption))
    curves = _curves(rows, colors)
    if curves is not None:
        figures.append(figure_html(curves, "Search curves overlaid: supernet validation accuracy per search epoch "
                                           "(one-shot), best objective so far per trial (sample-based)."))
    archs = "\n".join(f"<tr><td>{escape(r.name)}</td><td><code>{escape(r.arch_text)}</code></td></tr>"
                      for r in rows)
    paths = "\n".join(f"<tr><td>{escape(r.name)}</td><td><code>{escape(r.run.path.resolve())}</code></td></tr>"
                      for r in rows)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>nasforge compare: {len(rows)} runs</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>nasforge compare: {len(rows)} run{'s' if len(rows) != 1 else ''}</h1>",
        f'<p class="note">written {escape(time.strftime("%Y-%m-%d %H:%M:%S"))}</p>',
        *(f'<p class="warn">{escape(n)}</p>' for n in notes),
        "<h2>Runs</h2>", _table(rows, fronts),
        "<h2>Trade-offs and search curves</h2>" if figures else "",
        *figures,
        "<h2>Architectures</h2>", f"<table><tr><th>run</th><th>architecture</th></tr>\n{archs}</table>",
        "<h2>Directories</h2>", f"<table><tr><th>run</th><th>path</th></tr>\n{paths}</table>",
        "</body></html>", "",
    ]
    return "\n".join(p for p in parts if p)


def write_compare(args: Sequence[str | os.PathLike], out: str | os.PathLike = COMPARE_HTML,
                  warn: Callable[[str], None] | None = None) -> Path:
    """Write the comparison page of the runs among ``args`` to ``out``; ``warn`` gets one line per path
    skipped (default: dropped). ExperimentError when no run is left or ``out`` is a directory."""
    target = Path(out)
    if target.is_dir():
        raise ExperimentError(f"--out {target} is a directory; give a file name such as {target / COMPARE_HTML}")
    runs = collect_runs(args, warn or (lambda line: None))
    return shareable(atomic_write_text(target, render_compare(runs)))

