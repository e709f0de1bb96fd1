"""`nasforge compare`: runs side by side on one self-contained page (table, accuracy vs latency and vs
search time with the Pareto front, search curves); directories that are not runs are skipped with a warning."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest

from nasforge.errors import ExperimentError
from nasforge.experiment import Experiment
from nasforge.pipeline import config_dict, resolve_config, run_experiment
from nasforge.report import pareto_front, write_compare
from nasforge.report.compare import run_row
from nasforge.report.run import load_run

TINY = {"data": {"name": "synthetic"}, "train": {"epochs": 1}}
RUNS = {  # three real (tiny) runs: GDAS on a DARTS cell, DARTS on NB-201, random search on NB-201
    "a/run": {**TINY, "strategy": {"name": "gdas", "epochs": 2, "batch_size": 32}},
    "b/run": {**TINY, "space": {"name": "nb201", "C": 4, "N": 1},
              "strategy": {"name": "darts", "epochs": 2, "batch_size": 32}},
    "sampled": {**TINY, "space": {"name": "nb201", "C": 4, "N": 1}, "strategy": {"name": "random"},
                "evaluator": {"name": "synthetic"}, "trials": {"max_trials": 6}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    results = {}
    for name, raw in RUNS.items():
        cfg = resolve_config(raw)
        exp = Experiment.create(root / name, config_dict(cfg))
        results[name] = run_experiment(exp, cfg)
        exp.close()
    (root / "photos").mkdir()  # not a run
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    return root, results


def images(page: str) -> list[bytes]:
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources), "an image is not inlined"
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in sources]


def table_rows(page: str) -> dict[str, str]:
    """The first table's rows by the run name in their first cell."""
    table = page.split("<h2>Runs</h2>", 1)[1].split("</table>", 1)[0]
    return {re.search(r"<td>([^<]*)</td>", row).group(1): row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table)
            if row.startswith("<td>")}


def test_compare_page_is_self_contained_with_a_row_per_run(runs, tmp_path):
    root, results = runs
    warnings: list[str] = []
    out = write_compare([str(root / "*" / "run"), root / "sampled", root / "photos"], tmp_path / "cmp.html",
                        warn=warnings.append)
    assert warnings == [f"{root / 'photos'} is not a run directory (no config.yaml); skipped"]
    page = out.read_text()
    for attr, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        assert value.startswith("data:"), f"{attr} points at a file: {value[:60]}"
    assert "url(" not in page and "<link" not in page
    pngs = images(page)
    assert len(pngs) == 3 and all(p[:8] == b"\x89PNG\r\n\x1a\n" and len(p) > 5000 for p in pngs)
    rows = table_rows(page)
    assert set(rows) == {"a/run", "b/run", "sampled"}  # same directory names: told apart by their parents
    for name, result in results.items():
        row = rows[name]
        assert f"{100 * result['test_acc']:.2f}%" in row
        assert f"{result['params']:,}" in row and f"{result['flops']:,}" in row
        assert f"{result['latency']['median_ms']:.3f} ms" in row and "finished" in row
        assert f"<td>{result['space']}</td>" in row and "<td>synthetic</td>" in row
    assert "<td>gdas</td>" in rows["a/run"] and "<td>darts</td>" in rows["b/run"]
    assert "random (synthetic evaluator)" in rows["sampled"] and "6 trials" in rows["sampled"]
    assert "2 epochs" in rows["a/run"]
    assert f"{results['sampled']['search_info']['sim_seconds']:,.0f} s" in rows["sampled"]  # simulated time
    assert results["a/run"]["arch_summary"].split("]")[0].replace("<", "&lt;") in page  # the architectures
    assert "Pareto front" in page and "search curves" in page.lower()


def test_pareto_front_marks_in_the_table_match_the_results(runs, tmp_path):
    root, results = runs
    page = write_compare([root / n for n in RUNS], tmp_path / "cmp.html").read_text()
    rows = table_rows(page)
    names = list(RUNS)
    points = [(results[n]["latency"]["median_ms"], results[n]["test_acc"]) for n in names]
    front = {names[k] for k in pareto_front(points)}
    assert front  # at least the most accurate run
    for name in names:
        assert ("accuracy/latency" in rows[name]) == (name in front)


