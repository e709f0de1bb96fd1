"""The kit sections draw with: figures on an Agg canvas, atomic PNG writes, HTML snippets, arch text.

Pages are self-contained: ``figure_html`` inlines a PNG as a base64 ``data:`` URI, so a report
or a comparison is one HTML file that can be mailed or moved on its own.

Figures use matplotlib's object API (no ``pyplot``), so a report never touches the backend or
the figures of a notebook that calls it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from nasforge.errors import ArchError
from nasforge.utils import atomic_write

__all__ = ["REPORT_DIR", "describe_arch", "escape", "figure", "figure_html", "genotype_of", "html_table",
           "integer_epochs", "optional_figure", "png_bytes", "png_data_uri", "save_figure", "shareable"]

#: Folder of the PNGs, inside the run directory (report.html inlines them; the files are there for slides).
REPORT_DIR = "report"


def figure(width: float = 7.0, height: float = 4.0, ncols: int = 1, nrows: int = 1):
    """A figure on an Agg canvas and its axes as a flat list, row by row (no pyplot, so no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    return fig, list(axes)


def integer_epochs(ax, epochs: Sequence[float]) -> None:
    """Epoch axis with integer ticks (a single epoch gets a unit-wide range, not fractional ticks)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and min(epochs) == max(epochs):
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)


def shareable(path: Path) -> Path:
    """Give a written file the permissions the umask allows (temporary files start private)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write the figure as PNG through a temporary file (a reader never sees half a file)."""
    return shareable(atomic_write(path, lambda tmp: fig.savefig(tmp, format="png")))


def optional_figure(out_dir: Path, name: str, caption: str,
                    draw: Callable[[Path], Any]) -> list[tuple[str, str]]:
    """``[(name, caption)]`` once ``draw(out_dir / name)`` has drawn; ``[]`` and no file when it raises
    ValueError (nothing of that kind recorded)."""
    target = out_dir / name
    try:
        draw(target)
    except ValueError:
        target.unlink(missing_ok=True)
        return []
    return [(name, caption)]


# ---------------------------------------------------------------------------
# HTML snippets
# ---------------------------------------------------------------------------
def escape(value: Any) -> str:
    """Any value as HTML text."""
    return html.escape(str(value))


def html_table(rows: Sequence[tuple[Any, Any]]) -> str:
    """A two-column table: a header cell and a value per row."""
    return ("<table>\n" + "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
            + "\n</table>")


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes, in memory (for pages that inline their images)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(image: str | os.PathLike | bytes, caption: str, out_dir: str | os.PathLike | None = None) -> str:
    """A figure with its caption, the image inlined as a data URI: ``image`` is PNG bytes, or the name of
    a PNG in ``out_dir`` (a section's figure), read and embedded so the page needs no other file."""
    if isinstance(image, bytes):
        png = image
    else:
        png = (Path(out_dir) / image if out_dir is not None else Path(image)).read_bytes()
    return (f'<figure><img src="{png_data_uri(png)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------
# Architectures as text
# ---------------------------------------------------------------------------
def genotype_of(arch: dict[str, Any] | None):
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
