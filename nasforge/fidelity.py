"""Fidelities: how much an evaluator spends on one architecture, when a strategy may choose it.

Multi-fidelity search (Hyperband, BOHB) scores many architectures cheaply (a few training
epochs, or an early epoch of a benchmark's learning curve) and only the promising ones
at full cost. An evaluator that can do that says so with a ``fidelities`` attribute: a
``Fidelities`` giving the resource's unit (``epochs``), its range and, where only some
values exist (a table with a few per-epoch columns), those levels. It is then called as
``evaluator(arch, seed=..., fidelity=F)`` and its metrics (``objective``,
``train_seconds``) are those of fidelity ``F``; without ``fidelity`` it answers at its
full fidelity, as before. Evaluators without the attribute have one fidelity.

A multi-fidelity strategy's ``ask`` returns a ``Request`` (an architecture and the
fidelity to score it at); the trial loop passes the fidelity to the evaluator, records it
with the trial, charges the simulated budget that fidelity's ``train_seconds``, counts a
repeat only for the same architecture at the same fidelity, and takes the result from
the trials at the highest fidelity evaluated.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from nasforge.arch import Arch
from nasforge.errors import ConfigError


@dataclass(frozen=True)
class Fidelities:
    """The fidelities an evaluator offers: whole ``unit``s from ``low`` to ``high`` (the full
    fidelity), every one of them, or only ``levels`` when given."""

    low: int
    high: int
    unit: str = "epochs"
    levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.levels is not None:
            levels = tuple(sorted({int(v) for v in self.levels}))
            if not levels:
                raise ConfigError("an evaluator's fidelity levels are empty; give at least one level")
            object.__setattr__(self, "levels", levels)
            object.__setattr__(self, "low", levels[0])
            object.__setattr__(self, "high", levels[-1])
        if not 1 <= int(self.low) <= int(self.high):
            raise ConfigError(f"fidelities from {self.low} to {self.high} {self.unit}: need 1 <= low <= high")

    def values(self) -> tuple[int, ...]:
        """Every fidelity the evaluator can be asked at, lowest first."""
        return self.levels if self.levels is not None else tuple(range(self.low, self.high + 1))

    def check(self, value: Any, source: str = "the evaluator") -> int:
        """``value`` as an offered fidelity (``ConfigError`` naming the offered ones otherwise)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or \
                int(value) not in self._set():
            raise ConfigError(f"fidelity {value!r} is not offered by {source}, which scores at {self.describe()}; "
                              "ask for one of those")
        return int(value)

    def snap(self, budget: float) -> int:
        """The largest offered fidelity not above ``budget`` (the lowest one below it), as
        NATS-Bench's BOHB turns a budget of 1.33 epochs into epoch 1."""
        values = self.values()
        k = bisect.bisect_right(values, float(budget) + 1e-9)
        return values[max(k - 1, 0)]

    def describe(self) -> str:
        if self.levels is not None:
            return f"{', '.join(str(v) for v in self.levels)} {self.unit}"
        return f"{self.low}..{self.high} {self.unit}"

    def _set(self) -> Any:
        return set(self.levels) if self.levels is not None else range(self.low, self.high + 1)


def fidelities_of(evaluator: Any) -> Fidelities | None:
    """The evaluator's ``Fidelities`` (None: it has one fidelity)."""
    found = getattr(evaluator, "fidelities", None)
    return found if isinstance(found, Fidelities) else None


def fidelity_order(fidelity: int | None) -> float:
    """Sort key of a trial's fidelity: ``None`` (the evaluator's full fidelity) above every level."""
    return math.inf if fidelity is None else float(fidelity)


def fidelity_label(fidelity: int | None) -> str:
    """A trial's fidelity as shown and as a ``trials_per_fidelity`` key: the level, or ``full``."""
    return "full" if fidelity is None else str(fidelity)


@dataclass(frozen=True)
class Request:
    """What a multi-fidelity strategy asks for: score ``arch`` at ``fidelity``."""

    arch: Arch
    fidelity: int | None = None


__all__ = ["Fidelities", "Request", "fidelities_of", "fidelity_label", "fidelity_order"]
