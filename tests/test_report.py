"""Experiment reports: plots of the search dynamics and report.html (one self-contained file: figures
inlined), for finished, interrupted, early-stopped, train-only and non-one-shot runs; the cell graph and
the op-weight heatmaps; the `nasforge report` command."""

from __future__ import annotations

import base64
import html
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasforge.arch import Arch
from nasforge.errors import ExperimentError
from nasforge.experiment import Experiment
from nasforge.pipeline import config_dict, resolve_config, run_experiment
from nasforge.report import (cell_graphs, draw_cell, draw_weight_heatmaps, figure, plot_cell_graph, plot_edge_weights,
                             plot_op_mix, plot_skip_counts, plot_training, plot_weight_heatmaps, weight_groups,
                             write_report)
from nasforge.report.sections.weights import heatmap_panels
from nasforge.spaces.darts import PRIMITIVES, DartsSpace, Genotype, num_edges

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = {"data": {"name": "synthetic"}, "strategy": {"epochs": 2, "batch_size": 32}, "train": {"epochs": 1}}
GENE = (("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_3x3", 0), ("dil_conv_5x5", 2),
        ("sep_conv_3x3", 1), ("max_pool_3x3", 3), ("dil_conv_3x3", 2), ("avg_pool_3x3", 4))


def assert_png(path: Path, min_bytes: int = 3000) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 200 and height >= 150
    assert len(data) >= min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def inlined(page: str) -> list[bytes]:
    """The images of a page, decoded; fails on any image that is not an inline base64 PNG."""
    out = []
    for src in img_sources(page):
        assert src.startswith("data:image/png;base64,"), f"image not inlined: {src[:60]}"
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def figure_names(page: str, root: Path) -> set[str]:
    """The report/*.png files the page's inlined images are (each image must be one of them)."""
    files = {p.read_bytes(): p.name for p in (root / "report").glob("*.png")}
    names = []
    for data in inlined(page):
        assert data in files, "an inlined image matches no figure in report/"
        names.append(files[data])
    return set(names)


def assert_self_contained(page: str) -> None:
    """Nothing on the page refers to another file: no src/href but data URIs and anchors, no CSS url()."""
    for attr, value in re.findall(r'\b(src|href)\s*=\s*["\']?([^"\' >]*)', page, flags=re.I):
        assert value.startswith("data:") or value.startswith("#"), f"{attr} refers to a file: {value[:80]}"
    assert "url(" not in page and "<link" not in page.lower() and "<script" not in page.lower()


def genotype_with_skips(skips: int) -> Genotype:
    normal = tuple(("skip_connect", j) if i < skips else (op, j) for i, (op, j) in enumerate(GENE))
    return Genotype(normal, GENE)


def arch_dict(skips: int) -> dict:
    return DartsSpace().arch_from_genotype(genotype_with_skips(skips)).to_dict()


def weights(epoch: int) -> dict:
    rng = np.random.default_rng(epoch)
    return {c: (rng.dirichlet(np.ones(len(PRIMITIVES)), num_edges(4))).tolist() for c in ("normal", "reduce")}


def search_record(epoch: int, skips: int = 0) -> dict:
    return {"epoch": epoch, "metrics": {"train_loss": 2.0 - 0.1 * epoch, "train_acc": 0.2 + 0.05 * epoch,
                                        "arch_loss": 2.1 - 0.1 * epoch, "valid_acc": 0.1 + 0.05 * epoch,
                                        "lr": 0.025, "seconds": 1.5},
            "arch_weights": weights(epoch), "arch": arch_dict(skips)}


def crafted(path: Path, skips: list[int], strategy: dict | None = None, train_epochs: int = 0) -> Experiment:
    """An experiment holding hand-made search (and train) epochs, like a run cut short."""
    cfg = resolve_config({**CONFIG, "strategy": {**CONFIG["strategy"], "epochs": 6, **(strategy or {})}})
    exp = Experiment.create(path, config_dict(cfg))
    for e, s in enumerate(skips):
        r = search_record(e, s)
        exp.store.log_epoch("search", e, r["metrics"], r["arch_weights"], r["arch"])
    for e in range(train_epochs):
        exp.store.log_epoch("train", e, {"train_loss": 1.0 / (e + 1), "train_acc": 0.5, "valid_acc": 0.4,
                                         "lr": 0.01, "seconds": 0.5})
    return exp


