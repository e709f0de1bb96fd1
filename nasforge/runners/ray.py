"""The Ray runner: each trial a Ray task, ``workers`` at a time (``pip install 'nasforge[ray]'``).

Without ``address`` a local Ray is started with ``workers`` CPUs (and shut down at the
end); with one, the runner joins that cluster (``auto``, ``HOST:PORT`` or
``ray://HOST:PORT``; nasforge must be installed on its nodes). An address that does not
answer within ``connect_timeout`` seconds is a ``ConfigError``. If Ray is already
initialised in this process, that Ray is used and left running.

The evaluator is put in Ray's object store once; each task evaluates one architecture
and returns an ``Outcome`` (failures of the trial itself are caught inside the task, so
they are recorded, not retried). A task whose *worker* died (killed, out of memory) is
retried by Ray up to ``max_retries`` times; if Ray gives up, the runner submits it again
(``RESUBMITS`` more times) before recording the trial as failed. Results go back to the
driver, which alone writes the store, so a retried trial is recorded once.

A local Ray started by the runner is shut down by ``close``. If the driver dies without
closing (``kill -9``), a small watchdog process (Linux) ends that Ray's processes and their
children: it is started right after ``ray.init`` with the PIDs Ray spawned, keeps track of
their descendants (agents, workers) while polling the driver and, once the driver is gone,
terminates them all (``SIGTERM``, then ``SIGKILL``; a PID is matched with its start time, so
a reused PID is never touched).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
from typing import Any, Callable
from urllib.parse import urlparse

from nasforge.arch import Arch
from nasforge.errors import ConfigError
from nasforge.runners import Outcome, Runner, evaluate_trial

log = logging.getLogger(__name__)

#: Times the runner submits a trial again after Ray gave up on it because its worker died.
RESUBMITS = 2


def _ray_trial(evaluator: Callable[..., dict[str, Any]], index: int, arch: dict[str, Any], seed: int,
               fidelity: int | None = None) -> Outcome:
    """The body of one Ray task (module level, so workers import it by name)."""
    return evaluate_trial(evaluator, index, Arch.from_dict(arch, validate=False), seed, fidelity)


#: The watchdog (run as ``python -c``): argv = driver PID, then the PIDs to end when the driver is gone.
_WATCHDOG = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the driver's group is the driver's to handle
driver, roots = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None

def alive(pid):
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"

def tree():
    # every descendant of the roots, as (pid, start time) so a reused pid is never touched
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat(int(name))
            if fields is not None:
                parents[int(name)] = (int(fields[1]), fields[19])
    out, todo = set(), [r for r in roots if r in parents]
    while todo:
        pid = todo.pop()
        if pid in parents and (pid, parents[pid][1]) not in out:
            out.add((pid, parents[pid][1]))
            todo += [child for child, (parent, _) in parents.items() if parent == pid]
    return out

known = tree()
while alive(driver):
    time.sleep(0.5)
    known |= tree()  # Ray's agents and workers appear after start; once the driver is gone they are orphans
known |= tree()
victims = {(pid, start) for pid, start in known if pid != os.getpid()}
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid, start in victims:
        fields = stat(pid)
        if fields is not None and fields[19] == start:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    deadline = time.time() + 3
    while sig == signal.SIGTERM and time.time() < deadline and any(alive(p) for p, _ in victims):
        time.sleep(0.2)
"""


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; empty where there is none)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def start_watchdog(before: set[int]) -> subprocess.Popen | None:
    """Watch this driver: the processes it spawned since ``before`` (a local Ray's) end if it dies unclosed."""
    if not sys.platform.startswith("linux"):
        return None
    spawned = sorted(set(_children(os.getpid())) - before)
    if not spawned:
        return None
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), *map(str, spawned)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--runner ray needs the optional 'ray' package; install it with "
                          "pip install 'nasforge[ray]' or use --runner local") from None
    return ray


