"""report.html: the summary of a run, its architecture (as text and as a cell graph), the sections that
apply, and its config. The page is one self-contained file: every figure is inlined as a base64 PNG
(the same PNGs are also left in ``DIR/report/`` for slides and papers)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nasforge.report.figures import (REPORT_DIR, describe_arch, escape, figure_html, genotype_of, html_table,
                                     optional_figure, shareable)
from nasforge.report.graph import plot_cell_graph
from nasforge.report.run import Run, load_run
from nasforge.report.sections import SECTIONS
from nasforge.report.sections.cells import early_stop
from nasforge.utils import atomic_write_text

__all__ = ["CSS", "REPORT_HTML", "render", "write_report"]

REPORT_HTML = "report.html"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; font-size: 0.92em; }
th { background: #f4f4f4; }
tr.stop td { background: #ffecec; } tr.front td { background: #eefbea; } td.num { text-align: right; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.88em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.arch { font-size: 1.05em; background: #eef6ff; border-left: 4px solid #4a90d9; }
.note { color: #555; } .warn { color: #a33; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
"""

_NF = "not finished"


def _fmt_seconds(seconds: Any) -> str:
    return f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "?"


def _arch_block(arch: dict[str, Any] | None) -> str:
    """The architecture as a prominent block: each cell of a genotype on its own line."""
    genotype = genotype_of(arch)
    if genotype is None:
        return f'<pre class="arch">{escape(describe_arch(arch))}</pre>'
    lines = [" ".join(f"{op}<-{j}" for op, j in getattr(genotype, c)) for c in ("normal", "reduce")]
    return (f'<pre class="arch">normal: {escape(lines[0])}\nreduce: {escape(lines[1])}</pre>\n'
            f"<p>genotype: <code>{escape(genotype)}</code></p>")


def _train_only(run: Run) -> bool:
    """An architecture given to 'nasforge train': no search recorded anywhere."""
    info = run.meta.get("search_info") or (run.result or {}).get("search_info") or {}
    return not run.search and run.arch is not None and not info


def _final_arch(run: Run) -> tuple[dict[str, Any] | None, str]:
    """The architecture to show and the heading that says where it comes from."""
    if run.arch is not None:
        return run.arch, "Architecture given (arch.json)" if _train_only(run) else "Architecture found (arch.json)"
    if run.search and run.search[-1].get("arch"):
        epoch = run.search[-1]["epoch"]
        return run.search[-1]["arch"], f"Latest derived architecture (search epoch {epoch}, search not finished)"
    return None, "Architecture"


def _status(run: Run) -> str:
    if run.result is not None:
        return "finished"
    if run.arch is not None:
        return f"{_NF}: final training at {len(run.train)} of {run.section('train').get('epochs', '?')} epochs"
    if run.search:
        return f"{_NF}: search at {len(run.search)} of {run.strategy.get('epochs', '?')} epochs"
    return f"{_NF}: no epoch recorded yet"


def _summary(run: Run) -> list[tuple[str, str]]:
    """Rows of the summary table: what ran, what it found, what it costs, how far it got."""
    r, cfg, stop, train_only = run.result or {}, run.strategy, early_stop(run), _train_only(run)
    final_arch, _ = _final_arch(run)
    lat = r.get("latency") if isinstance(r.get("latency"), dict) else None
    space = r.get("space") or run.section("space").get("name", "?")
    strategy = "none (architecture given)" if train_only else r.get("strategy") or cfg.get("name", "?")
    if train_only:
        search_row = "none (architecture given)"
    elif r.get("search_trials"):
        search_row = f"{r['search_trials']} trials, {_fmt_seconds(r.get('search_seconds'))}"
    elif "search_epochs" in r:
        search_row = f"{r['search_epochs']} epochs, {_fmt_seconds(r.get('search_seconds'))}"
    else:
        seconds = sum(e["metrics"].get("seconds", 0.0) for e in run.search)
        done = "done" if run.arch is not None else _NF
        search_row = f"{len(run.search)} of {cfg.get('epochs', '?')} epochs, {seconds:.1f} s ({done})"
    if "train_epochs" in r:
        train_row = f"{r['train_epochs']} epochs, {_fmt_seconds(r.get('train_seconds'))}"
    else:
        seconds = sum(e["metrics"].get("seconds", 0.0) for e in run.train)
        train_row = f"{len(run.train)} of {run.section('train').get('epochs', '?')} epochs, {seconds:.1f} s ({_NF})"
    if stop:
        stop_row = f"DARTS+ criterion '{stop.get('criterion')}' at epoch {stop.get('epoch')}: {stop.get('detail', '')}"
    elif cfg.get("early_stop") == "dartsplus":
        stop_row = "dartsplus: did not fire" if run.arch is not None else f"dartsplus: has not fired ({_NF})"
    else:
        stop_row = "off"
    return [
        ("status", _status(run)),
        ("dataset", r.get("dataset") or run.meta.get("dataset") or run.section("data").get("name", "?")),
        ("space / strategy", f"{space} / {strategy}"),
        ("architecture", describe_arch(final_arch) if final_arch else _NF),
        ("test accuracy", f"{100 * r['test_acc']:.2f}%" if isinstance(r.get("test_acc"), (int, float)) else _NF),
        ("params", f"{r['params']:,}" if isinstance(r.get("params"), int) else _NF),
        ("FLOPs (1 image)", f"{r['flops']:,}" if isinstance(r.get("flops"), int) else _NF),
        ("latency", f"{lat['median_ms']:.3f} ms median ({lat.get('device', '?')}, batch {lat.get('batch_size', '?')})"
         if lat and isinstance(lat.get("median_ms"), (int, float)) else _NF),
        ("search", search_row),
        ("final training", train_row),
        ("early stop", stop_row),
    ]


