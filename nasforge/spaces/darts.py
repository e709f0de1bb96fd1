"""The DARTS cell search space (Liu, Simonyan & Yang, ICLR 2019).

A network is a stack of cells; reduction cells (stride 2, doubled channels) sit at 1/3
and 2/3 of the depth. Each cell takes the outputs of the two previous cells, has
``nodes`` intermediate nodes (4 in the paper), each the sum of two ops applied to two
earlier states, and concatenates the intermediate nodes as its output. The candidate
ops are the paper's eight. An architecture (a *genotype*) picks, for every node of the
normal and the reduction cell, two inputs and an op for each.

Arch choices: ``{cell}.{node}.inputs`` (two input indices, 0 and 1 being the cell
inputs), ``{cell}.{node}.op0`` and ``.op1`` (the ops applied to the first and second
input), for ``cell`` in ``normal``/``reduce`` and ``node`` in ``0..nodes-1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.oneshot.mixed import EdgeWeights, MixedOp
from nasforge.spaces.base import Choice, InputChoice, OpChoice, SearchSpace, register_space
from nasforge.spaces.ops import FactorizedReduce, Identity, ReLUConvBN, drop_path, make_op

#: The paper's candidate ops, in the order of its code (index 0 is ``none``).
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Genotype:
    """The DARTS genotype: per cell type a list of ``(op, input)`` pairs, two per node."""

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def concat(self) -> list[int]:
        return list(range(2, 2 + self.nodes))

    def count(self, op: str, cell: str = "normal") -> int:
        """How many edges of ``cell`` use ``op`` (e.g. skip-connects in the normal cell)."""
        return sum(1 for name, _ in getattr(self, cell) if name == op)

    def to_dict(self) -> dict[str, Any]:
        return {c: [[op, j] for op, j in getattr(self, c)] for c in CELL_TYPES}

    def __str__(self) -> str:
        def fmt(cell: str) -> str:
            return " ".join(f"{op}<-{j}" for op, j in getattr(self, cell))

        return f"normal[{fmt('normal')}] reduce[{fmt('reduce')}]"


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes (node i has i + 2 inputs)."""
    return sum(2 + i for i in range(nodes))


def edge_index(node: int, source: int) -> int:
    """Row of the edge ``source -> node`` in an ``[edges, ops]`` weight matrix."""
    return sum(2 + i for i in range(node)) + source