def check_address(address: str, timeout: float) -> None:
    """Raise ``ConfigError`` unless a TCP connection to a ``HOST:PORT`` Ray address opens within ``timeout``."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"Ray address {address!r} is malformed; write it as HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"Ray address {address} does not answer ({reason}; waited up to {timeout:g} s); start the "
                          "cluster (ray start --head) or leave --address out to start a local Ray") from None


class RayRunner(Runner):
    """Trials as Ray tasks on a local Ray (``workers`` CPUs) or an existing cluster (``address``)."""

    name = "ray"

    def __init__(self, evaluator: Callable[..., dict[str, Any]], workers: int = 2, address: str | None = None,
                 max_retries: int = 3, connect_timeout: float = 15.0, cpus_per_trial: float = 1.0,
                 gpus_per_trial: float = 0.0):
        ray = self._ray = _import_ray()
        self.workers = max(1, int(workers))
        self._owned = False
        self._watchdog: subprocess.Popen | None = None
        self._refs: dict[Any, tuple[int, Arch, int, int | None, int]] = {}  # ref -> (index, arch, seed, fidelity, resubmits)
        if not ray.is_initialized():
            before = set(_children(os.getpid()))
            if address:
                check_address(address, connect_timeout)
            try:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
                else:
                    ray.init(num_cpus=max(1, math.ceil(self.workers * cpus_per_trial)), include_dashboard=False,
                             logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ConfigError(f"cannot start or join {where} ({first}); check --address or use "
                                  "--runner local") from None
            self._owned = True
            if not address:  # a Ray this driver started: ended even if the driver is killed
                self._watchdog = start_watchdog(before)
        if gpus_per_trial > 0:  # a trial that asks for a GPU the cluster lacks would wait forever
            have = float(ray.cluster_resources().get("GPU", 0.0))
            if have < gpus_per_trial:
                self.close()
                where = f"the Ray cluster at {address}" if address else "this machine's Ray"
                raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g} but {where} has {have:g} GPU(s); start "
                                  "GPU nodes with `ray start --address HOST:PORT` on them, or drop --gpus-per-trial")
        self._evaluator = ray.put(evaluator)
        # Ray sets CUDA_VISIBLE_DEVICES per task: a trial with a GPU trains on its own (engine device auto)
        self._task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=max_retries)(_ray_trial)

    def submit(self, index: int, arch: Arch, seed: int, fidelity: int | None = None, resubmits: int = 0) -> None:
        ref = self._task.remote(self._evaluator, index, arch.to_dict(), seed, fidelity)
        self._refs[ref] = (index, arch, seed, fidelity, resubmits)

    def pending(self) -> int:
        return len(self._refs)

    def wait(self) -> list[Outcome]:
        ray = self._ray
        if not self._refs:
            raise RuntimeError("wait() with no submitted trial")
        outcomes: list[Outcome] = []
        while not outcomes:
            ready, _ = ray.wait(list(self._refs), num_returns=1)
            more, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
            for ref in dict.fromkeys(ready + more):
                index, arch, seed, fidelity, resubmits = self._refs.pop(ref)
                try:
                    outcomes.append(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:  # the task body raised outside the trial's guard
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    outcomes.append(Outcome(index, None, f"RayTaskError: {first}"))
                except ray.exceptions.RayError as exc:  # the worker died and Ray's retries are spent
                    if resubmits < RESUBMITS:
                        log.warning("trial %d: worker lost (%s); submitting it again", index, type(exc).__name__)
                        self.submit(index, arch, seed, fidelity, resubmits + 1)
                    else:
                        outcomes.append(Outcome(index, None, f"worker lost {resubmits + 1} times "
                                                             f"({type(exc).__name__}); trial given up"))
        return outcomes

    def close(self) -> None:
        for ref in list(self._refs):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001  (already finished or gone)
                pass
        self._refs.clear()
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
            self._owned = False
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
