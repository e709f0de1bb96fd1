"""The experiment directory: config, SQLite store, checkpoints and results of one run.

Layout::

    DIR/config.yaml        every setting, enough to rerun (``nasforge resume DIR``)
    DIR/store.sqlite       per-epoch metrics and architecture weights, trials, state (WAL)
    DIR/checkpoints/       atomic ``torch.save`` checkpoints (search.pt, train.pt)
    DIR/arch.json          the architecture found
    DIR/model.pt           the trained network (state dict + how to rebuild it)
    DIR/result.json        accuracy, params, FLOPs, latency, wall times
    DIR/.lock              the writer's lock (PID and host of the process writing the run)

One process writes a run at a time: ``create(..., lock=True)`` and ``open(..., lock=True)``
take the directory's ``RunLock`` (``nasforge.lock``) and ``close`` releases it; readers
(``nasforge report``, ``Store(..., readonly=True)``) never take it.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nasforge.errors import ExperimentError
from nasforge.lock import LOCK_FILE, RunLock
from nasforge.utils import (atomic_torch_save, atomic_write_text, disk_error, free_bytes, is_read_only,
                            remove_stale_temporaries)

#: seconds a store operation waits for a lock another process holds before it gives up
STORE_TIMEOUT = 30.0

#: files that make a directory a nasforge run (``--force`` replaces only such a directory)
RUN_MARKERS = ("config.yaml", "store.sqlite")

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
    started REAL, finished REAL, duplicate_of INTEGER, fidelity INTEGER
);
CREATE INDEX IF NOT EXISTS trials_hash ON trials (arch_hash);
"""


def _sqlite_lock_holders(path: Path) -> list[int]:
    """PIDs holding POSIX locks on ``path`` or its WAL/SHM files (Linux ``/proc/locks``; empty elsewhere)."""
    inodes = set()
    for suffix in ("", "-wal", "-shm"):
        try:
            inodes.add(os.stat(f"{path}{suffix}").st_ino)
        except OSError:
            pass
    pids = []
    try:
        with open("/proc/locks") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 5 and parts[1] in ("POSIX", "OFDLCK") and parts[4].isdigit():
                    inode = parts[5].rsplit(":", 1)[-1]
                    pid = int(parts[4])
                    if inode.isdigit() and int(inode) in inodes and pid != os.getpid() and pid not in pids:
                        pids.append(pid)
    except OSError:
        pass
    return pids


