"""Experiment directories and their SQLite store: creation, overwrite protection, WAL,
epoch records, atomic checkpoints and corrupt files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

import nasforge.utils
from nasforge.errors import ExperimentError
from nasforge.experiment import Experiment, Store

CONFIG = {"seed": 1, "data": {"name": "synthetic"}, "train": {"lr": 0.1}}


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- create / open
def test_create_writes_config_store_and_checkpoints(tmp_path: Path):
    exp = Experiment.create(tmp_path / "run", CONFIG)
    try:
        assert (tmp_path / "run" / "config.yaml").is_file()
        assert (tmp_path / "run" / "store.sqlite").is_file()
        assert (tmp_path / "run" / "checkpoints").is_dir()
        assert exp.read_config() == CONFIG
        assert isinstance(exp.store.get_meta("created"), float)
    finally:
        exp.close()


def test_create_accepts_an_existing_empty_dir(tmp_path: Path):
    (tmp_path / "run").mkdir()
    Experiment.create(tmp_path / "run", CONFIG).close()
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_create_refuses_a_non_empty_dir_without_force(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(ExperimentError) as info:
        Experiment.create(run, CONFIG)
    msg = one_line(info)
    assert "--force" in msg and str(run) in msg
    assert sorted(p.name for p in run.iterdir()) == ["precious.txt"]
    assert (run / "precious.txt").read_text() == "keep me"


def test_create_with_force_overwrites(tmp_path: Path):
    run = tmp_path / "run"
    Experiment.create(run, {"seed": 1}).close()
    (run / "result.json").write_text("{}")
    (run / "checkpoints" / "search.pt").write_bytes(b"old")
    exp = Experiment.create(run, {"seed": 2}, force=True)
    try:
        assert not (run / "result.json").exists()
        assert not (run / "checkpoints" / "search.pt").exists()
        assert exp.read_config() == {"seed": 2}
        assert exp.store.epochs("search") == []
    finally:
        exp.close()


@pytest.mark.parametrize("force", [False, True])
def test_create_on_a_file_is_an_experiment_error(tmp_path: Path, force: bool):
    target = tmp_path / "afile"
    target.write_text("not a dir")
    with pytest.raises(ExperimentError) as info:
        Experiment.create(target, CONFIG, force=force)
    one_line(info)


def test_open_existing(tmp_path: Path):
    Experiment.create(tmp_path / "run", CONFIG).close()
    exp = Experiment.open(tmp_path / "run")
    try:
        assert exp.read_config() == CONFIG
    finally:
        exp.close()


def test_open_non_experiment_dir(tmp_path: Path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("x")
    with pytest.raises(ExperimentError) as info:
        Experiment.open(tmp_path / "stuff")
    assert "not an experiment directory" in one_line(info)
    assert not (tmp_path / "stuff" / "store.sqlite").exists()


def test_open_missing_dir(tmp_path: Path):
    with pytest.raises(ExperimentError):
        Experiment.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


# --------------------------------------------------------------------------- store
@pytest.fixture
def exp(tmp_path: Path):
    e = Experiment.create(tmp_path / "run", CONFIG)
    yield e
    e.close()


def test_store_uses_wal(exp: Experiment):
    assert exp.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = sqlite3.connect(exp.path / "store.sqlite")
    try:  # WAL is a property of the database file, seen by any connection
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_log_epoch_round_trip(exp: Experiment):
    store = exp.store
    store.log_epoch("search", 1, {"loss": 0.5, "acc": 0.75}, arch_weights={"normal": [[0.1, 0.9]]},
                    arch={"space": "darts"})
    store.log_epoch("search", 0, {"loss": 1.0})
    store.log_epoch("train", 0, {"loss": 2.0})
    rows = store.epochs("search")
    assert [r["epoch"] for r in rows] == [0, 1]  # ordered by epoch, not insertion
    assert rows[0]["metrics"] == {"loss": 1.0}
    assert rows[0]["arch_weights"] is None and rows[0]["arch"] is None
    assert rows[1]["metrics"] == {"loss": 0.5, "acc": 0.75}
    assert rows[1]["arch_weights"] == {"normal": [[0.1, 0.9]]}
    assert rows[1]["arch"] == {"space": "darts"}
    assert isinstance(rows[1]["time"], float)
    assert [r["metrics"] for r in store.epochs("train")] == [{"loss": 2.0}]
    assert store.epochs("nothing") == []


def test_log_epoch_replaces_the_same_epoch(exp: Experiment):
    store = exp.store
    store.log_epoch("search", 0, {"loss": 1.0}, arch_weights={"a": 1})
    store.log_epoch("search", 0, {"loss": 0.25})
    rows = store.epochs("search")
    assert len(rows) == 1
    assert rows[0]["metrics"] == {"loss": 0.25}
    assert rows[0]["arch_weights"] is None  # the whole row is replaced


def test_truncate_epochs(exp: Experiment):
    store = exp.store
    for e in range(5):
        store.log_epoch("train", e, {"e": e})
        store.log_epoch("search", e, {"e": e})
    store.truncate_epochs("train", 2)
    assert [r["epoch"] for r in store.epochs("train")] == [0, 1, 2]
    assert [r["epoch"] for r in store.epochs("search")] == [0, 1, 2, 3, 4]  # other phase untouched
    store.truncate_epochs("train", -1)
    assert store.epochs("train") == []


def test_store_persists_across_reopen(tmp_path: Path):
    e = Experiment.create(tmp_path / "run", CONFIG)
    e.store.log_epoch("search", 3, {"x": 1})
    e.store.set_meta("info", {"k": [1, 2]})
    e.close()
    e2 = Experiment.open(tmp_path / "run")
    try:
        assert [r["metrics"] for r in e2.store.epochs("search")] == [{"x": 1}]
        assert e2.store.get_meta("info") == {"k": [1, 2]}
        assert e2.store.get_meta("absent", "dflt") == "dflt"
    finally:
        e2.close()


def test_corrupt_store_is_an_experiment_error(tmp_path: Path):
    Experiment.create(tmp_path / "run", CONFIG).close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / "run" / f"store.sqlite{suffix}").unlink(missing_ok=True)
    (tmp_path / "run" / "store.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    e = Experiment.open(tmp_path / "run")
    with pytest.raises(ExperimentError) as info:
        e.store
    assert "store.sqlite" in one_line(info)
    with pytest.raises(ExperimentError):
        Store(tmp_path / "run" / "store.sqlite")


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_leaves_no_temp_files(exp: Experiment):
    assert exp.load_checkpoint("search") is None
    state = {"epoch": 3, "w": torch.arange(4.0)}
    path = exp.save_checkpoint("search", state)
    exp.save_checkpoint("search", {"epoch": 4, "w": torch.ones(2)})  # overwrite in place
    assert path == exp.checkpoints / "search.pt"
    assert sorted(p.name for p in exp.checkpoints.iterdir()) == ["search.pt"]
    loaded = exp.load_checkpoint("search")
    assert loaded["epoch"] == 4 and torch.equal(loaded["w"], torch.ones(2))


def test_checkpoint_write_is_atomic(exp: Experiment, monkeypatch):
    exp.save_checkpoint("train", {"epoch": 1})

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half written")
        raise OSError("disk full")

    monkeypatch.setattr(nasforge.utils.torch, "save", crash)
    with pytest.raises(OSError):
        exp.save_checkpoint("train", {"epoch": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in exp.checkpoints.iterdir()) == ["train.pt"]  # temp file removed
    assert exp.load_checkpoint("train") == {"epoch": 1}  # previous checkpoint intact


@pytest.mark.parametrize("content", [b"garbage" * 50, b""])
def test_corrupt_checkpoint_is_a_one_line_experiment_error(exp: Experiment, content: bytes):
    exp.checkpoint_path("search").write_bytes(content)
    with pytest.raises(ExperimentError) as info:
        exp.load_checkpoint("search")
    msg = one_line(info)
    assert "search.pt" in msg and "corrupt" in msg


def test_truncated_checkpoint_is_an_experiment_error(exp: Experiment):
    path = exp.save_checkpoint("train", {"epoch": 1, "w": torch.randn(64, 64)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExperimentError) as info:
        exp.load_checkpoint("train")
    one_line(info)


# --------------------------------------------------------------------------- results
def test_json_results(exp: Experiment):
    assert exp.read_json("result.json") is None
    exp.write_json("result.json", {"test_acc": 0.5})
    assert exp.read_json("result.json") == {"test_acc": 0.5}
    (exp.path / "result.json").write_text("{truncated")
    with pytest.raises(ExperimentError) as info:
        exp.read_json("result.json")
    assert "result.json" in one_line(info)
