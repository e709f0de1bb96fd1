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

Fidelities (``nasforge.fidelity``): a benchmark file offers every epoch ``1..epochs`` of
the signal's schedule (``evaluator(arch, fidelity=e)``: the signal split's accuracy after
epoch ``e`` and the cost of training that far, as NATS-Bench's ``simulate_train_eval(iepoch=e-1)``);
a CSV/JSON table offers the epochs of its ``valid_acc@E`` columns (with ``train_seconds@E``
beside them when it has times). Other metrics are the full fidelity's at every fidelity.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.fidelity import Fidelities
from nasforge.utils import atomic_write_text

#: Columns every table row must have.
REQUIRED: tuple[str, ...] = ("arch", "valid_acc", "test_acc")
#: Numeric columns a table may have (``train_seconds``: in every row or in none).
OPTIONAL: tuple[str, ...] = ("train_seconds", "params", "flops", "latency", "valid_acc_200")
#: How the per-seed results of a benchmark file answer a query: their mean, or one seed's (by the trial's seed)
SEED_MODES: tuple[str, ...] = ("mean", "random")
#: Metrics that can be the objective (maximised by the strategies).
OBJECTIVES: tuple[str, ...] = ("valid_acc", "test_acc")
#: Metrics a table may give per fidelity, as columns ``METRIC@E`` (E: whole epochs, e.g. ``valid_acc@1``).
FIDELITY_METRICS: tuple[str, ...] = ("valid_acc", "train_seconds")
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

    #: the fidelities offered (None: one, the full fidelity)
    fidelities: Fidelities | None

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
        #: (cell, epoch) -> per-seed (signal accuracy, seconds) of a benchmark file, read when first asked for
        self._signals: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
        #: cell -> its per-fidelity columns (``valid_acc@E``...) of a CSV/JSON table
        self._curves: dict[str, dict[str, float]] = {}
        self._bench: Any = None
        self.protocol: Any = None
        self.fidelities = None
        if is_benchmark_path(self.path):
            self._open_benchmark(dataset, epochs, split)
        else:
            if not self.path.exists() and not self.path.suffix:
                raise ConfigError(f"table {self.path} does not exist; check the path ({_FIX})")
            self.rows = _read_table(self.path, self.space)
            for key, metrics in self.rows.items():
                curve = {c: metrics.pop(c) for c in [c for c in metrics if "@" in c]}
                if curve:
                    self._curves[key] = curve
            levels = sorted({int(c.split("@")[1]) for c in next(iter(self._curves.values()), {})
                             if c.startswith("valid_acc@")})
            self.fidelities = Fidelities(levels[0], levels[-1], "epochs", tuple(levels)) if levels else None
            self._query = self.rows.get
            self.source = f"table {self.path}"
            self.has_time = all("train_seconds" in r for r in self.rows.values())

    # --- official benchmark files ---------------------------------------------------
    def _open_benchmark(self, dataset: str, epochs: int, split: str) -> None:
        from nasforge.evaluators.nb201data import Protocol, open_benchmark

        self.protocol = Protocol(dataset, epochs, split)
        self.fidelities = Fidelities(1, self.protocol.epochs, "epochs")
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

    def _signal(self, key: str, epoch: int) -> list[tuple[float, float | None]]:
        """Per-seed (signal accuracy, seconds) of a benchmark file's cell ``key`` after ``epoch`` epochs."""
        if (key, epoch) not in self._signals:
            found = self.protocol.signal(self._bench, self._index[key], epoch)
            if found is None:  # lookup() found the cell, so the file has it
                raise ConfigError(f"architecture {key} has no results in {self.source}; download the full file")
            self._signals[key, epoch] = found
        return self._signals[key, epoch]

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
        self._signals, self._curves, self.fidelities = {}, {}, None  # the API's learning curves are not read
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

    def __call__(self, arch: Arch | str, seed: int | None = None, fidelity: int | None = None) -> dict[str, float]:
        """Metrics of ``arch`` with ``objective`` = the chosen metric (higher is better). With
        ``seeds="random"`` and a benchmark file, the signal (``valid_acc``, ``train_seconds``) is
        one seed's run, picked by ``seed``. ``fidelity``: an epoch of ``fidelities`` (None: the
        full fidelity); the signal and its cost are then those after that epoch, other metrics
        (``test_acc``, ``params``...) unchanged."""
        row = self.lookup(arch)
        key = self.key(arch)
        runs = self._seed_runs.get(key) if self.seeds == "random" else None
        if fidelity is not None:
            if self.fidelities is None:
                raise ConfigError(f"{self.source} scores at one fidelity only (no per-epoch results); call it "
                                  "without fidelity=, or use a table with valid_acc@E columns or a benchmark file")
            epoch = self.fidelities.check(fidelity, self.source)
            if self._bench is not None:
                at = self._signal(key, epoch)
                row["valid_acc"] = sum(a for a, _ in at) / len(at)
                times = [t for _, t in at if t is not None]
                if len(times) == len(at):
                    row["train_seconds"] = sum(times) / len(times)
                else:
                    row.pop("train_seconds", None)
                runs = at if self.seeds == "random" else None
            else:
                curve = self._curves[key]
                row["valid_acc"] = curve[f"valid_acc@{epoch}"]
                if f"train_seconds@{epoch}" in curve:
                    row["train_seconds"] = curve[f"train_seconds@{epoch}"]
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

    def curve(self, arch: Arch | str) -> dict[str, float]:
        """The per-fidelity columns of ``arch``: ``valid_acc@E`` (and ``train_seconds@E`` where the
        table has times) for every offered epoch E; a benchmark file's are the mean over its seeds."""
        if self.fidelities is None:
            return {}
        self.lookup(arch)
        key = self.key(arch)
        if self._bench is None:
            return dict(self._curves[key])
        accs: dict[str, float] = {}
        times: dict[str, float] = {}
        for epoch in self.fidelities.values():
            m = self(key, fidelity=epoch)  # no trial seed: the mean over the seeds
            accs[f"valid_acc@{epoch}"] = m["valid_acc"]
            if "train_seconds" in m:
                times[f"train_seconds@{epoch}"] = m["train_seconds"]
        return {**accs, **times}

    def to_table(self, path: str | os.PathLike, curves: bool = True) -> Path:
        """Write the table (every cell) as CSV/JSON, e.g. a benchmark file once converted for quick reuse;
        ``curves``: with the per-fidelity columns (``valid_acc@E``, ``train_seconds@E``), so the
        converted table offers the same fidelities (a benchmark file's: mean over its seeds)."""
        rows = self.all_rows()
        return write_table(path, ({"arch": k, **r, **(self.curve(k) if curves else {})} for k, r in rows.items()),
                           self.space)


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