class _Connection:
    """A ``sqlite3.Connection`` whose errors are one-line ``ExperimentError``s (see ``Store.error``)."""

    def __init__(self, conn: sqlite3.Connection, store: "Store"):
        self._conn, self._store = conn, store

    def execute(self, *args: Any) -> sqlite3.Cursor:
        try:
            return self._conn.execute(*args)
        except sqlite3.Error as exc:
            raise self._store.error(exc) from None

    def executescript(self, script: str) -> sqlite3.Cursor:
        try:
            return self._conn.executescript(script)
        except sqlite3.Error as exc:
            raise self._store.error(exc) from None

    def close(self) -> None:
        self._conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class Store:
    """The experiment's SQLite database (WAL mode): epochs, trials and key-value metadata.

    ``readonly``: open it for reading only (``nasforge report``), which works on a
    read-only filesystem too. A lock held by another process is waited for ``timeout``
    seconds (``STORE_TIMEOUT``), then named in the error.
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = None, readonly: bool = False):
        self.path = Path(path)
        self.timeout = STORE_TIMEOUT if timeout is None else float(timeout)
        self.readonly = readonly
        #: loggers told of every recorded epoch and finished trial (``nasforge.loggers``)
        self.listeners: list[Any] = []
        self._trial_select: str | None = None
        try:
            if readonly:
                if not self.path.is_file():
                    raise ExperimentError(f"store {self.path} does not exist; is this a run directory?")
                immutable = "&immutable=1" if is_read_only(self.path.parent) else ""
                raw = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro{immutable}", uri=True,
                                      timeout=self.timeout, isolation_level=None)
            else:
                raw = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self.error(exc) from None
        self.conn = _Connection(raw, self)
        if readonly:
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a corrupt file fails here
            return
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._migrate_trials()

    def error(self, exc: sqlite3.Error) -> ExperimentError:
        """The one-line error of a failed store operation: locked, read-only, full disk or corrupt."""
        text = str(exc)
        low = text.lower()
        run = self.path.parent
        if "locked" in low or "busy" in low:
            pids = _sqlite_lock_holders(self.path)
            who = f"process {', '.join(map(str, pids))}" if pids else "another process"
            return ExperimentError(f"store {self.path} is locked by {who} (waited {self.timeout:g} s); close the "
                                   f"program holding it (e.g. a sqlite3 shell) and run 'nasforge resume {run}'")
        if "readonly" in low or "read-only" in low or (
                "unable to open" in low and (is_read_only(run) or not os.access(run, os.W_OK))):
            where = "a read-only filesystem" if is_read_only(run) else "a directory this user cannot write"
            return ExperimentError(f"store {self.path} is read-only (on {where}); copy the run to a writable "
                                   "place to continue it ('nasforge report' reads it as is)")
        # SQLite reports a full disk as "database or disk is full", or, when the journal cannot grow, as a
        # plain "disk I/O error": the free space tells the two I/O errors apart
        out_of_space = "full" in low or ("disk i/o error" in low and (free_bytes(run) or 0) < 64 * 1024)
        full = disk_error(OSError(errno.ENOSPC, text), run) if out_of_space else None
        if full is not None:
            return full
        if "unable to open" in low:
            return ExperimentError(f"cannot open store {self.path} ({text}); check that {run} exists and is "
                                   "a run directory")
        return ExperimentError(f"store {self.path} is corrupt or truncated ({text}); the checkpoints are intact: "
                               f"move it away (mv {self.path} {self.path}.bad) and run 'nasforge resume {run}'")

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
        for listener in self.listeners:
            listener.epoch(phase, epoch, metrics, arch_weights, arch)

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
                      "finished", "duplicate_of", "fidelity")

    def _migrate_trials(self) -> None:
        """Add columns newer versions need to a ``trials`` table written by an older one."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(trials)")}
        for column in ("duplicate_of", "fidelity"):
            if column not in have:
                self.conn.execute(f"ALTER TABLE trials ADD COLUMN {column} INTEGER")

    def put_trial(self, index: int, arch: dict[str, Any], arch_hash: str, status: str = "pending",
                  seed: int | None = None, fidelity: int | None = None) -> None:
        """Record trial ``index`` (replacing a row an interrupted run left at that index); ``fidelity``:
        what a multi-fidelity search scores it at (None: the evaluator's full fidelity)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO trials (id, arch_hash, arch, status, seed, fidelity) VALUES (?, ?, ?, ?, ?, ?)",
            (index, arch_hash, json.dumps(arch, sort_keys=True), status, seed, fidelity),
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
        if self.listeners and fields.get("status") in ("done", "failed"):
            record = self.trial(index)
            for listener in self.listeners:
                listener.trial(record)

    def _columns(self) -> str:
        """The trial columns to select: a column an older store lacks (read-only, so not migrated) reads as NULL."""
        if self._trial_select is None:
            have = {row[1] for row in self.conn.execute("PRAGMA table_info(trials)")}
            self._trial_select = ", ".join(c if c in have else f"NULL AS {c}" for c in self._TRIAL_COLUMNS)
        return self._trial_select

    @staticmethod
    def _trial_row(row: tuple) -> dict[str, Any]:
        out = dict(zip(("index",) + Store._TRIAL_COLUMNS[1:], row))
        out["arch"] = json.loads(out["arch"])
        out["metrics"] = json.loads(out["metrics"]) if out["metrics"] else None
        return out

    def trials(self, status: str | None = None) -> list[dict[str, Any]]:
        """All trials in index order (only those with ``status`` when given), JSON fields decoded."""
        cols = self._columns()
        if status is None:
            rows = self.conn.execute(f"SELECT {cols} FROM trials ORDER BY id").fetchall()
        else:
            rows = self.conn.execute(f"SELECT {cols} FROM trials WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [self._trial_row(r) for r in rows]

    def trial(self, index: int) -> dict[str, Any] | None:
        """Trial ``index`` or None."""
        row = self.conn.execute(f"SELECT {self._columns()} FROM trials WHERE id = ?",
                                (index,)).fetchone()
        return self._trial_row(row) if row else None

    def find_trial(self, arch_hash: str, status: str = "done", before: int | None = None) -> dict[str, Any] | None:
        """The earliest trial of an architecture with ``status`` (below index ``before`` when given)."""
        query = f"SELECT {self._columns()} FROM trials WHERE arch_hash = ? AND status = ?"
        args: tuple = (arch_hash, status)
        if before is not None:
            query += " AND id < ?"
            args += (before,)
        row = self.conn.execute(query + " ORDER BY id LIMIT 1", args).fetchone()
        return self._trial_row(row) if row else None

    def delete_trials_from(self, index: int) -> None:
        """Forget trials at ``index`` and above (asked by an interrupted run, not asked again)."""
        self.conn.execute("DELETE FROM trials WHERE id >= ?", (index,))


def is_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a nasforge run directory (it holds config.yaml or store.sqlite)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in RUN_MARKERS)


def _contents(path: Path) -> list[Path]:
    """What a directory holds besides a run lock file."""
    return [p for p in path.iterdir() if p.name != LOCK_FILE]


def check_out_dir(path: str | os.PathLike, force: bool = False, what: str = "experiment directory") -> None:
    """Refuse, before anything is computed or written, an output directory ``create`` would refuse.

    An existing file; a non-empty directory without ``force``; with ``force``, a non-empty
    directory that is not a nasforge run; a parent this user cannot create or write in; a
    read-only or full filesystem.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"{path} is a file, not a directory; choose another --out")
    if path.is_dir() and _contents(path):
        if not force:
            raise ExperimentError(f"{what} {path} already exists; pass --force to overwrite it, "
                                  f"--out to choose another, or 'nasforge resume {path}' to continue it")
        if not is_run(path):
            raise ExperimentError(f"{path} is not empty and is not a nasforge run (no {' or '.join(RUN_MARKERS)}); "
                                  "--force only replaces runs: choose another --out or empty it yourself")
    check_writable(path, need_space=True)


