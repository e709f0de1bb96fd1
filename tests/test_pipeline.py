"""The main job end to end: search -> train -> measure -> save, interrupted and resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from nasforge.experiment import Experiment
from nasforge.pipeline import config_dict, resolve_config, run_experiment
from nasforge.progress import Progress, Task
from nasforge.training import Engine
from nasforge.utils import environment_info


class _StopAfter(Progress):
    """A progress sink that raises KeyboardInterrupt after ``n`` steps of the named phase (a Ctrl-C)."""

    def __init__(self, phase: str, n: int):
        self.phase, self.n = phase, n

    @contextmanager
    def task(self, description, total, completed=0):
        outer = self

        class _T(Task):
            count = 0

            def advance(self, n=1, **fields):
                if description.startswith(outer.phase):
                    _T.count += n
                    if _T.count >= outer.n:
                        raise KeyboardInterrupt

        yield _T()


def _cfg():
    return resolve_config({"seed": 5, "data": {"name": "synthetic"},
                           "strategy": {"epochs": 2, "batch_size": 32}, "train": {"epochs": 3}})


@pytest.mark.parametrize("phase,steps", [("search", 9), ("train", 20)])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, phase, steps):
    cfg = _cfg()
    full = run_experiment(Experiment.create(tmp_path / "full", config_dict(cfg)), cfg)

    exp = Experiment.create(tmp_path / "cut", config_dict(cfg))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, cfg, _StopAfter(phase, steps))
    assert not (exp.path / "result.json").exists()
    exp.close()
    # resume reads the config back from the directory, as `nasforge resume` does
    again = Experiment.open(tmp_path / "cut")
    resumed = run_experiment(again, resolve_config(again.read_config()))

    assert resumed["arch"] == full["arch"]
    assert resumed["test_acc"] == full["test_acc"]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["epoch"] for e in again.store.epochs("train")] == [0, 1, 2]


def test_finished_run_is_not_recomputed(tmp_path):
    cfg = _cfg()
    exp = Experiment.create(tmp_path / "run", config_dict(cfg))
    first = run_experiment(exp, cfg)
    second = run_experiment(Experiment.open(tmp_path / "run"), cfg, _StopAfter("", 1))  # would raise if it trained
    assert first == second
    # what it ran with: in result.json and in the store
    device = str(Engine(cfg.engine).device)  # the run's device ("cpu" here; the GPU where there is one)
    assert first["versions"] == environment_info(device) == exp.store.get_meta("versions")


@pytest.mark.slow
def test_main_job_on_digits(tmp_path):
    """`nasforge search` with no arguments: GDAS on digits, then final training: >= 95% test accuracy."""
    out = tmp_path / "main"
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "search", "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["test_acc"] >= 0.95, result["test_acc"]
    assert result["strategy"] == "gdas" and result["dataset"].startswith("digits")
    assert result["params"] > 0 and result["flops"] > 0 and result["latency"]["median_ms"] > 0
    for name in ("config.yaml", "store.sqlite", "arch.json", "model.pt", "result.json"):
        assert (out / name).is_file()
    assert "test accuracy" in proc.stdout


def test_metaqnn_schedule_follows_the_trial_budget_unless_set():
    from nasforge.pipeline import resolve_config

    base = {"space": {"name": "layers"}, "strategy": {"name": "metaqnn"}}
    assert resolve_config({**base, "trials": {"max_trials": 37}}).strategy["trials"] == 37
    pinned = {"space": {"name": "layers"}, "strategy": {"name": "metaqnn", "trials": 5}, "trials": {"max_trials": 37}}
    assert resolve_config(pinned).strategy["trials"] == 5


def test_a_missing_latency_table_is_refused_before_the_run_starts(tmp_path):
    import pytest

    from nasforge.errors import ConfigError
    from nasforge.pipeline import resolve_config

    raw = {"space": {"name": "mbconv"}, "strategy": {"name": "proxyless"}, "latency": {"table": str(tmp_path / "no.json")}}
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(raw)
