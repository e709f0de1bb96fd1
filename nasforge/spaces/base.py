"""Search spaces, their choice declarations, and the space registry.

A space declares its decision points as *choices* (``OpChoice``, ``InputChoice``,
``ValueChoice``), each with a unique label. An ``Arch`` fixes every choice to a value.
Sample-based strategies only need ``sample``/``mutate``/``validate`` (which work from the
declarations alone); one-shot strategies ask the space for a ``supernet`` in which each
choice is relaxed by the strategy's mixed op.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.registry import Registry


@dataclass(frozen=True)
class ValueChoice:
    """Pick one value (a width, a kernel size, a bit-width...) out of ``values``."""

    label: str
    values: tuple[Any, ...]

    @property
    def size(self) -> int:
        return len(self.values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def check(self, value: Any) -> str | None:
        if value not in self.values:
            return f"{value!r} is not one of {list(self.values)}"
        return None

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        others = [v for v in self.values if v != value]
        return others[int(rng.integers(len(others)))] if others else value


@dataclass(frozen=True)
class OpChoice(ValueChoice):
    """Pick one operation out of ``candidates`` (op names)."""

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.values


@dataclass(frozen=True)
class InputChoice:
    """Pick ``k`` distinct inputs out of ``n_inputs`` (a sorted tuple of indices)."""

    label: str
    n_inputs: int
    k: int = 1

    @property
    def size(self) -> int:
        from math import comb

        return comb(self.n_inputs, self.k)

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(sorted(int(i) for i in rng.choice(self.n_inputs, size=self.k, replace=False)))

    def check(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)) or len(value) != self.k:
            return f"{value!r} must be a list of {self.k} input indices"
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n_inputs for i in value):
            return f"{list(value)!r} has an index outside 0..{self.n_inputs - 1}"
        if len(set(value)) != self.k or list(value) != sorted(value):
            return f"{list(value)!r} must be {self.k} distinct indices in increasing order"
        return None

    def mutate(self, value: Any, rng: np.random.Generator) -> tuple[int, ...]:
        unused = [i for i in range(self.n_inputs) if i not in value]
        if not unused:
            return tuple(value)
        chosen = list(value)
        chosen[int(rng.integers(len(chosen)))] = unused[int(rng.integers(len(unused)))]
        return tuple(sorted(chosen))


Choice = OpChoice | ValueChoice | InputChoice


def choice_values(choice: Any) -> tuple[Any, ...]:
    """Every value of a declared choice, in a fixed order: an ``InputChoice``'s sorted index
    tuples in lexicographic order, otherwise the choice's ``values``."""
    if isinstance(choice, InputChoice):
        return tuple(itertools.combinations(range(choice.n_inputs), choice.k))
    return tuple(choice.values)


def undecidable(strategy: str, space: Any) -> str | None:
    """Why a strategy that decides ``space``'s declared choices by their values cannot search it: no
    ``choices()``, a choice without a list of values, or nothing to decide (``None``: it can)."""
    name = getattr(space, "name", space)
    if not callable(getattr(space, "choices", None)):
        return f"strategy '{strategy}' needs a space that declares its choices; '{name}' has no choices()"
    declared = space.choices()
    for label, choice in declared.items():
        if not isinstance(choice, InputChoice) and not hasattr(choice, "values"):
            return (f"strategy '{strategy}' needs the list of values of every choice; choice '{label}' of space "
                    f"'{name}' ({type(choice).__name__}) has none")
    if not any(c.size > 1 for c in declared.values()):
        return (f"strategy '{strategy}' needs a choice with two or more values; space '{name}' has nothing to "
                "decide")
    return None


