"""Choice modules: a search space written once, as a PyTorch network.

A space is an ordinary ``nn.Module`` with decision points inside it:

- ``OpChoice(label, {name: module})``: one of several candidate modules;
- ``ValueChoice(label, values)`` + ``Choose(factory, **kwargs)``: a value (a kernel size, a
  width, an expansion ratio...) fed to any module factory; ``Choose`` builds one candidate
  per combination of its value choices;
- ``InputChoice(label, n_candidates, n_chosen)``: which of several tensors to sum;
- ``NodeChoice(label, n_inputs, names, make)``: the DARTS / NAS-Bench-201 node, where the
  op of every incoming edge and the ``n_chosen`` inputs kept are one coupled decision.

The same label in several places is one decision (all normal cells of DARTS share one).
A network with choice modules does three things:

1. ``declarations(model)`` walks it and returns the space's decisions (``Choice``
   declarations of ``nasforge.spaces.base``), which sample-based strategies search;
2. built inside ``fixed_arch(values)``, every choice constructor returns the chosen
   candidate (or value) instead, so the same code yields a plain network holding the chosen
   modules only, with no search code left in it (``build`` of a space);
3. a one-shot method attaches a ``nasforge.oneshot.relax.Relaxation``: the method owns one
   architecture tensor ``[rows, candidates]`` per label and, before each forward pass, sets
   a *decision* per label (soft weights, a hard sample, binary-gated paths); every choice
   module reads its label's decision in ``forward``. The relaxations differ only in the
   decisions they make, so one forward per module type serves DARTS, GDAS and ProxylessNAS.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from nasforge.errors import ArchError, ConfigError

__all__ = [
    "Choose", "ChoiceModule", "Hard", "HardZeroWeights", "InputChoice", "NodeChoice", "OpChoice", "Paths", "Soft",
    "ValueChoice", "Zero", "choice_modules", "declarations", "fixed_arch", "is_zero",
]

ZERO_NAMES = ("none", "zero")

# ---------------------------------------------------------------------------
# Fixed-architecture context: constructors return the chosen candidate
# ---------------------------------------------------------------------------
_local = threading.local()


class _Fixed:
    """The values of a fixed architecture, and which labels a build used."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = dict(values)
        self.used: set[str] = set()

    def take(self, label: str) -> Any:
        if label not in self.values:
            raise ArchError(f"choice '{label}' is missing from the architecture; add it")
        self.used.add(label)
        return self.values[label]


def _fixed() -> _Fixed | None:
    return getattr(_local, "fixed", None)


@contextmanager
def fixed_arch(values: Mapping[str, Any], strict: bool = True) -> Iterator[_Fixed]:
    """Inside this block, choice constructors return the candidate (or value) ``values`` names.

    With ``strict``, a label of ``values`` that the network never asked for is an error on
    exit (the architecture is from another space).
    """
    previous = _fixed()
    ctx = _Fixed(values)
    _local.fixed = ctx
    try:
        yield ctx
    finally:
        _local.fixed = previous
    if strict:
        unused = sorted(set(ctx.values) - ctx.used)
        if unused:
            raise ArchError(f"choice '{unused[0]}' of the architecture does not exist in this space; "
                            "use an arch.json made for this space")


# ---------------------------------------------------------------------------
# Decisions a relaxation sets per label (rows of a [rows, n] architecture tensor)
# ---------------------------------------------------------------------------
class Soft(NamedTuple):
    """Weights ``[rows, n]`` (a softmax): every candidate runs, outputs mixed (DARTS)."""

    weights: Tensor


class Hard(NamedTuple):
    """One sampled candidate per row (``index``) and weights ``[rows, n]`` whose value at the
    index carries the gradient (straight-through; GDAS). Only the chosen candidate's output
    counts (the official NASNet-space GDAS cell, and NAS-Bench-201's ``forward_gdas_v1``)."""

    index: Sequence[int]
    weights: Tensor


class HardZeroWeights(Hard):
    """``Hard``, and every unchosen candidate adds its own weight (exactly 0 in value) to the output,
    so each carries a gradient too (the official NAS-Bench-201 GDAS cell: ``forward_gdas`` in
    AutoDL-Projects' ``xautodl/models/cell_searchs/search_cells.py``)."""


