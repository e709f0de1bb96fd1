"""One registry for everything nasforge looks up by name, and the capability checks between them.

Spaces, strategies, evaluators, runners and datasets each live in a ``Registry``: a name
maps to an object (a class, a factory or a small spec) and a one-line description, and
an unknown name is one error line that lists the valid names. Capabilities are
``supports(space) -> str | None`` methods (``Strategy.supports``, evaluator specs): ``None``
when the component can work on that space instance, else a one-line reason naming what
is missing and the fix. ``check_supported`` turns a reason into a ``ConfigError``, so a
bad pair fails when the config is resolved, before any run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from nasforge.errors import ConfigError, NasforgeError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object and a one-line description."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """Name -> object for one ``kind`` of component ("search space", "strategy", ...).

    ``get`` raises ``error`` (``ConfigError`` by default) with ``unknown <kind> 'x'; choose
    one of [...]``. Registering a name again replaces the earlier entry.
    """

    def __init__(self, kind: str, error: type[NasforgeError] = ConfigError):
        self.kind = kind
        self.error = error
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: Any = None, obj: Any = None, *, description: str | None = None) -> Any:
        """Add an entry; usable as ``@reg.register`` (the object's ``name``), ``@reg.register("x",
        description=...)`` or ``reg.register("x", obj)``. Returns the object (or a decorator)."""
        if name is not None and not isinstance(name, str):  # bare decorator: @reg.register
            return self._add(None, name, description)
        if obj is not None:
            return self._add(name, obj, description)

        def decorator(target: T) -> T:
            return self._add(name, target, description)

        return decorator

    def _add(self, name: str | None, obj: T, description: str | None) -> T:
        name = name or getattr(obj, "name", "") or ""
        if not name:
            raise ValueError(f"{getattr(obj, '__name__', obj)!r} needs a name to be registered as a {self.kind}")
        if description is None:
            description = getattr(obj, "description", "") or ""
            if not isinstance(description, str):
                description = ""
        self._entries[name] = Entry(name, obj, description)
        return obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def unknown(self, name: Any) -> str:
        """The one-line message for a name that is not registered."""
        return f"unknown {self.kind} '{name}'; choose one of {self.names()}"

    def get(self, name: str) -> T:
        """The object registered as ``name`` (``self.error`` listing the names otherwise)."""
        try:
            return self._entries[name].obj
        except (KeyError, TypeError):
            raise self.error(self.unknown(name)) from None

    def description(self, name: str) -> str:
        """One line about ``name``."""
        self.get(name)
        return self._entries[name].description

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def check_supported(component: Any, space: Any) -> None:
    """Raise ``ConfigError`` with the reason when ``component.supports(space)`` names one.

    ``component`` is anything with a ``supports(space)`` method: a strategy class, an
    evaluator spec. Components without one support every space.
    """
    supports = getattr(component, "supports", None)
    reason = supports(space) if supports is not None else None
    if reason:
        raise ConfigError(reason)


def support_matrix() -> dict[str, dict[str, str | None]]:
    """strategy -> space -> ``None`` (supported) or the reason, for every registered strategy and
    every registered space built with its default options."""
    from nasforge.spaces import make_space, space_names
    from nasforge.strategies import get_strategy_class, strategy_names

    spaces = {name: make_space(name) for name in space_names()}
    return {strategy: {name: get_strategy_class(strategy).supports(space) for name, space in spaces.items()}
            for strategy in strategy_names()}


__all__ = ["Entry", "Registry", "check_supported", "support_matrix"]
