"""Datasets held in memory as normalised tensors: scikit-learn digits, CIFAR-10 and a synthetic task."""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from nasforge.data.augment import Augment
from nasforge.errors import DataError
from nasforge.registry import Registry

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


@dataclass
class Dataset:
    """Train/valid/test tensors, normalised per channel with the train split's statistics."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_valid: Tensor
    y_valid: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    class_names: list[str]
    augment: Augment = field(default_factory=Augment)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input, (C, H, W)."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    def describe(self) -> str:
        """One line: split sizes, input shape and class count."""
        c, h, w = self.input_shape
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_valid)} valid / {len(self.y_test)} test, "
            f"{c}x{h}x{w}, {self.num_classes} classes"
        )


#: dataset loaders ``(data_dir, seed, valid_fraction) -> Dataset``, by name
DATASETS: Registry[Callable[[str | os.PathLike | None, int, float | None], Dataset]] = Registry(
    "dataset", error=DataError)


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


@DATASETS.register("digits", description="scikit-learn's 8x8 handwritten digits, embedded (no download)")
def _digits(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None) -> Dataset:
    _no_data_dir("digits", data_dir)
    return _load_digits(seed, _check_fraction(valid_fraction, 0.125))


@DATASETS.register("synthetic", description="small seeded 8x8 task with noisy class prototypes (tests)")
def _synthetic(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None) -> Dataset:
    _no_data_dir("synthetic", data_dir)
    return synthetic_dataset(seed=seed, valid_fraction=valid_fraction)


@DATASETS.register("cifar10", description="CIFAR-10, 32x32 colour, from --data-dir (python batches or .npz)")
def _cifar10(data_dir: str | os.PathLike | None, seed: int, valid_fraction: float | None) -> Dataset:
    return _load_cifar10(data_dir, seed, _check_fraction(valid_fraction, 0.1))


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.names()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    valid_fraction: float | None = None,
) -> Dataset:
    """Load a dataset by name, split it by ``seed`` and normalise it with train statistics."""
    return DATASETS.get(str(name).strip().lower())(data_dir, seed, valid_fraction)


def split_half(x: Tensor, y: Tensor, seed: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Seeded, class-balanced split into two halves (DARTS bi-level: weights half, architecture half)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    labels = y.detach().cpu().numpy()
    first, second = _stratified_split(labels, len(labels) // 2, np.random.default_rng(seed))
    a = torch.from_numpy(first).to(x.device)
    b = torch.from_numpy(second).to(x.device)
    return (x[a], y[a.to(y.device)]), (x[b], y[b.to(y.device)])


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
) -> Dataset:
    """Carve test (unless given) and valid splits out of ``images``, divide by ``scale``, normalise, wrap."""
    labels = np.asarray(labels, dtype=np.int64)
    if test is None:
        assert test_fraction is not None
        rng_test = np.random.default_rng([seed, _TEST_STREAM])
        rest, test_idx = _stratified_split(labels, _count(test_fraction, len(labels)), rng_test)
        x_test, y_test = images[test_idx], labels[test_idx]
        images, labels = images[rest], labels[rest]
    else:
        x_test, y_test = test[0], np.asarray(test[1], dtype=np.int64)
    rng_valid = np.random.default_rng([seed, _VALID_STREAM])
    train_idx, valid_idx = _stratified_split(labels, _count(valid_fraction, len(labels)), rng_valid)
    x_train, y_train = images[train_idx], labels[train_idx]
    x_valid, y_valid = images[valid_idx], labels[valid_idx]

    mean, std = _channel_stats(x_train, scale)

    def norm(a: np.ndarray) -> Tensor:
        out = a.astype(np.float32)
        out *= np.float32(1.0 / scale)
        out -= mean.astype(np.float32)[None, :, None, None]
        out /= std.astype(np.float32)[None, :, None, None]
        return torch.from_numpy(np.ascontiguousarray(out))

    def lab(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return Dataset(
        name=name,
        x_train=norm(x_train), y_train=lab(y_train),
        x_valid=norm(x_valid), y_valid=lab(y_valid),
        x_test=norm(x_test), y_test=lab(y_test),
        num_classes=len(class_names),
        class_names=list(class_names),
        augment=augment,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def _channel_stats(x: np.ndarray, scale: float, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``x / scale`` (N, C, H, W), accumulated in float64 chunk by chunk."""
    total = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].astype(np.float64) / scale
        total += part.sum(axis=(0, 2, 3))
        total_sq += np.square(part).sum(axis=(0, 2, 3))
    count = max(1, x.shape[0] * x.shape[2] * x.shape[3])
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


def _check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    """Validate CIFAR-10 labels: n integers in 0..9."""
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels have shape {labels.shape} ({labels.dtype}), expected {n} integers; "
                        f"fix the labels so there is one integer 0..9 per image")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels span {labels.min()}..{labels.max()}, expected 0..9; fix the labels")
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


def _read_cifar_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a .npz with uint8 x_train/x_test (N, 32, 32, 3) and labels; returns channel-major images."""
    fix = "write it with numpy.savez holding uint8 x_train/x_test (N,32,32,3) and integer y_train/y_test"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataError(f"{path} is a single .npy array, not a .npz archive; {fix}")
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path} lacks arrays {', '.join(missing)}; {fix}")
            arrays = {k: npz[k] for k in _NPZ_KEYS}
            names = npz["class_names"] if "class_names" in npz.files else None
    except DataError:
        raise
    except Exception as exc:  # zip, header or pickle-forbidden errors: the file cannot be used as is
        raise DataError(f"cannot read {path} ({type(exc).__name__}); it is corrupt or not a .npz, {fix}") from exc
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
