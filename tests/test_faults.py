"""Fault injection: kills, two writers, read-only and full disks, corrupt stores, wrong checkpoints,
a strategy that never stops repeating itself, hostile configs and usage errors.

Every fault must end in one of two ways: a result identical to an uninterrupted run (after
``nasforge resume``), or one ``error:`` line naming the problem and the fix, with no traceback
and nothing half-written. The tiniest runs are used (synthetic data, the synthetic evaluator,
one training epoch), so the whole module takes well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge.arch import Arch
from nasforge.config import read_yaml
from nasforge.errors import ConfigError, DataError, ExperimentError
from nasforge.evaluators.synthetic import SyntheticTable
from nasforge.experiment import Experiment, Store
from nasforge.lock import RunLock
from nasforge.spaces import OpChoice, SearchSpace
from nasforge.strategies import SampleStrategy
from nasforge.trials import Budget, TrialsConfig, run_trials
from test_cli import ANSI, _env, assert_one_line_error, run_main

#: the tiniest full run: 8 trials of random search on NAS-Bench-201 cells scored by the synthetic
#: table, then one epoch of training on the synthetic data and a one-call latency measurement
RUN = ("search", "--data", "synthetic", "--space", "nb201", "--strategy", "random", "--evaluator", "synthetic",
       "--trials", "8", "--set", "train.epochs=1", "--set", "latency.repeats=1", "--set", "latency.warmup=0", "-q")

#: run ``nasforge ARGS`` in a subprocess that kills itself (SIGKILL) at the Nth ``os.replace`` onto a file
#: named SUFFIX, before the replace (leaving the temporary file) or after it
KILLER = r"""
import os, signal, sys
suffix, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    hit = str(dst).endswith(suffix)
    if hit:
        seen[0] += 1
    if hit and seen[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    out = real(src, dst, *args, **kwargs)
    if hit and seen[0] == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return out
os.replace = replace
sys.argv = ["nasforge", *sys.argv[4:]]
from nasforge.cli import main
main()
"""

#: hold a run's lock until killed; prints "locked" once it holds it
HOLDER = r"""
import sys, time
from nasforge.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` -> (exit code, stdout, stderr) of an in-process ``nasforge`` call (one torch thread)."""

    def call(*args):
        capsys.readouterr()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            code = run_main(*args)
        finally:
            torch.set_num_threads(threads)
        out, err = capsys.readouterr()
        return code, ANSI.sub("", out), ANSI.sub("", err)

    return call


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted tiny run: what every killed and resumed run must reproduce."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_main(*RUN, "--out", out) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def _unfinished(run: Path) -> Path:
    """``run`` as if killed during its search: the search checkpoint and trials kept, the rest gone."""
    for name in ("arch.json", "model.pt", "result.json"):
        (run / name).unlink(missing_ok=True)
    (run / "checkpoints" / "train.pt").unlink(missing_ok=True)
    return run


def _outcome(run: Path) -> dict:
    """What must be identical between a resumed run and an uninterrupted one."""
    store = Store(run / "store.sqlite", readonly=True)
    try:
        trials = [(t["index"], t["arch_hash"], t["status"], t["metrics"], t["duplicate_of"]) for t in store.trials()]
    finally:
        store.close()
    result = json.loads((run / "result.json").read_text())
    return {"arch": json.loads((run / "arch.json").read_text()), "trials": trials,
            "test_acc": result["test_acc"], "params": result["params"]}


# --------------------------------------------------------------------------- kill -9, then resume
@pytest.mark.parametrize("suffix,nth,when", [("search.pt", 3, "before"), ("search.pt", 6, "after")])
def test_kill_9_then_resume_gives_the_uninterrupted_result(cli, reference, tmp_path, suffix, nth, when):
    run = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, suffix, str(nth), when, *RUN, "--out", str(run)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (run / "result.json").exists()
    leftovers = list((run / "checkpoints").glob(".*.tmp"))
    assert bool(leftovers) == (when == "before")  # a kill inside an atomic write leaves only a temporary
    code, _, err = cli("resume", run, "-q")
    assert code == 0, err
    assert not list(run.rglob(".*.tmp"))  # resume removed them
    assert _outcome(run) == _outcome(reference)


# --------------------------------------------------------------------------- one writer per run
def test_a_second_writer_is_refused_with_the_holders_pid_and_host(cli, reference, tmp_path):
    run = _copy(reference, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()  # (readers share the WAL index: -shm)
              if p.name != ".lock" and not p.name.endswith(("-shm", "-wal"))}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (("resume", run), (*RUN, "--out", run, "--force")):
            code, _, err = cli(*args)
            assert_one_line_error(code, err, f"PID {holder.pid}", socket.gethostname(), "in use")
        with pytest.raises(ExperimentError, match=f"PID {holder.pid}"):
            Experiment.open(run, lock=True)
        # readers never need the lock
        code, out, err = cli("report", run)
        assert code == 0, err
    finally:
        holder.kill()  # kill -9: the OS drops the lock with the process
        holder.wait()
    assert {name: (run / name).stat().st_mtime_ns for name in before} == before  # nothing of the run was touched
    with RunLock(run):  # released on crash; the stale .lock file blocks nothing
        pass
    assert (run / ".lock").read_text().split()[0] == str(os.getpid())


def test_force_replaces_a_run_but_never_another_directory(cli, tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"\xff\xd8 not a run")
    code, _, err = cli(*RUN, "--out", mine, "--force")
    assert_one_line_error(code, err, str(mine), "not a nasforge run")
    assert (mine / "holiday.jpg").read_bytes() == b"\xff\xd8 not a run"
    run = tmp_path / "run"
    exp = Experiment.create(run, {"seed": 0}, lock=True)
    (run / "stale.txt").write_text("old")
    exp.close()
    exp = Experiment.create(run, {"seed": 1}, force=True, lock=True)  # a run: replaced
    try:
        assert not (run / "stale.txt").exists() and read_yaml(run / "config.yaml") == {"seed": 1}
    finally:
        exp.close()


# --------------------------------------------------------------------------- disk faults
def _mount_tmpfs(path: Path, size: str, readonly: bool = False) -> bool:
    """Mount a small tmpfs at ``path`` when this process may (root in a container that allows it)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    """Unmount; lazily when a file there is still open (an in-process run's store), so no mount outlives the test."""
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write: chmod 555 for a user, a read-only tmpfs for root (else skip)."""
    path = tmp_path / "ro"
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if not _mount_tmpfs(path, "1m", readonly=True):
        pytest.skip("running as root without permission to mount a read-only filesystem")
    yield path
    _umount(path)


def test_read_only_out_is_refused_before_anything_runs(cli, read_only_dir):
    code, _, err = cli(*RUN, "--out", read_only_dir / "run")
    assert_one_line_error(code, err, "read-only")
    code, _, err = cli("latency", "--space", "nb201", "--out", read_only_dir / "t.json", "-q")
    assert_one_line_error(code, err, "read-only")


def test_a_run_on_a_read_only_filesystem(cli, reference, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only filesystem (a chmod-ed directory is tested above)")
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "16m"):
        pytest.skip("this container does not allow mounting a filesystem")
    try:
        run = _copy(reference, ro, "run")
        assert subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True).returncode == 0
        code, _, err = cli("resume", run)
        assert_one_line_error(code, err, "read-only")
        store = Store(run / "store.sqlite", readonly=True)  # readers still read it
        assert len(store.trials()) == 8
        store.close()
        code, _, err = cli("report", run)
        assert_one_line_error(code, err, "read-only")
    finally:
        _umount(ro)


def test_a_full_disk_is_one_line_naming_the_directory(cli, reference, tmp_path):
    if not _mount_tmpfs(tmp_path / "small", "10m"):
        pytest.skip("needs root and permission to mount a small filesystem")
    small = tmp_path / "small"
    try:
        run = _unfinished(_copy(reference, small, "run"))
        (run / "checkpoints" / "search.pt").unlink()
        code, _, err = cli(*RUN, "--out", small / "new")  # a new run is refused before it starts
        assert_one_line_error(code, err, "no space left on", str(small))
        free = shutil.disk_usage(small).free
        (small / "filler").write_bytes(b"\0" * max(0, free - 4096))
        code, _, err = cli("resume", run)
        assert_one_line_error(code, err, "no space left on", str(small))
        assert "inline_container" not in err
    finally:
        _umount(small)


def test_torch_full_disk_message_is_translated(tmp_path, monkeypatch):
    """Where no small filesystem can be mounted: torch's inline_container error with no free space left."""
    import nasforge.utils as utils

    def failing_save(obj, path):
        Path(path).write_bytes(b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    exp = Experiment.create(tmp_path / "run", {})
    monkeypatch.setattr(utils.torch, "save", failing_save)
    monkeypatch.setattr(utils, "free_bytes", lambda path: 0)
    with pytest.raises(ExperimentError, match=r"no space left on .*run/checkpoints, about 1 MB needed"):
        exp.save_checkpoint("search", {"x": 1})
    assert not list((tmp_path / "run" / "checkpoints").iterdir())  # no partial file left
    monkeypatch.setattr(utils, "free_bytes", lambda path: 10**12)  # plenty of space: a real bug, kept as is
    with pytest.raises(RuntimeError, match="inline_container"):
        exp.save_checkpoint("search", {"x": 1})
    exp.close()


# --------------------------------------------------------------------------- damaged runs
def test_corrupt_or_truncated_store_says_so_and_how_to_recover(cli, reference, tmp_path):
    run = _unfinished(_copy(reference, tmp_path))
    (run / "store.sqlite-wal").unlink(missing_ok=True)
    (run / "store.sqlite-shm").unlink(missing_ok=True)
    data = (run / "store.sqlite").read_bytes()
    (run / "store.sqlite").write_bytes(b"garbage " * 64 + data[512:2048])
    code, _, err = cli("resume", run)
    assert_one_line_error(code, err, "store", "corrupt", "checkpoints are intact", "nasforge resume")
    code, _, err = cli("report", run)
    assert_one_line_error(code, err, "corrupt")


def test_a_locked_store_waits_then_names_the_holder(cli, reference, tmp_path, monkeypatch):
    import nasforge.experiment

    monkeypatch.setattr(nasforge.experiment, "STORE_TIMEOUT", 0.3)
    run = _unfinished(_copy(reference, tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], "
                               "isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); "
                               "time.sleep(60)", str(run / "store.sqlite")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        tic = time.time()
        code, _, err = cli("resume", run)
        assert time.time() - tic < 20
        line = assert_one_line_error(code, err, "store", "locked", "waited 0.3 s")
        if Path("/proc/locks").exists():
            assert str(holder.pid) in line
    finally:
        holder.kill()
        holder.wait()


def test_a_checkpoint_of_the_wrong_kind_is_refused(cli, reference, tmp_path):
    run = _unfinished(_copy(reference, tmp_path))
    search = run / "checkpoints" / "search.pt"
    torch.save({"epoch": 3, "model": {}, "alphas": [],
                "written_by": {"checkpoint": "search", "run": "search", "strategy": "darts", "space": "darts"}}, search)
    code, _, err = cli("resume", run)
    assert_one_line_error(code, err, str(search), "another kind of run", "strategy=darts", "strategy=random")
    torch.save([1, 2, 3], search)
    code, _, err = cli("resume", run)
    assert_one_line_error(code, err, "not a nasforge checkpoint")
    search.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = cli("resume", run)
    assert_one_line_error(code, err, "corrupt")


# --------------------------------------------------------------------------- budgets that end
class _TinySpace(SearchSpace):
    name = "tiny"

    def choices(self):
        return {f"c{i}": OpChoice(f"c{i}", ("a", "b", "c")) for i in range(4)}


class _SameArch(SampleStrategy):
    """The pathological strategy: always proposes the same architecture."""

    name = "same"
    batch = 1

    def setup(self, space, seed):
        self.n = 0

    def ask(self):
        self.n += 1
        return Arch("tiny", {f"c{i}": "a" for i in range(4)})

    def tell(self, arch, metrics):
        pass

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def _alarm(seconds: int):
    def fail(*_):
        raise AssertionError(f"the search did not end within {seconds} s")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


@pytest.mark.parametrize("budget", [
    Budget(sim_seconds=1e6),                                   # free repeats never spend it
    Budget(seconds=3600.0),                                    # nor an hour of wall time
    Budget(sim_seconds=1e6, seconds=3600.0, max_repeats=7),
    Budget(sim_seconds=300.0, charge_repeats=True, max_repeats=None),  # charged: the budget itself ends it
    Budget(trials=50),
])
def test_a_strategy_that_repeats_itself_forever_ends(tmp_path, budget):
    space = _TinySpace()
    exp = Experiment.create(tmp_path / "run", {})
    _alarm(30)
    try:
        result = run_trials(_SameArch(), space, SyntheticTable(space), budget, experiment=exp)
    finally:
        signal.alarm(0)
        exp.close()
    rows = len(result.history)
    if budget.trials:
        assert rows == 50
    elif budget.charge_repeats:
        # a hard budget: spent up to the trial that would end past it (recorded, not counted)
        assert 300.0 - result.history[-1]["metrics"]["train_seconds"] < result.info["sim_seconds"] <= 300.0
        assert result.history[-1]["over_budget"] and "stopped" not in result.info
    else:
        assert rows == (budget.max_repeats or 0) + 1
        assert "in a row" in result.info["stopped"]


def test_repeats_options_are_checked_and_reach_the_budget():
    budget = TrialsConfig(max_sim_seconds=100.0, repeats="charge", max_repeats=5).budget()
    assert budget.charge_repeats and budget.max_repeats == 5
    with pytest.raises(ConfigError):
        Budget(trials=3, max_repeats=0)


# --------------------------------------------------------------------------- hostile inputs
def test_yaml_alias_bomb_is_refused_fast(cli, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb.write_text("\n".join(lines) + "\ntrain: {lr: *a8}\n")
    assert bomb.stat().st_size < 2000
    tic = time.time()
    code, _, err = cli(*RUN, "--config", bomb, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "alias", "bomb.yaml")
    assert time.time() - tic < 5 and len(err) < 600 and not (tmp_path / "out").exists()
    code, _, err = cli(*RUN, "--set", "train.lr=[&x [1, 2], *x, *x]", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "alias")
    big = tmp_path / "big.yaml"
    big.write_text("seed: 0\n" + "#" * 1_100_000 + "\n")
    with pytest.raises(ConfigError, match="MB"):
        read_yaml(big)


def test_the_error_line_is_capped(cli, tmp_path):
    code, _, err = cli(*RUN, "--set", "space.name=" + "x" * 20000, "--out", tmp_path / "out")
    line = assert_one_line_error(code, err, "more characters")
    assert len(line) <= 520


@pytest.mark.parametrize("args,needle", [
    (("search", "--epochs", "nan"), "--epochs"),
    (("search", "--no-such-option"), "--no-such-option"),
    (("serach",), "serach"),
    (("train",), "ARCH_JSON"),
])
def test_usage_errors_are_one_error_line(cli, args, needle):
    code, _, err = cli(*args)
    line = assert_one_line_error(code, err, "--help")
    assert code == 2 and needle.lower() in line.lower()


def test_ctrl_c_before_the_run_exits_130(cli, tmp_path, monkeypatch):
    import nasforge.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nasforge.pipeline, "load_data", interrupted)
    code, _, err = cli(*RUN, "--out", tmp_path / "out")
    assert code == 130 and "Traceback" not in err and "interrupted" in err


def test_empty_test_split_and_data_dir_of_a_builtin_dataset(cli, tmp_path):
    from nasforge.data import load_dataset

    npz = tmp_path / "cifar.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=np.zeros((0, 32, 32, 3), np.uint8), y_test=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="no test images"):
        load_dataset("cifar10", npz)
    for name in ("digits", "synthetic"):
        code, _, err = cli("search", "--data", name, "--data-dir", tmp_path, "--out", tmp_path / "out")
        assert_one_line_error(code, err, "takes no --data-dir")
    assert not (tmp_path / "out").exists()


def test_out_paths_of_latency_and_export(cli, reference, tmp_path):
    code, _, err = cli("latency", "--space", "nb201", "--out", tmp_path, "-q")
    assert_one_line_error(code, err, "is a directory")
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = cli("export", reference, "--format", "json", "--out", afile)
    assert_one_line_error(code, err, "is a file")
    code, _, err = cli("search", "--data", "synthetic", "--out", afile / "run")
    assert_one_line_error(code, err, "is a file")
    assert afile.read_text() == "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_latency_without_cuda_fails_before_the_run(cli, tmp_path):
    tic = time.time()
    code, _, err = cli(*RUN, "--set", "latency.device=cuda", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "latency.device", "CUDA")
    assert not (tmp_path / "out").exists() and time.time() - tic < 10  # not after the search and training
