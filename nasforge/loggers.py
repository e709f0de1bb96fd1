"""Standard loggers: every record a run writes to its store also goes to CSV files and TensorBoard.

The store (``nasforge.experiment.Store``) is the one place a run records its epochs (search,
final training, fine-tuning) and its trials; a logger listens to it, so every method, phase
and runner is logged without any of them knowing about loggers. ``logging.loggers`` in the
config (``--logger csv --logger tensorboard``) picks them:

- ``csv``: ``DIR/logs/<phase>.csv`` (one row per epoch: every metric, the derived arch as
  JSON) and ``DIR/logs/trials.csv``; each file is rewritten from the store, so a resumed run
  has each epoch once.
- ``tensorboard`` (``pip install 'nasforge[tensorboard]'``): ``DIR/tensorboard/`` event files:
  every numeric metric as the scalar ``<phase>/<metric>`` at its epoch (loss, accuracy,
  temperature, expected latency...), the architecture weights of every record group as a
  histogram and, per group, an image of the probabilities (rows: edges or layers, columns:
  candidates), and the derived arch as text; trials as ``trials/objective`` by trial index.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable

from nasforge.errors import ConfigError
from nasforge.registry import Registry

__all__ = ["LOGGERS", "CsvLogger", "RunLogger", "TensorBoardLogger", "check_loggers", "make_logger"]


class RunLogger:
    """Base: hooks the store calls after it recorded an epoch or finished a trial."""

    def __init__(self, path: Path, store: Any):
        self.path, self.store = Path(path), store

    def epoch(self, phase: str, epoch: int, metrics: dict[str, Any], arch_weights: Any, arch: Any) -> None:
        pass

    def trial(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


#: every logger, by name: a class ``cls(run_dir, store)``
LOGGERS: Registry[Callable[..., RunLogger]] = Registry("logger")


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


@LOGGERS.register("csv", description="DIR/logs/<phase>.csv and trials.csv, rewritten from the store (no extra)")
class CsvLogger(RunLogger):
    """One CSV per phase (and one for the trials), rewritten from the store after each record."""

    def _write(self, name: str, rows: list[dict[str, Any]]) -> None:
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        target = self.path / "logs" / f"{name}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(target)

    def epoch(self, phase: str, epoch: int, metrics: dict[str, Any], arch_weights: Any, arch: Any) -> None:
        rows = []
        for record in self.store.epochs(phase):
            row: dict[str, Any] = {"epoch": record["epoch"]}
            _flat("", {k: v for k, v in record["metrics"].items() if not isinstance(v, (list, dict))}, row)
            if record.get("arch"):
                row["arch"] = json.dumps(record["arch"].get("choices", record["arch"]), sort_keys=True)
            rows.append(row)
        self._write(phase, rows)

    def trial(self, record: dict[str, Any]) -> None:
        rows = []
        for t in self.store.trials():
            row = {"index": t["index"], "status": t["status"], "arch_hash": t.get("arch_hash")}
            _flat("", {k: v for k, v in (t.get("metrics") or {}).items() if not isinstance(v, (list, dict))}, row)
            rows.append(row)
        self._write("trials", rows)


def _require_tensorboard() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("logger 'tensorboard' needs the tensorboard package; pip install 'nasforge[tensorboard]' "
                          "or drop --logger tensorboard") from None
    return SummaryWriter


@LOGGERS.register("tensorboard", description="DIR/tensorboard event files: scalars, arch-weight histograms and "
                                             "images, the derived arch (pip install 'nasforge[tensorboard]')")
class TensorBoardLogger(RunLogger):
    """Scalars, architecture-weight histograms and images, and the derived arch, as TensorBoard events."""

    def __init__(self, path: Path, store: Any):
        super().__init__(path, store)
        self.writer = _require_tensorboard()(log_dir=str(self.path / "tensorboard"))

    def epoch(self, phase: str, epoch: int, metrics: dict[str, Any], arch_weights: Any, arch: Any) -> None:
        import numpy as np

        w = self.writer
        flat: dict[str, Any] = {}
        _flat("", metrics, flat)
        for key, value in flat.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                w.add_scalar(f"{phase}/{key}", value, epoch)
        for group, rows in _weight_groups(arch_weights).items():
            matrix = np.asarray(rows, dtype=np.float32)
            w.add_histogram(f"{phase}/arch_weights/{group}", matrix.reshape(-1), epoch)
            if matrix.ndim == 2 and matrix.size:
                w.add_image(f"{phase}/arch_weights/{group}", matrix[None], epoch, dataformats="CHW")
        if arch:
            w.add_text(f"{phase}/arch", "`" + json.dumps(arch.get("choices", arch), sort_keys=True) + "`", epoch)
        w.flush()

    def trial(self, record: dict[str, Any]) -> None:
        objective = (record.get("metrics") or {}).get("objective")
        if isinstance(objective, (int, float)) and math.isfinite(objective):
            self.writer.add_scalar("trials/objective", objective, record["index"])
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _weight_groups(arch_weights: Any) -> dict[str, list]:
    """Architecture weights as ``group -> rows`` (a list of equal-length rows) where they have that form."""
    if not isinstance(arch_weights, dict):
        return {}
    out: dict[str, list] = {}
    for group, value in arch_weights.items():
        if isinstance(value, dict):  # {"layers": {label: {name: p}}}: one row per label, if all as wide
            rows = [list(v.values()) for v in value.values() if isinstance(v, dict)]
            if rows and len({len(r) for r in rows}) == 1:
                out[group] = rows
        elif isinstance(value, list) and value and all(isinstance(r, list) for r in value) \
                and len({len(r) for r in value}) == 1 and all(isinstance(x, (int, float)) for x in value[0]):
            out[group] = value
    return out


def check_loggers(names: list[str]) -> None:
    """Refuse an unknown logger or a missing package before a run directory exists."""
    for name in names:
        LOGGERS.get(name)
        if name == "tensorboard":
            _require_tensorboard()


def make_logger(name: str, path: Path, store: Any) -> RunLogger:
    return LOGGERS.get(name)(path, store)
