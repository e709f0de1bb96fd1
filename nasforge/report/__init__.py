"""Reports of a run: ``write_report(DIR)`` reads an experiment directory, finished, interrupted
or train-only, and writes ``DIR/report/*.png`` and ``DIR/report.html``.

``run.py`` loads the directory once into a ``Run``; every section in ``sections/`` (one per
method family, listed in ``SECTIONS``) reads that object and draws with the kit in
``figures.py``. Algorithm modules never import this package.
"""

from nasforge.report.figures import (REPORT_DIR, describe_arch, escape, figure, figure_html, genotype_of,
                                     html_table, integer_epochs, optional_figure, save_figure)
from nasforge.report.page import REPORT_HTML, render, write_report
from nasforge.report.run import Run, Section, as_run, load_run
from nasforge.report.sections import SECTIONS, SectionFn
from nasforge.report.sections.cells import plot_edge_weights, plot_op_mix, plot_skip_counts
from nasforge.report.sections.densenas import plot_path
from nasforge.report.sections.haq import plot_bits, plot_episodes
from nasforge.report.sections.proxyless import plot_latency, plot_layer_probs, plot_tradeoff
from nasforge.report.sections.training import plot_training

__all__ = [
    "REPORT_DIR", "REPORT_HTML", "Run", "SECTIONS", "Section", "SectionFn", "as_run", "describe_arch", "escape",
    "figure", "figure_html", "genotype_of", "html_table", "integer_epochs", "load_run", "optional_figure",
    "plot_bits", "plot_edge_weights", "plot_episodes", "plot_latency", "plot_layer_probs", "plot_op_mix",
    "plot_path", "plot_skip_counts", "plot_tradeoff", "plot_training", "render", "save_figure", "write_report",
]
