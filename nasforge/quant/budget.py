"""Resource budgets of a quantization search: ``size=0.25``, ``size=12kB``, ``latency=0.5ms``, ``energy=2uJ``.

A plain number is a fraction of the same model with every layer at 8/8 bits; a number with
a unit is absolute. Sizes are bytes of the quantized weights (1 kB = 1000 B, 1 KiB = 1024 B),
latency and energy come from an accelerator model (``nasforge.hardware.accelerators``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nasforge.errors import ConfigError

__all__ = ["KINDS", "Budget", "format_value", "parse_budget"]

KINDS = ("size", "latency", "energy")

_UNITS = {
    "size": {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3},
    "latency": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "energy": {"j": 1.0, "mj": 1e-3, "uj": 1e-6, "nj": 1e-9, "pj": 1e-12},
}
_EXAMPLE = "e.g. size=0.25 (a quarter of the 8-bit model), size=12kB, latency=0.5ms or energy=2uJ"


@dataclass(frozen=True)
class Budget:
    """A limit on one resource: ``value`` is a fraction of the 8-bit model when ``relative``, else absolute (B, s, J)."""

    kind: str
    value: float
    relative: bool

    def target(self, reference: float) -> float:
        """The absolute limit, given the cost of the model with every layer at 8/8 bits."""
        return self.value * reference if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}" if self.relative else f"{self.kind}={format_value(self.kind, self.value)}"


def parse_budget(text: str | Budget) -> Budget:
    """Parse ``KIND=VALUE[UNIT]`` (kind size, latency or energy) into a ``Budget``; one-line ConfigError if malformed."""
    if isinstance(text, Budget):
        return text
    raw = str(text).strip()
    kind, sep, rest = raw.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise ConfigError(f"budget {raw!r} must look like KIND=VALUE with KIND in {list(KINDS)}; {_EXAMPLE}")
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ]*)\s*", rest)
    if not match:
        raise ConfigError(f"budget {raw!r} has no number after '='; {_EXAMPLE}")
    value, unit = float(match.group(1)), match.group(2).lower().replace("µ", "u")
    if value <= 0:
        raise ConfigError(f"budget {raw!r} must be positive; {_EXAMPLE}")
    if not math.isfinite(value) or (not match.group(2) and value > 1e6):
        raise ConfigError(f"budget {raw!r} is too large to bind (a fraction of the 8-bit model is at most 1e6); "
                          f"{_EXAMPLE}")
    if not unit:
        return Budget(kind, value, relative=True)
    scale = _UNITS[kind].get(unit)
    if scale is None:
        raise ConfigError(f"unknown unit '{match.group(2)}' in budget {raw!r}; use one of "
                          f"{sorted(_UNITS[kind])} for {kind}, or no unit for a fraction of the 8-bit model")
    return Budget(kind, value * scale, relative=False)


def format_value(kind: str, value: float | None) -> str:
    """A readable amount: bytes as B/kB/MB, latency as s/ms/us, energy as J/mJ/uJ/nJ (None: not measured)."""
    if value is None:
        return "not measured"
    if kind == "size":
        for unit, scale in (("MB", 1e6), ("kB", 1e3)):
            if value >= scale:
                return f"{value / scale:.3g} {unit}"
        return f"{value:.0f} B"
    units = (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)) if kind == "latency" else \
        (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12))
    for unit, scale in units:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / units[-1][1]:.3g} {units[-1][0]}"
