"""Reports of a run: ``write_report(DIR)`` reads an experiment directory, finished, interrupted
or train-only, and writes ``DIR/report.html``, one self-contained file (figures inlined as base64
PNGs; the same PNGs are left in ``DIR/report/``). ``write_compare(DIRS, FILE)`` puts runs side by
side on one self-contained page (``compare.py``).

``run.py`` loads the directory once into a ``Run``; every section in ``sections/`` (one per
method family, listed in ``SECTIONS``) reads that object and draws with the kit in
``figures.py``. Algorithm modules never import this package.
"""

from nasforge.report.figures import (REPORT_DIR, describe_arch, escape, figure, figure_html, genotype_of,
                                     html_table, integer_epochs, optional_figure, save_figure)
from nasforge.report.compare import COMPARE_HTML, pareto_front, render_compare, write_compare
from nasforge.report.graph import cell_graphs, draw_cell, plot_cell_graph
from nasforge.report.page import REPORT_HTML, render, write_report
from nasforge.report.run import Run, Section, as_run, load_run
from nasforge.report.sections import SECTIONS, SectionFn
from nasforge.report.sections.cells import plot_edge_weights, plot_op_mix, plot_skip_counts
from nasforge.report.sections.densenas import plot_path
from nasforge.report.sections.haq import plot_bits, plot_episodes
from nasforge.report.sections.proxyless import plot_latency, plot_layer_probs, plot_tradeoff
from nasforge.report.sections.training import plot_training
from nasforge.report.sections.weights import draw_weight_heatmaps, plot_weight_heatmaps, weight_groups

__all__ = [
    "COMPARE_HTML", "REPORT_DIR", "REPORT_HTML", "Run", "SECTIONS", "Section", "SectionFn", "as_run", "cell_graphs",
    "describe_arch", "draw_cell", "draw_weight_heatmaps", "escape", "figure", "figure_html", "genotype_of",
    "html_table", "integer_epochs", "load_run", "optional_figure", "pareto_front", "plot_bits", "plot_cell_graph",
    "plot_edge_weights", "plot_episodes", "plot_latency", "plot_layer_probs", "plot_op_mix", "plot_path",
    "plot_skip_counts", "plot_tradeoff", "plot_training", "plot_weight_heatmaps", "render", "render_compare",
    "save_figure", "weight_groups", "write_compare", "write_report",
]
