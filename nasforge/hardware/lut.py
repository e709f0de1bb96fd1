"""Latency lookup tables: every candidate op of a space measured on the target device.

A space that supports tables lists its measurable pieces with
``latency_parts(input_shape, num_classes) -> {key: (factory, (C, H, W))}`` and says which
pieces one architecture is made of with ``arch_latency_parts(arch, input_shape, num_classes)``.
``build_table`` times each piece on the device (PyTorch eager CPU/CUDA or ONNX Runtime);
``LatencyTable.predict`` sums an architecture's pieces. Each timed call of a lone piece
carries the framework's fixed per-call cost (Python dispatch, an ONNX Runtime session
run), which a whole network pays only once: the table measures that cost on an empty
module (``overhead_ms``), stores entries net of it, and adds it back once per prediction.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ConfigError
from nasforge.hardware.latency import DEVICES, measure_latency
from nasforge.progress import Progress
from nasforge.utils import atomic_write_text

__all__ = ["LatencyTable", "build_table", "check_table", "space_fingerprint", "TABLE_FORMAT", "MIN_SPEARMAN"]

#: a table whose predictions rank sampled architectures worse than this (Spearman) is flagged: a search
#: steered by it would trade accuracy for latency it does not save
MIN_SPEARMAN = 0.5

#: Version of the JSON layout; a table of another format is refused with a rebuild hint.
TABLE_FORMAT = 1

LatencyParts = dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]]


def space_fingerprint(space: Any) -> str:
    """A short hash of a space's declared choices (labels and values), shape options included."""
    decl = {label: repr(getattr(c, "values", None) or (c.n_inputs, c.k)) for label, c in space.choices().items()}
    return hashlib.sha256(json.dumps(decl, sort_keys=True).encode()).hexdigest()[:16]


def _supports_tables(space: Any) -> None:
    if not (hasattr(space, "latency_parts") and hasattr(space, "arch_latency_parts")):
        raise ConfigError(f"space '{space.name}' has no latency lookup table support; "
                          "use a space that defines latency_parts (e.g. mbconv, dense)")


@dataclass
class LatencyTable:
    """Median latency (ms) of every measurable piece of a space on one device, net of call overhead."""

    space: str
    space_version: int
    fingerprint: str
    input_shape: tuple[int, int, int]
    num_classes: int
    device: str
    device_name: str
    batch_size: int
    threads: int
    overhead_ms: float
    entries: dict[str, float] = field(default_factory=dict)
    created: float = 0.0
    format: int = TABLE_FORMAT

    def get(self, key: str) -> float:
        """Latency of one piece (ConfigError naming a missing entry and how to rebuild)."""
        try:
            return self.entries[key]
        except KeyError:
            raise ConfigError(f"latency table for space '{self.space}' has no entry '{key}'; rebuild it with "
                              f"'nasforge latency --space {self.space} --device {self.device}'") from None

    def predict(self, space: Any, arch: Arch) -> float:
        """Predicted end-to-end latency (ms) of ``space.build(arch)``: its pieces plus one call overhead."""
        keys = space.arch_latency_parts(arch, self.input_shape, self.num_classes)
        return self.overhead_ms + sum(self.get(k) for k in keys)

    def check(self, space: Any, input_shape: tuple[int, ...], device: str) -> None:
        """Refuse a table built for another space, space configuration, input shape or device."""
        if self.space != space.name or self.space_version != space.version:
            raise ConfigError(f"latency table is for space '{self.space}' v{self.space_version}, not "
                              f"'{space.name}' v{space.version}; build one with 'nasforge latency --space {space.name}'")
        if self.fingerprint != space_fingerprint(space):
            raise ConfigError(f"latency table was built for another configuration of space '{space.name}' "
                              "(widths, depths or ops differ); rebuild it for this configuration")
        if tuple(self.input_shape) != tuple(input_shape):
            raise ConfigError(f"latency table was measured at input shape {list(self.input_shape)}, not "
                              f"{list(input_shape)}; rebuild it for this data")
        if self.device != device:
            raise ConfigError(f"latency table was measured on '{self.device}', not '{device}'; "
                              f"rebuild it with --device {device}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """Read a table written by ``save`` (ConfigError for a missing, corrupt or foreign file)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"latency table {path} does not exist; build one with 'nasforge latency'")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"latency table {path} is not valid JSON; rebuild it with 'nasforge latency'") from None
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ConfigError(f"{path} is not a nasforge latency table (format {TABLE_FORMAT}); "
                              "rebuild it with 'nasforge latency'")
        try:
            data["input_shape"] = tuple(data["input_shape"])
            table = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"latency table {path} has missing or unknown fields ({exc}); rebuild it") from None
        bad = [k for k, v in table.entries.items() if not isinstance(v, (int, float)) or v != v]
        if bad:
            raise ConfigError(f"latency table {path} has non-numeric entry '{bad[0]}'; rebuild it")
        return table


