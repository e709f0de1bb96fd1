"""NAS-Bench-201 / NATS-Bench topology results read from the benchmarks' own files, without their API.

Three released formats are read (layouts as in D-X-Y/NAS-Bench-201 ``nas_201_api`` and
D-X-Y/NATS-Bench ``nats_bench``):

* the NAS-Bench-201 file ``NAS-Bench-201-v1_*.pth``: a ``torch.save``'d dict with
  ``meta_archs`` (the 15,625 cell strings, index = position) and ``arch2infos``
  (index -> ``{"less": results, "full": results}``: the 12- and 200-epoch schedules);
* the NATS-Bench topology archive ``NATS-tss-v1_0-3ffb9-simple/``: a folder with
  ``meta.pickle.pbz2`` (``meta_archs``) and one ``NNNNNN.pickle.pbz2`` per cell
  (``{"12": results, "200": results}``), bz2-compressed pickles;
* the NATS-Bench single file ``NATS-tss-v1_0-3ffb9-*.pickle.pbz2``: one dict like the
  ``.pth`` one, ``arch2infos`` index -> ``{"12": results, "200": results}``.

``results`` is an ``ArchResults`` state dict: ``dataset_seed`` (dataset -> seeds) and
``all_results`` ((dataset, seed) -> a ``ResultsCount`` state dict with ``epochs``,
``train_times`` (epoch -> seconds), ``eval_acc1es`` and ``eval_times``
(``"x-valid@E"`` -> value), ``params``, ``flop``, ``latency``). Accuracies are percent.

The ``.pth`` is read with ``torch.load(weights_only=True)`` and the pickles with an
unpickler that builds only plain containers, ``OrderedDict`` and numpy scalars, so a
benchmark file cannot run code.

The protocol of the NAS-Bench-201 paper (``simulate_train_eval`` of the APIs): the search
signal of ``cifar10`` is the ``cifar10-valid`` run (trained on the train split), of
``cifar100``/``ImageNet16-120`` their own runs, read on the ``x-valid`` split after the
12- (or 200-) epoch schedule; a query costs ``train-all-time + valid-per-time`` (the
schedule's summed epoch times plus one validation pass). A lower fidelity (``Protocol.signal``)
reads the same run after an earlier epoch ``e``, at the cost of its first ``e`` epochs plus
one validation pass (``simulate_train_eval(iepoch=e - 1)``). The reported number is the
200-epoch test accuracy of the dataset's own column: ``cifar10`` (trained on train+valid)
on ``ori-test``, ``cifar100``/``ImageNet16-120`` on ``x-test``.
"""

from __future__ import annotations

import bz2
import collections
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from nasforge.errors import ConfigError

#: dataset option -> (run of the search signal, run of the reported metric, split of the reported metric)
DATASETS: dict[str, tuple[str, str, str]] = {
    "cifar10": ("cifar10-valid", "cifar10", "ori-test"),
    "cifar100": ("cifar100", "cifar100", "x-test"),
    "ImageNet16-120": ("ImageNet16-120", "ImageNet16-120", "x-test"),
}
#: other spellings accepted for the dataset option
ALIASES = {"cifar10-valid": "cifar10", "imagenet16-120": "ImageNet16-120", "imagenet16": "ImageNet16-120",
           "imagenet": "ImageNet16-120"}
#: splits the search signal can be read on: the validation split, or valid+test (``ori-test``)
SPLITS = ("x-valid", "valid", "ori-test")
EPOCHS = (12, 200)
PICKLE_EXT = ".pickle.pbz2"
_FIX = ("pass the NAS-Bench-201 .pth file, the NATS-Bench topology folder (NATS-tss-*-simple) or its "
        ".pickle.pbz2 file")


def dataset_name(dataset: str) -> str:
    """The canonical dataset option (``cifar10``, ``cifar100``, ``ImageNet16-120``)."""
    if dataset in DATASETS:
        return dataset
    name = ALIASES.get(str(dataset).lower()) or next((d for d in DATASETS if d.lower() == str(dataset).lower()), None)
    if name is None:
        raise ConfigError(f"NAS-Bench-201 dataset {dataset!r} is unknown; use one of {list(DATASETS)}")
    return name


