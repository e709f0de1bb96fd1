"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020).

One cell type, shared by every cell of the network: a DAG of 4 nodes where node ``i``
is the sum of one op applied to each earlier node ``j < i`` (6 edges), each op one of
``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3`` --
5^6 = 15,625 cells. Node 0 is the cell input and node 3 its output. Ops follow the
benchmark's code (D-X-Y/AutoDL-Projects ``cell_operations.py``): ``nor_conv_kxk`` is
ReLU-Conv-BN (stride 1, "same" padding), ``avg_pool_3x3`` is a 3x3 average pool with
stride 1, padding 1 and ``count_include_pad=False``, ``none`` is zero (so a node whose
every input is ``none`` is all zeros), ``skip_connect`` is the identity.

The macro network is the benchmark's: a 3x3 conv stem (``C`` channels) with BN, three
stages of ``N`` cells of widths ``C``, ``2C``, ``4C``, separated by residual reduction
blocks (a ResNet basic block with stride 2), then BN-ReLU, global average pooling and a
linear classifier. The benchmark uses ``C = 16``, ``N = 5``.

Arch choices: ``edge{i}<-{j}`` (the op on the edge from node ``j`` to node ``i``) and the
single-valued shape choices ``C`` and ``N``, so an ``arch.json`` rebuilds its network
alone. The benchmark's string form (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) is parsed by
``NB201Space.from_string`` and printed by ``to_string``.

The network is written once (``NB201Network``) with an ``OpChoice`` on every edge, labelled
by the edge, so every cell shares one decision per edge (one ``[6, 5]`` set of architecture
weights, recorded as the group ``normal``; the reductions are fixed blocks). ``build(arch)``
is that network with the chosen ops; a one-shot method relaxes its choices. Derivation takes
per edge the op of largest weight, ``none`` included, as the benchmark's DARTS and GDAS
search models do (``genotype()`` in AutoDL-Projects).
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.nn.choices import OpChoice as OpChoiceModule
from nasforge.spaces.base import Choice, OpChoice, ValueChoice, register_space
from nasforge.spaces.modular import ModuleSpace
from nasforge.spaces.ops import Identity, ReLUConvBN, Zero

#: The benchmark's candidate ops, in its order (``NAS_BENCH_201`` in AutoDL-Projects).
PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: Nodes of a cell (node 0 is the input, the last node the output).
NODES = 4
#: ``(i, j)`` of every edge ``j -> i``, in the benchmark's edge order (rows of the weight matrix).
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))
#: Shape options: allowed ranges of ``C`` (stem width) and ``N`` (cells per stage).
C_RANGE, N_RANGE = (1, 4096), (1, 64)
#: A cell in the benchmark's string form (its documentation's example; shown in error messages).
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def edge_label(i: int, j: int) -> str:
    """Arch label of the edge from node ``j`` to node ``i`` (e.g. ``edge1<-0``)."""
    return f"edge{i}<-{j}"


EDGE_LABELS: tuple[str, ...] = tuple(edge_label(i, j) for i, j in EDGES)


