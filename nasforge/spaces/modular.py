"""Spaces written once as a network with choice modules, and users' own spaces.

``ModuleSpace`` is a ``SearchSpace`` whose ``network(input_shape, num_classes, **options)``
builds an ``nn.Module`` with choice modules inside (``nasforge.nn``). Everything else comes
from that one network:

- ``choices()``: the declarations of its choice modules (walked once, cached);
- ``build(arch, ...)``: the same ``network`` called inside ``fixed_arch(arch)``, so every
  choice constructor returns the chosen candidate: a plain network;
- ``supernet(...)``: the network with its choice modules, which a one-shot method relaxes;
- latency lookup tables: one entry per candidate module at the input shape it sees in the
  network, plus ``rest`` (the measured reference network minus its candidates), so any such
  space gets ``nasforge latency`` and hardware-aware search without per-space latency code.

Users' spaces: ``--space path/to/file.py:name`` or ``--space package.module:name`` where
``name`` is a function (or class) returning such a network; it is called with the keyword
arguments it accepts among ``input_shape``, ``num_classes`` and the space options. The
reference (a file path made absolute) is the space's name, recorded in the config and in
every ``arch.json``, so ``train``, ``export``, ``resume`` and ``report`` find it again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.nn.choices import Choose, InputChoice, NodeChoice, OpChoice, choice_modules, declarations, fixed_arch, \
    is_zero
from nasforge.spaces.base import Choice, SearchSpace

#: the input shape ``choices()`` builds its probe network at (choices never depend on it)
PROBE_SHAPE = (3, 32, 32)
REST_KEY = "rest"


class ModuleSpace(SearchSpace):
    """A space defined by one network with choice modules (see the module docstring)."""

    #: options ``build`` passes on (others given by a trainer, e.g. ``layers``, are dropped)
    build_options: ClassVar[tuple[str, ...]] = ()
    #: options ``supernet`` passes on
    supernet_options: ClassVar[tuple[str, ...]] = ()

    def network(self, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        """The network with choice modules (inside ``fixed_arch``: the plain network of an arch)."""
        raise NotImplementedError

    def fixed_choices(self) -> dict[str, Choice]:
        """Single-valued choices an arch records besides the network's (shape options)."""
        return {}

    def final_options(self) -> dict[str, Any]:
        """Supernet options that make it the size of a built network (a method that searches the
        target network itself, ProxylessNAS, uses them; the latency table is measured at that size)."""
        return {}

    # --- declarations ----------------------------------------------------------------
    def choices(self) -> dict[str, Choice]:
        cached = self.__dict__.get("_choices")
        if cached is None:
            net = self.network(PROBE_SHAPE, 10)
            cached = {**declarations(net), **self.fixed_choices()}
            if not any(c.size > 1 for c in cached.values()):
                raise ConfigError(f"space '{self.name}' has no choices: its network holds no OpChoice, Choose, "
                                  "InputChoice or NodeChoice with two or more candidates; add one")
            self.__dict__["_choices"] = cached
        return cached

    def arch(self, values: dict[str, Any]) -> Arch:
        """An ``Arch`` of this space from the network's choice values (single-valued choices filled in)."""
        fixed = {label: c.values[0] for label, c in self.fixed_choices().items()}
        return Arch(self.name, {**values, **fixed}, self.version)

    # --- networks -----------------------------------------------------------------------
    def _options(self, allowed: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k in allowed and v is not None}

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        self.validate(arch)
        values = {k: v for k, v in arch.as_dict().items() if k not in self.fixed_choices()}
        # validate() refused labels the space does not declare; a small network may leave some unused
        # (a 2-cell darts network has no normal cell), so the build itself is not strict
        with fixed_arch(values, strict=False):
            net = self.network(tuple(input_shape), num_classes, **self._options(self.build_options, options))
        return net

    def supernet(self, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        options = self._options(self.supernet_options, options)
        if "search" in inspect.signature(self.network).parameters:
            options["search"] = True
        return self.network(tuple(input_shape), num_classes, **options)

    # --- latency lookup tables ------------------------------------------------------------
    def _probe_inputs(self, net: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        """Input shape(s) of every choice module of ``net`` in one forward pass of a zero batch."""
        from nasforge.oneshot.relax import Relaxation

        relax = Relaxation(net, std=0.0)
        relax.argmax_paths()
        shapes: dict[str, Any] = {}
        hooks = []
        for path, module in choice_modules(net):
            def hook(mod: nn.Module, args: tuple[Any, ...], path: str = path) -> None:
                x = args[0]
                shapes[path] = [tuple(t.shape[1:]) for t in x] if isinstance(x, (list, tuple)) else tuple(x.shape[1:])
            hooks.append(module.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                net.eval()(torch.zeros(1, *input_shape))
        finally:
            for h in hooks:
                h.remove()
        return shapes

    def _candidate_keys(self, net: nn.Module) -> dict[str, dict[str, list[tuple[str, nn.Module, int]]]]:
        """Per choice module path: label -> [(table key, candidate module, input row)], zero ops left out."""
        out: dict[str, dict[str, list[tuple[str, nn.Module, int]]]] = {}
        for path, m in choice_modules(net):
            entries: dict[str, list[tuple[str, nn.Module, int]]] = {}
            if isinstance(m, OpChoice):
                entries[m.label] = [(f"{path}:{name}", op, 0) for name, op in zip(m.names, m.candidates)
                                    if not is_zero(name, op)]
            elif isinstance(m, NodeChoice):
                entries[m.label] = [(f"{path}:{j}:{name}", ops[k], j) for j, ops in enumerate(m.edges)
                                    for k, name in enumerate(m.names) if not is_zero(name)]
            elif isinstance(m, Choose):
                entries[",".join(m.labels)] = [(f"{path}:{','.join(map(repr, combo_values))}", cand, 0)
                                               for combo_values, cand in zip(m.combo_values(), m.candidates)]
            out[path] = entries
        return out

    def reference_arch(self) -> Arch:
        """The arch whose whole network the table measures for ``rest``: the first candidate everywhere."""
        net = self.network(PROBE_SHAPE, 10)
        from nasforge.oneshot.relax import Relaxation

        relax = Relaxation(net, std=0.0)
        return self.arch(relax.derive())

    def latency_parts(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
        """Every candidate module at the input shape it sees, and the reference network (``rest``)."""
        net = self.network(tuple(input_shape), num_classes)
        shapes = self._probe_inputs(net, tuple(input_shape))
        parts: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {}
        for path, entries in self._candidate_keys(net).items():
            for items in entries.values():
                for key, module, row in items:
                    shape = shapes[path][row] if isinstance(shapes[path], list) else shapes[path]
                    parts[key] = (lambda module=module: module, shape)
        ref = self.reference_arch()
        parts[REST_KEY] = (lambda: self.build(ref, input_shape, num_classes), tuple(input_shape))
        return parts

    def latency_residual_parts(self, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, list[str]]:
        """``rest`` is stored net of the reference arch's candidates (``build_table`` subtracts them)."""
        return {REST_KEY: self.arch_candidate_keys(self.reference_arch(), input_shape, num_classes)}

    def arch_candidate_keys(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> list[str]:
        """Table keys of the candidates ``build(arch)`` is made of (one per choice module instance)."""
        values = arch.as_dict()
        keys = []
        for path, kind, labels, zero in self._key_plan(tuple(input_shape), num_classes):
            if kind == "op":
                if values[labels[0]] not in zero:
                    keys.append(f"{path}:{values[labels[0]]}")
            elif kind == "node":
                for k, j in enumerate(values[f"{labels[0]}.inputs"]):
                    keys.append(f"{path}:{j}:{values[f'{labels[0]}.op{k}']}")
            elif kind == "choose":
                keys.append(f"{path}:{','.join(repr(values[label]) for label in labels)}")
        return keys

    def _key_plan(self, input_shape: tuple[int, int, int], num_classes: int) -> list[tuple[str, str, tuple, set]]:
        """Per choice module of the network: (path, kind, labels, zero candidate names); built once per shape,
        so a table prediction does not build a network."""
        cache = self.__dict__.setdefault("_key_plans", {})
        key = (input_shape, num_classes)
        if key not in cache:
            plan = []
            for path, m in choice_modules(self.network(input_shape, num_classes)):
                if isinstance(m, OpChoice):
                    zero = {n for n, op in zip(m.names, m.candidates) if is_zero(n, op)}
                    plan.append((path, "op", (m.label,), zero))
                elif isinstance(m, NodeChoice):
                    plan.append((path, "node", (m.label,), set()))
                elif isinstance(m, Choose):
                    plan.append((path, "choose", tuple(m.labels), set()))
            cache[key] = plan
        return cache[key]

    def arch_latency_parts(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> list[str]:
        return [REST_KEY] + self.arch_candidate_keys(arch, input_shape, num_classes)


# ---------------------------------------------------------------------------
# Users' spaces from code
# ---------------------------------------------------------------------------
class FunctionSpace(ModuleSpace):
    """A space from a user's function or class returning a network with choice modules."""

    factory: ClassVar[Callable[..., nn.Module]]
    reference: ClassVar[str] = ""

    def __init__(self, **options: Any):
        accepted = _accepted(type(self).factory)
        for key in options:
            if accepted is not None and key not in accepted or key in ("input_shape", "num_classes"):
                raise ConfigError(f"space '{self.name}' has no option '{key}'; its function takes "
                                  f"{sorted(k for k in (accepted or ()) if k not in ('input_shape', 'num_classes'))}")
        self.options = options

    def fixed_choices(self) -> dict[str, Choice]:
        """The space options, recorded in every arch (``option.NAME``) so an arch.json rebuilds its network."""
        from nasforge.spaces.base import ValueChoice

        return {f"option.{k}": ValueChoice(f"option.{k}", (v,)) for k, v in sorted(self.options.items())}

    @classmethod
    def for_arch(cls, arch: Arch) -> "FunctionSpace":
        """The space with the options ``arch`` records."""
        return cls(**{k[len("option."):]: v for k, v in arch.as_dict().items() if k.startswith("option.")})

    def network(self, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        factory = type(self).factory
        accepted = _accepted(factory)
        kwargs = {"input_shape": tuple(input_shape), "num_classes": num_classes, **self.options, **options}
        if accepted is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        net = factory(**kwargs)
        if not isinstance(net, nn.Module):
            raise ConfigError(f"space '{self.name}' returned {type(net).__name__}, not an nn.Module; "
                              "return the network")
        return net


def _accepted(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts (None: it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {name for name, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def is_space_reference(name: Any) -> bool:
    """``file.py:name`` or ``package.module:name``."""
    return isinstance(name, str) and ":" in name


def normalize_reference(ref: str) -> str:
    """A file reference made absolute (so a run finds it from any directory); module references as given."""
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


_LOADED: dict[str, type[FunctionSpace]] = {}


def load_space_reference(ref: str) -> type[SearchSpace]:
    """The space class of a user reference (``ConfigError`` naming the file or module on failure)."""
    ref = normalize_reference(ref)
    if ref in _LOADED:
        return _LOADED[ref]
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"space reference '{ref}' must look like path/to/file.py:name or package.module:name")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"space file {path} does not exist; pass --space path/to/file.py:name")
        module_name = "nasforge_user_space_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user file can raise anything; one line names it
            sys.modules.pop(module_name, None)
            raise ConfigError(f"space file {path} failed to import ({type(exc).__name__}: {exc}); fix the file") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ConfigError(f"space module '{target}' failed to import ({type(exc).__name__}: {exc}); "
                              "check the name and that it is installed") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"'{target}' has no '{attr}'; name a function or class that returns the space's network")
    if isinstance(obj, type) and issubclass(obj, SearchSpace):
        cls: type[SearchSpace] = obj
    elif callable(obj):
        cls = type(f"FunctionSpace[{attr}]", (FunctionSpace,),
                   {"name": ref, "factory": staticmethod(obj), "reference": ref,
                    "description": (inspect.getdoc(obj) or "").split("\n")[0]})
    else:
        raise ConfigError(f"'{ref}' is a {type(obj).__name__}, not a function or class returning a network")
    _LOADED[ref] = cls
    return cls


__all__ = ["FunctionSpace", "ModuleSpace", "is_space_reference", "load_space_reference", "normalize_reference"]