def check_writable(path: str | os.PathLike, need_space: bool = False) -> None:
    """Refuse a target whose nearest existing folder (``path`` itself for a folder) cannot be written:
    a file in the way, a read-only filesystem, no write permission, or (``need_space``) a full disk."""
    from nasforge.utils import free_bytes

    path = Path(path)
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ExperimentError(f"cannot create {path}: {parent} is a file, not a directory; choose another --out")
    if is_read_only(parent):
        raise ExperimentError(f"cannot write {path}: {parent} is on a read-only filesystem; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExperimentError(f"cannot write {path}: {parent} is read-only for this user (permission denied); "
                              "choose another --out")
    free = free_bytes(parent)
    if need_space and free is not None and free < MIN_FREE_BYTES:
        raise ExperimentError(f"no space left on {parent} ({free / 1e6:.1f} MB free, at least "
                              f"{MIN_FREE_BYTES // 1_000_000} MB needed); free some space or choose another --out")


def check_out_file(path: str | os.PathLike, example: str = "table.json") -> None:
    """Refuse an output file path that is a directory or cannot be written (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise ExperimentError(f"--out {path} is a directory; give a file name, e.g. --out {path / example}")
    check_writable(path)


def check_export_dir(path: str | os.PathLike) -> None:
    """Refuse an export --out that is an existing file or cannot be written (before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"--out {path} is a file; export writes into a directory: give a directory "
                              "(created if missing)")
    check_writable(path)


#: free space below which a new run is refused before it starts
MIN_FREE_BYTES = 16_000_000


