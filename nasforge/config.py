"""Typed configuration: dataclass sections loaded from YAML with name, type and range checks.

Every field has a default. ``None`` on a field documented as "auto" means: take the
value from the dataset profile (``nasforge.profiles``), so defaults scale with the data.
Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from nasforge.errors import ConfigError

T = TypeVar("T")


def option(default: Any, *, lo: float | None = None, hi: float | None = None, choices: tuple | None = None,
           help: str = "") -> Any:
    """A config field with a default, an optional closed range or set of choices, and a help text."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "help": help}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _base_types(annotation: Any) -> tuple[tuple[type, ...], bool]:
    """The concrete types an annotation admits, and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        allowed = tuple(a for a in args if a is not type(None))
        return tuple(typing.get_origin(a) or a for a in allowed), type(None) in args
    return (origin or annotation,), False


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    kinds, nullable = _base_types(annotation)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where} must not be empty; give a value or remove the key to use the default")
    for kind in kinds:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif kind is float:
            try:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return float(value)
                if isinstance(value, str):
                    return float(value)
            except ValueError:
                pass
            except OverflowError:  # an integer with hundreds of digits
                raise ConfigError(f"{where}={str(value)[:40]}... is too large; give a number that fits "
                                  "a float") from None
        elif kind is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        elif kind in (list, tuple):
            if isinstance(value, (list, tuple)):
                return list(value)
        elif kind is dict:
            if isinstance(value, dict):
                return value
        elif kind is Any:
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ConfigError(f"{where} must be {names}, got {value!r}; fix the value")


def load_section(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{where}.{key}'; valid keys in '{where}' are {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            value = data[name]
            sub = hints[name]
            if dataclasses.is_dataclass(sub):
                kwargs[name] = load_section(sub, value, f"{where}.{name}")
                continue
            value = _coerce(value, sub, f"{where}.{name}")
            if isinstance(value, float) and value != value:
                raise ConfigError(f"{where}.{name} is NaN; give a number")
            meta = f.metadata
            if value is not None and meta:
                lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
                if choices is not None and value not in choices:
                    raise ConfigError(f"{where}.{name}={value!r} is not allowed; use one of {list(choices)}")
                if lo is not None and value < lo or hi is not None and value > hi:
                    raise ConfigError(f"{where}.{name}={value!r} is out of range; use a value in [{lo}, {hi}]")
            kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain dicts (for YAML)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


#: largest config file read (a config is a few KB; this keeps a wrong or hostile file from filling memory)
MAX_CONFIG_BYTES = 1_000_000


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): a few hundred bytes of nested aliases
    ("billion laughs") expand to gigabytes when the config is walked or printed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"YAML aliases (*{event.anchor}) are not supported in configs "
                              f"(line {event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` without aliases (``ConfigError`` on one)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with one-line errors for missing, unreadable, oversized or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path given to --config")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {size / 1e6:.1f} MB, more than a config can be "
                              f"({MAX_CONFIG_BYTES // 1_000_000} MB); check the path given to --config")
        data = safe_load(path.read_text())
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}; fix its syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path} ({exc}); check the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (seed, data, space, strategy, train)")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value, e.g. strategy.epochs=10")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r} has no key; write it like strategy.epochs=10")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except ConfigError as exc:
        raise ConfigError(f"--set {key.strip()}: {exc}") from None
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating sections as needed."""
    node = data
    for key in path[:-1]:
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"cannot set '{'.'.join(path)}': '{key}' is a value, not a section")
        node = nxt
    node[path[-1]] = value
