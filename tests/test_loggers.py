"""Standard loggers: CSV files and TensorBoard event files written from the store, read back."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from nasforge.errors import ConfigError
from nasforge.loggers import check_loggers
from test_cli import run_main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ("--data", "synthetic", "--set", "strategy.epochs=2", "--set", "train.epochs=2", "-q")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_search_writes_csv_and_readable_tensorboard_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert run_main("search", *TINY, "--logger", "csv", "--logger", "tensorboard", "--out", out) == 0
    search, train = _rows(out / "logs" / "search.csv"), _rows(out / "logs" / "train.csv")
    assert [r["epoch"] for r in search] == ["0", "1"] and len(train) == 2
    assert {"train_loss", "valid_acc", "tau", "arch"} <= set(search[0]) and float(search[1]["tau"]) == 0.1
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    assert {"search/train_loss", "search/valid_acc", "search/tau", "train/train_loss"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("search/train_loss")] == [0, 1]
    assert events.Scalars("search/tau")[-1].value == pytest.approx(0.1)
    assert {"search/arch_weights/normal", "search/arch_weights/reduce"} <= set(tags["histograms"])
    assert "search/arch_weights/normal" in tags["images"]
    assert any(t.startswith("search/arch") for t in tags["tensors"])  # the derived arch as text


def test_trials_are_logged(tmp_path):
    out = tmp_path / "run"
    assert run_main("search", "--data", "synthetic", "--space", "nb201", "--strategy", "evolution", "--evaluator",
                    "synthetic", "--trials", "5", "--set", "train.epochs=1", "--logger", "csv", "--out", out,
                    "-q") == 0
    trials = _rows(out / "logs" / "trials.csv")
    assert [r["index"] for r in trials] == [str(i) for i in range(5)] and all(r["objective"] for r in trials)


def test_bad_loggers_fail_before_the_run(tmp_path, capsys, monkeypatch):
    assert run_main("search", *TINY, "--logger", "wandb", "--out", tmp_path / "a") == 2
    assert "unknown logger 'wandb'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install 'nasforge\[tensorboard\]'"):
        check_loggers(["tensorboard"])


def test_a_search_logs_an_mlflow_run_read_back_with_the_client(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in to its file store
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "run"
    assert run_main("search", *TINY, "--logger", "mlflow", "--set", f"logging.mlflow_uri={uri}",
                    "--set", "logging.mlflow_experiment=tiny", "--out", out) == 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["strategy.name"] == "gdas" and params["train.epochs"] == "2" and params["data.name"] == "synthetic"
    history = client.get_metric_history(run.info.run_id, "search/train_loss")
    assert sorted(m.step for m in history) == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/train_loss")] == [0, 1]
    tau = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "search/tau")}
    assert tau[1] == pytest.approx(0.1)
    result = json.loads((out / "result.json").read_text())
    assert run.data.metrics["final/test_acc"] == pytest.approx(result["test_acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"arch", "arch.json", "result.json"} <= artifacts
    derived = json.loads(client.download_artifacts(run.info.run_id, "arch/search.json", str(tmp_path / "dl")) and
                         (tmp_path / "dl" / "search.json").read_text())
    assert derived["epoch"] == 1 and derived["choices"] == json.loads((out / "arch.json").read_text())["choices"]
    assert run_main("resume", out, "-q") == 0  # a resumed run continues its MLflow run, it starts no other
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"


def test_bad_mlflow_logger(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"pip install 'nasforge\[mlflow\]'"):
        check_loggers(["csv", "mlflow"])
