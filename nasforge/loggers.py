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
- ``mlflow`` (``pip install 'nasforge[mlflow]'``): one MLflow run per nasforge run, at
  ``logging.mlflow_uri`` (auto: ``$MLFLOW_TRACKING_URI``, else a file store in ``DIR/mlruns``),
  in the experiment ``logging.mlflow_experiment``: every config field as a param, every numeric
  metric as ``<phase>/<metric>`` with the epoch as its step (trials: ``trials/objective`` by trial
  index), the derived arch of every epoch as the artifact ``arch/<phase>.json`` (the latest) and
  at the end ``arch.json``, ``result.json`` and the final metrics (``final/test_acc``...). A
  resumed run continues the same MLflow run (its id is kept in the store).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

from nasforge.errors import ConfigError
from nasforge.registry import Registry

__all__ = ["LOGGERS", "CsvLogger", "MlflowLogger", "RunLogger", "TensorBoardLogger", "check_loggers",
           "make_logger"]

log = logging.getLogger(__name__)


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


def _require_mlflow() -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("logger 'mlflow' needs the mlflow package; pip install 'nasforge[mlflow]' "
                          "or drop --logger mlflow") from None
    return MlflowClient


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mlflow_uri(path: Path, configured: str | None = None) -> str:
    """The tracking URI of a run's MLflow logger: the configured one, ``$MLFLOW_TRACKING_URI``, else a
    file store in ``DIR/mlruns``."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or (Path(path).resolve() / "mlruns").as_uri()


@LOGGERS.register("mlflow", description="an MLflow run: config as params, metrics per epoch/trial, the derived "
                                        "arch as artifacts (logging.mlflow_uri; pip install 'nasforge[mlflow]')")
class MlflowLogger(RunLogger):
    """One MLflow run per nasforge run: params from the config, metrics with steps, arch and result artifacts.

    A failing tracking server never stops the search: the first error is logged as a warning and
    the logger goes quiet.
    """

    def __init__(self, path: Path, store: Any):
        super().__init__(path, store)
        from nasforge.config import read_yaml

        config = read_yaml(self.path / "config.yaml") if (self.path / "config.yaml").is_file() else {}
        section = config.get("logging") if isinstance(config.get("logging"), dict) else {}
        self.uri = mlflow_uri(self.path, section.get("mlflow_uri"))
        if self.uri.startswith("file:") or "://" not in self.uri:  # MLflow 3 asks for an opt-in to its file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = _require_mlflow()(tracking_uri=self.uri)
        name = section.get("mlflow_experiment") or "nasforge"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run_id = store.get_meta("mlflow_run_id") if store is not None else None
        if run_id is not None and self._exists(run_id):
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=self.path.name,
                                         tags={"nasforge.run_dir": str(self.path.resolve())})
            self.run_id = run.info.run_id
            if store is not None:
                store.set_meta("mlflow_run_id", self.run_id)
            params: dict[str, Any] = {}
            _flat("", config, params)
            self._params({k: v for k, v in params.items()})
        self.failed = False

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # deleted, or written to another tracking server
            return False

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:6000])
                 for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _safely(self, fn: Callable[[], None]) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as exc:  # the tracking server went away: the run goes on without it
            self.failed = True
            log.warning("mlflow logging stopped (%s: %s); the run goes on", type(exc).__name__, exc)

    def _metrics(self, values: dict[str, Any], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items() if _numeric(v)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def epoch(self, phase: str, epoch: int, metrics: dict[str, Any], arch_weights: Any, arch: Any) -> None:
        flat: dict[str, Any] = {}
        _flat("", metrics, flat)

        def write() -> None:
            self._metrics({f"{phase}/{k}": v for k, v in flat.items()}, epoch)
            if arch:
                self.client.log_text(self.run_id, json.dumps({"epoch": epoch, **arch}, indent=1, sort_keys=True),
                                     f"arch/{phase}.json")

        self._safely(write)

    def trial(self, record: dict[str, Any]) -> None:
        objective = (record.get("metrics") or {}).get("objective")
        self._safely(lambda: self._metrics({"trials/objective": objective}, record["index"]))

    def close(self) -> None:
        result_path = self.path / "result.json"

        def finish() -> None:
            for name in ("arch.json", "result.json"):
                if (self.path / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.path / name))
            if result_path.is_file():
                result = json.loads(result_path.read_text())
                final = {"test_acc": result.get("test_acc"), "params": result.get("params"),
                         "flops": result.get("flops")}
                for key, lat in (result.get("latencies") or {"": result.get("latency") or {}}).items():
                    final[f"latency_ms{'.' + key if key else ''}"] = (lat or {}).get("median_ms")
                self._metrics({f"final/{k}": v for k, v in final.items()}, 0)
            self.client.set_terminated(self.run_id, status="FINISHED" if result_path.is_file() else "KILLED")

        self._safely(finish)


def check_loggers(names: list[str]) -> None:
    """Refuse an unknown logger or a missing package before a run directory exists."""
    for name in names:
        LOGGERS.get(name)
        if name == "tensorboard":
            _require_tensorboard()
        elif name == "mlflow":
            _require_mlflow()


def make_logger(name: str, path: Path, store: Any) -> RunLogger:
    return LOGGERS.get(name)(path, store)
