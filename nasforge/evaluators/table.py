"""Tabular benchmark evaluator: score an architecture by looking it up instead of training it.

A table maps the NAS-Bench-201 arch string of each cell to its metrics: the columns
``arch``, ``valid_acc``, ``test_acc`` (fractions in [0, 1]), ``train_seconds`` (the
training time the benchmark spent, so sample-based searches can run under a simulated
time budget) and optionally ``params``, ``flops``, ``latency``; other columns are
ignored. It is a CSV file with a header, or a JSON file holding either a list of row
objects or an object mapping arch string -> metrics object. ``write_table`` writes one.

With the official ``nats_bench`` (or older ``nas_201_api``) package and a benchmark
file installed, ``TableEvaluator.from_api`` queries the real benchmark instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.utils import atomic_write_text

#: Columns every table row must have.
REQUIRED: tuple[str, ...] = ("arch", "valid_acc", "test_acc", "train_seconds")
#: Numeric columns a table may have.
OPTIONAL: tuple[str, ...] = ("params", "flops", "latency")
#: Metrics that can be the objective (maximised by the strategies).
OBJECTIVES: tuple[str, ...] = ("valid_acc", "test_acc")
_FIX = "write it with nasforge.evaluators.table.write_table or export it from the benchmark"


def _space(space: Any) -> Any:
    """The space whose arch strings the table uses (an instance, a name, or None for nb201)."""
    from nasforge.spaces import make_space

    if space is None:
        space = "nb201"
    if isinstance(space, str):
        space = make_space(space)
    if not (hasattr(space, "from_string") and hasattr(space, "to_string")):
        raise ConfigError(f"a table evaluator needs a space with an arch string form (nb201), not "
                          f"'{getattr(space, 'name', space)}'; pass space='nb201'")
    return space


def _check_metric(metric: str) -> str:
    if metric not in OBJECTIVES:
        raise ConfigError(f"table evaluator metric {metric!r} cannot be the objective; use one of {list(OBJECTIVES)}")
    return metric


class TableEvaluator:
    """``arch -> metrics`` from a benchmark table; ``objective`` is the chosen ``metric``."""

    def __init__(self, path: str | os.PathLike, space: Any = None, metric: str = "valid_acc"):
        self.space = _space(space)
        self.metric = _check_metric(metric)
        self.path = Path(path)
        self.rows: dict[str, dict[str, float]] = _read_table(self.path, self.space)
        self._query: Callable[[str], dict[str, float] | None] = self.rows.get
        self.source = f"table {self.path}"

    @classmethod
    def from_api(cls, path: str | os.PathLike | None, dataset: str = "cifar10-valid", epochs: int = 12,
                 space: Any = None, metric: str = "valid_acc") -> "TableEvaluator":
        """An evaluator backed by the official benchmark API (``nats_bench`` topology space, or
        ``nas_201_api``) and its file at ``path``; ``epochs``: 12 or 200 (the two training schedules)."""
        if epochs not in (12, 200):
            raise ConfigError(f"NAS-Bench-201 has results for 12 or 200 training epochs, not {epochs!r}; "
                              "pass epochs=12 or 200")
        self = cls.__new__(cls)
        self.space = _space(space)
        self.metric = _check_metric(metric)
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.exists():
            raise ConfigError(f"benchmark file {self.path} does not exist; download the NATS-Bench topology file "
                              "(or NAS-Bench-201 .pth) and pass its path")
        api = _open_api(self.path)
        self.rows = {}
        self._query = _ApiQuery(api, dataset, epochs)
        self.source = f"benchmark {self.path or '(default location)'} ({dataset}, {epochs} epochs)"
        return self

    def lookup(self, arch: Arch | str) -> dict[str, float]:
        """The table's metrics of ``arch`` (an ``Arch`` of the space or its arch string)."""
        key = self.space.to_string(self.space.from_string(arch) if isinstance(arch, str) else arch)
        row = self._query(key)
        if row is None:
            size = f"{len(self.rows)} rows" if self.rows else "the benchmark"
            raise ConfigError(f"architecture {key} is not in {self.source} ({size}); add its row or use a table "
                              f"that covers the whole space ({self.space.size():,} cells)")
        return dict(row)

    def __call__(self, arch: Arch | str) -> dict[str, float]:
        """Metrics of ``arch`` with ``objective`` = the chosen metric (higher is better)."""
        row = self.lookup(arch)
        return {"objective": row[self.metric], **row}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, arch: Arch | str) -> bool:
        try:
            self.lookup(arch)
        except (ConfigError, ArchError):
            return False
        return True


# ---------------------------------------------------------------------------
# Reading and writing tables
# ---------------------------------------------------------------------------
def _number(value: Any, column: str, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {column}={value!r} is not a number; fix the value")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {column}={value!r} is not a number; fix the value") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {column}={value!r} is not finite; fix the value or drop the row")
    return number


def _parse_row(raw: Mapping[str, Any], where: str, space: Any) -> tuple[str, dict[str, float]]:
    """(canonical arch string, metrics) of one row."""
    missing = [c for c in REQUIRED if raw.get(c) in (None, "")]
    if missing:
        raise ConfigError(f"{where} lacks {missing}; every row needs {list(REQUIRED)}")
    try:
        key = space.to_string(space.from_string(raw["arch"]))
    except ArchError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    metrics = {c: _number(raw[c], c, where) for c in REQUIRED[1:]}
    for c in OPTIONAL:
        if raw.get(c) not in (None, ""):
            metrics[c] = _number(raw[c], c, where)
    return key, metrics


