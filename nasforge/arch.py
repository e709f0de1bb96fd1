"""``Arch``: one architecture as an immutable, hashable, JSON-serialisable value.

An ``Arch`` names its search space (and the space's version) and holds the space's
choices as a mapping from choice label to value. ``Arch.from_json`` checks the
description against the registered space and names the offending field on error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nasforge.errors import ArchError


def _freeze(value: Any) -> Any:
    """Turn lists into tuples (recursively) so that choices are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    """Turn tuples back into lists for JSON."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Arch:
    """One architecture: ``space`` name, space ``version`` and the ``choices`` made."""

    space: str
    choices: tuple[tuple[str, Any], ...] = field(default=())
    version: int = 1

    def __init__(self, space: str, choices: Mapping[str, Any] | tuple = (), version: int = 1):
        items = choices.items() if isinstance(choices, Mapping) else choices
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "choices", tuple(sorted((str(k), _freeze(v)) for k, v in items)))
        object.__setattr__(self, "version", int(version))

    def __getitem__(self, label: str) -> Any:
        for key, value in self.choices:
            if key == label:
                return value
        raise KeyError(label)

    def as_dict(self) -> dict[str, Any]:
        """Choices as a plain dict (lists, not tuples)."""
        return {k: _thaw(v) for k, v in self.choices}

    def with_choice(self, label: str, value: Any) -> "Arch":
        """A copy with the choice ``label`` set to ``value``."""
        merged = self.as_dict()
        merged[label] = value
        return Arch(self.space, merged, self.version)

    # --- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "version": self.version, "choices": self.as_dict()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically."""
        from nasforge.utils import atomic_write_text

        return atomic_write_text(path, self.to_json() + "\n")

    @property
    def hash(self) -> str:
        """A short stable digest of the architecture (same arch, same hash, across runs)."""
        return hashlib.sha1(self.to_json(indent=None).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, validate: bool = True) -> "Arch":
        """Build from a dict like ``to_dict`` gives; validated against the registered space."""
        if not isinstance(data, dict):
            raise ArchError("architecture JSON must be an object with 'space' and 'choices'; "
                            "write it as {\"space\": ..., \"version\": 1, \"choices\": {...}}")
        unknown = set(data) - {"space", "version", "choices"}
        if unknown:
            raise ArchError(f"architecture JSON has unknown field(s) {sorted(unknown)}; "
                            "only 'space', 'version' and 'choices' are allowed")
        if "space" not in data or not isinstance(data["space"], str):
            raise ArchError("architecture JSON lacks a 'space' name; add e.g. \"space\": \"darts\"")
        if not isinstance(data.get("choices"), dict):
            raise ArchError("architecture JSON lacks a 'choices' object; add the space's choices")
        version = data.get("version", 1)
        if not isinstance(version, int):
            raise ArchError(f"architecture 'version' must be an integer, got {version!r}")
        arch = cls(data["space"], data["choices"], version)
        if validate:
            from nasforge.errors import ConfigError
            from nasforge.spaces import get_space_class, space_names

            try:
                cls = get_space_class(arch.space)
            except ConfigError as exc:
                if ":" in arch.space:
                    raise ArchError(f"architecture's space {arch.space}: {exc}") from None
                raise ArchError(f"architecture names unknown space '{arch.space}'; use one of {space_names()}") from None
            cls.validate_arch(arch)
        return arch

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike, validate: bool = True) -> "Arch":
        """Parse JSON text or a path to a JSON file (validated against its space)."""
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise ArchError(f"architecture file {path} does not exist; pass the arch.json of a search run")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ArchError(f"cannot read architecture file {path} ({exc}); check the file") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"architecture JSON is malformed ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                            "fix the JSON syntax") from None
        return cls.from_dict(data, validate=validate)

    def __str__(self) -> str:
        return f"Arch({self.space}: {json.dumps(self.as_dict(), sort_keys=True)})"