def is_benchmark_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an official benchmark file/folder rather than a CSV/JSON table."""
    p = Path(path)
    name = p.name.lower()
    return p.is_dir() or name.endswith(".pth") or name.endswith(".pbz2") or name.endswith(".pickle")


# ---------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------
_NUMPY = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
          ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray")}


class _Unpickler(pickle.Unpickler):
    """Builds containers, ``OrderedDict``, ``defaultdict``, numpy scalars and arrays only (an object
    array's items go through this unpickler too)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("collections", "OrderedDict"), ("collections", "defaultdict")):
            return getattr(collections, name)
        if (module, name) in _NUMPY or (module == "numpy.dtypes" and name.endswith("DType")):
            import numpy as np

            if name in ("scalar", "_reconstruct"):
                return getattr(getattr(getattr(np, "_core", None) or np.core, "multiarray"), name)
            if name in ("dtype", "ndarray"):
                return getattr(np, name)
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read benchmark file {path} ({exc.strerror or exc}); check the path") from None
    try:
        if raw[:3] == b"BZh":
            raw = bz2.decompress(raw)
        return _Unpickler(io.BytesIO(raw)).load()
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, IndexError, TypeError) as exc:
        raise ConfigError(f"benchmark file {path} is not a NATS-Bench pickle ({exc}); {_FIX}") from None


