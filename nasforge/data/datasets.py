"""Datasets: the embedded digits, a synthetic task, the papers' datasets and any folder or array of images.

A :class:`Dataset` is three :class:`~nasforge.data.loader.Split` s (train, valid, test):
index sets over sources (``nasforge.data.sources``) that hold images in memory (digits,
CIFAR, ImageNet16, a ``.npz``) or read them lazily from files (ImageNet, Tiny-ImageNet, any
``ImageFolder``). The valid split is carved out of the training set, class-balanced and
seeded. Batches come from :meth:`Dataset.loader`. The number of classes and the input shape
come from the data.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from nasforge.data.augment import Augment
from nasforge.data.loader import Loader, Split
from nasforge.data.sources import ArraySource, ImageFileSource, ImagePipeline, decode_image, scan_class_folder
from nasforge.errors import DataError
from nasforge.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "Dataset",
    "dataset_names",
    "load_dataset",
    "split_half",
    "synthetic_dataset",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST_FILE = "test_batch"
_CIFAR_META_FILE = "batches.meta"
_CIFAR_HINT = f"pass the folder that holds {_CIFAR_DIR} (or that folder itself) or a .npz file"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# Fixed seed of the synthetic task's content; the load seed only changes its splits (as for digits).
_SYNTHETIC_CONTENT_SEED = 20240611
# Sub-stream tags so the test and valid splits draw from independent streams of one seed.
_TEST_STREAM, _VALID_STREAM = 1, 2
#: folders of at most this many images are decoded once when loaded (a corrupt file fails before the run)
CHECK_ALL_BELOW = 5000
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Dataset:
    """Train/valid/test splits of labelled images, normalised per channel; batches from :meth:`loader`."""

    name: str
    train: Split
    valid: Split
    test: Split
    num_classes: int
    class_names: list[str]
    augment: Augment = field(default_factory=Augment)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    #: DataLoader worker processes of every loader made from this dataset (0: the main process)
    workers: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input, (C, H, W)."""
        return tuple(int(v) for v in self.train.source.shape)  # type: ignore[return-value]

    def describe(self) -> str:
        """One line: split sizes, input shape and class count."""
        c, h, w = self.input_shape
        return (
            f"{self.name}: {len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test, "
            f"{c}x{h}x{w}, {self.num_classes} classes"
        )

    def loader(self, split: Split, batch_size: int, *, train: bool = True, augment: Augment | None = None,
               drop_last: bool = False, device: Any = None, shard: tuple[int, int] = (0, 1)) -> Loader:
        """Batches of ``split`` (one of this dataset's splits or a subset of one) with this dataset's workers.

        ``train``: shuffled epochs get the training transforms (``augment``, by default the dataset's
        own); False: images as evaluation sees them. Memory is pinned when ``device`` is CUDA.
        ``shard=(rank, ranks)``: this process's slice of every batch (data-parallel runs).
        """
        pin = device is not None and torch.device(device).type == "cuda"
        return Loader(split, batch_size, augment=self.augment if augment is None else augment, train=train,
                      drop_last=drop_last, workers=self.workers, pin_memory=pin, shard=shard)

    # Whole splits as tensors, for small data (tests, HAQ's calibration and fine-tuning): not for ImageNet.
    @cached_property
    def _train_tensors(self) -> tuple[Tensor, Tensor]:
        return self.train.tensors()

    @cached_property
    def _valid_tensors(self) -> tuple[Tensor, Tensor]:
        return self.valid.tensors()

    @cached_property
    def _test_tensors(self) -> tuple[Tensor, Tensor]:
        return self.test.tensors()

    x_train = property(lambda self: self._train_tensors[0], doc="the train split as one tensor (small data)")
    y_train = property(lambda self: self._train_tensors[1])
    x_valid = property(lambda self: self._valid_tensors[0], doc="the valid split as one tensor (small data)")
    y_valid = property(lambda self: self._valid_tensors[1])
    x_test = property(lambda self: self._test_tensors[0], doc="the test split as one tensor (small data)")
    y_test = property(lambda self: self._test_tensors[1])


#: dataset loaders ``(data_dir, seed, valid_fraction, **options) -> Dataset``, by name; the description
#: says what the dataset is and the layout it expects (``nasforge list``)
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset", error=DataError)