# ---------------------------------------------------------------------------
# a real (tiny) run, finished
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cfg = resolve_config(CONFIG)
    exp = Experiment.create(tmp_path_factory.mktemp("report") / "run", config_dict(cfg))
    result = run_experiment(exp, cfg)
    search = exp.store.epochs("search")
    exp.close()
    return exp.path, result, search, write_report(exp.path)


def test_report_of_a_finished_run(finished):
    root, result, search, page_path = finished
    assert page_path == root / "report.html"
    page = page_path.read_text()
    assert f"{100 * result['test_acc']:.2f}%" in page
    assert f"{result['params']:,}" in page and f"{result['flops']:,}" in page
    assert f"{result['latency']['median_ms']:.3f} ms" in page
    assert "not finished" not in page
    # the architecture found, and the genotype derived at every search epoch
    assert html.escape(result["arch_summary"]) in page
    for r in search:
        genotype = DartsSpace().genotype(Arch.from_dict(r["arch"]))
        assert html.escape(str(genotype)) in page
    # the config, as YAML in <pre>
    assert "<pre>" in page and html.escape((root / "config.yaml").read_text()) in page


def test_report_is_one_self_contained_file_with_every_figure_inlined(finished, tmp_path):
    root, _, _, page_path = finished
    page = page_path.read_text()
    assert_self_contained(page)
    expected = {"edge_weights_normal_0.png", "edge_weights_reduce_0.png", "skip_counts.png", "op_mix.png",
                "search_curves.png", "training.png", "cell_graph.png", "weights_heatmap_normal.png",
                "weights_heatmap_reduce.png"}
    assert figure_names(page, root) == expected
    for data in inlined(page):
        (tmp_path / "x.png").write_bytes(data)
        assert_png(tmp_path / "x.png")
    # mailed: the page alone, far from the run, still holds every image
    alone = tmp_path / "elsewhere" / "report.html"
    alone.parent.mkdir()
    alone.write_text(page)
    assert len(inlined(alone.read_text())) == len(expected)


