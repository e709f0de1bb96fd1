"""The ``nasforge`` command: help, list, one-line errors for bad input, and a tiny end-to-end run.

Most commands run in-process through ``nasforge.cli.main()`` (which is where user errors are
turned into ``error: ...`` lines and exit codes) with a patched ``sys.argv``; a few run the
real entry point in a subprocess to check what a user sees, tracebacks included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasforge.cli import main
from nasforge.spaces.darts import DartsSpace

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    return env


def run_main(*args) -> int:
    """Run ``nasforge ARGS`` in-process and return its exit code. Other exceptions propagate."""
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["nasforge", *[str(a) for a in args]])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        mp.undo()
    return code


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` -> (exit code, stdout, stderr) of an in-process ``nasforge`` call."""

    def call(*args):
        capsys.readouterr()
        code = run_main(*args)
        out, err = capsys.readouterr()
        return code, ANSI.sub("", out), ANSI.sub("", err)

    return call


def run_sub(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nasforge.cli", *[str(a) for a in args]], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=120)


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Non-zero exit and stderr is exactly one line ``error: ...`` naming every needle."""
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


SEARCH = ("search", "--data", "synthetic")


# --------------------------------------------------------------------------- help and list
def test_help_via_subprocess():
    proc = run_sub("--help")
    assert proc.returncode == 0, proc.stderr
    for cmd in ("search", "resume", "train", "export", "list"):
        assert cmd in proc.stdout
    assert "Traceback" not in proc.stderr


def test_search_help_mentions_the_options():
    proc = run_sub("search", "--help")
    assert proc.returncode == 0, proc.stderr
    for opt in ("--space", "--strategy", "--data", "--data-dir", "--out", "--config", "--seed", "--epochs",
                "--set", "--force", "--quiet"):
        assert opt in proc.stdout, opt


def test_help_shows_the_defaults(cli):
    """The defaults of options resolved from the config are shown, not eaten as markup."""
    code, out, _ = cli("search", "--help")
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    for option, default in (("--space", "darts"), ("--strategy", "gdas"), ("--data", "digits"),
                            ("--out", "runs/STRATEGY-SPACE-DATA-TIME"), ("--seed", "0"), ("--trials", "20 on digits"),
                            ("--workers", "1")):
        assert re.search(re.escape(option) + r" .*?\[default: \(?" + re.escape(default) + r"\)?\]", text), option
    for command, default in (("train", "runs/train-DATA-TIME"), ("export", "next to the source"),
                             ("latency", "latency_tables/SPACE-DEVICE-CxHxW.json"), ("resume", "as before")):
        code, out, _ = cli(command, "--help")
        assert code == 0 and default in " ".join(out.replace("│", " ").split()), command


@pytest.mark.skipif(shutil.which("nasforge") is None, reason="nasforge script not on PATH")
def test_console_script_help():
    proc = subprocess.run(["nasforge", "--help"], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0 and "search" in proc.stdout


def test_help_in_process(cli):
    code, out, _ = cli("train", "--help")
    assert code == 0
    assert "--set" in out and "ARCH_JSON" in out.upper()
    text = " ".join(out.replace("│", " ").split())
    assert "--set train.epochs=50" in text and "strategy.epochs" not in text  # train has no strategy


def test_list(cli):
    code, out, err = cli("list")
    assert code == 0, err
    assert re.search(r"space\W+darts", out)
    assert re.search(r"strategy\W+darts", out)
    for name in ("digits", "cifar10", "synthetic"):
        assert name in out
    rows = [line.split("│") for line in out.splitlines() if re.match(r"\W*dataset\b", line.strip("│ "))]
    assert len(rows) >= 3 and all(len(r) > 3 and r[3].strip() for r in rows), rows  # every dataset described


# --------------------------------------------------------------------------- usage errors (click)
def test_unknown_option_is_a_usage_error_not_a_traceback(tmp_path: Path):
    proc = run_sub("search", "--no-such-option", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2
    assert "--no-such-option" in proc.stderr


def test_no_arguments_shows_usage_not_a_traceback(tmp_path: Path):
    proc = run_sub(cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr.strip().splitlines()[-1]
    assert "Usage" in proc.stdout + proc.stderr


def test_missing_argument_is_a_usage_error(tmp_path: Path):
    proc = run_sub("train", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2
    assert "ARCH_JSON" in proc.stderr.upper()


# --------------------------------------------------------------------------- user errors
def test_real_entry_point_prints_one_error_line(tmp_path: Path):
    proc = run_sub(*SEARCH, "--strategy", "nope", "--out", tmp_path / "out", cwd=tmp_path)
    assert_one_line_error(proc.returncode, ANSI.sub("", proc.stderr), "nope")
    assert proc.returncode == 2
    assert not (tmp_path / "out").exists()


def test_unknown_strategy(cli, tmp_path: Path):
    code, _, err = cli(*SEARCH, "--strategy", "nope", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "unknown strategy 'nope'", "darts")
    assert not (tmp_path / "out").exists()


def test_unknown_space(cli, tmp_path: Path):
    code, _, err = cli(*SEARCH, "--space", "nope", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "nope", "darts")
    assert not (tmp_path / "out").exists()


def test_unknown_dataset(cli, tmp_path: Path):
    code, _, err = cli("search", "--data", "nosuchdata", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "nosuchdata", "synthetic")
    assert not (tmp_path / "out").exists()


def test_cifar10_with_a_missing_data_dir(cli, tmp_path: Path):
    missing = tmp_path / "no_such_dir"
    code, _, err = cli("search", "--data", "cifar10", "--data-dir", missing, "--out", tmp_path / "out", "-q")
    assert_one_line_error(code, err, str(missing), "does not exist")


def test_cifar10_without_data_dir(cli, tmp_path: Path):
    code, _, err = cli("search", "--data", "cifar10", "--out", tmp_path / "out", "-q")
    assert_one_line_error(code, err, "--data-dir")


def test_malformed_yaml_config(cli, tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  lr: [0.1\n  epochs: 2\n")
    code, _, err = cli(*SEARCH, "--config", config, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "bad.yaml", "YAML")
    assert not (tmp_path / "out").exists()


def test_missing_config_file(cli, tmp_path: Path):
    code, _, err = cli(*SEARCH, "--config", tmp_path / "nope.yaml", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "nope.yaml")


def test_config_with_unknown_key(cli, tmp_path: Path):
    config = tmp_path / "cfg.yaml"
    config.write_text("train:\n  learning_rate: 0.1\n")
    code, _, err = cli(*SEARCH, "--config", config, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "train.learning_rate", "lr")
    assert not (tmp_path / "out").exists()


def test_negative_epochs(cli, tmp_path: Path):
    code, _, err = cli(*SEARCH, "--set", "strategy.epochs=-3", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "strategy.epochs", "-3")
    assert not (tmp_path / "out").exists()


def test_malformed_set(cli, tmp_path: Path):
    code, _, err = cli(*SEARCH, "--set", "strategy.epochs", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "--set", "strategy.epochs")


def test_existing_out_dir_without_force_is_untouched(cli, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text('{"test_acc": 0.99}')
    (out / "notes.txt").write_text("mine")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    code, _, err = cli(*SEARCH, "--out", out, "--set", "strategy.epochs=1")
    assert_one_line_error(code, err, str(out), "--force")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_out_is_an_existing_file(cli, tmp_path: Path):
    target = tmp_path / "afile"
    target.write_text("x")
    code, _, err = cli(*SEARCH, "--out", target, "--set", "strategy.epochs=1")
    assert_one_line_error(code, err, str(target))
    assert target.read_text() == "x"


def test_train_with_malformed_arch_json(cli, tmp_path: Path):
    arch = tmp_path / "arch.json"
    arch.write_text('{"space": "darts", "choices": {')
    code, _, err = cli("train", arch, "--data", "synthetic", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "malformed")
    assert not (tmp_path / "out").exists()


def test_train_with_missing_arch_json(cli, tmp_path: Path):
    code, _, err = cli("train", tmp_path / "nope.json", "--data", "synthetic", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "nope.json", "does not exist")


def test_train_with_unknown_op(cli, tmp_path: Path):
    import numpy as np

    data = DartsSpace().sample(np.random.default_rng(0)).to_dict()
    data["choices"]["reduce.1.op0"] = "conv_7x7"
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(data))
    code, _, err = cli("train", arch, "--data", "synthetic", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "reduce.1.op0", "conv_7x7")
    assert not (tmp_path / "out").exists()


def test_resume_on_a_non_experiment_dir(cli, tmp_path: Path):
    (tmp_path / "junk").mkdir()
    code, _, err = cli("resume", tmp_path / "junk")
    assert_one_line_error(code, err, "not an experiment directory")


def test_export_of_a_missing_model(cli, tmp_path: Path):
    code, _, err = cli("export", tmp_path / "model.pt", "--format", "pt2")
    assert_one_line_error(code, err, "model.pt")


def test_export_torchscript_is_refused_with_what_replaces_it(cli, tmp_path: Path):
    code, _, err = cli("export", tmp_path / "model.pt", "--format", "torchscript")
    assert_one_line_error(code, err, "deprecated", "--format pt2")
    code, _, err = cli("export", tmp_path / "model.pt", "--format", "tflite")
    assert_one_line_error(code, err, "onnx|pt2|json")


def test_interrupted_search_exits_130(cli, tmp_path: Path, monkeypatch):
    import nasforge.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nasforge.pipeline, "run_experiment", interrupted)
    code, _, err = cli(*SEARCH, "--out", tmp_path / "out", "-q")
    assert "nasforge resume" in err
    assert code == 130


# --------------------------------------------------------------------------- one tiny end-to-end run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """``nasforge search --data synthetic --out RUN --set strategy.epochs=1 --set train.epochs=1 -q``."""
    out = tmp_path_factory.mktemp("cli") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads make tiny convs very slow
    try:
        code = run_main(*SEARCH, "--out", out, "--set", "strategy.epochs=1", "--set", "train.epochs=1", "-q")
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


def test_search_writes_every_file(run_dir: Path):
    for name in ("config.yaml", "store.sqlite", "arch.json", "model.pt", "result.json"):
        assert (run_dir / name).is_file(), name
    result = json.loads((run_dir / "result.json").read_text())
    assert 0.0 <= result["test_acc"] <= 1.0
    assert isinstance(result["params"], int) and result["params"] > 0
    assert result["flops"] > 0
    assert result["latency"]["median_ms"] > 0
    assert result["search_epochs"] == 1 and result["train_epochs"] == 1
    assert result["space"] == "darts" and result["strategy"] == "gdas"
    from datetime import datetime

    assert datetime.fromisoformat(result["finished"]).tzinfo is not None  # ISO 8601, not a raw float
    assert result["search_seconds"] > 0 and "wall_seconds" not in result["search_info"]  # one search time
    assert result["latencies"]["cpu"] == result["latency"]  # the target (eager PyTorch on the CPU)...
    if importlib.util.find_spec("onnxruntime") is not None:  # ...and the deployment runtime
        assert result["latencies"]["onnxruntime"]["median_ms"] > 0
    from nasforge.arch import Arch

    arch = Arch.from_json(run_dir / "arch.json")
    assert result["arch"] == arch.to_dict()
    assert not list(run_dir.glob(".*.tmp")) and not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_search_config_is_resolved(run_dir: Path):
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["name"] == "synthetic"
    assert config["strategy"]["epochs"] == 1 and config["train"]["epochs"] == 1
    assert config["train"]["layers"] is not None  # auto fields written resolved


def test_resume_of_a_finished_run_keeps_the_result(cli, run_dir: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (copy / "result.json").read_text()
    code, _, err = cli("resume", copy, "-q")
    assert code == 0, err
    assert (copy / "result.json").read_text() == before


def test_export_onnx(cli, run_dir: Path, tmp_path: Path, one_thread):
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        pytest.skip("onnx / onnxruntime not installed")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    code, out, err = cli("export", copy, "--format", "onnx")
    assert code == 0, err
    assert err == ""  # no exporter warnings or progress lines
    assert (copy / "model.onnx").is_file()
    text = " ".join(out.split())  # rich wraps at 80 columns
    assert "max |onnxruntime - pytorch| =" in text
    assert "dynamo exporter" in text if importlib.util.find_spec("onnxscript") else "legacy exporter" in text


def test_export_pt2_keeps_the_onnx_latency_record(cli, run_dir: Path, tmp_path: Path, one_thread):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    out_dir = tmp_path / "both"
    assert cli("export", run_dir, "--format", "onnx", "--out", out_dir)[0] == 0
    code, out, err = cli("export", run_dir, "--format", "pt2", "--out", out_dir)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    assert written == ["model.onnx", "model.onnx.latency.json", "model.pt2", "model.pt2.latency.json"]
    onnx_latency = json.loads((out_dir / "model.onnx.latency.json").read_text())
    pt2_latency = json.loads((out_dir / "model.pt2.latency.json").read_text())
    assert onnx_latency["device"] == "onnxruntime" and onnx_latency["file"] == "model.onnx"
    assert pt2_latency["device"] == "cpu" and pt2_latency["file"] == "model.pt2" and pt2_latency["median_ms"] > 0
    program = torch.export.load(str(out_dir / "model.pt2")).module()
    shape = json.loads((run_dir / "result.json").read_text())["latency"]["input_shape"]
    assert program(torch.zeros(3, *shape)).shape == (3, 10)


def test_export_to_a_named_file(cli, run_dir: Path, tmp_path: Path, one_thread):
    code, _, err = cli("export", run_dir, "--format", "json", "--out", tmp_path / "x.json")
    assert code == 0, err
    assert (tmp_path / "x.json").is_file()  # a file, not a directory
    assert json.loads((tmp_path / "x.json").read_text()) == json.loads((run_dir / "arch.json").read_text())
    code, _, err = cli("export", run_dir, "--format", "pt2", "--out", tmp_path / "net.pt2")
    assert code == 0, err
    assert (tmp_path / "net.pt2").is_file() and (tmp_path / "net.pt2.latency.json").is_file()
    (tmp_path / "d.json").mkdir()
    code, _, err = cli("export", run_dir, "--format", "json", "--out", tmp_path / "d.json")  # an existing folder
    assert code == 0 and (tmp_path / "d.json" / "arch.export.json").is_file(), err


def test_export_opset(cli, run_dir: Path, tmp_path: Path, one_thread):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    import onnx

    code, out, err = cli("export", run_dir, "--opset", "13", "--out", tmp_path / "m13.onnx")
    assert code == 0, err
    assert onnx.load(str(tmp_path / "m13.onnx")).opset_import[0].version == 13
    code, _, err = cli("export", run_dir, "--opset", "99", "--out", tmp_path / "bad")
    assert_one_line_error(code, err, "--opset 99")


def test_export_an_arch_json_uses_the_trained_model_beside_it(cli, run_dir: Path, tmp_path: Path, one_thread):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    from nasforge.train import load_model

    out_dir = tmp_path / "onnx"
    code, out, err = cli("export", run_dir / "arch.json", "--format", "onnx", "--out", out_dir)
    assert code == 0, err
    assert "untrained" not in err
    latency = json.loads((out_dir / "model.onnx.latency.json").read_text())
    assert latency["device"] == "onnxruntime" and latency["file"] == "model.onnx"
    import onnxruntime as ort

    model, _, shape = load_model(run_dir / "model.pt")
    x = torch.randn(2, *shape)
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - model(x).numpy()).max() < 1e-4  # the trained weights, not fresh ones


def test_export_a_lone_arch_json_builds_it_for_the_dataset(cli, run_dir: Path, tmp_path: Path, one_thread):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run_dir / "arch.json", lone / "arch.json")
    code, out, err = cli("export", lone / "arch.json", "--format", "pt2", "--data", "synthetic")
    assert code == 0, err
    assert "untrained" in err
    assert (lone / "model.pt2").is_file() and (lone / "model.pt2.latency.json").is_file()


def test_export_next_to_the_model_keeps_the_trained_model(cli, run_dir: Path, tmp_path: Path, one_thread):
    """The default target is the run directory, which already holds the trained model.pt."""
    from nasforge.train import load_model

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    code, _, err = cli("export", copy, "--format", "pt2")
    assert code == 0, err
    model, arch, input_shape = load_model(copy / "model.pt")  # still the loadable training checkpoint
    assert input_shape == (1, 8, 8)


def test_train_the_found_arch(cli, run_dir: Path, tmp_path: Path, one_thread):
    out = tmp_path / "trained"
    code, stdout, err = cli("train", run_dir / "arch.json", "--data", "synthetic", "--set", "train.epochs=1",
                            "--out", out, "-q")
    assert code == 0, err
    rows = [line.strip("│ ").split("│")[0].strip() for line in stdout.splitlines()]
    assert "final training" in rows and "search" not in rows  # no "search 0 epochs" row for a given arch
    assert "latency (ONNX Runtime, CPU, batch 1)" in rows or importlib.util.find_spec("onnxruntime") is None
    for name in ("config.yaml", "arch.json", "model.pt", "result.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "arch.json").read_text()) == json.loads((run_dir / "arch.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["test_acc"] <= 1.0 and result["train_epochs"] == 1


@pytest.mark.parametrize("space_name", ["darts", "nb201", "mbconv", "dense", "layers"])
def test_export_an_arch_json_of_every_space_to_checked_onnx(cli, tmp_path: Path, space_name: str, one_thread):
    """`nasforge export ARCH.json --format onnx` works for every space: checked against PyTorch, latency beside."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    import numpy as np

    from nasforge.spaces import make_space

    options = {"nb201": {"C": 4, "N": 1}}.get(space_name, {})
    arch = make_space(space_name, **options).sample(np.random.default_rng(3))
    path = arch.save(tmp_path / "arch.json")
    code, out, err = cli("export", path, "--format", "onnx", "--data", "synthetic")
    assert code == 0, err
    diff = float(" ".join(out.split()).split("max |onnxruntime - pytorch| = ")[1].split(")")[0])
    assert diff < 1e-4
    latency = json.loads((tmp_path / "model.onnx.latency.json").read_text())
    assert latency["device"] == "onnxruntime" and latency["median_ms"] > 0


# --------------------------------------------------------------------------- latency tables
def test_latency_set_takes_config_fields_and_the_check_shows_no_none(cli, tmp_path: Path, one_thread):
    target = tmp_path / "t.json"
    code, out, err = cli("latency", "--space", "nb201", "--set", "space.C=4", "--set", "space.N=1", "--data",
                         "synthetic", "--set", "latency.repeats=3", "--warmup", "1", "--check", "3", "--out", target)
    assert code == 0, err
    table = json.loads(target.read_text())
    assert table["space"] == "nb201" and table["input_shape"] == [1, 8, 8]
    assert "Spearman" in out and "checking table" in err
    assert "None" not in err  # the progress bars show their last values, never None
    from nasforge.hardware.lut import LatencyTable
    from nasforge.spaces import make_space

    LatencyTable.load(target).check(make_space("nb201", C=4, N=1), (1, 8, 8), "cpu")  # built for space.C/N
    code, _, err = cli("latency", "--set", "preset=imagenet", "--out", tmp_path / "x.json")
    assert_one_line_error(code, err, "space.preset=imagenet")
    code, _, err = cli("latency", "--set", "latency.repeats=0", "--out", tmp_path / "x.json")
    assert_one_line_error(code, err, "latency.repeats=0")
    assert not (tmp_path / "x.json").exists()
