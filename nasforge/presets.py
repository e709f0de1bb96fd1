"""Settings presets: a method's paper (or official code) settings on a dataset, one flag away.

``nasforge search --preset paper --strategy gdas --data cifar10`` applies the settings
registered for (``paper``, ``gdas``, ``cifar10``) *under* the run's config: a config file and
``--set`` still override any of them. A preset is a nested mapping of config sections
(``strategy``, ``space``, ``train``, ``data``, ``latency``, ...) plus, per setting, where the
figure comes from. Each method registers its presets next to its code
(``register_preset(...)`` in its strategy module), so a method and its paper's settings live
together; ``nasforge list presets`` and ``docs/presets.md`` show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nasforge.errors import ConfigError

__all__ = ["Preset", "PRESETS", "apply_preset", "find_preset", "preset_names", "register_preset"]


@dataclass(frozen=True)
class Preset:
    """The settings of ``name`` for ``strategy`` on ``dataset``."""

    name: str
    strategy: str
    dataset: str
    settings: dict[str, Any]
    #: dotted setting (``strategy.epochs``) -> where its value comes from; ``*`` for all the rest
    sources: dict[str, str] = field(default_factory=dict)
    note: str = ""


#: (name, strategy, dataset) -> preset
PRESETS: dict[tuple[str, str, str], Preset] = {}


def register_preset(name: str, strategy: str, dataset: str, settings: dict[str, Any],
                    sources: dict[str, str] | None = None, note: str = "") -> Preset:
    """Register the settings of preset ``name`` for (``strategy``, ``dataset``)."""
    key = (name, strategy, dataset)
    if key in PRESETS:
        raise ValueError(f"preset {name} for {strategy} on {dataset} is registered twice")
    for section, values in settings.items():
        if not isinstance(values, dict):
            raise ValueError(f"preset {key}: section {section!r} must be a mapping")
    PRESETS[key] = Preset(name, strategy, dataset, settings, dict(sources or {}), note)
    return PRESETS[key]


def _load_all() -> None:
    import nasforge.strategies  # noqa: F401  (the strategy modules register their presets)


def preset_names() -> list[str]:
    _load_all()
    return sorted({k[0] for k in PRESETS})


def find_preset(name: str, strategy: str, dataset: str) -> Preset:
    """The preset, or a one-line error listing the (strategy, dataset) pairs that have one."""
    _load_all()
    key = (str(name), str(strategy), str(dataset))
    if key in PRESETS:
        return PRESETS[key]
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset '{name}'; presets: {', '.join(names) or 'none'} "
                          "(nasforge list presets)")
    pairs = sorted(f"{s}/{d}" for n, s, d in PRESETS if n == name)
    raise ConfigError(f"preset '{name}' has no settings for {strategy} on {dataset}; it has: {', '.join(pairs)} "
                      "(pick one of those --strategy/--data pairs, or drop --preset)")


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def apply_preset(raw: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """``raw`` with the preset's settings filled in where ``raw`` does not set them (raw wins)."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for path, value in flatten(preset.settings).items():
        keys = path.split(".")
        node = merged
        for key in keys[:-1]:
            nxt = node.get(key)
            if not isinstance(nxt, dict):
                nxt = node[key] = {}
            node = nxt
        node.setdefault(keys[-1], value)
    return merged