#: datasets built into nasforge: they take no --data-dir
BUILT_IN = ("digits", "synthetic")


def check_data_dir(name: str, data_dir: str | os.PathLike | None) -> None:
    """Refuse a --data-dir given to a built-in dataset (before anything is loaded or built)."""
    if str(name).strip().lower() in BUILT_IN:
        _no_data_dir(str(name).strip().lower(), data_dir)


def _no_data_dir(name: str, data_dir: str | os.PathLike | None) -> None:
    """A dataset that is built in takes no --data-dir: refuse one rather than silently ignore it."""
    if data_dir is not None and str(data_dir) != "":
        raise DataError(f"dataset {name} is built in and takes no --data-dir (got {data_dir}); drop --data-dir, "
                        "or pass --data cifar10 to read images from it")


def _need_dir(name: str, data_dir: str | os.PathLike | None, layout: str) -> Path:
    if data_dir is None or str(data_dir) == "":
        raise DataError(f"{name} needs --data-dir: {layout}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"--data-dir {path} does not exist; {name} expects {layout}")
    return path


@DATASETS.register("digits", description="scikit-learn's 8x8 handwritten digits, 10 classes, embedded (no download)")
def _digits(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None, **_: Any) -> Dataset:
    _no_data_dir("digits", data_dir)
    return _load_digits(seed, _check_fraction(valid_fraction, 0.125))


@DATASETS.register("synthetic", description="small seeded 8x8 task with noisy class prototypes (tests)")
def _synthetic(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None, **_: Any) -> Dataset:
    _no_data_dir("synthetic", data_dir)
    return synthetic_dataset(seed=seed, valid_fraction=valid_fraction)


@DATASETS.register("cifar10", description="CIFAR-10, 32x32 colour, 10 classes: DIR/cifar-10-batches-py "
                   "(data_batch_1..5, test_batch) or a .npz (x_train, y_train, x_test, y_test)")
def _cifar10(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None, **_: Any) -> Dataset:
    return _load_cifar10(data_dir, seed, _check_fraction(valid_fraction, 0.1))


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.names()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    valid_fraction: float | None = None,
    workers: int = 0,
    **options: Any,
) -> Dataset:
    """Load a dataset by name, split it by ``seed``; ``workers``: DataLoader processes of its loaders;
    ``options``: the dataset's own (``image_size`` for image folders)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(f"data workers {workers!r} is invalid; use a whole number >= 0 (0: load in the main process)")
    data = DATASETS.get(str(name).strip().lower())(data_dir, seed, valid_fraction,
                                                    **{k: v for k, v in options.items() if v is not None})
    data.workers = workers
    return data


def split_half(split: Split, seed: int) -> tuple[Split, Split]:
    """Seeded, class-balanced split into two halves (DARTS bi-level: weights half, architecture half):
    index sets over the same source."""
    labels = split.labels
    first, second = _stratified_split(labels, len(labels) // 2, np.random.default_rng(seed))
    return split.subset(first), split.subset(second)


def synthetic_dataset(
    num_samples: int = 600,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    seed: int = 0,
    valid_fraction: float | None = None,
    noise: float = 0.6,
) -> Dataset:
    """Small learnable task: a fixed random textured prototype per class plus Gaussian noise; splits by ``seed``."""
    if num_classes < 2 or num_samples < 5 * num_classes:
        raise DataError(
            f"synthetic data needs >= 2 classes and >= 5 samples per class, got {num_samples} samples "
            f"for {num_classes} classes; raise num_samples or lower num_classes"
        )
    rng = np.random.default_rng([_SYNTHETIC_CONTENT_SEED, num_samples, num_classes, *input_shape])
    c, h, w = input_shape
    # Each prototype tiles a random 3x3 motif (a texture a conv + global pooling net picks up fast) over a
    # random image of half its weight (so an MLP on the pixels can learn it too).
    motifs = rng.choice([-1.0, 1.0], size=(num_classes, c, 3, 3))
    tiled = np.tile(motifs, (1, 1, -(-h // 3), -(-w // 3)))[:, :, :h, :w]
    prototypes = tiled + 0.5 * rng.uniform(-1.0, 1.0, size=(num_classes, c, h, w))
    labels = np.arange(num_samples) % num_classes
    rng.shuffle(labels)
    images = prototypes[labels] + noise * rng.standard_normal((num_samples, *input_shape))
    class_names = [f"class{i}" for i in range(num_classes)]
    return _split_and_build(
        "synthetic", images, labels, seed, _check_fraction(valid_fraction, 0.125), class_names, Augment(),
        test_fraction=0.2,
    )


# --------------------------------------------------------------------------- splitting


def _check_fraction(valid_fraction: float | None, default: float) -> float:
    """Return the valid fraction, or the default when None; reject values outside [0, 1)."""
    if valid_fraction is None:
        return default
    try:
        value = float(valid_fraction)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise DataError(f"valid fraction {valid_fraction!r} is out of range; use a number in [0, 1), e.g. 0.1")
    return value


def _count(fraction: float, n: int) -> int:
    """Number of samples a fraction of ``n`` takes (rounded up, like scikit-learn)."""
    return min(n, max(0, math.ceil(fraction * n - 1e-9)))


def _stratified_split(labels: np.ndarray, n_take: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, taken) with ``n_take`` taken, each class represented in proportion."""
    n = len(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * (n_take / n) if n else counts.astype(float)
    alloc = np.floor(exact).astype(np.int64)
    remainder = n_take - int(alloc.sum())
    if remainder > 0:
        # Largest fractional parts first; ties broken at random so no class is always favoured.
        order = np.lexsort((rng.permutation(len(classes)), -(exact - alloc)))
        alloc[order[:remainder]] += 1
    taken, rest = [], []
    for k in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == k))
        taken.append(members[: alloc[k]])
        rest.append(members[alloc[k]:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(rest + [empty])), np.sort(np.concatenate(taken + [empty]))


def _split_and_build(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    valid_fraction: float,
    class_names: list[str],
    augment: Augment,
    test_fraction: float | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    scale: float = 1.0,
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Dataset:
    """Carve test (unless given) and valid splits out of in-memory ``images`` as index sets, normalise
    with the train split's statistics (or ``mean_std``) after dividing by ``scale``, wrap."""
    labels = np.asarray(labels, dtype=np.int64)
    everything = np.arange(len(labels), dtype=np.int64)
    if test is None:
        assert test_fraction is not None
        rng_test = np.random.default_rng([seed, _TEST_STREAM])
        rest, test_idx = _stratified_split(labels, _count(test_fraction, len(labels)), rng_test)
    else:
        rest, test_idx = everything, None
    rng_valid = np.random.default_rng([seed, _VALID_STREAM])
    train_pos, valid_pos = _stratified_split(labels[rest], _count(valid_fraction, len(rest)), rng_valid)
    train_idx, valid_idx = rest[train_pos], rest[valid_pos]
    if mean_std is None:
        mean, std = _channel_stats(images, scale, train_idx)
    else:
        mean, std = np.asarray(mean_std[0]), np.asarray(mean_std[1])
    source = ArraySource(images, labels, mean, std, scale)
    if test is None:
        test_split = Split(source, test_idx)
    else:
        test_labels = np.asarray(test[1], dtype=np.int64)
        test_split = Split(ArraySource(test[0], test_labels, mean, std, scale),
                           np.arange(len(test_labels), dtype=np.int64))
    return Dataset(
        name=name,
        train=Split(source, train_idx), valid=Split(source, valid_idx), test=test_split,
        num_classes=len(class_names),
        class_names=list(class_names),
        augment=augment,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def _channel_stats(x: np.ndarray, scale: float, rows: np.ndarray, chunk: int = 4096
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``x[rows] / scale`` (N, C, H, W), accumulated in float64 chunk by chunk."""
    total = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for start in range(0, len(rows), chunk):
        part = x[rows[start:start + chunk]].astype(np.float64) / scale
        total += part.sum(axis=(0, 2, 3))
        total_sq += np.square(part).sum(axis=(0, 2, 3))
    count = max(1, len(rows) * x.shape[2] * x.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, np.where(std > 1e-6, std, 1.0)


# --------------------------------------------------------------------------- digits


def _load_digits(seed: int, valid_fraction: float) -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float64) / 16.0)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    class_names = [str(c) for c in bunch.target_names]
    return _split_and_build("digits", images, labels, seed, valid_fraction, class_names, Augment(), test_fraction=0.2)


# --------------------------------------------------------------------------- CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (CIFAR batches hold nothing else), so no code can run."""

    _ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the allow-listed globals."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    """Read one CIFAR-10 python batch file into a dict with str keys."""
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # any failure here means the file is unreadable or not a CIFAR batch
        raise DataError(
            f"cannot read {path} ({type(exc).__name__}); it is corrupt or not a CIFAR-10 python batch, "
            f"re-download and extract cifar-10-python.tar.gz"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR-10 batch dict; re-download and extract cifar-10-python.tar.gz")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR-10 batch file."""
    batch = _read_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(
            f"{path} lacks the 'data'/'labels' entries of a CIFAR-10 batch; re-download and extract "
            f"cifar-10-python.tar.gz"
        )
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path} holds data of shape {data.shape} ({data.dtype}), expected (N, 3072) uint8; "
            f"re-download and extract cifar-10-python.tar.gz"
        )
    labels = _check_labels(np.asarray(batch["labels"]), data.shape[0], str(path))
    return data.reshape(-1, 3, 32, 32), labels


def _check_labels(labels: np.ndarray, n: int, where: str, classes: int = 10) -> np.ndarray:
    """Validate labels: n integers in 0..classes-1."""
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels have shape {labels.shape} ({labels.dtype}), expected {n} integers; "
                        f"fix the labels so there is one integer 0..{classes - 1} per image")
    if n and (labels.min() < 0 or labels.max() > classes - 1):
        raise DataError(f"{where}: labels span {labels.min()}..{labels.max()}, expected 0..{classes - 1}; "
                        "fix the labels")
    return labels.astype(np.int64)


def _cifar_meta(folder: Path) -> list[str]:
    """Class names from batches.meta when present, else the standard CIFAR-10 names."""
    path = folder / _CIFAR_META_FILE
    if not path.is_file():
        return list(CIFAR10_CLASSES)
    meta = _read_pickle(path)
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise DataError(f"{path} lacks 10 'label_names'; re-download and extract cifar-10-python.tar.gz")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _read_cifar_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read the python-pickle CIFAR-10 folder: (x_train, y_train, x_test, y_test) channel-major, plus names."""
    missing = [f for f in [*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE] if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{folder} lacks CIFAR-10 files {', '.join(missing)}; re-extract cifar-10-python.tar.gz so "
            f"{_CIFAR_DIR} holds data_batch_1..5 and test_batch"
        )
    parts = [_cifar_batch(folder / f) for f in _CIFAR_TRAIN_FILES]
    x_test, y_test = _cifar_batch(folder / _CIFAR_TEST_FILE)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test, _cifar_meta(folder)


def _open_npz(path: Path, fix: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The x_train/y_train/x_test/y_test arrays (and class_names or None) of a .npz; one-line errors."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataError(f"{path} is a single .npy array, not a .npz archive; {fix}")
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path} lacks arrays {', '.join(missing)}; {fix}")
            return {k: npz[k] for k in _NPZ_KEYS}, (npz["class_names"] if "class_names" in npz.files else None)
    except DataError:
        raise
    except Exception as exc:  # zip, header or pickle-forbidden errors: the file cannot be used as is
        raise DataError(f"cannot read {path} ({type(exc).__name__}); it is corrupt or not a .npz, {fix}") from exc


def _read_cifar_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a .npz with uint8 x_train/x_test (N, 32, 32, 3) and labels; returns channel-major images."""
    fix = "write it with numpy.savez holding uint8 x_train/x_test (N,32,32,3) and integer y_train/y_test"
    arrays, names = _open_npz(path, fix)
    out = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise DataError(f"{path}: x_{split} has shape {x.shape} ({x.dtype}), expected (N, 32, 32, 3) uint8; {fix}")
        y = _check_labels(arrays[f"y_{split}"], x.shape[0], f"{path} y_{split}")
        out += [np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y]
    if names is None:
        class_names = list(CIFAR10_CLASSES)
    else:
        if names.ndim != 1 or names.shape[0] != 10:
            raise DataError(f"{path}: class_names has shape {names.shape}, expected 10 names; fix or drop it")
        class_names = [str(n) for n in names]
    return out[0], out[1], out[2], out[3], class_names


def _resolve_cifar(data_dir: str | os.PathLike) -> Path:
    """Find the CIFAR-10 source (batch folder or .npz file) that ``data_dir`` points at."""
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"--data-dir {path} does not exist; {_CIFAR_HINT}")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            hint = " (extract the archive first)" if path.name.endswith((".tar.gz", ".tgz", ".tar")) else ""
            raise DataError(f"--data-dir {path} is a file but not a .npz{hint}; {_CIFAR_HINT}")
        return path
    if (path / _CIFAR_DIR).is_dir():
        return path / _CIFAR_DIR
    if (path / _CIFAR_TRAIN_FILES[0]).exists() or (path / _CIFAR_TEST_FILE).exists():
        return path
    hint = " (extract cifar-10-python.tar.gz there first)" if (path / "cifar-10-python.tar.gz").exists() else ""
    raise DataError(f"--data-dir {path} holds neither {_CIFAR_DIR} nor CIFAR-10 batch files{hint}; {_CIFAR_HINT}")


