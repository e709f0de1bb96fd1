"""Tests for nasforge.data: datasets, splits, batching and augmentation."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge.data import (
    Augment,
    Dataset,
    dataset_names,
    iterate_batches,
    load_dataset,
    num_batches,
    split_half,
    synthetic_dataset,
)
from nasforge.errors import ConfigError, DataError

SHARED_NPZ = Path("/work/shared/data/cifar10_small.npz")


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _all_splits(ds: Dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(ds.x_train, ds.y_train), (ds.x_valid, ds.y_valid), (ds.x_test, ds.y_test)]


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


# --------------------------------------------------------------------------- digits / synthetic


def test_dataset_names() -> None:
    assert dataset_names() == ["cifar10", "cifar100", "digits", "imagefolder", "imagenet", "imagenet16", "npz",
                               "synthetic", "tiny-imagenet"]


def test_digits_split_sizes_and_describe() -> None:
    ds = load_dataset("digits", seed=0)
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == (1257, 180, 360)
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    assert ds.describe() == "digits: 1257 train / 180 valid / 360 test, 1x8x8, 10 classes"
    assert ds.augment == Augment()
    for x, y in _all_splits(ds):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8)
    # normalised with train statistics
    assert abs(ds.x_train.mean().item()) < 1e-4
    assert abs(ds.x_train.std().item() - 1.0) < 1e-3


def test_digits_splits_partition_the_data() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits", seed=3)
    mean, std = ds.mean[0], ds.std[0]
    seen = Counter()
    for x, y in _all_splits(ds):
        raw = np.rint((x.numpy() * std + mean) * 16).astype(np.int64).reshape(len(y), -1)
        seen.update((row.tobytes(), int(label)) for row, label in zip(raw, y.tolist()))
    expected = Counter(
        (row.tobytes(), int(label))
        for row, label in zip(bunch.images.astype(np.int64).reshape(len(bunch.target), -1), bunch.target)
    )
    assert seen == expected  # every sample in exactly one split


def test_digits_test_split_is_stratified() -> None:
    ds = load_dataset("digits", seed=0)
    total = torch.bincount(torch.cat([ds.y_train, ds.y_valid, ds.y_test]), minlength=10)
    test = torch.bincount(ds.y_test, minlength=10)
    assert torch.all((test.double() - 0.2 * total.double()).abs() <= 1.0)


def test_dataset_deterministic_by_seed_and_differs_across_seeds() -> None:
    a, b, c = load_dataset("digits", seed=5), load_dataset("digits", seed=5), load_dataset("digits", seed=6)
    for (xa, ya), (xb, yb) in zip(_all_splits(a), _all_splits(b)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.y_train, c.y_train) or not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.y_test, c.y_test) or not torch.equal(a.x_test, c.x_test)


def test_valid_fraction_argument() -> None:
    ds = load_dataset("digits", seed=0, valid_fraction=0.5)
    assert len(ds.y_test) == 360 and len(ds.y_valid) == 719 and len(ds.y_train) == 718
    empty = load_dataset("synthetic", valid_fraction=0.0)
    assert len(empty.y_valid) == 0 and empty.x_valid.shape == (0, 1, 8, 8)
    with pytest.raises(DataError) as exc:
        load_dataset("digits", valid_fraction=1.5)
    _assert_one_line(exc, "[0, 1)")


def test_synthetic_is_small_deterministic_and_learnable() -> None:
    ds = load_dataset("synthetic", seed=0)
    assert ds.describe() == "synthetic: 420 train / 60 valid / 120 test, 1x8x8, 10 classes"
    again = load_dataset("synthetic", seed=0)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    assert not torch.equal(ds.x_train, load_dataset("synthetic", seed=1).x_train)
    rgb = synthetic_dataset(num_samples=100, num_classes=4, input_shape=(3, 6, 6))
    assert rgb.input_shape == (3, 6, 6) and rgb.num_classes == 4

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
        )
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        gen = _gen(0)
        for _ in range(10):
            for xb, yb in iterate_batches(ds.x_train, ds.y_train, 64, generator=gen):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
        with torch.no_grad():
            acc = (model(ds.x_test).argmax(1) == ds.y_test).float().mean().item()
    assert acc > 0.5  # chance is 0.1


# --------------------------------------------------------------------------- split_half


def test_split_half_is_stratified_disjoint_and_seeded() -> None:
    from nasforge.data import Split
    from nasforge.data.sources import ArraySource

    counts = [10, 21, 40, 7]
    y = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=_gen(1))].numpy()
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1, 1, 1)
    split = Split(ArraySource(x, y, [0.0], [1.0]), np.arange(len(y)))
    a, b = split_half(split, seed=0)
    assert len(a) + len(b) == len(y) and abs(len(a) - len(b)) <= 1
    ids_a, ids_b = set(a.indices.tolist()), set(b.indices.tolist())
    assert not ids_a & ids_b and ids_a | ids_b == set(range(len(y)))
    # index sets over the same source: the samples and their labels are the source's
    assert a.source is split.source and np.array_equal(a.labels, y[a.indices])
    xa, ya = a.tensors()
    assert torch.equal(xa.flatten().long(), torch.from_numpy(a.indices)) and torch.equal(ya, torch.from_numpy(y[a.indices]))
    ca, cb = np.bincount(a.labels, minlength=4), np.bincount(b.labels, minlength=4)
    assert np.all(np.abs(ca - cb) <= 1)
    assert np.array_equal(ca + cb, counts)
    assert np.array_equal(split_half(split, seed=0)[0].indices, a.indices)
    assert not np.array_equal(split_half(split, seed=1)[0].indices, a.indices)


# --------------------------------------------------------------------------- batches


def test_iterate_batches_covers_each_sample_once_and_is_reproducible() -> None:
    n = 50
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    y = torch.arange(n)
    batches = list(iterate_batches(x, y, 7, generator=_gen(0)))
    assert [len(b[1]) for b in batches] == [7] * 7 + [1]
    assert len(batches) == num_batches(n, 7) == 8
    xs = torch.cat([b[0] for b in batches]).flatten().long()
    ys = torch.cat([b[1] for b in batches])
    assert torch.equal(xs, ys)  # pairs stay together
    assert sorted(ys.tolist()) == list(range(n))
    assert not torch.equal(ys, y)  # shuffled
    again = torch.cat([b[1] for b in iterate_batches(x, y, 7, generator=_gen(0))])
    other = torch.cat([b[1] for b in iterate_batches(x, y, 7, generator=_gen(1))])
    assert torch.equal(ys, again) and not torch.equal(ys, other)
    # no generator: original order
    assert torch.equal(torch.cat([b[1] for b in iterate_batches(x, y, 16)]), y)
    dropped = list(iterate_batches(x, y, 7, generator=_gen(0), drop_last=True))
    assert [len(b[1]) for b in dropped] == [7] * 7 == [7] * num_batches(n, 7, drop_last=True)
    assert num_batches(0, 4) == 0 and num_batches(8, 4) == 2 and num_batches(9, 4) == 3
    with pytest.raises(ConfigError):
        num_batches(10, 0)


def test_iterate_batches_applies_augment_reproducibly() -> None:
    x = torch.randn(20, 1, 6, 6, generator=_gen(3))
    y = torch.arange(20)
    aug = Augment(flip=True)
    out = list(iterate_batches(x, y, 8, generator=_gen(0), augment=aug))
    flipped = 0
    for xb, yb in out:
        for img, label in zip(xb, yb):
            orig = x[label]
            assert torch.equal(img, orig) or torch.equal(img, orig.flip(-1))
            flipped += int(not torch.equal(img, orig))
    assert flipped > 0
    again = list(iterate_batches(x, y, 8, generator=_gen(0), augment=aug))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(out, again))


# --------------------------------------------------------------------------- augment


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (C,H,W) by (dy, dx) with zero fill."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[
        :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)
    ]
    return out


def test_crop_is_a_translation_by_at_most_padding() -> None:
    p = 3
    x = torch.rand(40, 2, 10, 10, generator=_gen(0)) + 0.1  # strictly positive, so zero fill is visible
    out = Augment(crop_padding=p)(x, _gen(1))
    assert out.shape == x.shape and not torch.equal(out, x) and torch.equal(x, x.clone())
    shifts = set()
    for img, res in zip(x, out):
        match = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1) if torch.equal(_shift(img, dy, dx), res)]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 5

    one_hot = torch.zeros(30, 1, 12, 12)
    one_hot[:, 0, 6, 5] = 1.0
    moved = Augment(crop_padding=p)(one_hot, _gen(2))
    for res in moved:
        assert res.sum().item() == 1.0
        r, c = divmod(int(res.flatten().argmax()), 12)
        assert abs(r - 6) <= p and abs(c - 5) <= p


def test_flip_flips_about_half() -> None:
    x = torch.rand(64, 3, 5, 7, generator=_gen(0))
    out = Augment(flip=True)(x, _gen(0))
    flipped = [not torch.equal(a, b) for a, b in zip(out, x)]
    for a, b in zip(out, x):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    assert 16 < sum(flipped) < 48


def test_cutout_zeroes_a_square() -> None:
    size = 6
    h = w = 20
    x = torch.ones(200, 3, h, w)
    out = Augment(cutout=size)(x, _gen(0))
    inside = 0
    for img in out:
        zero = img == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # same square on every channel
        rows = torch.nonzero(zero[0].any(1)).flatten()
        cols = torch.nonzero(zero[0].any(0)).flatten()
        assert len(rows) > 0  # the centre is always inside the image
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert int(zero[0].sum()) == int(height * width)  # a filled rectangle
        assert height <= size and width <= size
        if rows[0] > 0 and cols[0] > 0 and rows[-1] < h - 1 and cols[-1] < w - 1:
            assert height == size and width == size
            inside += 1
    assert inside > 50


def test_augment_uses_only_the_generator() -> None:
    aug = Augment(crop_padding=2, flip=True, cutout=4)
    x = torch.randn(16, 3, 8, 8, generator=_gen(0))
    a, b, c = aug(x, _gen(7)), aug(x, _gen(7)), aug(x, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    off = Augment()(x, _gen(0))
    assert torch.equal(off, x) and off is not x
    assert aug.replace(cutout=0) == Augment(crop_padding=2, flip=True)
    with pytest.raises(ConfigError):
        Augment(cutout=-1)


# --------------------------------------------------------------------------- CIFAR-10 readers


def _write_fake_cifar_folder(root: Path, per_batch: int = 10, n_test: int = 10) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in (np.arange(n) + i) % 10],
            b"batch_label": name.encode(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{k}".encode() for k in range(10)], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_cifar_folder_reading(tmp_path: Path) -> None:
    folder = _write_fake_cifar_folder(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, seed=0)  # parent folder
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == (45, 5, 10)
    assert ds.input_shape == (3, 32, 32) and ds.class_names == [f"c{k}" for k in range(10)]
    assert ds.augment == Augment(crop_padding=4, flip=True)
    direct = load_dataset("cifar10", data_dir=folder, seed=0)  # the batches folder itself
    assert torch.equal(direct.x_test, ds.x_test)
    # channel-major layout: the first test image's red plane is the first 1024 bytes
    test_batch = pickle.loads((folder / "test_batch").read_bytes())
    red = test_batch[b"data"][0, :1024].reshape(32, 32) / 255.0
    restored = ds.x_test[0, 0].double() * ds.std[0] + ds.mean[0]
    assert np.allclose(restored.numpy(), red, atol=1e-5)
    assert ds.y_test.tolist() == [int(v) for v in test_batch[b"labels"]]


def test_cifar_npz_reading(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    y_train = np.arange(40) % 10
    x_test = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    y_test = np.arange(10)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array([f"k{i}" for i in range(10)]))
    ds = load_dataset("cifar10", data_dir=path, seed=0, valid_fraction=0.25)
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == (30, 10, 10)
    assert torch.equal(torch.bincount(ds.y_valid, minlength=10), torch.ones(10, dtype=torch.int64))
    assert ds.class_names == [f"k{i}" for i in range(10)]
    restored = ds.x_test.double() * torch.tensor(ds.std).view(1, 3, 1, 1) + torch.tensor(ds.mean).view(1, 3, 1, 1)
    assert np.allclose(restored.numpy(), x_test.transpose(0, 3, 1, 2) / 255.0, atol=1e-5)
    # with no valid split the statistics are those of the whole training array
    full = load_dataset("cifar10", data_dir=path, valid_fraction=0.0)
    assert len(full.y_train) == 40 and len(full.y_valid) == 0
    assert np.allclose(full.mean, x_train.reshape(-1, 3).mean(0) / 255.0)
    assert np.allclose(full.std, x_train.reshape(-1, 3).std(0) / 255.0)


# --------------------------------------------------------------------------- errors


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("imagenet22k")
    _assert_one_line(exc, "cifar10", "digits", "synthetic", "imagefolder")


def test_cifar_needs_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10")
    _assert_one_line(exc, "--data-dir", "cifar-10-batches-py", ".npz")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path / "nope")
    _assert_one_line(exc, "does not exist", "cifar-10-batches-py")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path)  # empty folder
    _assert_one_line(exc, "cifar-10-batches-py", ".npz")
    (tmp_path / "archive.tar.gz").write_bytes(b"x")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path / "archive.tar.gz")
    _assert_one_line(exc, "extract")


def test_cifar_folder_errors(tmp_path: Path) -> None:
    folder = _write_fake_cifar_folder(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path)
    _assert_one_line(exc, "data_batch_3", "re-extract")
    (folder / "data_batch_3").write_bytes(b"\x80\x02 this is not a pickle")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path)
    _assert_one_line(exc, "data_batch_3", "corrupt", "re-download")
    # a pickle that would run code is refused, not executed
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Path("/")}))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path)
    _assert_one_line(exc, "data_batch_3")
    bad = {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=tmp_path)
    _assert_one_line(exc, "(N, 3072)")


def test_cifar_npz_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated garbage")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=corrupt)
    _assert_one_line(exc, "corrupt", "x_train")
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.zeros(2, np.int64))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=missing)
    _assert_one_line(exc, "x_test", "y_test")
    shape = tmp_path / "shape.npz"
    np.savez(shape, x_train=np.zeros((2, 3, 32, 32), np.uint8), y_train=np.zeros(2, np.int64),
             x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=shape)
    _assert_one_line(exc, "x_train", "(N, 32, 32, 3)")
    labels = tmp_path / "labels.npz"
    np.savez(labels, x_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.array([0, 12]),
             x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", data_dir=labels)
    _assert_one_line(exc, "0..9")


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason=f"{SHARED_NPZ} not present")
def test_shared_cifar10_small() -> None:
    ds = load_dataset("cifar10", data_dir=SHARED_NPZ, seed=0)
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == (4500, 500, 1000)
    assert torch.equal(torch.bincount(ds.y_valid), torch.full((10,), 50))
    assert np.allclose(ds.mean, (0.49, 0.48, 0.45), atol=0.015)
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    per_channel = ds.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-3)
