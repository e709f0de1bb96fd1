"""Latency as a pluggable penalty of an architecture loss, for every hardware-aware one-shot method.

- ``load_or_build_table``: the one place a search gets its lookup table: a given file
  (checked against the space, input shape and device), the table this run saved before an
  interruption, or one measured now and saved in the run (``TABLE_FILE``).
- ``LayerLatency``: expected latency of a layer-wise space (ProxylessNAS's mbconv) from the
  per-layer op probabilities: ``overhead + fixed parts + sum_l sum_j p_lj * table(op j at l)``,
  differentiable in the probabilities, with the smallest and largest network.
- ``LatencyPenalty``: the paper forms of the loss from the cross-entropy and the expected latency:
  ``add`` (ProxylessNAS ``add#linear``: ``CE + w * E / T``), ``mul`` (ProxylessNAS ``mul#log``:
  ``a * CE * (log E_us / log T_us) ^ w``, latencies in microseconds so the logs stay positive for
  sub-millisecond networks) and ``log`` (DenseNAS: ``CE + w * log(E) / log(base)``); ``none``
  returns the cross-entropy. Also the REINFORCE rewards of ProxylessNAS (``reward``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from nasforge.errors import ConfigError

log = logging.getLogger(__name__)

#: File name of a lookup table a search built and kept inside its run directory.
TABLE_FILE = "latency_table.json"
FORMS = ("none", "add", "mul", "log")


def load_or_build_table(space: Any, data: Any, device: str, *, table: str | None = None, experiment: Any = None,
                        threads: int | None = None, warmup: int | None = None, repeats: int | None = None,
                        progress: Any = None) -> Any:
    """The lookup table of a search: ``table`` if given, else this run's saved one, else measured now (and saved)."""
    from nasforge.hardware.lut import LatencyTable, build_table

    saved = experiment.path / TABLE_FILE if experiment is not None else None
    path = Path(table) if table else (saved if saved is not None and saved.is_file() else None)
    if path is None:
        log.info("building the latency table of %s on %s", space.name, device)
        timing = {k: v for k, v in (("warmup", warmup), ("repeats", repeats)) if v is not None}
        built = build_table(space, data.input_shape, data.num_classes, device=device, threads=threads,
                            progress=progress, **timing)
        if saved is not None:
            built.save(saved)
        return built
    loaded = LatencyTable.load(path)
    loaded.check(space, data.input_shape, device)
    if saved is not None and not saved.is_file():
        loaded.save(saved)
    return loaded


class LayerLatency:
    """Per-layer latency vectors of a layer-wise space from a table: expected latency and bounds."""

    def __init__(self, space: Any, table: Any, device: torch.device | str = "cpu"):
        self.table = table
        self.base = table.overhead_ms + sum(table.get(k) for k in space.fixed_latency_keys())
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.labels: list[str] = []
        self.vectors: list[Tensor] = []
        for label, keys in space.layer_latency_keys():
            self.labels.append(label)
            self.vectors.append(torch.tensor([0.0 if k is None else table.get(k) for k in keys.values()],
                                             dtype=dtype, device=device))

    def expected(self, probs: Sequence[Tensor]) -> Tensor:
        """``base + sum_layers sum_j p_j * lat_j`` (ms), differentiable in ``probs``."""
        total = torch.tensor(self.base, dtype=self.vectors[0].dtype if self.vectors else torch.float64,
                             device=self.vectors[0].device if self.vectors else "cpu")
        for p, v in zip(probs, self.vectors):
            total = total + (p.to(v.dtype) * v).sum()
        return total

    def of_indices(self, indices: Sequence[int]) -> float:
        """Latency (ms) of the network with op ``indices[l]`` at layer ``l``."""
        return float(self.base + sum(float(v[i]) for v, i in zip(self.vectors, indices)))

    @property
    def smallest(self) -> float:
        return float(self.base + sum(float(v.min()) for v in self.vectors))

    @property
    def largest(self) -> float:
        return float(self.base + sum(float(v.max()) for v in self.vectors))


@dataclass
class LatencyPenalty:
    """An architecture loss with a latency term (see the module docstring for the forms)."""

    form: str = "none"
    weight: float = 0.0
    target_ms: float = 1.0
    alpha: float = 0.2
    base: float = 15.0

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ConfigError(f"latency loss {self.form!r} is not allowed; use one of {list(FORMS)}")

    @property
    def active(self) -> bool:
        return self.form != "none"

    def __call__(self, ce: Tensor, expected_ms: Tensor) -> Tensor:
        if self.form == "none" or self.weight == 0.0 and self.form in ("add", "log"):
            return ce
        e = expected_ms.to(ce.dtype)
        if self.form == "add":
            return ce + self.weight * e / self.target_ms
        if self.form == "mul":
            ratio = torch.log(e * 1000.0) / math.log(self.target_ms * 1000.0)
            return self.alpha * ce * ratio.clamp_min(1e-6) ** self.weight
        return ce + self.weight * torch.log(e) / math.log(self.base)

    def reward(self, acc: float, latency_ms: float) -> float:
        """ProxylessNAS's REINFORCE reward: ``acc * (T / lat) ^ w`` (mul), ``acc - w * lat / T`` (add), else acc."""
        if self.form == "mul":
            return acc * (self.target_ms / latency_ms) ** self.weight
        if self.form == "add":
            return acc - self.weight * latency_ms / self.target_ms
        return acc