def make_nb201_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """One benchmark op on ``channels`` channels, stride 1 (cells never change the shape)."""
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class ResidualReduction(nn.Module):
    """The benchmark's reduction block: a ResNet basic block with stride 2.

    ``ReLU-conv3x3(s2)-BN``, ``ReLU-conv3x3-BN``, plus a shortcut of 2x2 average pooling
    (stride 2) and a 1x1 conv. The pooling uses ``ceil_mode`` so odd sizes match the
    strided conv (identical to the benchmark's block on even sizes such as CIFAR's).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True),
                                        nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def stage_widths(C: int) -> tuple[int, int, int]:
    """Channels of the three stages."""
    return C, 2 * C, 4 * C


class NB201Cell(nn.Module):
    """The cell: on each edge ``EDGES[e]`` an ``OpChoice`` labelled ``edge{i}<-{j}`` (shared by every
    cell; in a built network, the chosen op). A node is the sum of its incoming edges; a node with
    only ``none`` inputs is zeros, as in the benchmark. ``search``: BN without affine (the
    benchmark's search cells)."""

    def __init__(self, channels: int, search: bool = False, primitives: Sequence[str] = PRIMITIVES):
        super().__init__()
        affine = not search
        self.edges = nn.ModuleList(
            OpChoiceModule(label, {name: (lambda name=name: make_nb201_op(name, channels, affine)) for name in primitives},
                           group="normal")
            for label in EDGE_LABELS)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        e = 0
        for i in range(1, NODES):
            total: Tensor | int = 0
            for j in range(i):
                total = total + self.edges[e](nodes[j])
                e += 1
            nodes.append(total)
        return nodes[-1]


class NB201Network(nn.Module):
    """Stem, three stages of ``N`` cells separated by residual reductions, BN-ReLU, pool, linear:
    the benchmark's network (searched: its cells' choices relaxed; built: one cell's ops)."""

    def __init__(self, in_channels: int, num_classes: int, C: int = 16, N: int = 5, search: bool = False,
                 primitives: Sequence[str] = PRIMITIVES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        cells: list[nn.Module] = []
        c_prev = C
        for stage, width in enumerate(stage_widths(C)):
            if stage > 0:
                cells.append(ResidualReduction(c_prev, width))
            cells += [NB201Cell(width, search, primitives) for _ in range(N)]
            c_prev = width
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.pool(self.lastact(x)).flatten(1))


def derive_ops(weights: np.ndarray | Tensor, primitives: Sequence[str] = PRIMITIVES) -> tuple[str, ...]:
    """Per edge the op of largest weight (``none`` included; ties go to the earlier op)."""
    if isinstance(weights, Tensor):
        weights = weights.detach().cpu().numpy()
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(EDGES), len(primitives)):
        raise ValueError(f"weights shape {weights.shape} != {(len(EDGES), len(primitives))}")
    return tuple(primitives[int(k)] for k in weights.argmax(axis=1))