def derive_cell(weights: np.ndarray, nodes: int, primitives: Sequence[str] = PRIMITIVES) -> tuple[tuple[str, int], ...]:
    """The paper's derivation for one cell: per node keep the two incoming edges whose
    strongest non-``none`` op weighs most, each with that op."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (num_edges(nodes), len(primitives)):
        raise ValueError(f"weights shape {weights.shape} != {(num_edges(nodes), len(primitives))}")
    live = [k for k, name in enumerate(primitives) if name != "none"]
    gene: list[tuple[str, int]] = []
    for node in range(nodes):
        rows = {j: weights[edge_index(node, j)] for j in range(node + 2)}
        strength = {j: max(row[k] for k in live) for j, row in rows.items()}
        # Highest strength first; ties broken by the lower input index (stable sort).
        chosen = sorted(sorted(rows), key=lambda j: -strength[j])[:2]
        for j in sorted(chosen):
            best = max(live, key=lambda k: (rows[j][k], -k))
            gene.append((primitives[best], j))
    return tuple(gene)


def derive_genotype(normal: np.ndarray | Tensor, reduce: np.ndarray | Tensor, nodes: int = 4,
                    primitives: Sequence[str] = PRIMITIVES) -> Genotype:
    """Genotype from per-edge op weights of both cells (``[edges, ops]`` each)."""
    to_np = lambda w: w.detach().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w)  # noqa: E731
    return Genotype(derive_cell(to_np(normal), nodes, primitives), derive_cell(to_np(reduce), nodes, primitives))


# ---------------------------------------------------------------------------
# Stand-alone network built from a genotype (the paper's evaluation network)
# ---------------------------------------------------------------------------
class FixedCell(nn.Module):
    """A cell with the genotype's ops; drop-path applies to every non-identity op."""

    def __init__(self, gene: Sequence[tuple[str, int]], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.nodes = len(gene) // 2
        self.inputs = [j for _, j in gene]
        self.ops = nn.ModuleList(
            make_op(name, c, 2 if reduction and j < 2 else 1, affine=True) for name, j in gene
        )
        self.multiplier = self.nodes
        self.drop_prob = 0.0

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(self.nodes):
            total = 0
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and self.drop_prob > 0 and not isinstance(self.ops[k], Identity):
                    h = drop_path(h, self.drop_prob)
                total = total + h
            states.append(total)
        return torch.cat(states[2:], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier after the second reduction (the paper's head; pooled to 2x2 so
    it fits any input size)."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def _reduction_layers(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


class DartsNetwork(nn.Module):
    """The evaluation network of a genotype: stem, ``layers`` cells, global pool, classifier.

    During training with ``auxiliary=True`` the auxiliary logits are kept in
    ``self.aux_logits`` (the forward output stays the main logits, so export is plain).
    """

    def __init__(self, genotype: Genotype, in_channels: int, num_classes: int, layers: int = 8,
                 channels: int = 16, auxiliary: bool = False, stem_multiplier: int = 3):
        super().__init__()
        self.drop_path_prob = 0.0
        self.auxiliary = auxiliary
        self.aux_logits: Tensor | None = None
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        reductions = _reduction_layers(layers)
        self.aux_position = reductions[1]
        c_aux = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            gene = genotype.reduce if reduction else genotype.normal
            cell = FixedCell(gene, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_p
        self.aux_head = AuxiliaryHead(c_aux, num_classes) if auxiliary and c_aux else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        self.aux_logits = None
        for i, cell in enumerate(self.cells):
            cell.drop_prob = self.drop_path_prob
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_position and self.aux_head is not None and self.training:
                self.aux_logits = self.aux_head(s1)
        return self.classifier(self.pool(s1).flatten(1))


# ---------------------------------------------------------------------------
# The supernet: every edge a mixed op over all candidate ops
# ---------------------------------------------------------------------------
class SearchCell(nn.Module):
    """A cell whose every edge is a ``MixedOp`` (pooling followed by BN, as in the paper)."""

    def __init__(self, nodes: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 primitives: Sequence[str] = PRIMITIVES):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for node in range(nodes):
            for j in range(node + 2):
                stride = 2 if reduction and j < 2 else 1
                ops = {}
                for name in primitives:
                    op = make_op(name, c, stride, affine=False)
                    if "pool" in name:
                        op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
                    ops[name] = op
                self.edges.append(MixedOp(ops))

    def forward(self, s0: Tensor, s1: Tensor, weights: EdgeWeights) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        w, index = weights
        offset = 0
        for _ in range(self.nodes):
            total = 0
            for j, h in enumerate(states):
                e = offset + j
                total = total + self.edges[e](h, w[e], None if index is None else index[e])
            offset += len(states)
            states.append(total)
        return torch.cat(states[2:], dim=1)


class GdasReductionCell(nn.Module):
    """GDAS's hand-designed fixed reduction cell ("FRC"; Dong & Yang, CVPR 2019).

    Both inputs are preprocessed to ``c`` channels as in a DARTS cell; then each goes
    through a conv branch (ReLU, 1x3 conv stride (1,2), 3x1 conv stride (2,1), both grouped
    by 8, BN, ReLU, 1x1 conv, BN) and a 3x3 max-pool stride 2 + BN branch; the four
    outputs are concatenated (``multiplier`` = 4, so ``4 * c`` channels). No architecture
    weights: ``forward(s0, s1)``. Groups are ``gcd(c, 8)`` so any width works (8 whenever
    ``c`` is a multiple of 8, as in the paper's networks).
    """

    multiplier = 4
    reduction = True

    def __init__(self, c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool = False):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c, affine=affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        groups = math.gcd(c, 8)

        def conv_branch() -> nn.Module:
            return nn.Sequential(
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, (1, 3), stride=(1, 2), padding=(0, 1), groups=groups, bias=False),
                nn.Conv2d(c, c, (3, 1), stride=(2, 1), padding=(1, 0), groups=groups, bias=False),
                nn.BatchNorm2d(c, affine=affine),
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, 1, bias=False),
                nn.BatchNorm2d(c, affine=affine),
            )

        def pool_branch() -> nn.Module:
            return nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.BatchNorm2d(c, affine=affine))

        self.conv0, self.conv1 = conv_branch(), conv_branch()
        self.pool0, self.pool1 = pool_branch(), pool_branch()

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        s0, s1 = self.pre0(s0), self.pre1(s1)
        return torch.cat([self.conv0(s0), self.conv1(s1), self.pool0(s0), self.pool1(s1)], dim=1)


class DartsSupernet(nn.Module):
    """The one-shot network of the DARTS space.

    ``forward(x, normal, reduce)`` takes per-edge weights for the normal and the reduction
    cells (``EdgeWeights``). With ``fixed_reduce`` the reduction cells are not searched and
    ``reduce`` is ignored: either a genotype's reduce gene (``(op, input)`` pairs, built as
    a ``FixedCell``) or a cell class called as ``cls(c_pp, c_p, c, reduction_prev)`` with
    a ``multiplier`` attribute, e.g. ``GdasReductionCell`` (GDAS's hand-designed cell).
    """

    def __init__(self, in_channels: int, num_classes: int, layers: int = 5, channels: int = 8, nodes: int = 4,
                 stem_multiplier: int = 3, primitives: Sequence[str] = PRIMITIVES,
                 fixed_reduce: Sequence[tuple[str, int]] | type[nn.Module] | None = None):
        super().__init__()
        self.nodes = nodes
        self.primitives = tuple(primitives)
        self.num_edges = num_edges(nodes)
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reductions = _reduction_layers(layers)
        reduction_prev = False
        if isinstance(fixed_reduce, type):
            self.fixed_reduce = fixed_reduce
        else:
            self.fixed_reduce = tuple(fixed_reduce) if fixed_reduce else None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            if reduction and isinstance(self.fixed_reduce, type):
                cell = self.fixed_reduce(c_pp, c_p, c_curr, reduction_prev)
            elif reduction and self.fixed_reduce:
                cell = FixedCell(self.fixed_reduce, c_pp, c_p, c_curr, True, reduction_prev)
            else:
                cell = SearchCell(nodes, c_pp, c_p, c_curr, reduction, reduction_prev, primitives)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, getattr(cell, "multiplier", nodes) * c_curr
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor, normal: EdgeWeights, reduce: EdgeWeights | None = None) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            if not isinstance(cell, SearchCell):  # a fixed (not searched) cell
                out = cell(s0, s1)
            else:
                out = cell(s0, s1, reduce if cell.reduction else normal)
            s0, s1 = s1, out
        return self.classifier(self.pool(s1).flatten(1))


