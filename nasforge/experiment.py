"""The experiment directory: config, SQLite store, checkpoints and results of one run.

Layout::

    DIR/config.yaml        every setting, enough to rerun (``nasforge resume DIR``)
    DIR/store.sqlite       per-epoch metrics and architecture weights, trials, state (WAL)
    DIR/checkpoints/       atomic ``torch.save`` checkpoints (search.pt, train.pt)
    DIR/arch.json          the architecture found
    DIR/model.pt           the trained network (state dict + how to rebuild it)
    DIR/result.json        accuracy, params, FLOPs, latency, wall times
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nasforge.errors import ExperimentError
from nasforge.utils import atomic_torch_save, atomic_write_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    phase TEXT NOT NULL, epoch INTEGER NOT NULL, time REAL NOT NULL,
    metrics TEXT NOT NULL, arch_weights TEXT, arch TEXT,
    PRIMARY KEY (phase, epoch)
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY, arch_hash TEXT NOT NULL, arch TEXT NOT NULL,
    status TEXT NOT NULL, metrics TEXT, error TEXT, seed INTEGER, worker TEXT,
    started REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS trials_hash ON trials (arch_hash);
"""


class Store:
    """The experiment's SQLite database (WAL mode): epochs, trials and key-value metadata."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            self._migrate_trials()
        except sqlite3.DatabaseError as exc:
            raise ExperimentError(f"store {self.path} is not a usable SQLite database ({exc}); "
                                  "move it away and rerun the search") from None

    def close(self) -> None:
        self.conn.close()

    # --- metadata --------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # --- epochs ----------------------------------------------------------
    def log_epoch(self, phase: str, epoch: int, metrics: dict[str, Any],
                  arch_weights: dict[str, Any] | None = None, arch: dict[str, Any] | None = None) -> None:
        """Record one epoch (replacing a row left by an interrupted run at the same epoch)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?, ?)",
            (phase, epoch, time.time(), json.dumps(metrics),
             json.dumps(arch_weights) if arch_weights is not None else None,
             json.dumps(arch) if arch is not None else None),
        )

    def truncate_epochs(self, phase: str, after: int) -> None:
        """Forget epochs past ``after`` (they will be recomputed on resume)."""
        self.conn.execute("DELETE FROM epochs WHERE phase = ? AND epoch > ?", (phase, after))

    def epochs(self, phase: str) -> list[dict[str, Any]]:
        """All recorded epochs of ``phase`` in order, JSON fields decoded."""
        rows = self.conn.execute(
            "SELECT epoch, time, metrics, arch_weights, arch FROM epochs WHERE phase = ? ORDER BY epoch", (phase,)
        ).fetchall()
        return [
            {"epoch": e, "time": t, "metrics": json.loads(m),
             "arch_weights": json.loads(w) if w else None, "arch": json.loads(a) if a else None}
            for e, t, m, w, a in rows
        ]


    # --- trials (sample-based search) ---------------------------------------
    _TRIAL_COLUMNS = ("id", "arch_hash", "arch", "status", "metrics", "error", "seed", "worker", "started",
                      "finished", "duplicate_of")

    def _migrate_trials(self) -> None:
        """Add columns newer versions need to a ``trials`` table written by an older one."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(trials)")}
        if "duplicate_of" not in have:
            self.conn.execute("ALTER TABLE trials ADD COLUMN duplicate_of INTEGER")

    def put_trial(self, index: int, arch: dict[str, Any], arch_hash: str, status: str = "pending",
                  seed: int | None = None) -> None:
        """Record trial ``index`` (replacing a row an interrupted run left at that index)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO trials (id, arch_hash, arch, status, seed) VALUES (?, ?, ?, ?, ?)",
            (index, arch_hash, json.dumps(arch, sort_keys=True), status, seed),
        )

    def update_trial(self, index: int, **fields: Any) -> None:
        """Set columns of trial ``index`` (``metrics`` is JSON-encoded); unknown names raise ``KeyError``."""
        if not fields:
            return
        for key in fields:
            if key not in self._TRIAL_COLUMNS[3:]:
                raise KeyError(key)
        if "metrics" in fields and fields["metrics"] is not None:
            fields["metrics"] = json.dumps(fields["metrics"])
        assignments = ", ".join(f"{key} = ?" for key in fields)
        self.conn.execute(f"UPDATE trials SET {assignments} WHERE id = ?", (*fields.values(), index))

    @staticmethod
    def _trial_row(row: tuple) -> dict[str, Any]:
        out = dict(zip(("index",) + Store._TRIAL_COLUMNS[1:], row))
        out["arch"] = json.loads(out["arch"])
        out["metrics"] = json.loads(out["metrics"]) if out["metrics"] else None
        return out

    def trials(self, status: str | None = None) -> list[dict[str, Any]]:
        """All trials in index order (only those with ``status`` when given), JSON fields decoded."""
        cols = ", ".join(self._TRIAL_COLUMNS)
        if status is None:
            rows = self.conn.execute(f"SELECT {cols} FROM trials ORDER BY id").fetchall()
        else:
            rows = self.conn.execute(f"SELECT {cols} FROM trials WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [self._trial_row(r) for r in rows]

    def trial(self, index: int) -> dict[str, Any] | None:
        """Trial ``index`` or None."""
        row = self.conn.execute(f"SELECT {', '.join(self._TRIAL_COLUMNS)} FROM trials WHERE id = ?",
                                (index,)).fetchone()
        return self._trial_row(row) if row else None

    def find_trial(self, arch_hash: str, status: str = "done", before: int | None = None) -> dict[str, Any] | None:
        """The earliest trial of an architecture with ``status`` (below index ``before`` when given)."""
        query = f"SELECT {', '.join(self._TRIAL_COLUMNS)} FROM trials WHERE arch_hash = ? AND status = ?"
        args: tuple = (arch_hash, status)
        if before is not None:
            query += " AND id < ?"
            args += (before,)
        row = self.conn.execute(query + " ORDER BY id LIMIT 1", args).fetchone()
        return self._trial_row(row) if row else None

    def delete_trials_from(self, index: int) -> None:
        """Forget trials at ``index`` and above (asked by an interrupted run, not asked again)."""
        self.conn.execute("DELETE FROM trials WHERE id >= ?", (index,))


class Experiment:
    """One run's directory. ``create`` refuses to overwrite without ``force``; ``open`` checks it exists."""

    CONFIG = "config.yaml"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._store: Store | None = None

    @classmethod
    def create(cls, path: str | os.PathLike, config: dict[str, Any], force: bool = False) -> "Experiment":
        """A new experiment directory holding ``config``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ExperimentError(f"{path} is a file, not a directory; choose another --out")
        if path.exists() and any(path.iterdir()):
            if not force:
                raise ExperimentError(f"experiment directory {path} already exists; pass --force to overwrite it, "
                                      f"--out to choose another, or 'nasforge resume {path}' to continue it")
            import shutil

            shutil.rmtree(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExperimentError(f"cannot create experiment directory {path} ({exc.strerror}); choose another --out") from None
        exp = cls(path)
        exp.checkpoints.mkdir(exist_ok=True)
        atomic_write_text(path / cls.CONFIG, yaml.safe_dump(config, sort_keys=False))
        exp.store.set_meta("created", time.time())
        return exp

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Experiment":
        """An existing experiment directory (must hold config.yaml)."""
        path = Path(path)
        if not (path / cls.CONFIG).is_file():
            raise ExperimentError(f"{path} is not an experiment directory (no {cls.CONFIG}); "
                                  "pass the --out directory of a search")
        exp = cls(path)
        exp.checkpoints.mkdir(exist_ok=True)
        return exp

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.path / "store.sqlite")
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def read_config(self) -> dict[str, Any]:
        from nasforge.config import read_yaml

        return read_yaml(self.path / self.CONFIG)

    # --- checkpoints -------------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically (a crash mid-write leaves the previous checkpoint)."""
        return atomic_torch_save(state, self.checkpoint_path(name))

    def load_checkpoint(self, name: str) -> dict[str, Any] | None:
        """The last checkpoint called ``name``, or None when there is none."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises many types for a damaged file
            raise ExperimentError(f"checkpoint {path} is corrupt ({type(exc).__name__}); delete it to restart "
                                  "that phase from scratch (earlier results are kept)") from None

    # --- results -----------------------------------------------------------
    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_text(self.path / name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> Any | None:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ExperimentError(f"{path} is corrupt; delete it and run 'nasforge resume {self.path}'") from None