def test_report_draws_the_derived_cells_as_a_graph(finished):
    root, result, _, page_path = finished
    page = page_path.read_text()
    assert "each edge labelled with its op" in page
    genotype = DartsSpace().genotype(Arch.from_dict(result["arch"]))
    graphs = cell_graphs(result["arch"])
    assert [g.title for g in graphs] == ["normal cell", "reduction cell"]
    for graph, cell in zip(graphs, ("normal", "reduce")):
        names = [text for text, _, _ in graph.nodes.values()]
        assert names == ["c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "c_{k}"]
        labelled = sorted((s, t, op) for s, t, op in graph.edges if op)
        # each node k takes its two (op, input) pairs of the genotype; input j is state j (0, 1: the cell inputs)
        assert labelled == sorted((f"s{j}", f"s{k // 2 + 2}", op) for k, (op, j) in enumerate(getattr(genotype, cell)))
        assert sorted(s for s, t, op in graph.edges if op is None) == [f"s{i}" for i in range(2, 6)]  # concat
        fig, (ax,) = figure()
        draw_cell(ax, graph)
        texts = [t.get_text() for t in ax.texts]
        assert sorted(t for t in texts if not t.startswith(("$", "0", "1", "2", "3"))) == sorted(
            op for op, _ in getattr(genotype, cell))  # every edge carries its op's name
        assert {"$c_{k-2}$", "$c_{k-1}$", "$c_{k}$"} <= set(texts)
        assert len(ax.patches) == len(graph.edges)  # one arrow per edge


def test_cell_graph_of_an_nb201_cell_and_of_other_spaces(tmp_path):
    arch = {"space": "nb201", "version": 1, "choices": {
        "C": 4, "N": 1, "edge1<-0": "nor_conv_3x3", "edge2<-0": "none", "edge2<-1": "skip_connect",
        "edge3<-0": "avg_pool_3x3", "edge3<-1": "none", "edge3<-2": "nor_conv_1x1"}}
    (graph,) = cell_graphs(arch)
    assert [t for t, _, _ in graph.nodes.values()] == ["0 (input)", "1", "2", "3 (output)"]
    assert sorted(graph.edges) == [("n0", "n1", "nor_conv_3x3"), ("n0", "n3", "avg_pool_3x3"),
                                   ("n1", "n2", "skip_connect"), ("n2", "n3", "nor_conv_1x1")]  # none: no edge
    assert_png(plot_cell_graph(arch, tmp_path / "nb.png"))
    for other in (None, {"space": "mbconv", "choices": {"layer0": "mb3_k3"}}):
        assert cell_graphs(other) == []
        with pytest.raises(ValueError, match="not a cell architecture"):
            plot_cell_graph(other, tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


def test_heatmaps_show_every_edge_of_every_recorded_epoch(finished):
    root, _, search, page_path = finished
    page = page_path.read_text()
    assert "Architecture weights per epoch" in page
    groups = weight_groups(search)
    assert set(groups) == {"normal", "reduce"}
    for cell in ("normal", "reduce"):
        epochs, values = groups[cell]
        assert epochs == [r["epoch"] for r in search] and values == [r["arch_weights"][cell] for r in search]
        panels = heatmap_panels("darts", cell, values)
        assert len(panels) == num_edges(4) and panels[0][0] == "$c_{k-2}$ → 0" and panels[-1][0] == "2 → 3"
        fig = draw_weight_heatmaps(panels, epochs)
        images = [ax.images[0] for ax in fig.axes if ax.images]
        assert len(images) == num_edges(4)  # one panel per edge ...
        for e, image in enumerate(images):  # ... rows = epochs, columns = ops, the recorded weights
            expected = np.array([values[k][e] for k in range(len(epochs))])
            assert np.allclose(np.asarray(image.get_array()), expected)
            assert image.get_array().shape == (len(epochs), len(PRIMITIVES))
def test_cli_report_writes_and_prints_the_path(finished):
    root = finished[0]
    (root / "report.html").unlink()
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="300", TERM="dumb")
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "report", str(root)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(root / "report.html")
    assert (root / "report.html").is_file()


def test_cli_report_on_a_non_experiment_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from nasforge.cli import main

    monkeypatch.setattr(sys, "argv", ["nasforge", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not an experiment directory" in err and "Traceback" not in err


# ---------------------------------------------------------------------------
# crafted runs: early stop, interrupted, train only, no architecture weights
# ---------------------------------------------------------------------------
def test_report_names_the_early_stop_criterion_and_epoch(tmp_path):
    exp = crafted(tmp_path / "stopped", [0, 1, 2], strategy={"early_stop": "dartsplus"})
    stop = {"criterion": "skip_connect", "epoch": 2, "detail": "normal cell has 2 skip-connects (limit 2)"}
    exp.store.set_meta("early_stop", stop)
    exp.store.set_meta("search_info", {"epochs": 3, "seconds": 4.5, "early_stop": stop})
    DartsSpace().arch_from_genotype(genotype_with_skips(2)).save(exp.path / "arch.json")
    exp.close()
    page = write_report(exp.path).read_text()
    assert "skip_connect" in page and "fired at epoch 2" in page
    assert "DARTS+ criterion &#x27;skip_connect&#x27; at epoch 2" in page
    assert '<tr class="stop"><td>2</td>' in page  # the stopping epoch is marked in the genotype table
    assert html.escape(str(genotype_with_skips(2))) in page
    assert "not finished: final training at 0 of" in page  # search done, training not run
    assert_png(exp.path / "report" / "skip_counts.png")


def test_report_of_a_run_interrupted_mid_search(tmp_path):
    exp = crafted(tmp_path / "cut", [0, 1])
    exp.close()
    assert not (exp.path / "result.json").exists() and not (exp.path / "arch.json").exists()
    page = write_report(exp.path).read_text()
    assert "not finished: search at 2 of 6 epochs" in page
    assert "Latest derived architecture (search epoch 1" in page
    assert html.escape(str(genotype_with_skips(1))) in page
    assert "test accuracy</th><td>not finished" in page
    names = figure_names(page, exp.path)
    assert "training.png" not in names and {"edge_weights_normal_0.png", "skip_counts.png"} <= names
    assert {"cell_graph.png", "weights_heatmap_normal.png", "weights_heatmap_reduce.png"} <= names
    assert "Latest derived architecture" in page and "each edge labelled with its op" in page
    for name in names:
        assert_png(exp.path / "report" / name)


def test_report_of_a_run_with_no_epochs_yet(tmp_path):
    exp = crafted(tmp_path / "fresh", [])
    exp.close()
    page = write_report(exp.path).read_text()
    assert "no epoch recorded yet" in page and img_sources(page) == []


def test_report_of_a_train_only_run(tmp_path):
    exp = crafted(tmp_path / "trained", [], train_epochs=3)
    DartsSpace().arch_from_genotype(genotype_with_skips(0)).save(exp.path / "arch.json")
    exp.write_json("result.json", {"dataset": "synthetic: tiny", "space": "darts", "strategy": "darts",
                                   "test_acc": 0.4567, "params": 1234, "flops": 56789,
                                   "latency": {"device": "cpu", "batch_size": 1, "median_ms": 0.5},
                                   "search_epochs": 0, "search_seconds": 0.0, "train_epochs": 3,
                                   "train_seconds": 1.5, "search_info": {}})
    exp.close()
    page = write_report(exp.path).read_text()
    assert "45.67%" in page and "1,234" in page and "56,789" in page
    assert "none (architecture given)" in page and "Architecture given (arch.json)" in page
    assert html.escape(str(genotype_with_skips(0))) in page
    assert figure_names(page, exp.path) == {"cell_graph.png", "training.png"}
    assert "Architecture weights per epoch" not in page
    assert_png(exp.path / "report" / "training.png")


def test_report_skips_weight_plots_without_architecture_weights(tmp_path):
    cfg = resolve_config(CONFIG)
    exp = Experiment.create(tmp_path / "sampled", config_dict(cfg))
    for e in range(3):  # like a sample-based strategy: metrics only
        exp.store.log_epoch("search", e, {"valid_acc": 0.1 * e, "train_loss": 1.0})
    exp.close()
    page = write_report(exp.path).read_text()
    names = figure_names(page, exp.path)
    assert not names & {"edge_weights_normal_0.png", "edge_weights_reduce_0.png", "skip_counts.png", "op_mix.png",
                        "weights_heatmap_normal.png", "cell_graph.png"}
    assert "search_curves.png" in names
    assert "weight plots skipped" in page


def test_report_with_only_normal_cell_weights(tmp_path):
    # GDAS with its fixed reduction cell records weights for the normal cell only
    cfg = resolve_config(CONFIG)
    exp = Experiment.create(tmp_path / "normal_only", config_dict(cfg))
    for e in range(2):
        r = search_record(e, 1)
        exp.store.log_epoch("search", e, r["metrics"], {"normal": r["arch_weights"]["normal"]}, r["arch"])
    exp.close()
    names = figure_names(write_report(exp.path).read_text(), exp.path)
    assert "edge_weights_normal_0.png" in names and "edge_weights_reduce_0.png" not in names
    assert "weights_heatmap_normal.png" in names and "weights_heatmap_reduce.png" not in names
    assert not (exp.path / "report" / "edge_weights_reduce_0.png").exists()


def test_report_escapes_text(tmp_path):
    exp = crafted(tmp_path / "esc", [0])
    stop = {"criterion": "<script>x</script>", "epoch": 0, "detail": "a & b"}
    exp.store.set_meta("early_stop", stop)
    exp.close()
    page = write_report(exp.path).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "a &amp; b" in page


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_report_refuses_a_directory_that_is_not_an_experiment(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hello")
    with pytest.raises(ExperimentError) as info:
        write_report(target)
    message = str(info.value)
    assert "\n" not in message and "not an experiment directory" in message and "nasforge search" in message
    assert not (target / "report").exists()


# ---------------------------------------------------------------------------
# the plot functions themselves
# ---------------------------------------------------------------------------
def test_plot_functions_write_pngs(tmp_path):
    history = [search_record(e, s) for e, s in enumerate([0, 1, 2, 2])]
    assert_png(plot_edge_weights(history, tmp_path / "a.png"))
    assert_png(plot_edge_weights(history, tmp_path / "b.png", cell="reduce", edge=num_edges(4) - 1))
    assert_png(plot_skip_counts(history, tmp_path / "c.png", stop={"criterion": "skip_connect", "epoch": 2}))
    assert_png(plot_op_mix(history, tmp_path / "d.png"))
    assert_png(plot_op_mix(history[:1], tmp_path / "e.png"))  # a single epoch still draws
    assert_png(plot_training([{"epoch": 0, "metrics": {"train_loss": 1.0, "train_acc": 0.5}}], tmp_path / "f.png"))


def test_plot_functions_reject_what_they_cannot_draw(tmp_path):
    history = [search_record(0)]
    with pytest.raises(ValueError, match="out of range"):
        plot_edge_weights(history, tmp_path / "a.png", edge=num_edges(4))
    with pytest.raises(ValueError, match="primitive names"):
        plot_edge_weights(history, tmp_path / "a.png", primitives=PRIMITIVES[:3])
    bare = [{"epoch": 0, "metrics": {}, "arch_weights": None, "arch": None}]
    for plot in (plot_edge_weights, plot_skip_counts, plot_op_mix):
        with pytest.raises(ValueError):
            plot(bare, tmp_path / "z.png")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "z.png").exists()


def test_report_does_not_change_the_matplotlib_backend(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    plot_skip_counts([search_record(0, 2)], tmp_path / "s.png")
    assert matplotlib.get_backend() == before


def test_heatmaps_of_other_record_shapes(tmp_path):
    # an NB201 cell: a [6, 5] group laid out by target (rows) and source (columns) node
    rng = np.random.default_rng(0)
    values = [rng.dirichlet(np.ones(5), 6).tolist() for _ in range(3)]
    panels = heatmap_panels("nb201", "normal", values)
    assert [p[0] for p in panels] == ["0 → 1", "0 → 2", "1 → 2", "0 → 3", "1 → 3", "2 → 3"]
    assert [p[3] for p in panels] == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert list(panels[0][2]) == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    assert_png(plot_weight_heatmaps(panels, [0, 1, 2], tmp_path / "nb.png"))
    # a space whose choices are one row each (e.g. a layer-wise space): one panel per choice, one figure
    cfg = resolve_config(CONFIG)
    exp = Experiment.create(tmp_path / "layers", config_dict(cfg))
    for e in range(2):
        exp.store.log_epoch("search", e, {"valid_acc": 0.5}, {"layer0": [[0.2, 0.3, 0.5]], "layer1": [[0.6, 0.4]],
                                                              "layers": {"x": {"a": 1.0}}})  # dict form: not drawn here
    exp.close()
    page = write_report(exp.path).read_text()
    assert "weights_heatmap_choices.png" in figure_names(page, exp.path)
    groups = weight_groups(Experiment.open(exp.path).store.epochs("search"))
    assert set(groups) == {"layer0", "layer1"} and groups["layer1"] == ([0, 1], [[[0.6, 0.4]], [[0.6, 0.4]]])


def test_a_fixed_gdas_reduction_cell_draws_only_the_normal_cell():
    import numpy as np

    from nasforge.report.graph import cell_graphs
    from nasforge.spaces import make_space

    arch = make_space("darts", reduce_cell="gdas_frc").sample(np.random.default_rng(0)).to_dict()
    graphs = cell_graphs(arch)
    assert len(graphs) == 1 and graphs[0].title == "normal cell"