@register_space
class DartsSpace(SearchSpace):
    """The DARTS cell space: normal and reduction cells, ``nodes`` intermediate nodes, 8 ops."""

    name = "darts"
    version = 1
    description = "DARTS cells: normal + reduction, 4 nodes, 8 candidate ops (DARTS, GDAS)"
    primitives = PRIMITIVES

    def __init__(self, nodes: int = 4):
        if not isinstance(nodes, int) or not 1 <= nodes <= 8:
            raise ConfigError(f"darts space: nodes={nodes!r} is out of range; use an integer from 1 to 8 (paper: 4)")
        self.nodes = nodes

    def choices(self) -> dict[str, Choice]:
        ops = tuple(p for p in PRIMITIVES if p != "none")
        out: dict[str, Choice] = {}
        for cell in CELL_TYPES:
            for node in range(self.nodes):
                out[f"{cell}.{node}.inputs"] = InputChoice(f"{cell}.{node}.inputs", node + 2, 2)
                out[f"{cell}.{node}.op0"] = OpChoice(f"{cell}.{node}.op0", ops)
                out[f"{cell}.{node}.op1"] = OpChoice(f"{cell}.{node}.op1", ops)
        return out

    @classmethod
    def for_arch(cls, arch: Arch) -> "DartsSpace":
        nodes = 0
        for label, _ in arch.choices:
            parts = label.split(".")
            if len(parts) == 3 and parts[1].isdigit() and parts[2] == "inputs":
                nodes = max(nodes, int(parts[1]) + 1)
        if not 1 <= nodes <= 8:
            raise ArchError("architecture has no valid darts choices like 'normal.0.inputs'; "
                            "use an arch.json written by a darts search")
        return cls(nodes=nodes)

    # --- genotype <-> arch ------------------------------------------------
    def genotype(self, arch: Arch) -> Genotype:
        """The DARTS genotype of an architecture of this space."""
        cells = {}
        for cell in CELL_TYPES:
            gene = []
            for node in range(self.nodes):
                a, b = arch[f"{cell}.{node}.inputs"]
                gene += [(arch[f"{cell}.{node}.op0"], a), (arch[f"{cell}.{node}.op1"], b)]
            cells[cell] = tuple(gene)
        return Genotype(**cells)

    def arch_from_genotype(self, genotype: Genotype) -> Arch:
        """The ``Arch`` of a genotype (pairs of a node are ordered by input index)."""
        if genotype.nodes != self.nodes:
            raise ArchError(f"genotype has {genotype.nodes} nodes, the space {self.nodes}")
        choices: dict[str, Any] = {}
        for cell in CELL_TYPES:
            gene = getattr(genotype, cell)
            for node in range(self.nodes):
                pair = sorted(gene[2 * node: 2 * node + 2], key=lambda p: p[1])
                choices[f"{cell}.{node}.inputs"] = [pair[0][1], pair[1][1]]
                choices[f"{cell}.{node}.op0"] = pair[0][0]
                choices[f"{cell}.{node}.op1"] = pair[1][0]
        return Arch(self.name, choices, self.version)

    def derive(self, normal: np.ndarray | Tensor, reduce: np.ndarray | Tensor) -> Arch:
        """Arch from per-edge op weights by the paper's top-2 rule."""
        return self.arch_from_genotype(derive_genotype(normal, reduce, self.nodes))

    def describe(self, arch: Arch) -> str:
        return str(self.genotype(arch))

    # --- networks ------------------------------------------------------------
    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, layers: int = 8,
              channels: int = 16, auxiliary: bool = False, **_: Any) -> DartsNetwork:
        self.validate(arch)
        return DartsNetwork(self.genotype(arch), input_shape[0], num_classes, layers, channels, auxiliary)

    def supernet(self, input_shape: tuple[int, int, int], num_classes: int, layers: int = 5, channels: int = 8,
                 fixed_reduce: Genotype | type[nn.Module] | None = None, **_: Any) -> DartsSupernet:
        """The one-shot network; ``fixed_reduce``: a genotype (its reduce cell) or a fixed cell class."""
        if isinstance(fixed_reduce, Genotype):
            fixed_reduce = fixed_reduce.reduce
        return DartsSupernet(input_shape[0], num_classes, layers, channels, self.nodes, fixed_reduce=fixed_reduce)
