"""Reports of an experiment: plots of the search dynamics and one self-contained HTML page.

The plots show what DARTS+ watches for: the weight of every op on one edge over the
search (the paper's figure of the shallowest edge), the skip-connects of the derived
normal cell per epoch with the epoch where early stopping fired, and which ops the
derived normal cell uses. ``write_report(DIR)`` reads an experiment directory, finished,
interrupted or train-only, and writes ``DIR/report/*.png`` and ``DIR/report.html``.

Figures are drawn with matplotlib's object API on an Agg canvas (no ``pyplot``), so a
report never touches the backend or the figures of a notebook that calls it.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from nasforge.errors import ArchError, ExperimentError

#: Extra report sections contributed by strategies and spaces: ``fn(root, out_dir)`` draws
#: its figures into ``out_dir`` and returns ``(title, html, [(file name, caption), ...])``,
#: or None when the experiment holds nothing of its kind.
ReportSection = Callable[[Path, Path], "tuple[str, str, list[tuple[str, str]]] | None"]
_SECTIONS: list[ReportSection] = []


def register_report_section(fn: ReportSection) -> ReportSection:
    """Decorator: add a section (plots, tables) to every report where it applies."""
    _SECTIONS.append(fn)
    return fn


# Imported after the registry: space modules register report sections at import.
from nasforge.spaces.darts import PRIMITIVES, Genotype  # noqa: E402
from nasforge.utils import atomic_write, atomic_write_text  # noqa: E402

__all__ = [
    "REPORT_DIR",
    "REPORT_HTML",
    "plot_edge_weights",
    "plot_op_mix",
    "plot_skip_counts",
    "plot_training",
    "register_report_section",
    "write_report",
]

REPORT_DIR = "report"
REPORT_HTML = "report.html"

#: Ops without parameters (dashed in the edge plot; DARTS+ ignores them in its ranking).
_PARAMETER_FREE = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3")


# ---------------------------------------------------------------------------
# Reading records
# ---------------------------------------------------------------------------
def genotype_of(arch: dict[str, Any] | None) -> Genotype | None:
    """The DARTS genotype of an ``Arch.to_dict()`` record, or None for another space or no arch."""
    if not isinstance(arch, dict) or arch.get("space") != "darts":
        return None
    from nasforge.arch import Arch
    from nasforge.spaces.darts import DartsSpace

    try:
        value = Arch.from_dict(arch, validate=False)
        return DartsSpace.for_arch(value).genotype(value)
    except (ArchError, KeyError, TypeError, ValueError):
        return None


def describe_arch(arch: dict[str, Any] | None) -> str:
    """One line for an arch record: the genotype for DARTS, the sorted choices otherwise."""
    if arch is None:
        return "(none)"
    genotype = genotype_of(arch)
    if genotype is not None:
        return str(genotype)
    return json.dumps(arch.get("choices", arch), sort_keys=True)


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


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------
def _figure(width: float = 7.0, height: float = 4.0, ncols: int = 1):
    """A figure on an Agg canvas and its axes (no pyplot, so no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _integer_epochs(ax, epochs: Sequence[float]) -> None:
    """Epoch axis with integer ticks (a single epoch gets a unit-wide range, not fractional ticks)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and min(epochs) == max(epochs):
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)


def _shareable(path: Path) -> Path:
    """Give a written file the permissions the umask allows (temporary files start private)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


def _save(fig, path: str | os.PathLike) -> Path:
    """Write the figure as PNG through a temporary file (a reader never sees half a file)."""
    return _shareable(atomic_write(path, lambda tmp: fig.savefig(tmp, format="png")))


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
    fig, (ax,) = _figure()
    for k, name in enumerate(primitives):
        ax.plot(epochs, [w[edge][k] for _, w in rows], marker="o", markersize=3, label=name,
                linestyle="--" if name in _PARAMETER_FREE else "-")
    where = _edge_location(edge)
    ax.set_title(f"{cell} cell, edge {edge}" + (f" (node {where[0]}, input {where[1]})" if where else ""))
    ax.set_ylabel("op weight (softmax of alpha)")
    _integer_epochs(ax, epochs)
    ax.legend(fontsize="small", ncols=2, loc="best")
    return _save(fig, path)


def plot_skip_counts(history: Sequence[dict[str, Any]], path: str | os.PathLike,
                     stop: dict[str, Any] | None = None, max_skips: int | None = None) -> Path:
    """Skip-connects in the derived normal cell per epoch; a vertical line where early stopping fired."""
    rows = _cell_ops(history, "normal")
    if not rows:
        raise ValueError("no DARTS architectures in the history to count skip-connects in")
    epochs = [e for e, _ in rows]
    counts = [ops.count("skip_connect") for _, ops in rows]
    fig, (ax,) = _figure(7.0, 3.5)
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
    _integer_epochs(ax, epochs)
    span = epochs + ([stop["epoch"]] if stop else [])
    ax.set_xlim(min(span) - 0.5, max(span) + 0.5)
    ax.legend(fontsize="small", loc="upper left")
    return _save(fig, path)


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
    fig, (ax,) = _figure()
    ax.stackplot(epochs, *series, labels=names, alpha=0.85)
    ax.set_ylabel(f"edges of the {cell} cell")
    ax.set_title(f"ops of the derived {cell} cell")
    _integer_epochs(ax, epochs)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


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
    fig, (left, right) = _figure(9.0, 3.5, ncols=2)
    for ax, names, label in ((left, losses, "loss"), (right, accs, "accuracy")):
        for key in names:
            ax.plot(epochs, [m.get(key, float("nan")) for _, m in rows], marker="o", markersize=3, label=key)
        ax.set_ylabel(label)
        _integer_epochs(ax, epochs)
        if names:
            ax.legend(fontsize="small", loc="best")
    right.set_ylim(0, 1.02)
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------
# The HTML report
# ---------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; font-size: 0.92em; }
th { background: #f4f4f4; }
tr.stop td { background: #ffecec; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.88em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.arch { font-size: 1.05em; background: #eef6ff; border-left: 4px solid #4a90d9; }
.note { color: #555; } .warn { color: #a33; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: Sequence[tuple[str, str]]) -> str:
    return "<table>\n" + "\n".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "\n</table>"


def _fmt_seconds(seconds: Any) -> str:
    return f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "?"


def _read_json_file(path: Path, notes: list[str]) -> Any | None:
    """A JSON file's content, None when absent; a corrupt file becomes a note, not a failure."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path.name} is unreadable ({type(exc).__name__}); it is ignored here")
        return None


def _arch_block(arch: dict[str, Any] | None) -> str:
    """The architecture as a prominent block: each cell of a genotype on its own line."""
    genotype = genotype_of(arch)
    if genotype is None:
        return f'<pre class="arch">{_e(describe_arch(arch))}</pre>'
    lines = [" ".join(f"{op}<-{j}" for op, j in getattr(genotype, c)) for c in ("normal", "reduce")]
    return (f'<pre class="arch">normal: {_e(lines[0])}\nreduce: {_e(lines[1])}</pre>\n'
            f"<p>genotype: <code>{_e(genotype)}</code></p>")


def _figure_html(name: str, caption: str) -> str:
    return (f'<figure><img src="{_e(REPORT_DIR + "/" + name)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def write_report(exp_dir: str | os.PathLike) -> Path:
    """Write ``exp_dir/report/*.png`` and ``exp_dir/report.html`` from what the run has recorded so far."""
    root = Path(exp_dir)
    config_path = root / "config.yaml"
    if not root.is_dir() or not config_path.is_file():
        raise ExperimentError(f"{root} is not an experiment directory (no config.yaml); pass a directory "
                              "written by 'nasforge search' or 'nasforge train' (its --out)")
    notes: list[str] = []
    config_text = config_path.read_text(errors="replace")
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        config = {}
        notes.append("config.yaml is not valid YAML; settings below are shown as written")
    if not isinstance(config, dict):
        config = {}
    strategy_cfg = config.get("strategy") if isinstance(config.get("strategy"), dict) else {}
    train_cfg = config.get("train") if isinstance(config.get("train"), dict) else {}

    search: list[dict[str, Any]] = []
    train: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    if (root / "store.sqlite").is_file():
        from nasforge.experiment import Experiment

        exp = Experiment(root)
        try:
            search = exp.store.epochs("search")
            train = exp.store.epochs("train")
            meta = {k: exp.store.get_meta(k) for k in ("early_stop", "search_info", "dataset")}
        finally:
            exp.close()
    result = _read_json_file(root / "result.json", notes)
    arch_json = _read_json_file(root / "arch.json", notes)
    if result is not None and not isinstance(result, dict):
        notes.append("result.json is not a JSON object; it is ignored here")
        result = None

    search_info = meta.get("search_info") or (result or {}).get("search_info") or {}
    stop = meta.get("early_stop") or search_info.get("early_stop")
    train_only = not search and arch_json is not None and not search_info
    if isinstance(arch_json, dict):
        final_arch = arch_json
        arch_source = "Architecture given (arch.json)" if train_only else "Architecture found (arch.json)"
    elif search and search[-1].get("arch"):
        final_arch = search[-1]["arch"]
        arch_source = f"Latest derived architecture (search epoch {search[-1]['epoch']}, search not finished)"
    else:
        final_arch, arch_source = None, "Architecture"

    if result is not None:
        status = "finished"
    elif arch_json is not None:
        status = f"not finished: final training at {len(train)} of {train_cfg.get('epochs', '?')} epochs"
    elif search:
        status = f"not finished: search at {len(search)} of {strategy_cfg.get('epochs', '?')} epochs"
    else:
        status = "not finished: no epoch recorded yet"

    # --- plots ---------------------------------------------------------------
    out = root / REPORT_DIR
    out.mkdir(exist_ok=True)
    figures: list[tuple[str, str]] = []  # (file name, caption)

    def add(name: str, caption: str, draw) -> None:
        target = out / name
        try:
            draw(target)
        except ValueError:  # nothing of that kind recorded
            target.unlink(missing_ok=True)
            return
        figures.append((name, caption))

    for cell in ("normal", "reduce"):
        rows = _weight_rows(search, cell)
        width = len(rows[0][1][0]) if rows else len(PRIMITIVES)
        names = PRIMITIVES if width == len(PRIMITIVES) else [f"op{k}" for k in range(width)]
        add(f"edge_weights_{cell}_0.png",
            f"Op weights on the shallowest edge of the {cell} cell (node 0, input 0) per search epoch; "
            "dashed: parameter-free ops.",
            lambda p, c=cell, n=names: plot_edge_weights(search, p, cell=c, edge=0, primitives=n))
    add("skip_counts.png", "Skip-connects in the derived normal cell per search epoch"
        + (f"; early stop ({stop.get('criterion')}) at epoch {stop.get('epoch')}." if stop else "."),
        lambda p: plot_skip_counts(search, p, stop=stop, max_skips=strategy_cfg.get("early_stop_skips")
                                   if strategy_cfg.get("early_stop") == "dartsplus" else None))
    add("op_mix.png", "How many edges of the derived normal cell use each op, per search epoch.",
        lambda p: plot_op_mix(search, p))
    add("search_curves.png", "Supernet loss and accuracy during the search.",
        lambda p: plot_training(search, p, title="search (supernet)"))
    add("training.png", "Loss and accuracy of the final training.", lambda p: plot_training(train, p))
    if search and not any(e.get("arch_weights") for e in search):
        notes.append("no architecture weights were recorded (not a one-shot search): weight plots skipped")

    # --- summary ------------------------------------------------------------
    nf = "not finished"
    r = result or {}
    lat = r.get("latency") if isinstance(r.get("latency"), dict) else None
    space = r.get("space") or (config.get("space") or {}).get("name", "?")
    strategy = "none (architecture given)" if train_only else r.get("strategy") or strategy_cfg.get("name", "?")
    if train_only:
        search_row = "none (architecture given)"
    elif r.get("search_trials"):
        search_row = f"{r['search_trials']} trials, {_fmt_seconds(r.get('search_seconds'))}"
    elif "search_epochs" in r:
        search_row = f"{r['search_epochs']} epochs, {_fmt_seconds(r.get('search_seconds'))}"
    else:
        seconds = sum(e["metrics"].get("seconds", 0.0) for e in search)
        done = "done" if arch_json is not None else nf
        search_row = f"{len(search)} of {strategy_cfg.get('epochs', '?')} epochs, {seconds:.1f} s ({done})"
    if "train_epochs" in r:
        train_row = f"{r['train_epochs']} epochs, {_fmt_seconds(r.get('train_seconds'))}"
    else:
        seconds = sum(e["metrics"].get("seconds", 0.0) for e in train)
        train_row = f"{len(train)} of {train_cfg.get('epochs', '?')} epochs, {seconds:.1f} s ({nf})"
    if stop:
        stop_row = f"DARTS+ criterion '{stop.get('criterion')}' at epoch {stop.get('epoch')}: {stop.get('detail', '')}"
    elif strategy_cfg.get("early_stop") == "dartsplus":
        stop_row = "dartsplus: did not fire" if arch_json is not None else f"dartsplus: has not fired ({nf})"
    else:
        stop_row = "off"
    summary = [
        ("status", status),
        ("dataset", r.get("dataset") or meta.get("dataset") or (config.get("data") or {}).get("name", "?")),
        ("space / strategy", f"{space} / {strategy}"),
        ("architecture", describe_arch(final_arch) if final_arch else nf),
        ("test accuracy", f"{100 * r['test_acc']:.2f}%" if isinstance(r.get("test_acc"), (int, float)) else nf),
        ("params", f"{r['params']:,}" if isinstance(r.get("params"), int) else nf),
        ("FLOPs (1 image)", f"{r['flops']:,}" if isinstance(r.get("flops"), int) else nf),
        ("latency", f"{lat['median_ms']:.3f} ms median ({lat.get('device', '?')}, batch {lat.get('batch_size', '?')})"
         if lat and isinstance(lat.get("median_ms"), (int, float)) else nf),
        ("search", search_row),
        ("final training", train_row),
        ("early stop", stop_row),
    ]

    # --- genotype per epoch -------------------------------------------------
    epoch_rows = []
    previous = None
    for rec in search:
        text = describe_arch(rec.get("arch"))
        genotype = genotype_of(rec.get("arch"))
        skips = genotype.count("skip_connect") if genotype is not None else ""
        acc = rec["metrics"].get("valid_acc")
        css = ' class="stop"' if stop and stop.get("epoch") == rec["epoch"] else ""
        epoch_rows.append(
            f"<tr{css}><td>{rec['epoch']}</td><td>{_e(f'{100 * acc:.1f}%' if isinstance(acc, (int, float)) else '')}</td>"
            f"<td>{_e(skips)}</td><td>{'yes' if previous is not None and text != previous else ''}</td>"
            f"<td><code>{_e(text)}</code></td></tr>")
        previous = text

    # --- page ---------------------------------------------------------------
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>nasforge report: {_e(root.name)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>nasforge report: {_e(root.name)}</h1>",
        f'<p class="note">{_e(root.resolve())} &middot; written {_e(time.strftime("%Y-%m-%d %H:%M:%S"))}</p>',
    ]
    parts += [f'<p class="warn">{_e(n)}</p>' for n in notes]
    parts += ["<h2>Summary</h2>", _table(summary)]
    parts += [f"<h2>{_e(arch_source)}</h2>"]
    parts += [_arch_block(final_arch) if final_arch else f"<p>{nf}: no architecture derived yet</p>"]
    if stop:
        parts.append(f"<p><strong>Early stop:</strong> DARTS+ criterion <code>{_e(stop.get('criterion'))}</code> "
                     f"fired at epoch {_e(stop.get('epoch'))} ({_e(stop.get('detail', ''))}); the architecture is "
                     "that epoch's.</p>")
    if search:
        parts += ["<h2>Derived genotype per search epoch</h2>",
                  "<table><tr><th>epoch</th><th>supernet valid acc</th><th>skip-connects (normal)</th>"
                  "<th>changed</th><th>genotype</th></tr>", *epoch_rows, "</table>"]
    elif train_only:
        parts.append('<p class="note">No search in this run: the architecture was given (nasforge train).</p>')
    if figures:
        parts.append("<h2>Plots</h2>")
        for name, caption in figures:
            parts.append(_figure_html(name, caption))
    import nasforge.strategies  # noqa: F401  (strategies register their report sections)

    for section in _SECTIONS:
        extra = section(root, out)
        if extra is None:
            continue
        title, body, pictures = extra
        parts += [f"<h2>{_e(title)}</h2>", body]
        for name, caption in pictures:
            parts.append(_figure_html(name, caption))
    parts += ["<h2>Configuration (config.yaml)</h2>", f"<pre>{_e(config_text)}</pre>", "</body></html>", ""]
    return _shareable(atomic_write_text(root / REPORT_HTML, "\n".join(parts)))


# Sections of the method families (imported last: they use the helpers above).
from nasforge.report.sections import densenas as _densenas, proxyless as _proxyless  # noqa: E402

_SECTIONS += [_proxyless.proxyless_report_section, _densenas.densenas_report_section]