class _class_or_instance_method:
    """A method that, called on the class, acts on the benchmark's default space (C=16, N=5)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return types.MethodType(self.fn, obj if obj is not None else owner())


def _check_shape_option(name: str, value: Any, bounds: tuple[int, int], error: type[Exception]) -> int:
    lo, hi = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise error(f"nb201 space: {name}={value!r} is out of range; use an integer from {lo} to {hi} "
                    f"(benchmark: {'C=16' if name == 'C' else 'N=5'})")
    return value


@register_space
class NB201Space(ModuleSpace):
    """The NAS-Bench-201 space: one shared 4-node cell, 6 edges, 5 ops; ``C``, ``N`` size the network."""

    name = "nb201"
    version = 1
    description = "NAS-Bench-201 cell: 4 nodes, 6 edges, 5 ops (15,625 cells); ResNet-style skeleton (DARTS, GDAS)"
    primitives = PRIMITIVES

    def __init__(self, C: int = 16, N: int = 5):
        self.C = _check_shape_option("C", C, C_RANGE, ConfigError)
        self.N = _check_shape_option("N", N, N_RANGE, ConfigError)

    def choices(self) -> dict[str, Choice]:
        out: dict[str, Choice] = {label: OpChoice(label, PRIMITIVES) for label in EDGE_LABELS}
        out["C"] = ValueChoice("C", (self.C,))
        out["N"] = ValueChoice("N", (self.N,))
        return out

    @classmethod
    def for_arch(cls, arch: Arch) -> "NB201Space":
        try:
            C, N = arch["C"], arch["N"]
        except KeyError:
            raise ArchError("architecture lacks the nb201 shape choices 'C' and 'N'; use an arch.json written by "
                            "an nb201 search or NB201Space.from_string") from None
        return cls(C=_check_shape_option("C", C, C_RANGE, ArchError), N=_check_shape_option("N", N, N_RANGE, ArchError))

    # --- the benchmark's string form ---------------------------------------------
    def ops(self, arch: Arch) -> tuple[str, ...]:
        """The op of each edge, in ``EDGES`` order."""
        return tuple(arch[label] for label in EDGE_LABELS)

    def arch_from_ops(self, ops: Sequence[str]) -> Arch:
        """The ``Arch`` (with this space's ``C`` and ``N``) of six edge ops in ``EDGES`` order."""
        if len(ops) != len(EDGES):
            raise ArchError(f"an nb201 cell has {len(EDGES)} edges, got {len(ops)} ops; give one op per edge")
        choices: dict[str, Any] = dict(zip(EDGE_LABELS, ops))
        choices.update(C=self.C, N=self.N)
        arch = Arch(self.name, choices, self.version)
        self.validate(arch)
        return arch

    @_class_or_instance_method
    def from_string(self, text: str) -> Arch:
        """Parse the benchmark's arch string (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``); on the
        class, the arch gets the benchmark's ``C=16, N=5``."""
        return self.arch_from_ops(parse_string(text))

    @_class_or_instance_method
    def to_string(self, arch: Arch) -> str:
        """The benchmark's arch string of ``arch`` (the cell only; ``C`` and ``N`` are not part of it)."""
        if arch.space != self.name:
            raise ArchError(f"architecture belongs to space '{arch.space}', not 'nb201'; pass an nb201 arch")
        try:
            ops = self.ops(arch)
        except KeyError as exc:
            raise ArchError(f"architecture lacks the nb201 choice {exc.args[0]!r}; add it") from None
        return format_string(ops)

    def describe(self, arch: Arch) -> str:
        return f"{self.to_string(arch)} (C={arch['C']}, N={arch['N']})"

    def fixed_choices(self) -> dict[str, Choice]:
        return {"C": ValueChoice("C", (self.C,)), "N": ValueChoice("N", (self.N,))}

    # --- networks ------------------------------------------------------------------
    def network(self, input_shape: tuple[int, int, int], num_classes: int, search: bool = False) -> NB201Network:
        """The benchmark network with this space's ``C`` and ``N`` (search and final network share it,
        so a strategy's ``layers``/``channels`` and DARTS's build options do not apply)."""
        return NB201Network(input_shape[0], num_classes, self.C, self.N, search, self.primitives)

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        """The benchmark network of ``arch``, sized by the arch's own ``C`` and ``N``."""
        space = self.for_arch(arch)
        return ModuleSpace.build(space, arch, input_shape, num_classes)

    def derive(self, normal: np.ndarray | Tensor) -> Arch:
        """Arch from per-edge op weights ``[6, ops]``: per edge the op of largest weight."""
        return self.arch_from_ops(derive_ops(normal, self.primitives))


def format_string(ops: Sequence[str]) -> str:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` from six ops in ``EDGES`` order."""
    nodes, e = [], 0
    for i in range(1, NODES):
        nodes.append("|" + "|".join(f"{ops[e + j]}~{j}" for j in range(i)) + "|")
        e += i
    return "+".join(nodes)


def parse_string(text: Any) -> tuple[str, ...]:
    """The six edge ops of a benchmark arch string; ``ArchError`` naming what is malformed."""
    def bad(problem: str) -> ArchError:
        return ArchError(f"malformed NAS-Bench-201 arch string {text!r}: {problem}; write it like '{EXAMPLE}'")

    if not isinstance(text, str):
        raise bad("not a string")
    parts = text.strip().split("+")
    if len(parts) != NODES - 1:
        raise bad(f"{len(parts)} node(s) separated by '+', an nb201 cell has {NODES - 1}")
    ops: list[str] = []
    for i, part in enumerate(parts, start=1):
        if len(part) < 2 or not part.startswith("|") or not part.endswith("|"):
            raise bad(f"node {i} ({part!r}) must start and end with '|'")
        items = part[1:-1].split("|")
        if len(items) != i:
            raise bad(f"node {i} has {len(items)} input(s), needs {i} (one op from each of nodes 0..{i - 1})")
        by_source: dict[int, str] = {}
        for item in items:
            op, sep, source = item.partition("~")
            if not sep or "~" in source:
                raise bad(f"node {i} input {item!r} must look like 'op~j'")
            if op not in PRIMITIVES:
                raise bad(f"unknown op {op!r} (ops: {', '.join(PRIMITIVES)})")
            if not source.isdigit() or int(source) >= i:
                raise bad(f"node {i} input {item!r} must come from a node 0..{i - 1}")
            if int(source) in by_source:
                raise bad(f"node {i} takes node {source} twice")
            by_source[int(source)] = op
        ops += [by_source[j] for j in range(i)]
    return tuple(ops)