@functools.lru_cache(maxsize=4096)
def _column(name: str) -> tuple[str, int] | None:
    """``_fidelity_column`` without the error: epochs 0 for a malformed per-fidelity name."""
    metric, at, level = name.strip().partition("@")
    if not at or metric not in FIDELITY_METRICS:
        return None
    return metric, int(level) if re.fullmatch(r"[0-9]+", level) else 0


def _fidelity_column(name: str, where: str) -> tuple[str, int] | None:
    """(metric, epochs) of a per-fidelity column name ``valid_acc@E``/``train_seconds@E``; None for
    other columns; ``ConfigError`` for a malformed one such as ``valid_acc@x``."""
    found = _column(str(name))
    if found is not None and found[1] < 1:
        raise ConfigError(f"{where}: column {name!r} is not a per-fidelity column; name it {found[0]}@E with E a "
                          f"whole number of epochs >= 1 (e.g. {found[0]}@12)")
    return found


def _parse_row(raw: Mapping[str, Any], where: str, space: Any) -> tuple[str, dict[str, float]]:
    """(canonical arch string, metrics) of one row; per-fidelity columns as ``METRIC@E``."""
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
    for c, value in raw.items():
        column = _fidelity_column(c, where)
        if column is not None and value not in (None, ""):
            name = f"{column[0]}@{column[1]}"
            if name in metrics:
                raise ConfigError(f"{where}: columns {c!r} and {name!r} name the same fidelity; keep one")
            metrics[name] = _number(value, c, where)
    return key, metrics


def _check_fidelities(path: Path, table: dict[str, dict[str, float]], first: dict[str, str],
                      declared: Iterable[str]) -> None:
    """Every row has every ``valid_acc@E`` of the table, and ``train_seconds@E`` for each of those
    E when the table has times (``train_seconds`` or any ``train_seconds@E``)."""
    found: dict[str, set[int]] = {m: set() for m in FIDELITY_METRICS}
    for name in declared:
        column = _fidelity_column(name, f"table {path}")
        if column is not None:
            found[column[0]].add(column[1])
    for metrics in table.values():
        for name in metrics:
            if "@" in name:
                metric, level = name.split("@")
                found[metric].add(int(level))
    levels, timed = sorted(found["valid_acc"]), sorted(found["train_seconds"])
    if timed and not levels:
        raise ConfigError(f"table {path} has train_seconds@{timed[0]} but no valid_acc@E columns; add the "
                          "per-epoch accuracies valid_acc@E beside the per-epoch times")
    stray = [e for e in timed if e not in found["valid_acc"]]
    if stray:
        raise ConfigError(f"table {path} has train_seconds@{stray[0]} but no valid_acc@{stray[0]}; add that column "
                          "or drop the time")
    if not levels:
        return
    needs_time = bool(timed) or any("train_seconds" in m for m in table.values())
    wanted = [f"valid_acc@{e}" for e in levels] + ([f"train_seconds@{e}" for e in levels] if needs_time else [])
    for key, metrics in table.items():
        missing = next((c for c in wanted if c not in metrics), None)
        if missing is not None:
            why = ("the table has that fidelity" if missing.startswith("valid_acc") else
                   f"the table has training times, so each valid_acc@{missing.split('@')[1]} needs its time")
            raise ConfigError(f"table {path} {first[key]} lacks {missing} ({why}); give every row every "
                              "per-fidelity column")


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
    declared: list[str] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = [c.strip() for c in (reader.fieldnames or [])]
        lacking = [c for c in REQUIRED if c not in header]
        if lacking:
            raise ConfigError(f"table {path} lacks column(s) {lacking}; its header needs {list(REQUIRED)} "
                              f"(optional {list(OPTIONAL)})")
        reader.fieldnames = header
        declared = header
        for c in header:
            _fidelity_column(c, f"table {path}")
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
    _check_fidelities(path, table, first, declared)
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
        new = [c for c in row if c not in columns]
        for c in new:
            _fidelity_column(c, f"row {i} for table {path}")
        columns += new
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
