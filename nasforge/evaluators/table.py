"""Tabular benchmark evaluator: score an architecture by looking it up instead of training it.

A table maps the NAS-Bench-201 arch string of each cell to its metrics: the columns
``arch``, ``valid_acc``, ``test_acc`` (fractions in [0, 1]) and optionally
``train_seconds`` (the training time the benchmark spent, so sample-based searches can
run under a simulated time budget), ``params``, ``flops``, ``latency``; other columns are
ignored. It is a CSV file with a header, or a JSON file holding either a list of row
objects or an object mapping arch string -> metrics object. ``write_table`` writes one.

The benchmarks' own files are read directly (``nasforge.evaluators.nb201data``): the
NAS-Bench-201 ``.pth``, the NATS-Bench topology folder or ``.pickle.pbz2`` file, with the
search signal's dataset, epochs (12 or 200) and split as options and the 200-epoch test
accuracy of the dataset's own column as ``test_acc``. ``TableEvaluator.from_api`` queries
the official API package instead, where it is installed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.utils import atomic_write_text

#: Columns every table row must have.
REQUIRED: tuple[str, ...] = ("arch", "valid_acc", "test_acc")
#: Numeric columns a table may have (``train_seconds``: in every row or in none).
OPTIONAL: tuple[str, ...] = ("train_seconds", "params", "flops", "latency", "valid_acc_200")
#: How the per-seed results of a benchmark file answer a query: their mean, or one seed's (by the trial's seed)
SEED_MODES: tuple[str, ...] = ("mean", "random")
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
    """``arch -> metrics`` from a benchmark table; ``objective`` is the chosen ``metric``.

    ``path``: a CSV/JSON table, or a benchmark file of NAS-Bench-201/NATS-Bench (its
    ``.pth``, ``.pickle.pbz2`` or topology folder), read with ``dataset`` (``cifar10``,
    ``cifar100``, ``ImageNet16-120``), the signal's ``epochs`` (12 or 200) and ``split``
    (``x-valid``, also called ``valid``, or ``ori-test``); ``seeds``: ``mean`` answers with
    the mean over the benchmark's seeds, ``random`` with one seed's run chosen by the
    trial's seed (as the benchmark's ``simulate_train_eval`` does). Those options are
    ignored for CSV/JSON tables, which hold one dataset's numbers already.
    """

    def __init__(self, path: str | os.PathLike, space: Any = None, metric: str = "valid_acc", *,
                 dataset: str = "cifar10", epochs: int = 12, split: str = "x-valid", seeds: str = "mean"):
        from nasforge.evaluators.nb201data import is_benchmark_path

        self.space = _space(space)
        self.metric = _check_metric(metric)
        self.path = Path(path)
        if seeds not in SEED_MODES:
            raise ConfigError(f"table evaluator seeds={seeds!r} is unknown; use one of {list(SEED_MODES)}")
        self.seeds = seeds
        self._seed_runs: dict[str, list[tuple[float, float | None]]] = {}
        self._bench: Any = None
        self.protocol: Any = None
        if is_benchmark_path(self.path):
            self._open_benchmark(dataset, epochs, split)
        else:
            if not self.path.exists() and not self.path.suffix:
                raise ConfigError(f"table {self.path} does not exist; check the path ({_FIX})")
            self.rows = _read_table(self.path, self.space)
            self._query = self.rows.get
            self.source = f"table {self.path}"
            self.has_time = all("train_seconds" in r for r in self.rows.values())

    # --- official benchmark files ---------------------------------------------------
    def _open_benchmark(self, dataset: str, epochs: int, split: str) -> None:
        from nasforge.evaluators.nb201data import Protocol, open_benchmark

        self.protocol = Protocol(dataset, epochs, split)
        self._bench = open_benchmark(self.path)
        self._index: dict[str, int] = {}
        for i, arch in enumerate(self._bench.archs):
            try:
                key = self.space.to_string(self.space.from_string(arch))
            except ArchError as exc:
                raise ConfigError(f"benchmark {self.path} cell {i}: {exc}; the file is not a NAS-Bench-201 "
                                  "topology benchmark") from None
            self._index.setdefault(key, i)
        self.rows = {}
        self._query = self._bench_row
        self.source = f"benchmark {self.path} ({self.protocol.describe()})"
        first = next(iter(self._bench.evaluated()), None)
        if first is None:
            raise ConfigError(f"benchmark {self.path} has no results for any cell; download the full file")
        self._bench_row(self.space.to_string(self.space.from_string(self._bench.archs[first])))
        self.has_time = "train_seconds" in self.rows[next(iter(self.rows))]

    def _bench_row(self, key: str) -> dict[str, float] | None:
        if key in self.rows:
            return self.rows[key]
        index = self._index.get(key)
        if index is None:
            return None
        found = self.protocol.row(self._bench, index)
        if found is None:
            return None
        self.rows[key], self._seed_runs[key] = found
        return self.rows[key]

    def load_all(self) -> "TableEvaluator":
        """Read every cell of a benchmark file now (a CSV/JSON table is read whole already)."""
        if self._bench is not None:
            for key in self._index:
                self._bench_row(key)
        return self

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
        self.seeds, self._seed_runs, self._bench, self.protocol, self.has_time = "mean", {}, None, None, True
        self._query = _ApiQuery(api, dataset, epochs)
        self.source = f"benchmark {self.path or '(default location)'} ({dataset}, {epochs} epochs)"
        return self

    # --- lookups ------------------------------------------------------------------------
    def key(self, arch: Arch | str) -> str:
        """The canonical cell string of ``arch`` (an ``Arch`` of the space or a cell string)."""
        return self.space.to_string(self.space.from_string(arch) if isinstance(arch, str) else arch)

    def lookup(self, arch: Arch | str) -> dict[str, float]:
        """The table's metrics of ``arch`` (an ``Arch`` of the space or its arch string)."""
        key = self.key(arch)
        row = self._query(key)
        if row is None:
            size = f"{len(self.rows)} rows" if self.rows and self._bench is None else "the benchmark"
            raise ConfigError(f"architecture {key} is not in {self.source} ({size}); add its row or use a table "
                              f"that covers the whole space ({self.space.size():,} cells)")
        return dict(row)

    def __call__(self, arch: Arch | str, seed: int | None = None) -> dict[str, float]:
        """Metrics of ``arch`` with ``objective`` = the chosen metric (higher is better). With
        ``seeds="random"`` and a benchmark file, the signal (``valid_acc``, ``train_seconds``) is
        one seed's run, picked by ``seed``."""
        row = self.lookup(arch)
        runs = self._seed_runs.get(self.key(arch)) if self.seeds == "random" else None
        if runs and seed is not None:
            acc, seconds = runs[int(seed) % len(runs)]
            row["valid_acc"] = acc
            if seconds is not None:
                row["train_seconds"] = seconds
        return {"objective": row[self.metric], **row}

    def __len__(self) -> int:
        return len(self._index) if self._bench is not None else len(self.rows)

    def __contains__(self, arch: Arch | str) -> bool:
        try:
            self.lookup(arch)
        except (ConfigError, ArchError):
            return False
        return True

    def all_rows(self) -> dict[str, dict[str, float]]:
        """Every cell's metrics (a benchmark file is read whole first)."""
        if self._bench is None and not self.rows:
            raise ConfigError(f"{self.source} cannot list its cells (an API query); use a benchmark file")
        return self.load_all().rows

    def optimum(self, metric: str = "test_acc") -> tuple[str, float]:
        """The best cell of the table by ``metric`` and its value (NAS-Bench-201's "optimal" row)."""
        rows = self.all_rows()
        have = [k for k, r in rows.items() if metric in r]
        if not have:
            raise ConfigError(f"{self.source} has no {metric!r} column; use one of {sorted(next(iter(rows.values())))}")
        best = max(have, key=lambda k: rows[k][metric])
        return best, rows[best][metric]

    def to_table(self, path: str | os.PathLike) -> Path:
        """Write the table (every cell) as CSV/JSON, e.g. a benchmark file once converted for quick reuse."""
        return write_table(path, ({"arch": k, **r} for k, r in self.all_rows().items()), self.space)


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
    timed = [first[k] for k, m in table.items() if "train_seconds" in m]
    if timed and len(timed) != len(table):
        untimed = next(first[k] for k, m in table.items() if "train_seconds" not in m)
        raise ConfigError(f"table {path} {untimed} lacks train_seconds while {timed[0]} has it; give every row "
                          "a training time or none")
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
