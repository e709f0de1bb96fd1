"""Runners: where the trials of a sample-based search are evaluated.

A runner takes trials (``submit(index, arch, seed)``) and hands back their outcomes
(``wait()`` returns at least one finished ``Outcome``); the trial loop in
``nasforge.trials`` records them in the experiment's store from the driver process, so
every result lands in one place whatever the runner.

* ``local`` (default): in this process, one trial at a time (``LocalRunner``);
* ``ray``: each trial a Ray task, ``workers`` at a time, on a local Ray started with
  ``workers`` CPUs or on an existing cluster (``address``); see ``nasforge.runners.ray``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import NasforgeError, TrainingError
from nasforge.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class RunnerConfig:
    """The ``runner`` config section: where trials run."""

    name: str = option("local", choices=("local", "ray"), help="local (in-process) or ray (Ray tasks)")
    workers: int = option(1, lo=1, hi=4096, help="trials evaluated at the same time (ray: CPUs of a local Ray)")
    address: str | None = option(None, help="address of an existing Ray cluster (default: start a local one)")
    max_retries: int = option(3, lo=0, hi=100, help="Ray retries of a trial whose worker died")
    connect_timeout: float = option(15.0, lo=0.1, hi=3600.0, help="seconds to wait for a Ray address to answer")
    cpus_per_trial: float = option(1.0, lo=0.01, hi=1024.0, help="ray: CPUs each trial reserves")
    gpus_per_trial: float = option(0.0, lo=0.0, hi=64.0,
                                   help="ray: GPUs each trial reserves (1: each trial trains on its own GPU; "
                                        "0.5: two trials share one)")


@dataclass
class Outcome:
    """What became of one trial: metrics, or the error that failed it."""

    index: int
    metrics: dict[str, Any] | None
    error: str | None = None
    worker: str = ""
    started: float = 0.0
    finished: float = 0.0
    #: a user error (bad table, arch from another space...) that would fail every trial: stop the search
    fatal: NasforgeError | None = field(default=None, repr=False)


def worker_name() -> str:
    """``host:pid`` of the process running a trial."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _takes_seed(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _jsonable(value: Any) -> Any:
    """Metrics as plain JSON types (numpy and torch scalars become Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return value


def evaluate_trial(evaluator: Callable[..., dict[str, Any]], index: int, arch: Arch, seed: int,
                   fidelity: int | None = None) -> Outcome:
    """Run one trial (anywhere) and turn any failure into an ``Outcome``; seeds torch and numpy first.
    ``fidelity`` (a multi-fidelity search's): passed to the evaluator as ``fidelity=``.

    A ``TrainingError`` or any other exception fails the trial; a ``NasforgeError`` of
    another kind (configuration, architecture, data) is *fatal*: it would fail every trial.
    A trial whose objective is missing or not a finite number fails too.
    """
    import numpy as np
    import torch

    started = time.time()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    try:
        kwargs: dict[str, Any] = {"fidelity": fidelity} if fidelity is not None else {}
        metrics = evaluator(arch, seed=seed, **kwargs) if _takes_seed(evaluator) else evaluator(arch, **kwargs)
        metrics = _jsonable(dict(metrics))
        objective = metrics.get("objective")
        if not isinstance(objective, (int, float)) or isinstance(objective, bool) or not math.isfinite(objective):
            raise TrainingError(f"evaluator returned no finite 'objective' (got {objective!r})")
        return Outcome(index, metrics, None, worker_name(), started, time.time())
    except TrainingError as exc:
        return Outcome(index, None, f"TrainingError: {exc}", worker_name(), started, time.time())
    except NasforgeError as exc:
        return Outcome(index, None, f"{type(exc).__name__}: {exc}", worker_name(), started, time.time(), fatal=exc)
    except Exception as exc:  # any other failure of one trial: record it, the search goes on
        log.warning("trial %d failed: %s", index, "".join(traceback.format_exception_only(exc)).strip())
        log.debug("trial %d traceback:\n%s", index, traceback.format_exc())
        return Outcome(index, None, f"{type(exc).__name__}: {exc}", worker_name(), started, time.time())


class Runner:
    """Base of runners: ``submit`` trials, ``wait`` for finished ones, ``close`` at the end."""

    name = ""
    #: how many trials it evaluates at the same time
    workers: int = 1

    def submit(self, index: int, arch: Arch, seed: int, fidelity: int | None = None) -> None:
        """Evaluate trial ``index`` (``arch`` with ``seed``, at ``fidelity`` when not None)."""
        raise NotImplementedError

    def wait(self) -> list[Outcome]:
        """Block until at least one submitted trial has finished; return the finished ones."""
        raise NotImplementedError

    def pending(self) -> int:
        """Trials submitted and not yet returned by ``wait``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a runner is closed once, by whoever made it)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: runner factories ``(RunnerConfig, evaluator) -> Runner``, by name
RUNNERS: Registry[Callable[[RunnerConfig, Callable[..., dict[str, Any]]], Runner]] = Registry("runner")


@RUNNERS.register("local", description="in this process, one trial at a time")
def _local(config: RunnerConfig, evaluator: Callable[..., dict[str, Any]]) -> Runner:
    from nasforge.runners.local import LocalRunner

    return LocalRunner(evaluator, workers=config.workers)


@RUNNERS.register("ray", description="each trial a Ray task, `workers` at a time (local Ray or --address)")
def _ray(config: RunnerConfig, evaluator: Callable[..., dict[str, Any]]) -> Runner:
    from nasforge.runners.ray import RayRunner

    return RayRunner(evaluator, workers=config.workers, address=config.address,
                     max_retries=config.max_retries, connect_timeout=config.connect_timeout,
                     cpus_per_trial=config.cpus_per_trial, gpus_per_trial=config.gpus_per_trial)


def runner_names() -> list[str]:
    """Names accepted by ``runner.name``."""
    return RUNNERS.names()


def make_runner(config: RunnerConfig, evaluator: Callable[..., dict[str, Any]]) -> Runner:
    """The runner a config names, evaluating trials with ``evaluator``."""
    return RUNNERS.get(config.name)(config, evaluator)


__all__ = ["RUNNERS", "Outcome", "Runner", "RunnerConfig", "evaluate_trial", "make_runner", "runner_names",
           "worker_name"]