class Experiment:
    """One run's directory. ``create`` refuses to overwrite without ``force``; ``open`` checks it exists.

    With ``lock=True`` the run's ``RunLock`` is held until ``close``: a second writer fails
    at once with the holder's PID and host.
    """

    CONFIG = "config.yaml"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._store: Store | None = None
        self._lock: RunLock | None = None
        self._identity: dict[str, Any] | None = None

    @classmethod
    def create(cls, path: str | os.PathLike, config: dict[str, Any], force: bool = False,
               lock: bool = False) -> "Experiment":
        """A new experiment directory holding ``config``.

        ``force`` replaces an existing run (never a directory that is not one); with ``lock``
        the directory is locked before anything in it is removed or written.
        """
        path = Path(path)
        check_out_dir(path, force)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, path.parent) or ExperimentError(
                f"cannot create experiment directory {path} ({exc.strerror}); choose another --out") from None
        exp = cls(path)
        if lock:
            exp.lock()
        try:
            leftovers = _contents(path)
            if leftovers:  # a run made here between the check and the lock, or the one --force replaces
                if not force or not is_run(path):
                    check_out_dir(path, force)
                import shutil

                for item in leftovers:
                    if item.is_dir() and not item.is_symlink():
                        shutil.rmtree(item)
                    else:
                        item.unlink()
            exp.checkpoints.mkdir(exist_ok=True)
            atomic_write_text(path / cls.CONFIG, yaml.safe_dump(config, sort_keys=False))
            exp.store.set_meta("created", time.time())
        except BaseException:
            exp.close()
            raise
        return exp

    @classmethod
    def open(cls, path: str | os.PathLike, lock: bool = False) -> "Experiment":
        """An existing experiment directory (must hold config.yaml).

        With ``lock`` (a writer: resume), the run is locked and temporary files a kill left
        during a write (``.NAME.XXXX.tmp``) are removed.
        """
        path = Path(path)
        if not (path / cls.CONFIG).is_file():
            raise ExperimentError(f"{path} is not an experiment directory (no {cls.CONFIG}); "
                                  "pass the --out directory of a search")
        exp = cls(path)
        if lock:
            exp.lock()
            remove_stale_temporaries(path)
        try:
            exp.checkpoints.mkdir(exist_ok=True)
        except OSError as exc:
            exp.close()
            raise disk_error(exc, path) or ExperimentError(f"cannot write in {path} ({exc.strerror})") from None
        return exp

    def lock(self) -> None:
        """Take the run's write lock (held until ``close``); ``ExperimentError`` if another process has it."""
        if self._lock is None:
            self._lock = RunLock(self.path).acquire()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.path / "store.sqlite")
        return self._store

    def close(self) -> None:
        """Close the store and release the lock."""
        try:
            if self._store is not None:
                self._store.close()
                self._store = None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def read_config(self) -> dict[str, Any]:
        from nasforge.config import read_yaml

        return read_yaml(self.path / self.CONFIG)

    # --- checkpoints -------------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    def identity(self) -> dict[str, Any]:
        """What wrote this run's checkpoints: its strategy and space (or ``quantize``), from config.yaml."""
        if self._identity is None:
            try:
                raw = yaml.safe_load((self.path / self.CONFIG).read_text()) or {}
            except (OSError, yaml.YAMLError):
                raw = {}
            raw = raw if isinstance(raw, dict) else {}
            if isinstance(raw.get("quantize"), dict):
                self._identity = {"run": "quantize"}
            else:
                sections = {k: raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("strategy", "space")}
                self._identity = {"run": "search", "strategy": sections["strategy"].get("name"),
                                  "space": sections["space"].get("name")}
        return self._identity

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically (a crash mid-write leaves the previous checkpoint), stamped with
        ``identity()`` so that a checkpoint copied from another kind of run is refused on load."""
        return atomic_torch_save({**state, "written_by": self._stamp(name)}, self.checkpoint_path(name))

    def _stamp(self, name: str) -> dict[str, Any]:
        stamp = {"checkpoint": name, **self.identity()}
        arch = self.path / "arch.json"
        if name == "train" and arch.is_file():  # the final training's weights fit one architecture only
            import hashlib

            stamp["arch"] = hashlib.sha1(arch.read_bytes()).hexdigest()[:12]
        return stamp

    def load_checkpoint(self, name: str) -> dict[str, Any] | None:
        """The last checkpoint called ``name``, or None when there is none."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises many types for a damaged file
            raise ExperimentError(f"checkpoint {path} is corrupt ({type(exc).__name__}); delete it to restart "
                                  "that phase from scratch (earlier results are kept)") from None
        if not isinstance(state, dict):
            raise ExperimentError(f"checkpoint {path} is not a nasforge checkpoint (a {type(state).__name__}); "
                                  "move it away to restart that phase from scratch")
        stamp = state.pop("written_by", None)
        expected = self._stamp(name)
        if stamp is not None and stamp != expected:
            def show(d: Any) -> str:
                return ", ".join(f"{k}={v}" for k, v in d.items()) if isinstance(d, dict) else repr(d)

            raise ExperimentError(f"checkpoint {path} was written by another kind of run ({show(stamp)}), not this "
                                  f"one ({show(expected)}); move it away to restart that phase from scratch")
        return state

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
