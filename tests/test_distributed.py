"""Data-parallel one-shot search on torch.distributed (gloo, 2 processes on the CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasforge import distributed
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment

HERE = Path(__file__).resolve().parent
# first-order DARTS on the synthetic task, 3 steps of a global batch of 16 per epoch
SEARCH = ["search", "--strategy", "darts", "--data", "synthetic", "--set", "strategy.layers=3",
          "--set", "strategy.channels=4", "--set", "strategy.batch_size=16", "--set", "data.valid_fraction=0.8",
          "--set", "train.epochs=1", "--set", "train.layers=2", "--set", "train.channels=4",
          "--set", "engine.bn_recalibration=2", "-q"]


def _nasforge(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nasforge", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "search.pt", map_location="cpu", weights_only=False)


def _assert_same_search(a: Path, b: Path, atol: float = 1e-6) -> None:
    sa, sb = _state(a), _state(b)
    for x, y in zip(sa["alphas"], sb["alphas"]):
        assert torch.allclose(x, y, atol=atol, rtol=0), (x - y).abs().max()
    for key, value in sa["model"].items():
        assert torch.allclose(value.float(), sb["model"][key].float(), atol=atol, rtol=10 * atol), key
    assert json.loads((a / "arch.json").read_text()) == json.loads((b / "arch.json").read_text())


def _one_rank(tmp_path_factory, epochs: int) -> Path:
    out = tmp_path_factory.mktemp("dist") / f"one{epochs}"
    res = _nasforge(*SEARCH, "--epochs", str(epochs), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    """An uninterrupted one-process search of one epoch (3 steps)."""
    return _one_rank(tmp_path_factory, 1)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_rank_on_the_whole_batch(one_rank: Path, tmp_path: Path) -> None:
    """2 ranks with 8 images each = 1 rank with 16: architecture gradients and weight updates of first-order
    DARTS agree to float tolerance with BatchNorm statistics synchronised; the same genotype results."""
    out = tmp_path / "two"
    res = _nasforge(*SEARCH, "--epochs", "1", "--nproc", "2", "--set", "engine.sync_bn=true", "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    _assert_same_search(one_rank, out)
    # rank 0 alone wrote: one row per epoch, one result
    exp = Experiment.open(out)
    assert [e["epoch"] for e in exp.store.epochs("search")] == [0]
    assert [e["epoch"] for e in exp.store.epochs("train")] == [0]  # the final training ran data-parallel too
    exp.close()
    assert json.loads((out / "result.json").read_text())["search_epochs"] == 1


def _epochs(run: Path) -> list[int]:
    exp = Experiment.open(run)
    try:
        return [e["epoch"] for e in exp.store.epochs("search")]
    finally:
        exp.close()


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_and_it_resumes_in_one_process(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          str(HERE / "dist_kill_rank.py"), *SEARCH, "--epochs", "2", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode != 0
    # epoch 0 is checkpointed (every rank waits for the checkpoint before going on); rank 1 died as epoch 1 began
    assert _state(out)["epoch"] == 0 and _epochs(out) == [0]
    assert not (out / "arch.json").exists()
    resumed = _nasforge("resume", str(out), "-q")  # the distributed run, continued in one process
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _epochs(out) == [0, 1] and (out / "arch.json").exists() and (out / "model.pt").exists()


@pytest.mark.slow
def test_a_one_process_run_resumes_on_two_ranks_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "grow"
    # one process, killed as its epoch 1 starts (the wrapper's kill reads RANK; no WORLD_SIZE: one process)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "1"}
    res = subprocess.run([sys.executable, str(HERE / "dist_kill_rank.py"), *SEARCH, "--epochs", "2",
                          "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode != 0 and _state(out)["epoch"] == 0
    before = _state(out)["alphas"]
    resumed = _nasforge("resume", str(out), "--nproc", "2", "-q")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert _epochs(out) == [0, 1] and (out / "model.pt").exists()
    after = _state(out)["alphas"]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # epoch 1 ran on the two ranks


# --------------------------------------------------------------------------- bad input


def test_nproc_beyond_the_machine_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="more than the"):
        distributed.check_nproc(10_000, "cpu")
    res = _nasforge(*SEARCH, "--nproc", "10000", "--out", str(tmp_path / "x"), timeout=120)
    assert res.returncode == 2 and "error: --nproc 10000 is more than" in res.stderr + res.stdout
    assert not (tmp_path / "x").exists()


def test_nproc_with_ray_is_refused(tmp_path: Path) -> None:
    res = _nasforge("search", "--strategy", "random", "--nproc", "2", "--runner", "ray", "--out",
                    str(tmp_path / "x"), timeout=120)
    assert res.returncode == 2 and "use one of them" in res.stderr + res.stdout


def test_an_unreachable_rendezvous_fails_in_one_line_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tic = time.time()
    res = _nasforge(*SEARCH, "--out", str(tmp_path / "x"), timeout=120,
                    env={"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                         "MASTER_PORT": str(port), "NASFORGE_DIST_TIMEOUT": "3"})
    err = res.stderr.strip().splitlines()
    assert res.returncode != 0 and err and err[-1].startswith("error: rank 1 of 2 could not join")
    assert time.time() - tic < 90
    assert not (tmp_path / "x").exists()


def test_trials_do_not_run_under_torchrun() -> None:
    from types import SimpleNamespace

    from nasforge.cli import _check_distributed

    with pytest.raises(ConfigError, match="--runner ray"):
        _check_distributed(SimpleNamespace(strategy={"name": "evolution"}))
    _check_distributed(SimpleNamespace(strategy={"name": "gdas"}))


def test_a_rank_takes_its_slice_of_every_batch() -> None:
    from nasforge.data import synthetic_dataset

    data = synthetic_dataset(num_samples=200, seed=0)
    whole = data.loader(data.train, 10).requests(seed=3)
    parts = [data.loader(data.train, 10, shard=(r, 2)).requests(seed=3) for r in (0, 1)]
    for b, (pos, _) in enumerate(whole):
        assert list(pos) == list(parts[0][b][0]) + list(parts[1][b][0])
        assert len(parts[0][b][0]) == len(parts[1][b][0]) == 5
    assert parts[0][0][1] != parts[1][0][1]  # each rank augments its slice from its own seed


def test_gpus_per_trial_without_gpus_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = _nasforge("search", "--strategy", "random", "--space", "nb201", "--runner", "ray", "--gpus-per-trial", "1",
                    "--out", str(tmp_path / "x"), timeout=120)
    assert res.returncode == 2 and "--gpus-per-trial 1 but this machine has 0 GPU(s)" in res.stderr + res.stdout
    assert not (tmp_path / "x").exists()