def _load_cifar10(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float) -> Dataset:
    """CIFAR-10 from the python-pickle folder or a .npz; valid split carved out of the training set."""
    if data_dir is None:
        raise DataError(f"cifar10 needs --data-dir; {_CIFAR_HINT} with x_train/y_train/x_test/y_test")
    source = _resolve_cifar(data_dir)
    reader = _read_cifar_npz if source.is_file() else _read_cifar_folder
    x_train, y_train, x_test, y_test, class_names = reader(source)
    if len(y_train) < 2:
        raise DataError(f"{source} holds {len(y_train)} training images; pass a dataset with at least 2")
    if len(y_test) < 1:  # else every run would report a test accuracy of 0.0 as if it were a result
        raise DataError(f"{source} holds no test images (x_test/y_test are empty); pass a dataset with a test split")
    return _split_and_build(
        "cifar10", x_train, y_train, seed, valid_fraction, class_names, Augment(crop_padding=4, flip=True),
        test=(x_test, y_test), scale=255.0,
    )


# --------------------------------------------------------------------------- CIFAR-100

_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_LAYOUT = f"DIR/{_CIFAR100_DIR} (or that folder) with the python files train, test and meta"


@DATASETS.register("cifar100", description=f"CIFAR-100, 32x32 colour, 100 classes: {_CIFAR100_LAYOUT}")
def _cifar100(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None, **_: Any) -> Dataset:
    path = _need_dir("cifar100", data_dir, _CIFAR100_LAYOUT)
    folder = path / _CIFAR100_DIR if (path / _CIFAR100_DIR).is_dir() else path
    missing = [f for f in ("train", "test") if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder} lacks CIFAR-100 files {', '.join(missing)}; extract cifar-100-python.tar.gz "
                        f"so that {_CIFAR100_DIR} holds train, test and meta")
    parts = []
    for name in ("train", "test"):
        batch = _read_pickle(folder / name)
        if "data" not in batch or "fine_labels" not in batch:
            raise DataError(f"{folder / name} lacks the 'data'/'fine_labels' entries of a CIFAR-100 file; "
                            "re-download and extract cifar-100-python.tar.gz")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{folder / name} holds data of shape {data.shape} ({data.dtype}), expected (N, 3072) "
                            "uint8; re-download and extract cifar-100-python.tar.gz")
        labels = _check_labels(np.asarray(batch["fine_labels"]), data.shape[0], str(folder / name), 100)
        parts.append((data.reshape(-1, 3, 32, 32), labels))
    names = [f"class{i}" for i in range(100)]
    if (folder / "meta").is_file():
        meta = _read_pickle(folder / "meta").get("fine_label_names")
        if isinstance(meta, (list, tuple)) and len(meta) == 100:
            names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta]
    return _split_and_build("cifar100", parts[0][0], parts[0][1], seed, _check_fraction(valid_fraction, 0.1), names,
                            Augment(crop_padding=4, flip=True), test=parts[1], scale=255.0)


