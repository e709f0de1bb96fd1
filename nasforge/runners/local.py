"""The local runner: trials evaluated in this process, one at a time, in submission order."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from nasforge.arch import Arch
from nasforge.runners import Outcome, Runner, evaluate_trial


class LocalRunner(Runner):
    """In-process evaluation (the default).

    ``workers`` > 1 does not run trials at the same time: it lets that many trials be
    outstanding, so a strategy sees results as late as it would with ``workers``
    parallel workers (useful to simulate a parallel search deterministically).
    """

    name = "local"

    def __init__(self, evaluator: Callable[..., dict[str, Any]], workers: int = 1):
        self.evaluator = evaluator
        self.workers = max(1, int(workers))
        self._queue: deque[tuple[int, Arch, int, int | None]] = deque()

    def submit(self, index: int, arch: Arch, seed: int, fidelity: int | None = None) -> None:
        self._queue.append((index, arch, seed, fidelity))

    def wait(self) -> list[Outcome]:
        if not self._queue:
            raise RuntimeError("wait() with no submitted trial")
        index, arch, seed, fidelity = self._queue.popleft()
        return [evaluate_trial(self.evaluator, index, arch, seed, fidelity)]

    def pending(self) -> int:
        return len(self._queue)
