"""One run as a report sees it: everything an experiment directory has recorded, read once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from nasforge.errors import ExperimentError

__all__ = ["Run", "Section", "as_run", "load_run"]


@dataclass
class Run:
    """What an experiment directory holds, finished, interrupted or train-only; absent parts are empty."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    epochs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # phase -> records in epoch order
    trials: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    arch: dict[str, Any] | None = None  # arch.json
    result: dict[str, Any] | None = None  # result.json
    notes: list[str] = field(default_factory=list)  # what could not be read, for the page

    @property
    def search(self) -> list[dict[str, Any]]:
        return self.epochs.get("search", [])

    @property
    def train(self) -> list[dict[str, Any]]:
        return self.epochs.get("train", [])

    def section(self, name: str) -> dict[str, Any]:
        """One section of config.yaml (``strategy``, ``train``, ...), {} when absent or not a mapping."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def strategy(self) -> dict[str, Any]:
        return self.section("strategy")

    def read_json(self, name: str) -> Any | None:
        """Another JSON file of the run directory (a benchmark's summary), None when absent or unreadable."""
        return _read_json(self.path / name, [])


class Section(NamedTuple):
    """A part of the page: a heading, its HTML, and its figures as ``(file name in report/, caption)``."""

    title: str
    body: str
    figures: list[tuple[str, str]]


def _read_json(path: Path, notes: list[str]) -> Any | None:
    """A JSON file's content, None when absent; a corrupt file becomes a note, not a failure."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path.name} is unreadable ({type(exc).__name__}); it is ignored here")
        return None


def load_run(path: str | os.PathLike) -> Run:
    """Read config.yaml, the store (epochs of every phase, trials, meta), arch.json and result.json."""
    root = Path(path)
    config_path = root / "config.yaml"
    if not root.is_dir() or not config_path.is_file():
        raise ExperimentError(f"{root} is not an experiment directory (no config.yaml); pass a directory "
                              "written by 'nasforge search' or 'nasforge train' (its --out)")
    run = Run(path=root, config_text=config_path.read_text(errors="replace"))
    try:
        config = yaml.safe_load(run.config_text) or {}
    except yaml.YAMLError:
        config = {}
        run.notes.append("config.yaml is not valid YAML; settings below are shown as written")
    run.config = config if isinstance(config, dict) else {}
    if (root / "store.sqlite").is_file():
        from nasforge.experiment import Store

        store = Store(root / "store.sqlite", readonly=True)  # a reader: no run lock, no write (read-only disks too)
        try:
            tables = {t for (t,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "epochs" in tables:
                phases = [p for (p,) in store.conn.execute("SELECT DISTINCT phase FROM epochs ORDER BY phase")]
                run.epochs = {p: store.epochs(p) for p in phases}
            if "trials" in tables:
                run.trials = store.trials()
            if "meta" in tables:
                run.meta = {k: json.loads(v) for k, v in store.conn.execute("SELECT key, value FROM meta")}
        finally:
            store.close()
    arch = _read_json(root / "arch.json", run.notes)
    if arch is not None and not isinstance(arch, dict):
        run.notes.append("arch.json is not a JSON object; it is ignored here")
        arch = None
    run.arch = arch
    result = _read_json(root / "result.json", run.notes)
    if result is not None and not isinstance(result, dict):
        run.notes.append("result.json is not a JSON object; it is ignored here")
        result = None
    run.result = result
    return run


def as_run(run: Run | str | os.PathLike) -> Run:
    """``run`` itself, or the run loaded from a directory (so a section can be called on a path)."""
    return run if isinstance(run, Run) else load_run(run)
