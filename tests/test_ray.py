"""The Ray runner: trials as Ray tasks on a local 2-CPU Ray; killed workers; addresses that do not answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from nasforge.errors import ConfigError  # noqa: E402
from nasforge.evaluators.synthetic import SyntheticTable  # noqa: E402
from nasforge.experiment import Experiment  # noqa: E402
from nasforge.runners.local import LocalRunner  # noqa: E402
from nasforge.runners.ray import RayRunner, check_address  # noqa: E402
from nasforge.spaces import make_space  # noqa: E402
from nasforge.strategies import make_strategy  # noqa: E402
from nasforge.trials import Budget, run_trials  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the whole module (started once: it takes seconds)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class DiesOnce:
    """A synthetic table whose worker process dies (hard exit) the first time it meets ``victim``."""

    def __init__(self, table, victim_hash: str, marker: str):
        self.table, self.victim, self.marker = table, victim_hash, marker

    def __call__(self, arch):
        if arch.hash == self.victim and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker is gone mid-trial, as if killed
        return self.table(arch)


def _search(space, evaluator, runner, exp=None):
    return run_trials(make_strategy("evolution", {"population": 4, "sample_size": 2}), space, evaluator,
                      Budget(trials=12), experiment=exp, runner=runner, seed=7)


def test_ray_runs_trials_on_two_workers_like_the_local_runner(local_ray, tmp_path):
    space = make_space("darts", nodes=2)
    table = SyntheticTable(space)
    exp = Experiment.create(tmp_path / "ray", {})
    with RayRunner(table, workers=2) as runner:
        on_ray = _search(space, table, runner, exp)
    local = _search(space, table, LocalRunner(table, workers=2))
    rows = exp.store.trials()
    assert [r["arch_hash"] for r in rows] == [h["arch_hash"] for h in local.history]
    assert [r["metrics"] for r in rows] == [h["metrics"] for h in local.history]
    assert on_ray.arch == local.arch and all(r["status"] == "done" for r in rows)
    workers = {r["worker"] for r in rows if r["duplicate_of"] is None}
    assert str(os.getpid()) not in {w.split(":")[-1] for w in workers}  # evaluated in Ray worker processes


def test_ray_passes_each_trials_fidelity_to_its_worker(local_ray, tmp_path):
    space = make_space("darts", nodes=2)
    table = SyntheticTable(space)
    with RayRunner(table, workers=2) as runner:
        on_ray = run_trials(make_strategy("hyperband"), space, table, Budget(trials=17), runner=runner, seed=3)
    local = run_trials(make_strategy("hyperband"), space, table, Budget(trials=17), seed=3,
                       runner=LocalRunner(table, workers=2))
    assert [(h["fidelity"], h["metrics"]) for h in on_ray.history] == \
        [(h["fidelity"], h["metrics"]) for h in local.history]
    assert [h["fidelity"] for h in on_ray.history] == [1] * 9 + [4] * 3 + [12] + [4] * 3 + [12]


def test_a_killed_worker_is_retried_never_lost_or_counted_twice(local_ray, tmp_path):
    space = make_space("darts", nodes=2)
    table = SyntheticTable(space)
    reference = _search(space, table, LocalRunner(table, workers=2))
    victim = reference.history[5]["arch_hash"]
    marker = tmp_path / "died"
    dies = DiesOnce(table, victim, str(marker))
    exp = Experiment.create(tmp_path / "run", {})
    # max_retries=0: Ray itself does not retry, so the runner must submit the task again
    with RayRunner(dies, workers=2, max_retries=0) as runner:
        result = _search(space, dies, runner, exp)
    assert marker.exists()  # a worker really died on that trial
    rows = exp.store.trials()
    assert len(rows) == 12 and [r["index"] for r in rows] == list(range(12))
    assert all(r["status"] == "done" for r in rows)
    assert [r["arch_hash"] for r in rows] == [h["arch_hash"] for h in reference.history]
    assert result.arch == reference.arch


def test_a_ray_address_that_does_not_answer_is_a_config_error():
    tic = time.time()
    with pytest.raises(ConfigError, match="does not answer"):
        check_address("127.0.0.1:9", timeout=2.0)
    with pytest.raises(ConfigError, match="malformed"):
        check_address("nohost", timeout=2.0)
    assert time.time() - tic < 10


def test_cli_ray_bad_address_is_one_line_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "search", "--strategy", "random", "--runner", "ray",
                           "--address", "127.0.0.1:9", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: Ray address 127.0.0.1:9 does not answer")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_search_on_an_existing_ray_cluster(local_ray, tmp_path):
    """`nasforge search --runner ray --address ...`: the trials run on this module's Ray cluster."""
    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "search", "--space", "darts", "--strategy",
                           "evolution", "--evaluator", "synthetic", "--trials", "6", "--data", "synthetic",
                           "--runner", "ray", "--address", address, "--workers", "2", "--set", "train.epochs=1",
                           "--out", str(out), "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["search_trials"] == 6 and result["search_info"]["runner"] == "ray"


_DRIVER = """
import os, sys, time
from nasforge.arch import Arch
from nasforge.runners.ray import RayRunner, _children
from nasforge.spaces import make_space
import numpy as np

def busy(arch, **kwargs):
    started = time.time()
    while time.time() - started < 300:  # a trial in progress when the driver is killed
        sum(range(10000))
    return {"objective": 0.0}

runner = RayRunner(busy, workers=1)
runner.submit(0, make_space("nb201").sample(np.random.default_rng(0)), 0)
time.sleep(8)  # the task's worker is up
print(" ".join(map(str, [runner._watchdog.pid] + _children(os.getpid()))), flush=True)
time.sleep(600)
"""


def _tree(roots: list[int]) -> set[int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parents[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += [child for child, parent in parents.items() if parent == pid]
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")
def test_a_killed_driver_leaves_no_ray_processes():
    """kill -9 of a driver whose local Ray runs a trial: the watchdog ends every process of that Ray
    (without it, Ray's agent processes outlive the driver)."""
    import signal

    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        line = driver.stdout.readline()
        pids = sorted(_tree([int(p) for p in line.split()]))
        assert len(pids) >= 4, line  # the watchdog, Ray's processes, the trial's worker

        def alive(pid: int) -> bool:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        assert all(alive(p) for p in pids)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.5)
        assert not [p for p in pids if alive(p)], "Ray processes outlived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()