def _epoch_rows(run: Run) -> list[str]:
    """One table row per search epoch: supernet accuracy, skip-connects, whether the arch changed."""
    stop, rows, previous = early_stop(run), [], None
    for rec in run.search:
        text = describe_arch(rec.get("arch"))
        genotype = genotype_of(rec.get("arch"))
        skips = genotype.count("skip_connect") if genotype is not None else ""
        acc = rec["metrics"].get("valid_acc")
        css = ' class="stop"' if stop and stop.get("epoch") == rec["epoch"] else ""
        rows.append(
            f"<tr{css}><td>{rec['epoch']}</td><td>{escape(f'{100 * acc:.1f}%' if isinstance(acc, (int, float)) else '')}"
            f"</td><td>{escape(skips)}</td><td>{'yes' if previous is not None and text != previous else ''}</td>"
            f"<td><code>{escape(text)}</code></td></tr>")
        previous = text
    return rows


def render(run: Run, out_dir: Path) -> str:
    """The page of ``run``, drawing every section's figures into ``out_dir`` and inlining them."""
    notes = list(run.notes)
    if run.search and not any(e.get("arch_weights") for e in run.search):
        notes.append("no architecture weights were recorded (not a one-shot search): weight plots skipped")
    final_arch, arch_source = _final_arch(run)
    stop = early_stop(run)
    name = run.path.name
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>nasforge report: {escape(name)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>nasforge report: {escape(name)}</h1>",
        f'<p class="note">{escape(run.path.resolve())} &middot; written {escape(time.strftime("%Y-%m-%d %H:%M:%S"))}</p>',
    ]
    parts += [f'<p class="warn">{escape(n)}</p>' for n in notes]
    parts += ["<h2>Summary</h2>", html_table(_summary(run)), f"<h2>{escape(arch_source)}</h2>"]
    parts.append(_arch_block(final_arch) if final_arch else f"<p>{_NF}: no architecture derived yet</p>")
    if final_arch:
        graph = optional_figure(out_dir, "cell_graph.png", "The cell" + ("s" if genotype_of(final_arch) else "")
                                + " of this architecture: nodes, and each edge labelled with its op.",
                                lambda p: plot_cell_graph(final_arch, p))
        parts += [figure_html(n, c, out_dir) for n, c in graph]
    if stop:
        parts.append(f"<p><strong>Early stop:</strong> DARTS+ criterion <code>{escape(stop.get('criterion'))}</code> "
                     f"fired at epoch {escape(stop.get('epoch'))} ({escape(stop.get('detail', ''))}); the "
                     "architecture is that epoch's.</p>")
    if run.search:
        parts += ["<h2>Derived genotype per search epoch</h2>",
                  "<table><tr><th>epoch</th><th>supernet valid acc</th><th>skip-connects (normal)</th>"
                  "<th>changed</th><th>genotype</th></tr>", *_epoch_rows(run), "</table>"]
    elif _train_only(run):
        parts.append('<p class="note">No search in this run: the architecture was given (nasforge train).</p>')
    for section in SECTIONS:
        extra = section(run, out_dir)
        if extra is None:
            continue
        title, body, figures = extra
        parts += [f"<h2>{escape(title)}</h2>", body, *(figure_html(n, c, out_dir) for n, c in figures)]
    parts += ["<h2>Configuration (config.yaml)</h2>", f"<pre>{escape(run.config_text)}</pre>", "</body></html>", ""]
    return "\n".join(parts)


def write_report(exp_dir: str | os.PathLike) -> Path:
    """Write ``exp_dir/report.html`` (self-contained: its images inlined) from what the run has recorded so
    far; the figures are also left as ``exp_dir/report/*.png``."""
    run = load_run(exp_dir)
    out = run.path / REPORT_DIR
    out.mkdir(exist_ok=True)
    return shareable(atomic_write_text(run.path / REPORT_HTML, render(run, out)))