def _read_table(path: Path, space: Any) -> dict[str, dict[str, float]]:
    """Canonical arch string -> metrics; ``ConfigError`` naming the file and row of any problem."""
    if not path.is_file():
        raise ConfigError(f"table {path} does not exist; check the path ({_FIX})")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"table {path} must be a .csv or .json file; {_FIX}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read table {path} ({exc}); check the file") from None
    if not text.strip():
        raise ConfigError(f"table {path} is empty; {_FIX}")
    rows: list[tuple[str, Mapping[str, Any]]] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = [c.strip() for c in (reader.fieldnames or [])]
        lacking = [c for c in REQUIRED if c not in header]
        if lacking:
            raise ConfigError(f"table {path} lacks column(s) {lacking}; its header needs {list(REQUIRED)} "
                              f"(optional {list(OPTIONAL)})")
        reader.fieldnames = header
        for raw in reader:
            rows.append((f"row {reader.line_num}", raw))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"table {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                              "fix its syntax") from None
        if isinstance(data, dict):
            for arch, metrics in data.items():
                if not isinstance(metrics, dict):
                    raise ConfigError(f"table {path} entry {arch!r} must map to an object of metrics; {_FIX}")
                rows.append((f"entry {arch!r}", {**metrics, "arch": arch}))
        elif isinstance(data, list):
            for i, raw in enumerate(data, start=1):
                if not isinstance(raw, dict):
                    raise ConfigError(f"table {path} row {i} must be an object with {list(REQUIRED)}; {_FIX}")
                rows.append((f"row {i}", raw))
        else:
            raise ConfigError(f"table {path} must hold a list of rows or an object arch -> metrics; {_FIX}")
    if not rows:
        raise ConfigError(f"table {path} has no rows; {_FIX}")
    table: dict[str, dict[str, float]] = {}
    first: dict[str, str] = {}
    for label, raw in rows:
        key, metrics = _parse_row(raw, f"table {path} {label}", space)
        if key in table:
            raise ConfigError(f"table {path} {label} repeats architecture {key} (first at {first[key]}); "
                              "keep one row per architecture")
        table[key], first[key] = metrics, label
    return table


def write_table(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], space: Any = None) -> Path:
    """Write rows (``arch`` as an ``Arch`` or arch string, plus metrics) as a CSV or JSON table
    (by the file's suffix), atomically; ``TableEvaluator`` reads it back."""
    path = Path(path)
    space_ = _space(space)
    out: list[dict[str, Any]] = []
    columns: list[str] = list(REQUIRED)
    for i, raw in enumerate(rows, start=1):
        row = dict(raw)
        missing = [c for c in REQUIRED if c not in row]
        if missing:
            raise ConfigError(f"row {i} for table {path} lacks {missing}; every row needs {list(REQUIRED)}")
        arch = row["arch"]
        row["arch"] = space_.to_string(arch) if isinstance(arch, Arch) else space_.to_string(space_.from_string(arch))
        columns += [c for c in row if c not in columns]
        out.append(row)
    if not out:
        raise ConfigError(f"no rows to write to table {path}; pass at least one row")
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(out, indent=1) + "\n"
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(out)
        text = buffer.getvalue()
    else:
        raise ConfigError(f"table {path} must end in .csv or .json; rename it")
    return atomic_write_text(path, text)


# ---------------------------------------------------------------------------
# The official benchmark API (optional)
# ---------------------------------------------------------------------------
def _open_api(path: Path | None) -> Any:
    """The NATS-Bench topology API (or the older NAS-Bench-201 API) on ``path``; imported lazily."""
    try:
        from nats_bench import create
    except ImportError:
        create = None
    if create is not None:
        return create(None if path is None else str(path), "tss", fast_mode=True, verbose=False)
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        raise ConfigError("TableEvaluator.from_api needs the official benchmark package: pip install nats_bench "
                          "(or nas-bench-201) and download its benchmark file, or use a CSV/JSON table") from None
    if path is None:
        raise ConfigError("the nas_201_api package needs the path of its benchmark file (NAS-Bench-201-v1_*.pth)")
    return NASBench201API(str(path), verbose=False)


class _ApiQuery:
    """``arch string -> metrics`` through the benchmark API (accuracies turned into fractions)."""

    def __init__(self, api: Any, dataset: str, epochs: int):
        self.api, self.dataset, self.epochs = api, dataset, epochs

    def __call__(self, arch: str) -> dict[str, float] | None:
        index = self.api.query_index_by_arch(arch)
        if index is None or index < 0:
            return None
        try:
            info = self.api.get_more_info(index, self.dataset, hp=str(self.epochs), is_random=False)
        except TypeError:  # nas_201_api before v1.1 selects the schedule with a flag
            info = self.api.get_more_info(index, self.dataset, None, self.epochs == 12, False)
        if "valid-accuracy" not in info:
            raise ConfigError(f"benchmark dataset {self.dataset!r} has no validation accuracy; use cifar10-valid, "
                              "cifar100 or ImageNet16-120")
        row = {"valid_acc": info["valid-accuracy"] / 100.0, "test_acc": info["test-accuracy"] / 100.0,
               "train_seconds": float(info["train-all-time"])}
        cost = self.api.get_cost_info(index, self.dataset)
        for ours, theirs in (("params", "params"), ("flops", "flops"), ("latency", "latency")):
            if cost.get(theirs) is not None:
                row[ours] = float(cost[theirs])
        return row