def build_table(space: Any, input_shape: tuple[int, int, int], num_classes: int, device: str = "cpu",
                batch_size: int = 1, warmup: int = 10, repeats: int = 50, threads: int | None = None,
                progress: Progress | None = None) -> LatencyTable:
    """Measure every piece of ``space`` at its input shape on ``device`` and return the table."""
    _supports_tables(space)
    if device not in DEVICES:
        raise ConfigError(f"unknown device '{device}'; use one of {'|'.join(DEVICES)}")
    progress = progress or Progress()
    parts: LatencyParts = space.latency_parts(tuple(input_shape), num_classes)

    def timed(module: nn.Module, shape: tuple[int, ...]):
        return measure_latency(module.eval(), shape, device=device, batch_size=batch_size,
                               warmup=warmup, repeats=repeats, threads=threads)

    base = timed(nn.Identity(), tuple(input_shape))
    overhead = base.median_ms
    entries: dict[str, float] = {}
    with progress.task(f"latency table ({space.name}, {device})", total=len(parts)) as task:
        for key, (factory, shape) in parts.items():
            ms = timed(factory(), tuple(shape)).median_ms
            entries[key] = max(ms - overhead, 0.0)
            task.advance(1, last=key)
    residual = getattr(space, "latency_residual_parts", None)
    if residual is not None:  # whole-network entries stored net of the pieces they contain
        for key, contained in residual(tuple(input_shape), num_classes).items():
            entries[key] = max(entries[key] - sum(entries[k] for k in contained), 0.0)
    return LatencyTable(space=space.name, space_version=space.version, fingerprint=space_fingerprint(space),
                        input_shape=tuple(input_shape), num_classes=num_classes, device=device,
                        device_name=base.device_name, batch_size=batch_size, threads=base.threads,
                        overhead_ms=overhead, entries=entries, created=time.time())


def check_table(space: Any, table: LatencyTable, n: int = 30, seed: int = 0,
                warmup: int = 10, repeats: int = 50, progress: Progress | None = None) -> dict[str, Any]:
    """Predicted vs measured end-to-end latency of ``n`` sampled architectures.

    Returns the rows (arch hash, predicted ms, measured ms), the mean absolute percentage
    error and Spearman's rank correlation of predicted against measured, and ``warning``: a
    sentence when that correlation is below ``MIN_SPEARMAN``, else None.
    """
    import numpy as np
    from scipy.stats import spearmanr

    if n < 2:
        raise ConfigError(f"checking a latency table needs at least 2 architectures, got {n}")
    progress = progress or Progress()
    rng = np.random.default_rng(seed)
    rows = []
    with progress.task(f"checking table on {n} architectures", total=n) as task:
        for _ in range(n):
            arch = space.sample(rng)
            model = space.build(arch, table.input_shape, table.num_classes)
            measured = measure_latency(model.eval(), table.input_shape, device=table.device,
                                       batch_size=table.batch_size, warmup=warmup, repeats=repeats,
                                       threads=table.threads).median_ms
            predicted = table.predict(space, arch)
            rows.append({"arch": arch.hash, "predicted_ms": predicted, "measured_ms": measured})
            task.advance(1, predicted_ms=predicted, measured_ms=measured)
    pred = np.array([r["predicted_ms"] for r in rows])
    meas = np.array([r["measured_ms"] for r in rows])
    import warnings

    with warnings.catch_warnings():  # constant predictions: no ranking at all (rho 0 below)
        warnings.simplefilter("ignore")
        rho = spearmanr(pred, meas).statistic
    rho = float(rho) if rho == rho else 0.0
    warning = None
    if rho < MIN_SPEARMAN:
        warning = (f"the table ranks architectures poorly (Spearman {rho:.2f} < {MIN_SPEARMAN}): a latency-aware "
                   f"search would follow noise; time with more --repeats and --warmup, fewer --threads, or on a "
                   f"quieter machine")
    return {"rows": rows, "mape": float(np.mean(np.abs(pred - meas) / meas)), "spearman": rho, "n": n,
            "warning": warning}