class SearchSpace:
    """Base class of a search space: declares choices, samples, mutates, validates and builds.

    Subclasses set ``name`` (and ``version``), take their size options as keyword arguments
    of ``__init__`` and implement ``choices`` and ``build``; one-shot capable spaces also
    implement ``supernet``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""

    def choices(self) -> dict[str, Choice]:
        """All decision points of the space, by label."""
        raise NotImplementedError

    @classmethod
    def for_arch(cls, arch: Arch) -> "SearchSpace":
        """A space instance whose choices fit ``arch`` (spaces with shape options infer them)."""
        return cls()

    @classmethod
    def validate_arch(cls, arch: Arch) -> None:
        """Check ``arch`` against this space class; raise ``ArchError`` naming the bad field."""
        if arch.space != cls.name:
            raise ArchError(f"architecture belongs to space '{arch.space}', not '{cls.name}'; "
                            f"use an arch.json made for '{cls.name}' or pass --space {arch.space}")
        cls.for_arch(arch).validate(arch)

    # --- generic operations over the declarations ------------------------
    def validate(self, arch: Arch) -> None:
        """Raise ``ArchError`` naming the first choice that is missing, unknown or invalid."""
        if arch.space != self.name:
            raise ArchError(f"architecture belongs to space '{arch.space}', not '{self.name}'; "
                            f"use an arch.json made for '{self.name}'")
        if arch.version != self.version:
            raise ArchError(f"architecture is for {self.name} version {arch.version}, this nasforge has "
                            f"version {self.version}; search again with this version")
        declared = self.choices()
        given = arch.as_dict()
        for label in given:
            if label not in declared:
                raise ArchError(f"choice '{label}' does not exist in space '{self.name}'; "
                                f"remove it (valid labels look like '{next(iter(declared))}')")
        for label, choice in declared.items():
            if label not in given:
                raise ArchError(f"choice '{label}' is missing from the architecture; add it")
            problem = choice.check(arch[label])
            if problem:
                raise ArchError(f"choice '{label}': {problem}; fix that value")
        self.check_consistency(arch)

    def check_consistency(self, arch: Arch) -> None:
        """Extra cross-choice rules of a space (none by default)."""

    # --- sequential decisions (NAS-RL's controller, MetaQNN's walks) -----------
    def next_decision(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        """The next choice to decide after the decisions ``values`` (label -> value), and the
        values it may take given them; ``None`` once nothing is left to decide.

        A space with cross-choice rules overrides this (with ``complete``) so that every
        finished sequence of decisions is a valid architecture. The default decides every
        choice with two or more values in ``choices()`` order, each with all its values
        (``choice_values``); single-valued choices are left to ``complete``.
        """
        for label, choice in self.choices().items():
            if label not in values:
                options = choice_values(choice)
                if len(options) > 1:
                    return label, options
        return None

    def take_forced(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` plus every remaining decision that has a single allowed value; an ``ArchError``
        for a decision still open with several."""
        values = dict(values)
        while (step := self.next_decision(values)) is not None:
            label, allowed = step
            if len(allowed) != 1:
                raise ArchError(f"choice '{label}' is still to be decided (one of {list(allowed)}); decide it "
                                "before completing the architecture")
            values[label] = allowed[0]
        return values

    def complete(self, values: Mapping[str, Any]) -> Arch:
        """The architecture of a finished sequence of decisions ``values``: every choice that
        was not decided is filled in (by default: the single value of a one-valued choice).
        A decision still open with a single allowed value is taken; one with several, or a
        label the space does not declare, is an ``ArchError``."""
        values = self.take_forced(values)
        declared = self.choices()
        for label in values:
            if label not in declared:
                raise ArchError(f"choice '{label}' does not exist in space '{self.name}'; decide declared choices only")
        out: dict[str, Any] = {}
        for label, choice in declared.items():
            if label in values:
                out[label] = values[label]
                continue
            options = choice_values(choice)
            if len(options) != 1:
                raise ArchError(f"choice '{label}' was not decided and has {len(options)} values; decide it")
            out[label] = options[0]
        return Arch(self.name, out, self.version)

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture (each choice sampled independently)."""
        return Arch(self.name, {label: c.sample(rng) for label, c in self.choices().items()}, self.version)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change exactly one choice to another valid value."""
        mutable = [(label, c) for label, c in self.choices().items() if c.size > 1]
        if not mutable:
            return arch
        label, choice = mutable[int(rng.integers(len(mutable)))]
        return arch.with_choice(label, choice.mutate(arch[label], rng))

    def size(self) -> int:
        """Number of distinct architectures (product of the choice sizes)."""
        total = 1
        for c in self.choices().values():
            total *= c.size
        return total

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        """A stand-alone network for ``arch``."""
        raise NotImplementedError

    def supernet(self, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        """The one-shot network holding every choice (for gradient-based strategies)."""
        raise NotImplementedError(f"space '{self.name}' has no supernet; use a sample-based strategy")

    def describe(self, arch: Arch) -> str:
        """A short human-readable description of an architecture."""
        return str(arch)


#: every registered space class, by name
SPACES: Registry[type[SearchSpace]] = Registry("search space")


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator: make a space available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    return SPACES.register(cls.name, cls, description=cls.description)


def space_names() -> list[str]:
    return SPACES.names()


def get_space_class(name: str) -> type[SearchSpace]:
    """The registered space class called ``name``, or a user's space from a reference
    ``path/to/file.py:name`` / ``package.module:name`` (``ConfigError`` otherwise)."""
    from nasforge.spaces.modular import is_space_reference, load_space_reference

    if is_space_reference(name):
        return load_space_reference(name)
    return SPACES.get(name)


def make_space(name: str, **options: Any) -> SearchSpace:
    """Instantiate a space, checking option names and values."""
    cls = get_space_class(name)
    if getattr(cls, "reference", ""):  # a user's function space checks its own options
        return cls(**options)
    params = inspect.signature(cls.__init__).parameters
    for key in options:
        if key not in params or key == "self":
            valid = [p for p in params if p != "self"]
            raise ConfigError(f"space '{name}' has no option '{key}'; valid options are {valid}")
    return cls(**options)
