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
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable
from urllib.parse import urlparse

from nasforge.arch import Arch
from nasforge.errors import ConfigError
from nasforge.runners import Outcome, Runner, evaluate_trial

log = logging.getLogger(__name__)

#: Times the runner submits a trial again after Ray gave up on it because its worker died.
RESUBMITS = 2


def _ray_trial(evaluator: Callable[..., dict[str, Any]], index: int, arch: dict[str, Any], seed: int) -> Outcome:
    """The body of one Ray task (module level, so workers import it by name)."""
    return evaluate_trial(evaluator, index, Arch.from_dict(arch, validate=False), seed)


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
                 max_retries: int = 3, connect_timeout: float = 15.0):
        ray = self._ray = _import_ray()
        self.workers = max(1, int(workers))
        self._owned = False
        if not ray.is_initialized():
            if address:
                check_address(address, connect_timeout)
            try:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.workers, include_dashboard=False, logging_level=logging.WARNING,
                             log_to_driver=False)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ConfigError(f"cannot start or join {where} ({first}); check --address or use "
                                  "--runner local") from None
            self._owned = True
        self._evaluator = ray.put(evaluator)
        self._task = ray.remote(num_cpus=1, max_retries=max_retries)(_ray_trial)
        self._refs: dict[Any, tuple[int, Arch, int, int]] = {}  # ref -> (index, arch, seed, resubmits)

    def submit(self, index: int, arch: Arch, seed: int, resubmits: int = 0) -> None:
        ref = self._task.remote(self._evaluator, index, arch.to_dict(), seed)
        self._refs[ref] = (index, arch, seed, resubmits)

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
                index, arch, seed, resubmits = self._refs.pop(ref)
                try:
                    outcomes.append(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:  # the task body raised outside the trial's guard
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    outcomes.append(Outcome(index, None, f"RayTaskError: {first}"))
                except ray.exceptions.RayError as exc:  # the worker died and Ray's retries are spent
                    if resubmits < RESUBMITS:
                        log.warning("trial %d: worker lost (%s); submitting it again", index, type(exc).__name__)
                        self.submit(index, arch, seed, resubmits + 1)
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