class Paths(NamedTuple):
    """Per row the ``active`` candidate and, in an architecture step, a second ``inactive`` one
    that runs without autograd, gated by binary ``gates [rows, 2]`` (ProxylessNAS)."""

    active: Sequence[int]
    inactive: Sequence[int] | None = None
    gates: Tensor | None = None


Decision = Soft | Hard | HardZeroWeights | Paths


def is_zero(name: str, module: nn.Module | None = None) -> bool:
    """A candidate whose output is identically zero (``none``/``zero`` or a ``Zero`` module)."""
    return name in ZERO_NAMES or isinstance(module, Zero)


class Zero(nn.Module):
    """A candidate that outputs zeros shaped like its input (a layer that is skipped when residual)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


def _check_label(label: Any) -> str:
    if not isinstance(label, str) or not label:
        raise ConfigError(f"a choice label must be a non-empty string, got {label!r}")
    return label


def _build(candidate: Any) -> nn.Module:
    """A candidate given as a module or as a zero-argument factory of one."""
    module = candidate() if not isinstance(candidate, nn.Module) and callable(candidate) else candidate
    if not isinstance(module, nn.Module):
        raise ConfigError(f"a candidate must be an nn.Module or a function returning one, got {type(module).__name__}")
    return module


class ChoiceModule(nn.Module):
    """Base of the choice modules: labels, declarations, the relaxation's decisions."""

    #: the record group of this module's rows (see ``Relaxation.weights_record``)
    group: str

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_relaxation", None)  # not a submodule

    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        """label -> ``(rows, candidates)`` of the architecture tensor each label needs."""
        raise NotImplementedError

    def declarations(self) -> dict[str, Any]:
        """label -> ``Choice`` declaration (the arch-level decisions)."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """label -> what must agree wherever the label appears (candidate names and shapes)."""
        return {label: (shape, self.candidate_names(label)) for label, shape in self.alpha_shapes().items()}

    def candidate_names(self, label: str) -> tuple[str, ...]:
        raise NotImplementedError

    def derive(self, probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Arch values of this module's labels from per-label probabilities ``[rows, n]``."""
        raise NotImplementedError

    def decision(self, label: str) -> Decision:
        relax = self._relaxation
        if relax is None:
            raise ConfigError(f"choice '{label}' ran outside a search: build a network with space.build(arch), "
                              "or let a one-shot strategy relax the space")
        return relax.decision(label)


def _mix(run: Callable[[int], Tensor], zero: set[int], n: int, decision: Decision, row: int, like: Callable[[], Tensor]
         ) -> Tensor:
    """One row of a decision over ``n`` candidates; ``run(i)`` is candidate i's output."""
    if isinstance(decision, Soft):
        w = decision.weights[row]
        out = None
        for i in range(n):
            if i in zero:  # adds nothing (the result and the gradients are the same)
                continue
            term = w[i] * run(i)
            out = term if out is None else out + term
        return out if out is not None else like()
    if isinstance(decision, Hard):
        i = decision.index[row]
        out = decision.weights[row, i] * run(i)
        if isinstance(decision, HardZeroWeights):  # + w_k for every unchosen k: 0 in value, a gradient for each w_k
            w = decision.weights[row]
            out = out + torch.cat([w[:i], w[i + 1:]]).sum()
        return out
    active = decision.active[row]
    if decision.gates is None:
        return run(active)
    out = decision.gates[row, 0] * run(active)
    if decision.inactive is not None:
        with torch.no_grad():
            other = run(decision.inactive[row])
        out = out + decision.gates[row, 1] * other
    return out