# --------------------------------------------------------------------------- ImageNet16 (NAS-Bench-201)

_IMAGENET16_LAYOUT = ("DIR holding NAS-Bench-201's ImageNet16 python batches train_data_batch_1..10 and val_data "
                      "(3x16x16 images, labels 1..1000)")
# NAS-Bench-201's normalisation of ImageNet16 (its pixel statistics, 0..255)
_IMAGENET16_MEAN = tuple(v / 255 for v in (122.68, 116.66, 104.01))
_IMAGENET16_STD = tuple(v / 255 for v in (63.22, 61.26, 65.09))


@DATASETS.register("imagenet16", description="ImageNet16-120 (NAS-Bench-201): 16x16 ImageNet, the first 120 "
                   f"classes (option classes): {_IMAGENET16_LAYOUT}")
def _imagenet16(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None,
                classes: int = 120, **_: Any) -> Dataset:
    path = _need_dir("imagenet16", data_dir, _IMAGENET16_LAYOUT)
    train_files = sorted(path.glob("train_data_batch_*"), key=lambda p: int(p.name.rsplit("_", 1)[-1])
                         if p.name.rsplit("_", 1)[-1].isdigit() else 0)
    if not train_files or not (path / "val_data").is_file():
        raise DataError(f"{path} lacks train_data_batch_* or val_data; pass {_IMAGENET16_LAYOUT}")
    if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= 1000:
        raise DataError(f"imagenet16 classes={classes!r} is invalid; use 2..1000 (NAS-Bench-201: 120)")

    def read(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            batch = _read_pickle(f)
            if "data" not in batch or "labels" not in batch:
                raise DataError(f"{f} lacks the 'data'/'labels' entries of an ImageNet16 batch; re-download it")
            data = np.asarray(batch["data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 16 * 16:
                raise DataError(f"{f} holds data of shape {data.shape} ({data.dtype}), expected (N, 768) uint8; "
                                "re-download it")
            labels = _check_labels(np.asarray(batch["labels"]) - 1, data.shape[0], str(f), 1000)
            keep = labels < classes  # NAS-Bench-201 keeps labels 1..classes
            xs.append(data[keep].reshape(-1, 3, 16, 16))
            ys.append(labels[keep])
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read([path / "val_data"])
    if len(y_train) < 2 or len(y_test) < 1:
        raise DataError(f"{path} holds {len(y_train)} training and {len(y_test)} test images of the first "
                        f"{classes} classes; pass the full ImageNet16 batches")
    return _split_and_build(f"imagenet16-{classes}" if classes != 120 else "imagenet16", x_train, y_train, seed,
                            _check_fraction(valid_fraction, 0.1), [f"class{i}" for i in range(classes)],
                            Augment(crop_padding=2, flip=True), test=(x_test, y_test), scale=255.0,
                            mean_std=(_IMAGENET16_MEAN, _IMAGENET16_STD))


# --------------------------------------------------------------------------- arrays (.npz)

_NPZ_LAYOUT = ("a .npz with x_train, y_train, x_test, y_test (images (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 "
               "0..255 or floats; integer labels 0..K-1) and optionally class_names")


@DATASETS.register("npz", description=f"your own arrays: {_NPZ_LAYOUT}")
def _npz(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None, **_: Any) -> Dataset:
    path = _need_dir("npz", data_dir, _NPZ_LAYOUT)
    if not path.is_file():
        raise DataError(f"--data-dir {path} is a folder; npz expects {_NPZ_LAYOUT}")
    arrays, names = _open_npz(path, f"write it with numpy.savez: {_NPZ_LAYOUT}")
    fix = f"write it with numpy.savez: {_NPZ_LAYOUT}"
    xs = {}
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
        elif x.ndim != 4:
            raise DataError(f"{path}: x_{split} has shape {x.shape}, expected images (N,H,W), (N,H,W,C) or "
                            f"(N,C,H,W); {fix}")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{path}: x_{split} is {x.dtype}, expected uint8 pixels or floats; {fix}")
        xs[split] = np.ascontiguousarray(x)
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"{path}: x_train images are {xs['train'].shape[1:]} but x_test images are "
                        f"{xs['test'].shape[1:]}; use one image shape")
    y_raw = np.asarray(arrays["y_train"])
    classes = len(names) if names is not None else (int(y_raw.max()) + 1 if y_raw.size and
                                                    np.issubdtype(y_raw.dtype, np.integer) else 0)
    y_train = _check_labels(y_raw, xs["train"].shape[0], f"{path} y_train", max(classes, 1))
    y_test = _check_labels(np.asarray(arrays["y_test"]), xs["test"].shape[0], f"{path} y_test", max(classes, 1))
    if classes < 2 or len(y_train) < 2 or len(y_test) < 1:
        raise DataError(f"{path} holds {len(y_train)} training / {len(y_test)} test images of {classes} classes; "
                        "pass at least 2 classes, 2 training images and 1 test image")
    class_names = [str(n) for n in names] if names is not None else [f"class{i}" for i in range(classes)]
    c, h, _ = xs["train"].shape[1:]
    augment = Augment(crop_padding=h // 8, flip=True) if c == 3 and h >= 16 else Augment()
    return _split_and_build("npz", xs["train"], y_train, seed, _check_fraction(valid_fraction, 0.1), class_names,
                            augment, test=(xs["test"], y_test), scale=255.0 if xs["train"].dtype == np.uint8 else 1.0)


# --------------------------------------------------------------------------- image folders

_FOLDER_LAYOUT = "DIR/train/<class>/<image> and DIR/val/<class>/<image> (or DIR/test/...): torchvision's ImageFolder"


def _eval_folder(path: Path) -> Path:
    for name in ("val", "test"):
        if (path / name).is_dir():
            return path / name
    raise DataError(f"{path} has no val/ or test/ folder; expected {_FOLDER_LAYOUT}")


def _check_files(paths: list[str], channels: int) -> None:
    """Decode every image of a small folder once: a corrupt file fails before a run starts."""
    if len(paths) <= CHECK_ALL_BELOW:
        for p in paths:
            decode_image(p, channels)


def _sample_images(paths: list[str], n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    take = rng.choice(len(paths), size=min(n, len(paths)), replace=False)
    return [paths[int(i)] for i in sorted(take)]


def _folder_dataset(name: str, train_paths: list[str], train_labels: list[int], test_paths: list[str],
                    test_labels: list[int], classes: list[str], seed: int, valid_fraction: float,
                    pipeline: ImagePipeline, channels: int, augment: Augment,
                    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None) -> Dataset:
    labels = np.asarray(train_labels, dtype=np.int64)
    if mean_std is None:  # estimated on a seeded sample of training images, as evaluation sees them
        probe = ImageFileSource(_sample_images(train_paths, 256), np.zeros(0), channels, pipeline,
                                (0.0,) * channels, (1.0,) * channels)
        x = probe.fetch(np.arange(len(probe.paths)), None, False).double()
        mean = x.mean(dim=(0, 2, 3)).numpy()
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).numpy()
    else:
        mean, std = np.asarray(mean_std[0]), np.asarray(mean_std[1])
    source = ImageFileSource(train_paths, labels, channels, pipeline, mean, std)
    test = ImageFileSource(test_paths, np.asarray(test_labels, dtype=np.int64), channels, pipeline, mean, std)
    rng_valid = np.random.default_rng([seed, _VALID_STREAM])
    train_idx, valid_idx = _stratified_split(labels, _count(valid_fraction, len(labels)), rng_valid)
    return Dataset(name=name, train=Split(source, train_idx), valid=Split(source, valid_idx),
                   test=Split(test, np.arange(len(test_paths), dtype=np.int64)), num_classes=len(classes),
                   class_names=list(classes), augment=augment, mean=tuple(float(v) for v in mean),
                   std=tuple(float(v) for v in std))


def _auto_size(paths: list[str]) -> int:
    """Input side for a folder of any image size: the median short side of a sample, 8..224."""
    from PIL import Image

    sides = []
    for p in _sample_images(paths, 32):
        try:
            with Image.open(p) as img:
                sides.append(min(img.size))
        except OSError:
            continue
    side = int(np.median(sides)) if sides else 32
    return int(min(224, max(8, side)))


def _channels(paths: list[str]) -> int:
    """1 when every sampled image is grayscale, else 3 (RGBA, palette and CMYK images become RGB)."""
    from PIL import Image

    for p in _sample_images(paths, 32):
        try:
            with Image.open(p) as img:
                if img.mode not in ("L", "1", "I", "I;16", "F"):
                    return 3
        except OSError:
            return 3
    return 1


@DATASETS.register("imagefolder", description=f"your own images, any size and class count: {_FOLDER_LAYOUT}; "
                   "option image_size (auto: the median short side, at most 224)")
def _imagefolder(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None,
                 image_size: int | None = None, **_: Any) -> Dataset:
    path = _need_dir("imagefolder", data_dir, _FOLDER_LAYOUT)
    train = scan_class_folder(path / "train")
    test = scan_class_folder(_eval_folder(path), classes=train.classes)
    channels = _channels(train.paths)
    _check_files(train.paths + test.paths, channels)
    size = _check_size(image_size) if image_size is not None else _auto_size(train.paths)
    if size >= 64:  # the ImageNet recipe
        pipeline = ImagePipeline(size, random_resized=True, flip=True, crop_ratio=0.875)
        augment = Augment()
    else:  # small images: resize, then the CIFAR recipe on the batch
        pipeline = ImagePipeline(size)
        augment = Augment(crop_padding=max(1, size // 8), flip=True)
    return _folder_dataset("imagefolder", train.paths, train.labels, test.paths, test.labels, train.classes, seed,
                           _check_fraction(valid_fraction, 0.1), pipeline, channels, augment, None)


def _check_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 4 <= value <= 1024:
        raise DataError(f"image_size={value!r} is invalid; use a whole number of pixels in 4..1024")
    return value


_IMAGENET_LAYOUT = "DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (the val images sorted into class folders)"


@DATASETS.register("imagenet", description=f"ImageNet (ILSVRC-2012), read lazily at 224x224: {_IMAGENET_LAYOUT}")
def _imagenet(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None,
              image_size: int | None = None, **_: Any) -> Dataset:
    path = _need_dir("imagenet", data_dir, _IMAGENET_LAYOUT)
    train = scan_class_folder(path / "train", what="JPEGs")
    test = scan_class_folder(_eval_folder(path), classes=train.classes, what="JPEGs")
    _check_files(train.paths + test.paths, 3)
    size = _check_size(image_size) if image_size is not None else 224
    # ProxylessNAS / DenseNAS: random-resized crop, flip, colour jitter; evaluation: resize 256, centre 224
    pipeline = ImagePipeline(size, random_resized=True, flip=True, brightness=32 / 255, saturation=0.5,
                             crop_ratio=0.875)
    return _folder_dataset("imagenet", train.paths, train.labels, test.paths, test.labels, train.classes, seed,
                           _check_fraction(valid_fraction, 0.04), pipeline, 3, Augment(),
                           (IMAGENET_MEAN, IMAGENET_STD))


_TINY_LAYOUT = ("DIR (tiny-imagenet-200) with train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
                "val/val_annotations.txt")


@DATASETS.register("tiny-imagenet", description=f"Tiny-ImageNet, 64x64, 200 classes: {_TINY_LAYOUT}")
def _tiny_imagenet(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None, **_: Any) -> Dataset:
    path = _need_dir("tiny-imagenet", data_dir, _TINY_LAYOUT)
    if (path / "tiny-imagenet-200").is_dir():
        path = path / "tiny-imagenet-200"
    train = scan_class_folder(path / "train", what="images (in <wnid>/images/)")
    notes = path / "val" / "val_annotations.txt"
    if not notes.is_file():
        raise DataError(f"{path} lacks val/val_annotations.txt; expected {_TINY_LAYOUT}")
    index = {c: i for i, c in enumerate(train.classes)}
    test_paths, test_labels = [], []
    for line_no, line in enumerate(notes.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise DataError(f"{notes} line {line_no} names class {fields[1]} that train/ lacks; use the "
                            "tiny-imagenet-200 folders as released")
        test_paths.append(str(path / "val" / "images" / fields[0]))
        test_labels.append(index[fields[1]])
    if not test_paths:
        raise DataError(f"{notes} lists no images; expected {_TINY_LAYOUT}")
    _check_files(train.paths + test_paths, 3)
    return _folder_dataset("tiny-imagenet", train.paths, train.labels, test_paths, test_labels, train.classes,
                           seed, _check_fraction(valid_fraction, 0.1), ImagePipeline(64), 3,
                           Augment(crop_padding=4, flip=True), ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)))
