"""Open data: image folders, the papers' dataset formats, arrays of any shape, loaders with workers,
exact resume with workers, and one-line errors on bad data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nasforge.cli import app
from nasforge.data import load_dataset, synthetic_dataset
from nasforge.errors import DataError
from nasforge.experiment import Experiment

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ["RGB", "L", "RGBA", "P"]
SIZES = [(20, 17), (33, 25), (16, 16), (24, 40)]


def make_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 8, val_per_class: int = 3,
                val_name: str = "val") -> Path:
    """A tiny ImageFolder: odd sizes, grayscale, RGBA and palette images mixed in; class-coloured."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), (val_name, val_per_class)):
        for k, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = SIZES[(i + k) % len(SIZES)]
                base = np.zeros((h, w, 3), dtype=np.uint8)
                base[..., k % 3] = 200
                noisy = np.clip(base + rng.integers(0, 40, size=base.shape), 0, 255).astype(np.uint8)
                img = Image.fromarray(noisy).convert(MODES[(i + k) % len(MODES)])
                img.save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"))


def test_imagefolder_reads_any_size_and_mode(folder: Path) -> None:
    data = load_dataset("imagefolder", folder, seed=0)
    assert data.class_names == ["cat", "dog", "fox"] and data.num_classes == 3
    c, h, w = data.input_shape
    assert c == 3 and h == w == 20  # the median short side of the images
    assert len(data.train) + len(data.valid) == 24 and len(data.test) == 9
    x, y = next(data.loader(data.train, 5).epoch(seed=1))
    assert x.shape == (5, 3, 20, 20) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, yt = data.test.tensors()
    assert xt.shape == (9, 3, 20, 20) and sorted(set(yt.tolist())) == [0, 1, 2]
    # the three classes are told apart by their colour channel: the folder's labels are right
    means = torch.stack([xt[yt == k].mean(dim=(0, 2, 3)) for k in range(3)])
    assert means.argmax(dim=1).tolist() == [0, 1, 2]
    sized = load_dataset("imagefolder", folder, seed=0, image_size=12)
    assert sized.input_shape == (3, 12, 12)


def test_loader_is_the_same_with_workers_and_starts_anywhere(folder: Path) -> None:
    data = load_dataset("imagefolder", folder, seed=0)
    plain = list(data.loader(data.train, 4).epoch(seed=3))
    data.workers = 2
    loader = data.loader(data.train, 4)
    with_workers = list(loader.epoch(seed=3))
    again = list(loader.epoch(seed=3, start=2))  # persistent workers, a second epoch from batch 2
    assert len(plain) == len(with_workers) == len(loader)
    for (xa, ya), (xb, yb) in zip(plain, with_workers):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, _), (xb, _) in zip(plain[2:], again):
        assert torch.equal(xa, xb)
    other = list(data.loader(data.train, 4).epoch(seed=4))
    assert not torch.equal(other[0][0], plain[0][0])  # another epoch seed: another order and augmentation
    # evaluation batches: in order, not augmented
    e1 = [b[0] for b in data.loader(data.valid, 4, train=False).epoch()]
    e2 = [b[0] for b in data.loader(data.valid, 4, train=False).epoch()]
    assert all(torch.equal(a, b) for a, b in zip(e1, e2))


def test_resume_mid_epoch_with_workers_is_exact(tmp_path: Path) -> None:
    from test_oneshot_loop import _method, _StopAt

    data = synthetic_dataset(num_samples=160, seed=0)
    full, space = _method("gdas", tmp_path)
    full_result = full.search(space, data, seed=5)  # in-process batches, no interruption

    data.workers = 2
    exp = Experiment.create(tmp_path / "cut", {}, force=True)
    cut, _ = _method("gdas", tmp_path, checkpoint_steps=2)
    with pytest.raises(KeyboardInterrupt):
        cut.search(space, data, experiment=exp, seed=5, callbacks=[_StopAt(1, 2)])
    partial = exp.load_checkpoint("search")["partial"]
    assert partial["tick"] == 2 and partial["loader"] == {"train": 2, "valid": 2}  # the loaders' position
    resumed, _ = _method("gdas", tmp_path, checkpoint_steps=2)
    resumed_result = resumed.search(space, data, experiment=exp, seed=5)
    assert resumed_result.arch == full_result.arch
    for a, b in zip(full.arch_parameters(), resumed.arch_parameters()):
        assert torch.equal(a, b)
    assert resumed_result.history[-1]["metrics"]["train_loss"] == full_result.history[-1]["metrics"]["train_loss"]