def _load_pth(path: Path) -> Any:
    import numpy as np
    import torch

    multiarray = getattr(getattr(np, "_core", None) or np.core, "multiarray")
    allowed: list[Any] = [np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):  # under the module name of the numpy that wrote the file, too
        allowed += [(getattr(multiarray, name), f"numpy.core.multiarray.{name}"),
                    (getattr(multiarray, name), f"numpy._core.multiarray.{name}")]
    allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ConfigError(f"cannot read benchmark file {path} ({exc.strerror or exc}); check the path") from None
    except Exception as exc:  # torch raises many types for a file of another kind
        text = str(exc)
        unsupported = next((line.strip().rstrip(".") for line in text.splitlines()
                            if "unsupported global" in line.lower()), None)
        first = unsupported or (text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise ConfigError(f"benchmark file {path} is not a NAS-Bench-201 .pth ({first[:160]}); {_FIX}") from None


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------
@dataclass
class Benchmark:
    """The cells of a benchmark file and a way to get each cell's results (``{"12": ..., "200": ...}``)."""

    path: Path
    kind: str  # "nas-bench-201 .pth", "nats-bench archive", "nats-bench file"
    archs: list[str]
    _get: Callable[[int], dict[str, Any] | None]
    _cache: dict[int, dict[str, Any] | None] = field(default_factory=dict)

    def results(self, index: int) -> dict[str, Any] | None:
        """``{"12": ArchResults state, "200": ...}`` of cell ``index`` (None when the file lacks it)."""
        if index not in self._cache:
            self._cache[index] = self._get(index)
        return self._cache[index]

    def evaluated(self) -> Iterator[int]:
        """Indexes of the cells the file has results for."""
        for i in range(len(self.archs)):
            if self.results(i) is not None:
                yield i


def _hp_map(entry: Any, where: str) -> dict[str, Any]:
    """``{"12": state, "200": state}`` from a ``{"less", "full"}`` (NAS-Bench-201) or ``{"12", "200"}`` dict."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a dict of results; {_FIX}")
    out = {}
    for key, value in entry.items():
        hp = {"less": "12", "full": "200"}.get(str(key), str(key))
        out[hp] = value
    return out


def _check_archs(meta: Any, path: Path) -> list[str]:
    if not isinstance(meta, dict) or "meta_archs" not in meta:
        raise ConfigError(f"benchmark file {path} has no 'meta_archs': it is not a NAS-Bench-201/NATS-Bench "
                          f"topology file; {_FIX}")
    archs = meta["meta_archs"]
    if not isinstance(archs, (list, tuple)) or not archs or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"benchmark file {path}: 'meta_archs' must be a list of cell strings; {_FIX}")
    if not archs[0].startswith("|"):
        raise ConfigError(f"benchmark file {path} holds architectures like {archs[0]!r}, not NAS-Bench-201 cells "
                          "(the NATS-Bench size space, NATS-sss?); use the topology benchmark (NATS-tss or "
                          "NAS-Bench-201)")
    return list(archs)


#: the last benchmark opened, by (path, size, mtime): a run opens its file once, not once per check
_OPENED: dict[tuple[str, int, float], Benchmark] = {}


def open_benchmark(path: str | os.PathLike) -> Benchmark:
    """Open a NAS-Bench-201 ``.pth``, a NATS-Bench topology folder or ``.pickle.pbz2`` file (the last
    file opened is kept, so opening it again in the same process is free)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"benchmark file {path} does not exist; {_FIX}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _OPENED:
        bench = _open(path)
        _OPENED.clear()
        _OPENED[key] = bench
    return _OPENED[key]


def _open(path: Path) -> Benchmark:
    if path.is_dir():
        meta_path = path / f"meta{PICKLE_EXT}"
        if not meta_path.is_file():
            raise ConfigError(f"folder {path} has no meta{PICKLE_EXT}: it is not a NATS-Bench archive; {_FIX}")
        archs = _check_archs(_load_pickle(meta_path), meta_path)

        def get(index: int) -> dict[str, Any] | None:
            file = path / f"{index:06d}{PICKLE_EXT}"
            if not file.is_file():
                return None
            return _hp_map(_load_pickle(file), f"benchmark file {file}")

        return Benchmark(path, "nats-bench archive", archs, get)
    data = _load_pth(path) if path.name.lower().endswith(".pth") else _load_pickle(path)
    archs = _check_archs(data, path)
    infos = data.get("arch2infos")
    if not isinstance(infos, dict) or not infos:
        raise ConfigError(f"benchmark file {path} has no results ('arch2infos' is empty): it is a meta file only; "
                          f"{_FIX}")

    def get_full(index: int) -> dict[str, Any] | None:
        entry = infos.get(index, infos.get(str(index)))
        return None if entry is None else _hp_map(entry, f"benchmark file {path} cell {index}")

    kind = "nas-bench-201 .pth" if path.name.lower().endswith(".pth") else "nats-bench file"
    return Benchmark(path, kind, archs, get_full)


# ---------------------------------------------------------------------------
# One cell's numbers under the protocol
# ---------------------------------------------------------------------------
def _last(run: dict[str, Any], split: str, where: str, epoch: int | None = None) -> float:
    """The accuracy on ``split`` after epoch ``epoch`` (1-based; None: the run's last)."""
    epochs = int(run.get("epochs", 0))
    accs = run.get("eval_acc1es") or {}
    epoch = epochs if epoch is None else epoch
    key = f"{split}@{epoch - 1}"
    if key not in accs:
        names = sorted({k.split("@")[0] for k in accs})
        raise ConfigError(f"{where} has no {split!r} accuracy after epoch {epoch} (its splits: {names}); "
                          f"choose a split it has")
    return float(accs[key])


def _seconds(run: dict[str, Any], epoch: int | None = None) -> float | None:
    """``train-all-time + valid-per-time`` of one run after epoch ``epoch`` (1-based; None: the run's
    last), as NATS-Bench's ``simulate_train_eval(iepoch=epoch - 1)``: the first ``epoch`` epoch
    times plus the mean of their validation times (None when the file has no times)."""
    epochs = int(run.get("epochs", 0)) if epoch is None else int(epoch)
    train = run.get("train_times")
    if not train or epochs <= 0:
        return None
    try:
        total = sum(float(train[i]) for i in range(epochs))
    except KeyError:
        return None
    evals = run.get("eval_times") or {}
    try:
        total += sum(float(evals[f"x-valid@{i}"]) for i in range(epochs)) / epochs
    except KeyError:
        pass
    return total


def _runs(results: dict[str, Any], hp: str, dataset: str, where: str, path: Path) -> list[dict[str, Any]]:
    if hp not in results:
        have = sorted(results, key=lambda k: int(k) if str(k).isdigit() else 0)
        raise ConfigError(f"benchmark {path} has no {hp}-epoch results (it has {have} epochs); "
                          f"choose epochs from {have}")
    state = results[hp]
    seeds = (state.get("dataset_seed") or {}).get(dataset) if isinstance(state, dict) else None
    if not seeds:
        have = sorted((state.get("dataset_seed") or {}) if isinstance(state, dict) else [])
        raise ConfigError(f"benchmark {path} has no {hp}-epoch results on {dataset!r} ({where}; it holds {have}); "
                          f"choose a dataset it holds")
    runs = []
    for seed in seeds:
        run = state["all_results"].get((dataset, seed))
        if run is None:
            raise ConfigError(f"benchmark {path} lacks the {dataset} run of seed {seed} ({where}); the file is "
                              "damaged: download it again")
        runs.append(run)
    return runs


@dataclass
class Protocol:
    """Which numbers of a cell are read: the signal's ``epochs`` and ``split`` on ``dataset``."""

    dataset: str = "cifar10"
    epochs: int = 12
    split: str = "x-valid"

    def __post_init__(self) -> None:
        self.dataset = dataset_name(self.dataset)
        if isinstance(self.epochs, bool) or self.epochs not in EPOCHS:
            raise ConfigError(f"NAS-Bench-201 has results for 12 or 200 training epochs, not {self.epochs!r}; "
                              "pass epochs 12 or 200")
        if self.split not in SPLITS:
            raise ConfigError(f"NAS-Bench-201 split {self.split!r} is unknown; use x-valid (the validation split, "
                              "also called valid) or ori-test (valid+test; on cifar10 the test set)")
        if self.split == "valid":
            self.split = "x-valid"

    def describe(self) -> str:
        signal, report, rsplit = DATASETS[self.dataset]
        return (f"{self.dataset}: search signal {signal} {self.split} after {self.epochs} epochs, "
                f"reported {report} {rsplit} after 200 epochs")

    def row(self, bench: Benchmark, index: int) -> tuple[dict[str, float], list[tuple[float, float | None]]] | None:
        """(metrics, per-seed (signal accuracy, seconds)) of cell ``index``, or None when the file lacks it.

        ``valid_acc``/``train_seconds``: the signal and its cost, averaged over the seeds;
        ``test_acc``: the reported 200-epoch test accuracy; ``valid_acc_200``: the 200-epoch
        accuracy on the signal's split; ``params``/``flops`` (millions) and ``latency``
        (seconds) from the reported run, as the benchmark gives them. Accuracies are fractions.
        """
        results = bench.results(index)
        if results is None:
            return None
        signal_ds, report_ds, report_split = DATASETS[self.dataset]
        where = f"cell {index}"
        seeds = []
        for run in _runs(results, str(self.epochs), signal_ds, where, bench.path):
            seeds.append((_last(run, self.split, f"benchmark {bench.path} {signal_ds} {where}") / 100.0,
                          _seconds(run)))
        final = [_last(r, self.split, f"benchmark {bench.path} {signal_ds} {where}") / 100.0
                 for r in _runs(results, "200", signal_ds, where, bench.path)]
        reported = _runs(results, "200", report_ds, where, bench.path)
        tests = [_last(r, report_split, f"benchmark {bench.path} {report_ds} {where}") / 100.0 for r in reported]
        row: dict[str, float] = {"valid_acc": sum(a for a, _ in seeds) / len(seeds),
                                 "test_acc": sum(tests) / len(tests), "valid_acc_200": sum(final) / len(final)}
        times = [t for _, t in seeds if t is not None]
        if len(times) == len(seeds):
            row["train_seconds"] = sum(times) / len(times)
        for ours, theirs in (("params", "params"), ("flops", "flop"), ("latency", "latency")):
            values = []
            for r in reported:
                v = r.get(theirs)
                if isinstance(v, (list, tuple)):
                    v = v[0] if v else None
                if v is not None:
                    values.append(float(v))
            if values:
                row[ours] = sum(values) / len(values)
        return row, seeds

    def signal(self, bench: Benchmark, index: int, epoch: int) -> list[tuple[float, float | None]] | None:
        """Per-seed (signal accuracy, seconds) of cell ``index`` after epoch ``epoch`` (1..``epochs``)
        of the signal's schedule: the learning curve ``row`` reads at its end (None when the file
        lacks the cell). The accuracy is the split's after that epoch, the seconds
        ``simulate_train_eval(iepoch=epoch - 1)``'s cost; ``epoch == epochs`` is ``row``'s signal."""
        results = bench.results(index)
        if results is None:
            return None
        signal_ds = DATASETS[self.dataset][0]
        where = f"cell {index}"
        last = epoch == self.epochs  # the run's own last epoch, exactly as ``row`` reads it
        return [(_last(run, self.split, f"benchmark {bench.path} {signal_ds} {where}", None if last else epoch) / 100.0,
                 _seconds(run, None if last else epoch))
                for run in _runs(results, str(self.epochs), signal_ds, where, bench.path)]


__all__ = ["ALIASES", "Benchmark", "DATASETS", "EPOCHS", "Protocol", "SPLITS", "dataset_name", "is_benchmark_path",
           "open_benchmark"]