def test_pareto_front():
    # (cost, accuracy): lower cost and higher accuracy are better
    points = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (2.0, 0.7), (0.5, 0.4), (4.0, 0.9), (1.0, 0.4)]
    assert pareto_front(points) == [0, 1, 3, 4, 5]  # (3, .6) and (1, .4) are dominated; equal points both stay
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def test_an_unfinished_run_is_listed_and_left_out_of_the_scatters(runs, tmp_path):
    root, _ = runs
    cfg = resolve_config({**TINY, "strategy": {"epochs": 6}})
    exp = Experiment.create(tmp_path / "cut", config_dict(cfg))
    exp.store.log_epoch("search", 0, {"valid_acc": 0.3, "seconds": 2.0})
    exp.close()
    row = run_row(load_run(tmp_path / "cut"))
    assert row.status == "search not finished" and row.test_acc is None and row.search_seconds == 2.0
    page = write_compare([root / "a" / "run", tmp_path / "cut"], tmp_path / "cmp.html").read_text()
    assert "search not finished" in table_rows(page)["cut"]
    assert "no test accuracy yet for cut" in page
    assert len(images(page)) == 3  # both scatters (the finished run) and the curves (both runs)


def test_no_run_left_is_one_error(tmp_path):
    warnings: list[str] = []
    with pytest.raises(ExperimentError, match="no run to compare") as info:
        write_compare([tmp_path, str(tmp_path / "nothing*")], tmp_path / "cmp.html", warn=warnings.append)
    assert "\n" not in str(info.value)
    assert warnings == [f"{tmp_path / 'nothing*'} matches nothing; skipped",  # globs are expanded first
                        f"{tmp_path} is not a run directory (no config.yaml); skipped"]
    assert not (tmp_path / "cmp.html").exists()


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from nasforge.cli import main

    monkeypatch.setattr(sys, "argv", ["nasforge", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cli_compare_warns_on_a_non_run_and_goes_on(runs, tmp_path, monkeypatch, capsys):
    root, _ = runs
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "compare", str(root / "*"), str(root / "*" / "run"))
    assert code == 0, err
    assert out.strip() == "compare.html" and (tmp_path / "compare.html").is_file()  # the default --out
    lines = err.strip().splitlines()
    assert lines == [f"warning: {root / name} is not a run directory (no config.yaml); skipped"
                     for name in ("a", "b", "photos")]  # the glob's matches in sorted order
    assert set(table_rows((tmp_path / "compare.html").read_text())) == {"a/run", "b/run", "sampled"}
    code, out, err = run_cli(monkeypatch, capsys, "compare", str(root / "sampled"), "--out", "x/one.html")
    assert code == 0 and (tmp_path / "x" / "one.html").is_file()


def test_cli_compare_with_no_run_is_one_error_line(runs, tmp_path, monkeypatch, capsys):
    root, _ = runs
    code, out, err = run_cli(monkeypatch, capsys, "compare", str(root / "photos"), "--out", str(tmp_path / "c.html"))
    assert code == 2 and out == ""
    warning, error = err.strip().splitlines()
    assert warning.startswith("warning:") and "photos" in warning
    assert error.startswith("error: no run to compare") and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "compare", str(root / "sampled"), "--out", str(tmp_path))
    assert code == 2 and err.strip().splitlines() == [
        f"error: --out {tmp_path} is a directory; give a file name such as {tmp_path / 'compare.html'}"]


def test_result_files_are_read_not_recomputed(runs, tmp_path):
    # the table shows what result.json says (a run is compared as it was recorded)
    root, _ = runs
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root / "sampled", copy)
    result = json.loads((copy / "result.json").read_text())
    result.update(test_acc=0.1234, params=4321, latency={**result["latency"], "median_ms": 9.876})
    (copy / "result.json").write_text(json.dumps(result))
    row = table_rows(write_compare([copy], tmp_path / "c.html").read_text())["copy"]
    assert "12.34%" in row and "4,321" in row and "9.876 ms" in row