# --------------------------------------------------------------------------- the papers' formats


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def test_cifar100_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    for name, n in (("train", 400), ("test", 100)):
        _pickle(folder / name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                b"fine_labels": list(np.arange(n) % 100), b"coarse_labels": [0] * n})
    _pickle(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    data = load_dataset("cifar100", tmp_path, seed=0)
    assert data.num_classes == 100 and data.class_names[7] == "c7" and data.input_shape == (3, 32, 32)
    assert len(data.train) + len(data.valid) == 400 and len(data.test) == 100
    assert data.augment.crop_padding == 4 and data.augment.flip


def test_imagenet16_reader_keeps_the_first_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in (1, 2):
        _pickle(tmp_path / f"train_data_batch_{i}", {"data": rng.integers(0, 256, (300, 768), dtype=np.uint8),
                                                     "labels": list(np.arange(300) % 200 + 1)})
    _pickle(tmp_path / "val_data", {"data": rng.integers(0, 256, (200, 768), dtype=np.uint8),
                                    "labels": list(np.arange(200) % 200 + 1)})
    data = load_dataset("imagenet16", tmp_path, seed=0)
    assert data.num_classes == 120 and data.input_shape == (3, 16, 16)
    # labels 1..120 of 1..200 are kept, shifted to 0..119
    assert len(data.train) + len(data.valid) == 2 * 220 and len(data.test) == 120
    assert int(data.y_test.max()) == 119 and int(data.y_test.min()) == 0
    assert data.mean[0] == pytest.approx(122.68 / 255)


def test_tiny_imagenet_reader(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    lines = []
    for k, wnid in enumerate(["n01", "n02"]):
        for i in range(4):
            img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
            (root / "train" / wnid / "images").mkdir(parents=True, exist_ok=True)
            img.save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        (root / "val" / "images").mkdir(parents=True, exist_ok=True)
        img.save(root / "val" / "images" / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset("tiny-imagenet", tmp_path, seed=0)
    assert data.num_classes == 2 and data.input_shape == (3, 64, 64)
    assert data.y_test.tolist() == [0, 1]


@pytest.mark.parametrize("layout", ["nhw", "nchw-float", "nhwc"])
def test_npz_of_any_shape_and_class_count(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    n, classes = 60, 5
    shape = {"nhw": (n, 12, 10), "nchw-float": (n, 2, 9, 9), "nhwc": (n, 18, 18, 3)}[layout]
    x = rng.random(shape).astype(np.float32) if layout == "nchw-float" else rng.integers(0, 255, shape, np.uint8)
    y = np.arange(n) % classes
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    data = load_dataset("npz", tmp_path / "d.npz", seed=0)
    expected = {"nhw": (1, 12, 10), "nchw-float": (2, 9, 9), "nhwc": (3, 18, 18)}[layout]
    assert data.input_shape == expected and data.num_classes == classes
    assert abs(float(data.x_train.mean())) < 1e-3  # normalised with the train split's statistics


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _main(capsys, *args: str) -> tuple[int, str]:
    """``nasforge ARGS`` through its entry point (errors as one line): (exit code, stdout + stderr)."""
    from test_cli import run_main

    capsys.readouterr()
    code = run_main(*args)
    out, err = capsys.readouterr()
    return code, out + err


def test_gdas_and_evolution_search_an_image_folder(folder: Path, tmp_path: Path) -> None:
    common = ["--data", "imagefolder", "--data-dir", str(folder), "--set", "data.image_size=8", "-q",
              "--set", "train.epochs=1", "--set", "train.layers=2", "--set", "train.channels=4"]
    res = _cli("search", "--strategy", "gdas", "--space", "darts", "--epochs", "1", "--out", str(tmp_path / "g"),
               "--set", "strategy.layers=3", "--set", "strategy.channels=4", "--set", "strategy.batch_size=8",
               *common)
    assert res.exit_code == 0, res.output
    res = _cli("search", "--strategy", "evolution", "--space", "nb201", "--trials", "2", "--out",
               str(tmp_path / "e"), "--set", "evaluator.epochs=1", "--set", "evaluator.layers=1",
               "--set", "evaluator.channels=4", "--data-workers", "1", *common)
    assert res.exit_code == 0, res.output
    import json

    for run in ("g", "e"):
        result = json.loads((tmp_path / run / "result.json").read_text())
        assert "imagefolder: " in json.dumps(result) or (tmp_path / run / "arch.json").exists()
        assert (tmp_path / run / "model.pt").exists()


def test_list_describes_each_dataset() -> None:
    res = _cli("list")
    assert res.exit_code == 0
    for needle in ("imagefolder", "cifar100", "imagenet16", "tiny-imagenet", "npz", "train/<class>/<image>"):
        assert needle in res.output.replace("\n", " ") or needle in res.output


# --------------------------------------------------------------------------- bad data


def _corrupt(root: Path) -> Path:
    make_folder(root)
    (root / "train" / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # truncated
    return root


def _empty_class(root: Path) -> Path:
    make_folder(root)
    (root / "train" / "owl").mkdir()
    return root


def _val_differs(root: Path) -> Path:
    make_folder(root)
    (root / "val" / "cat").rename(root / "val" / "lion")
    return root


def _empty(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    return root


@pytest.mark.parametrize("make,needle", [
    (_corrupt, "3.png"), (_empty_class, "owl"), (_val_differs, "lion"), (_empty, "no class folders")])
def test_bad_image_folders_fail_in_one_line_and_leave_no_run(tmp_path: Path, capsys, make, needle: str) -> None:
    root = make(tmp_path / "data")
    with pytest.raises(DataError) as exc:
        load_dataset("imagefolder", root)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    out = tmp_path / "run"
    code, output = _main(capsys, "search", "--data", "imagefolder", "--data-dir", str(root), "--out", str(out), "-q")
    assert code != 0 and "error:" in output and needle in output.replace("\n", "")
    assert not out.exists()


@pytest.mark.parametrize("arrays,needle", [
    ({"x_train": np.zeros((4, 8, 8), np.uint8)}, "lacks arrays"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 2, -1]),
      "x_test": np.zeros((1, 8, 8), np.uint8), "y_test": np.array([0])}, "labels span"),
])
def test_bad_npz_fails_in_one_line(tmp_path: Path, capsys, arrays: dict, needle: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "run"
    code, output = _main(capsys, "search", "--data", "npz", "--data-dir", str(tmp_path / "d.npz"), "--out", str(out),
                         "-q")
    assert code != 0 and "error:" in output and needle in output
    assert not out.exists()