class OpChoice(ChoiceModule):
    """One of several candidate modules (``{name: module or factory}``); the arch value is the name."""

    def __new__(cls, label: str, candidates: Mapping[str, Any], group: str | None = None):
        fixed = _fixed()
        if fixed is None:
            return super().__new__(cls)
        _check_label(label)
        name = fixed.take(label)
        if name not in candidates:
            raise ArchError(f"choice '{label}': {name!r} is not one of {list(candidates)}; fix that value")
        return _build(candidates[name])

    def __init__(self, label: str, candidates: Mapping[str, Any], group: str | None = None):
        super().__init__()
        self.label = _check_label(label)
        if not isinstance(candidates, Mapping) or len(candidates) < 2:
            n = len(candidates) if isinstance(candidates, Mapping) else 0
            raise ConfigError(f"choice '{label}' has {n} candidate(s); a choice needs at least 2 (a dict "
                              "name -> module)")
        self.names = tuple(str(k) for k in candidates)
        self.candidates = nn.ModuleList(_build(c) for c in candidates.values())
        self.zero = {i for i, (n, m) in enumerate(zip(self.names, self.candidates)) if is_zero(n, m)}
        self.group = group or label

    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {self.label: (1, len(self.names))}

    def candidate_names(self, label: str) -> tuple[str, ...]:
        return self.names

    def declarations(self) -> dict[str, Any]:
        from nasforge.spaces.base import OpChoice as OpDecl

        return {self.label: OpDecl(self.label, self.names)}

    def derive(self, probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {self.label: self.names[int(np.argmax(probs[self.label][0]))]}

    def forward(self, x: Tensor) -> Tensor:
        return _mix(lambda i: self.candidates[i](x), self.zero, len(self.names), self.decision(self.label), 0,
                    lambda: torch.zeros_like(x))


class ValueChoice:
    """A value out of ``values`` (a kernel size, a width, an expansion ratio, a depth...).

    Pass it to ``Choose`` (which builds a module per value); inside ``fixed_arch`` the
    constructor returns the chosen value itself, so the same code builds the plain network.
    """

    def __new__(cls, label: str, values: Sequence[Any]):
        fixed = _fixed()
        if fixed is None:
            return super().__new__(cls)
        value = fixed.take(_check_label(label))
        if value not in list(values):
            raise ArchError(f"choice '{label}': {value!r} is not one of {list(values)}; fix that value")
        return value

    def __init__(self, label: str, values: Sequence[Any]):
        self.label = _check_label(label)
        self.values = tuple(values)
        if len(self.values) < 2:
            raise ConfigError(f"choice '{label}' has {len(self.values)} value(s); a choice needs at least 2")
        if len(set(map(repr, self.values))) != len(self.values):
            raise ConfigError(f"choice '{label}' lists a value twice: {list(self.values)}; remove the duplicate")

    def __repr__(self) -> str:
        return f"ValueChoice({self.label!r}, {list(self.values)})"


class Choose(ChoiceModule):
    """``factory(**kwargs)`` where some keyword values are ``ValueChoice``s: one candidate per
    combination of their values, mixed by the product of the per-label weights.

    ``Choose(conv_block, c_in=16, kernel=ValueChoice("l0.kernel", [3, 5]))`` is a plain
    ``conv_block(c_in=16, kernel=5)`` inside ``fixed_arch({"l0.kernel": 5})``.
    """

    def __new__(cls, factory: Callable[..., nn.Module], group: str | None = None, **kwargs: Any):
        if _fixed() is None and any(isinstance(v, ValueChoice) for v in kwargs.values()):
            return super().__new__(cls)
        return _build(factory(**kwargs))  # every value fixed: the plain module

    def __init__(self, factory: Callable[..., nn.Module], group: str | None = None, **kwargs: Any):
        super().__init__()
        self.keys = [k for k, v in kwargs.items() if isinstance(v, ValueChoice)]
        self.choices = [kwargs[k] for k in self.keys]
        labels = [c.label for c in self.choices]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"Choose got the choice '{labels[0]}' twice; pass each value choice once")
        self.labels = labels
        self.combos = list(itertools.product(*(range(len(c.values)) for c in self.choices)))
        self._index = {combo: k for k, combo in enumerate(self.combos)}
        built = []
        for combo in self.combos:
            args = dict(kwargs)
            for key, choice, i in zip(self.keys, self.choices, combo):
                args[key] = choice.values[i]
            built.append(_build(factory(**args)))
        self.candidates = nn.ModuleList(built)
        self.group = group or labels[0]

    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {c.label: (1, len(c.values)) for c in self.choices}

    def combo_values(self) -> list[tuple[Any, ...]]:
        """The values of each candidate's combination, in candidate order."""
        return [tuple(c.values[i] for c, i in zip(self.choices, combo)) for combo in self.combos]

    def candidate_names(self, label: str) -> tuple[str, ...]:
        return tuple(repr(v) for v in self.choices[self.labels.index(label)].values)

    def declarations(self) -> dict[str, Any]:
        from nasforge.spaces.base import ValueChoice as ValueDecl

        return {c.label: ValueDecl(c.label, c.values) for c in self.choices}

    def derive(self, probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {c.label: c.values[int(np.argmax(probs[c.label][0]))] for c in self.choices}

    def forward(self, x: Tensor) -> Tensor:
        decisions = [self.decision(label) for label in self.labels]
        index = self._index
        kind = type(decisions[0])
        if kind is HardZeroWeights:  # value choices mix no outputs of unchosen candidates: plain Hard
            kind = Hard
        if kind is Soft:
            out = None
            for k, combo in enumerate(self.combos):
                w = decisions[0].weights[0, combo[0]]
                for d, i in zip(decisions[1:], combo[1:]):
                    w = w * d.weights[0, i]
                term = w * self.candidates[k](x)
                out = term if out is None else out + term
            return out
        if kind is Hard:
            combo = tuple(d.index[0] for d in decisions)
            w = decisions[0].weights[0, combo[0]]
            for d, i in zip(decisions[1:], combo[1:]):
                w = w * d.weights[0, i]
            return w * self.candidates[index[combo]](x)
        active = tuple(d.active[0] for d in decisions)
        if decisions[0].gates is None:
            return self.candidates[index[active]](x)
        # every combination of active (0) / inactive (1) per label, gated by the product of gates
        out = None
        for sides in itertools.product(*((0, 1) if d.inactive is not None else (0,) for d in decisions)):
            combo = tuple(d.active[0] if s == 0 else d.inactive[0] for d, s in zip(decisions, sides))
            g = decisions[0].gates[0, sides[0]]
            for d, s in zip(decisions[1:], sides[1:]):
                g = g * d.gates[0, s]
            if any(sides):
                with torch.no_grad():
                    y = self.candidates[index[combo]](x)
            else:
                y = self.candidates[index[combo]](x)
            term = g * y
            out = term if out is None else out + term
        return out


class ChosenInputs(nn.Module):
    """The fixed form of an ``InputChoice``: the sum of the chosen inputs."""

    def __init__(self, indices: Sequence[int]):
        super().__init__()
        self.indices = list(indices)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        out = inputs[self.indices[0]]
        for i in self.indices[1:]:
            out = out + inputs[i]
        return out


class InputChoice(ChoiceModule):
    """``n_chosen`` of ``n_candidates`` input tensors, summed; the arch value is the sorted index list."""

    def __new__(cls, label: str, n_candidates: int, n_chosen: int = 1, group: str | None = None):
        fixed = _fixed()
        if fixed is None:
            return super().__new__(cls)
        from nasforge.spaces.base import InputChoice as InputDecl

        value = fixed.take(_check_label(label))
        problem = InputDecl(label, n_candidates, n_chosen).check(value)
        if problem:
            raise ArchError(f"choice '{label}': {problem}; fix that value")
        return ChosenInputs(value)

    def __init__(self, label: str, n_candidates: int, n_chosen: int = 1, group: str | None = None):
        super().__init__()
        self.label = _check_label(label)
        if not isinstance(n_candidates, int) or not isinstance(n_chosen, int) or not 1 <= n_chosen < n_candidates:
            raise ConfigError(f"choice '{label}' picks {n_chosen!r} of {n_candidates!r} inputs; it needs "
                              "1 <= n_chosen < n_candidates")
        self.n_candidates, self.n_chosen = n_candidates, n_chosen
        self.group = group or label

    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {self.label: (1, self.n_candidates)}

    def candidate_names(self, label: str) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.n_candidates))

    def declarations(self) -> dict[str, Any]:
        from nasforge.spaces.base import InputChoice as InputDecl

        return {self.label: InputDecl(self.label, self.n_candidates, self.n_chosen)}

    def derive(self, probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        p = probs[self.label][0]
        top = sorted(range(self.n_candidates), key=lambda i: (-p[i], i))[: self.n_chosen]
        return {self.label: sorted(top)}

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != self.n_candidates:
            raise ValueError(f"choice '{self.label}' got {len(inputs)} inputs, declared {self.n_candidates}")
        d = self.decision(self.label)
        out = _mix(lambda i: inputs[i], set(), self.n_candidates, d, 0, lambda: inputs[0])
        # soft: the chosen inputs' sum relaxed as n_chosen x the weighted mean; sampled methods pick one
        return self.n_chosen * out if isinstance(d, Soft) else out


class FixedNode(nn.Module):
    """The fixed form of a ``NodeChoice``: the chosen ops on the chosen inputs, summed."""

    def __init__(self, inputs: Sequence[int], ops: Sequence[nn.Module]):
        super().__init__()
        self.inputs = list(inputs)
        self.ops = nn.ModuleList(ops)

    def forward(self, states: Sequence[Tensor]) -> Tensor:
        out = None
        for j, op in zip(self.inputs, self.ops):
            h = op(states[j])
            out = h if out is None else out + h
        return out


def derive_node(rows: np.ndarray, names: Sequence[str], n_chosen: int) -> tuple[list[int], list[str]]:
    """The DARTS rule for one node: keep the ``n_chosen`` inputs whose strongest non-zero op weighs
    most (ties: the lower input), each with that op. Returns (sorted inputs, their ops)."""
    live = [k for k, name in enumerate(names) if not is_zero(name)]
    strength = {j: max(rows[j][k] for k in live) for j in range(len(rows))}
    chosen = sorted(sorted(strength), key=lambda j: -strength[j])[:n_chosen]
    ops = []
    for j in sorted(chosen):
        best = max(live, key=lambda k: (rows[j][k], -k))
        ops.append(names[best])
    return sorted(chosen), ops


def derive_node_pairs(rows: np.ndarray, names: Sequence[str], n_chosen: int) -> tuple[list[int], list[str]]:
    """The official GDAS rule for one node (``genotype()`` of AutoDL-Projects' NASNet-space GDAS
    search model): over every ``(op, input)`` pair of the node's incoming edges, zero ops left out,
    keep the ``n_chosen`` of largest weight (ties: the earlier input, then the earlier op), so two
    ops may come from one input. Returns (inputs, ops) ordered by input, then op."""
    live = [k for k, name in enumerate(names) if not is_zero(name)]
    pairs = [(j, k) for j in range(len(rows)) for k in live]
    top = sorted(sorted(pairs, key=lambda p: -rows[p[0]][p[1]])[:n_chosen])
    return [j for j, _ in top], [names[k] for _, k in top]


#: how a ``NodeChoice`` derives its inputs and ops: ``darts`` (top inputs by their strongest op, DARTS)
#: or ``pairs`` (top (op, input) pairs, the official GDAS code)
NODE_RULES: dict[str, Callable[[np.ndarray, Sequence[str], int], tuple[list[int], list[str]]]] = {
    "darts": derive_node, "pairs": derive_node_pairs}


class NodeChoice(ChoiceModule):
    """A cell node: an op on each of its ``n_inputs`` incoming edges, ``n_chosen`` inputs kept.

    ``make(name, j)`` builds candidate ``name`` for the edge from input ``j``. The decisions are
    ``{label}.inputs`` (the kept inputs) and ``{label}.op{m}`` (the op on the m-th kept input);
    one-shot methods relax it as one ``[n_inputs, len(names)]`` tensor (an op mix per edge,
    the DARTS node) and derive it by ``derive_node`` (or, with ``rule="pairs"``, by GDAS's
    ``derive_node_pairs``). A zero op among ``names`` is searched (it weakens an edge) but never
    chosen: an input not kept is the zero op. An arch may keep one input twice (``inputs: [1, 1]``:
    ``op0`` and ``op1`` both on input 1, as GDAS's derivation can give); sampled archs keep
    distinct inputs.
    """

    def __new__(cls, label: str, n_inputs: int, names: Sequence[str], make: Callable[[str, int], nn.Module],
                n_chosen: int = 2, group: str | None = None):
        fixed = _fixed()
        if fixed is None:
            return super().__new__(cls)
        from nasforge.spaces.node import check_node_inputs

        inputs = fixed.take(f"{label}.inputs")
        problem = check_node_inputs(inputs, n_inputs, n_chosen)
        if problem:
            raise ArchError(f"choice '{label}.inputs': {problem}; fix that value")
        ops = []
        for m, j in enumerate(inputs):
            name = fixed.take(f"{label}.op{m}")
            if name not in names:
                raise ArchError(f"choice '{label}.op{m}': {name!r} is not one of {list(names)}; fix that value")
            ops.append(make(name, j))
        return FixedNode(inputs, ops)

    def __init__(self, label: str, n_inputs: int, names: Sequence[str], make: Callable[[str, int], nn.Module],
                 n_chosen: int = 2, group: str | None = None):
        super().__init__()
        self.label = _check_label(label)
        self.names = tuple(names)
        if len(self.names) < 2 or not 1 <= n_chosen <= n_inputs:
            raise ConfigError(f"choice '{label}': a node needs 2 or more op names and 1 <= n_chosen <= n_inputs")
        self.n_inputs, self.n_chosen = n_inputs, n_chosen
        self.edges = nn.ModuleList(nn.ModuleList(make(name, j) for name in self.names) for j in range(n_inputs))
        self.zero = {i for i, n in enumerate(self.names) if is_zero(n)}
        self.group = group or label

    @property
    def op_names(self) -> tuple[str, ...]:
        """The ops an arch may name: the non-zero ones (a zero op is an input not kept)."""
        return tuple(n for n in self.names if not is_zero(n))

    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {self.label: (self.n_inputs, len(self.names))}

    def candidate_names(self, label: str) -> tuple[str, ...]:
        return self.names

    def declarations(self) -> dict[str, Any]:
        from nasforge.spaces.base import OpChoice as OpDecl
        from nasforge.spaces.node import NodeInputs

        out: dict[str, Any] = {f"{self.label}.inputs": NodeInputs(f"{self.label}.inputs", self.n_inputs, self.n_chosen)}
        for m in range(self.n_chosen):
            out[f"{self.label}.op{m}"] = OpDecl(f"{self.label}.op{m}", self.op_names)
        return out

    def derive(self, probs: Mapping[str, np.ndarray], rule: str = "darts") -> dict[str, Any]:
        """Inputs and ops by ``rule``: ``darts`` (``derive_node``) or ``pairs`` (``derive_node_pairs``)."""
        try:
            derive = NODE_RULES[rule]
        except KeyError:
            raise ConfigError(f"unknown node derivation '{rule}'; choose one of {sorted(NODE_RULES)}") from None
        inputs, ops = derive(probs[self.label], self.names, self.n_chosen)
        out: dict[str, Any] = {f"{self.label}.inputs": inputs}
        for m, name in enumerate(ops):
            out[f"{self.label}.op{m}"] = name
        return out

    def forward(self, states: Sequence[Tensor]) -> Tensor:
        if len(states) != self.n_inputs:
            raise ValueError(f"choice '{self.label}' got {len(states)} inputs, declared {self.n_inputs}")
        d = self.decision(self.label)
        total: Any = 0
        for j, h in enumerate(states):
            ops = self.edges[j]
            total = total + _mix(lambda i: ops[i](h), self.zero, len(self.names), d, j, lambda: torch.zeros_like(h))
        return total


# ---------------------------------------------------------------------------
# Walking a network
# ---------------------------------------------------------------------------
def choice_modules(model: nn.Module) -> list[tuple[str, ChoiceModule]]:
    """Every choice module of ``model`` with its module path, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ChoiceModule)]


def declarations(model: nn.Module) -> dict[str, Any]:
    """The space's decisions from its choice modules (label -> ``Choice``), checking that a label
    used in several places means the same candidates everywhere."""
    out: dict[str, Any] = {}
    signatures: dict[str, Any] = {}
    for path, module in choice_modules(model):
        for label, sig in module.signature().items():
            if label in signatures and signatures[label] != sig:
                raise ConfigError(f"choice '{label}' is used at '{path}' with other candidates than before "
                                  f"({sig[1]} vs {signatures[label][1]}); give it another label")
            signatures[label] = sig
        out.update(module.declarations())
    return out
