"""The DARTS cell search space (Liu, Simonyan & Yang, ICLR 2019).

A network is a stack of cells; reduction cells (stride 2, doubled channels) sit at 1/3
and 2/3 of the depth. Each cell takes the outputs of the two previous cells, has
``nodes`` intermediate nodes (4 in the paper), each the sum of two ops applied to two
earlier states, and concatenates the intermediate nodes as its output. The candidate
ops are the paper's eight. An architecture (a *genotype*) picks, for every node of the
normal and the reduction cell, two inputs and an op for each.

Arch choices: ``{cell}.{node}.inputs`` (two input indices in increasing order, 0 and 1
being the cell inputs), ``{cell}.{node}.op0`` and ``.op1`` (the ops applied to the first and
second input), for ``cell`` in ``normal``/``reduce`` and ``node`` in ``0..nodes-1``. An index
may repeat (``[1, 1]``: both ops read state 1), as GDAS's official derivation can keep two
ops of one input; sampled archs keep two distinct inputs, as the DARTS paper's space.

``reduce_cell="gdas_frc"`` replaces the searched reduction cell with GDAS's hand-designed
one (``GdasReductionCell``, "FRC"): the space then has no ``reduce.*`` choices, and every
arch records ``reduce_cell: gdas_frc``, so the network built from it (the final network
too) has the FRC itself in its reduction positions.
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
from nasforge.nn.choices import NODE_RULES, NodeChoice
from nasforge.spaces.base import Choice, OpChoice, ValueChoice, register_space
from nasforge.spaces.modular import ModuleSpace
from nasforge.spaces.node import NodeInputs
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
#: the reduction cell: searched (the DARTS space) or GDAS's hand-designed fixed reduction cell
REDUCE_CELLS = ("searched", "gdas_frc")


@dataclass(frozen=True)
class Genotype:
    """The DARTS genotype: per cell type a list of ``(op, input)`` pairs, two per node.

    ``reduce_cell="gdas_frc"``: the reduction cell is GDAS's fixed one (``reduce`` is empty)."""

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_cell: str = "searched"

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def concat(self) -> list[int]:
        return list(range(2, 2 + self.nodes))

    def count(self, op: str, cell: str = "normal") -> int:
        """How many edges of ``cell`` use ``op`` (e.g. skip-connects in the normal cell)."""
        return sum(1 for name, _ in getattr(self, cell) if name == op)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {c: [[op, j] for op, j in getattr(self, c)] for c in CELL_TYPES}
        if self.reduce_cell != "searched":
            out["reduce_cell"] = self.reduce_cell
        return out

    def __str__(self) -> str:
        def fmt(cell: str) -> str:
            return " ".join(f"{op}<-{j}" for op, j in getattr(self, cell))

        reduce = fmt("reduce") if self.reduce_cell == "searched" else self.reduce_cell
        return f"normal[{fmt('normal')}] reduce[{reduce}]"


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes (node i has i + 2 inputs)."""
    return sum(2 + i for i in range(nodes))


def edge_index(node: int, source: int) -> int:
    """Row of the edge ``source -> node`` in an ``[edges, ops]`` weight matrix."""
    return sum(2 + i for i in range(node)) + source


def derive_cell(weights: np.ndarray, nodes: int, primitives: Sequence[str] = PRIMITIVES,
                rule: str = "darts") -> tuple[tuple[str, int], ...]:
    """One cell's genotype from its ``[edges, ops]`` weights. ``rule="darts"`` (the DARTS paper):
    per node keep the two incoming edges whose strongest non-``none`` op weighs most, each with
    that op (``nasforge.nn.choices.derive_node``); ``rule="pairs"`` (the official GDAS code): per
    node keep the two strongest ``(op, input)`` pairs over all non-``none`` ops of its incoming
    edges, so both may come from one input (``derive_node_pairs``)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (num_edges(nodes), len(primitives)):
        raise ValueError(f"weights shape {weights.shape} != {(num_edges(nodes), len(primitives))}")
    if rule not in NODE_RULES:
        raise ConfigError(f"unknown node derivation '{rule}'; choose one of {sorted(NODE_RULES)}")
    gene: list[tuple[str, int]] = []
    for node in range(nodes):
        rows = weights[edge_index(node, 0): edge_index(node, 0) + node + 2]
        inputs, ops = NODE_RULES[rule](rows, primitives, 2)
        gene += list(zip(ops, inputs))
    return tuple(gene)


def derive_genotype(normal: np.ndarray | Tensor, reduce: np.ndarray | Tensor, nodes: int = 4,
                    primitives: Sequence[str] = PRIMITIVES, rule: str = "darts") -> Genotype:
    """Genotype from per-edge op weights of both cells (``[edges, ops]`` each; ``rule`` as ``derive_cell``)."""
    to_np = lambda w: w.detach().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w)  # noqa: E731
    return Genotype(derive_cell(to_np(normal), nodes, primitives, rule),
                    derive_cell(to_np(reduce), nodes, primitives, rule))


# ---------------------------------------------------------------------------
# The network, written once: searched (every node a NodeChoice) or built from an arch
# ---------------------------------------------------------------------------
class DropPath(nn.Module):
    """A chosen op of a built network with drop-path (the paper's regularisation of the final training)."""

    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op
        self.drop_prob = 0.0

    def forward(self, x: Tensor) -> Tensor:
        h = self.op(x)
        if self.training and self.drop_prob > 0:
            h = drop_path(h, self.drop_prob)
        return h


def cell_op(name: str, c: int, stride: int, search: bool, pool_bn: bool = True) -> nn.Module:
    """A candidate op of a cell edge. Searching: BN without affine and pooling followed by BN (the
    paper's search model; ``pool_bn=False``: pooling alone, as the official GDAS search cell);
    built: affine BN and drop-path on every op but the identity."""
    op = make_op(name, c, stride, affine=not search)
    if search:
        return nn.Sequential(op, nn.BatchNorm2d(c, affine=False)) if "pool" in name and pool_bn else op
    return op if isinstance(op, Identity) else DropPath(op)


class DartsCell(nn.Module):
    """A cell: two preprocessed inputs, ``nodes`` nodes (each a ``NodeChoice`` labelled
    ``{cell}.{node}``, shared by every cell of that type), the nodes concatenated."""

    def __init__(self, cell: str, nodes: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 search: bool, primitives: Sequence[str] = PRIMITIVES, pool_bn: bool = True):
        super().__init__()
        self.reduction = reduction
        affine = not search
        self.pre0 = FactorizedReduce(c_pp, c, affine=affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        self.nodes = nn.ModuleList(
            NodeChoice(f"{cell}.{node}", node + 2, primitives,
                       lambda name, j: cell_op(name, c, 2 if reduction and j < 2 else 1, search, pool_bn), 2,
                       group=cell)
            for node in range(nodes))
        self.multiplier = nodes

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in self.nodes:
            states.append(node(states))
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


class GdasReductionCell(nn.Module):
    """GDAS's hand-designed fixed reduction cell ("FRC"; Dong & Yang, CVPR 2019).

    Both inputs are preprocessed to ``c`` channels as in a DARTS cell; then each goes
    through a conv branch (ReLU, 1x3 conv stride (1,2), 3x1 conv stride (2,1), both grouped
    by 8, BN, ReLU, 1x1 conv, BN) and a 3x3 max-pool stride 2 + BN branch; the four
    outputs are concatenated (``multiplier`` = 4, so ``4 * c`` channels). No architecture
    weights: ``forward(s0, s1)``. Groups are ``gcd(c, 8)`` so any width works (8 whenever
    ``c`` is a multiple of 8, as in the paper's networks). As in the official
    ``GDAS_Reduction_Cell`` (AutoDL-Projects ``xautodl/models/cell_operations.py``), the
    branch convolutions have a bias exactly when BN is not affine (the search network), and
    in a built network (``drop_path``) each of the four outputs gets drop-path.
    """

    multiplier = 4
    reduction = True

    def __init__(self, c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool = False,
                 drop_path: bool = False):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c, affine=affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        groups = math.gcd(c, 8)

        def conv_branch() -> nn.Module:
            return nn.Sequential(
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, (1, 3), stride=(1, 2), padding=(0, 1), groups=groups, bias=not affine),
                nn.Conv2d(c, c, (3, 1), stride=(2, 1), padding=(1, 0), groups=groups, bias=not affine),
                nn.BatchNorm2d(c, affine=affine),
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, 1, bias=not affine),
                nn.BatchNorm2d(c, affine=affine),
            )

        def pool_branch() -> nn.Module:
            return nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.BatchNorm2d(c, affine=affine))

        wrap = DropPath if drop_path else (lambda m: m)
        self.conv0, self.conv1 = wrap(conv_branch()), wrap(conv_branch())
        self.pool0, self.pool1 = wrap(pool_branch()), wrap(pool_branch())

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        s0, s1 = self.pre0(s0), self.pre1(s1)
        return torch.cat([self.conv0(s0), self.conv1(s1), self.pool0(s0), self.pool1(s1)], dim=1)


def _reduction_layers(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


class DartsNet(nn.Module):
    """Stem, ``layers`` cells (reductions at 1/3 and 2/3 of the depth), global pool, classifier.

    ``search``: the paper's search model (every node a ``NodeChoice``, BN without affine);
    else the evaluation network of the arch given by ``fixed_arch`` (affine BN, drop-path
    set by ``drop_path_prob``, and with ``auxiliary`` the auxiliary head, whose logits are
    kept in ``self.aux_logits`` during training so the forward output stays the main logits).
    ``fixed_reduce``: a cell class ``cls(c_pp, c_p, c, reduction_prev, affine=..., drop_path=...)``
    with a ``multiplier`` used for the reduction cells instead of searched ones (GDAS's hand-designed
    cell). ``final_bn_relu``: BN and ReLU after the last cell, before the global pooling (the
    official GDAS search network's ``lastact``). ``pool_bn``: BN after each pooling candidate of the
    search network (DARTS's search model; the official GDAS search cell has none).
    """

    def __init__(self, in_channels: int, num_classes: int, layers: int = 8, channels: int = 16, nodes: int = 4,
                 search: bool = False, auxiliary: bool = False, stem_multiplier: int = 3,
                 fixed_reduce: type[nn.Module] | None = None, final_bn_relu: bool = False, pool_bn: bool = True):
        super().__init__()
        self.drop_path_prob = 0.0
        self._applied_drop = 0.0
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
            if reduction and fixed_reduce is not None:
                cell = fixed_reduce(c_pp, c_p, c_curr, reduction_prev, affine=not search, drop_path=not search)
            else:
                cell = DartsCell("reduce" if reduction else "normal", nodes, c_pp, c_p, c_curr, reduction,
                                 reduction_prev, search, pool_bn=pool_bn)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_p
        self.aux_head = AuxiliaryHead(c_aux, num_classes) if auxiliary and not search and c_aux else None
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_p), nn.ReLU(inplace=False)) if final_bn_relu else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_path_prob != self._applied_drop:
            for m in self.modules():
                if isinstance(m, DropPath):
                    m.drop_prob = self.drop_path_prob
            self._applied_drop = self.drop_path_prob
        s0 = s1 = self.stem(x)
        self.aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_position and self.aux_head is not None and self.training:
                self.aux_logits = self.aux_head(s1)
        if self.lastact is not None:
            s1 = self.lastact(s1)
        return self.classifier(self.pool(s1).flatten(1))


@register_space
class DartsSpace(ModuleSpace):
    """The DARTS cell space: normal and reduction cells, ``nodes`` intermediate nodes, 8 ops
    (``reduce_cell="gdas_frc"``: GDAS's fixed reduction cell, only the normal cell searched)."""

    name = "darts"
    version = 1
    description = "DARTS cells: normal + reduction, 4 nodes, 8 candidate ops (DARTS, GDAS)"
    primitives = PRIMITIVES

    def __init__(self, nodes: int = 4, reduce_cell: str = "searched"):
        if not isinstance(nodes, int) or not 1 <= nodes <= 8:
            raise ConfigError(f"darts space: nodes={nodes!r} is out of range; use an integer from 1 to 8 (paper: 4)")
        if reduce_cell not in REDUCE_CELLS:
            raise ConfigError(f"darts space: reduce_cell={reduce_cell!r} is not one of {list(REDUCE_CELLS)}; use "
                              "searched (the DARTS space) or gdas_frc (GDAS's hand-designed reduction cell)")
        self.nodes = nodes
        self.reduce_cell = reduce_cell

    @property
    def searched_cells(self) -> tuple[str, ...]:
        """The cell types whose nodes are choices."""
        return CELL_TYPES if self.reduce_cell == "searched" else ("normal",)

    def choices(self) -> dict[str, Choice]:
        ops = tuple(p for p in PRIMITIVES if p != "none")
        out: dict[str, Choice] = {}
        for cell in self.searched_cells:
            for node in range(self.nodes):
                out[f"{cell}.{node}.inputs"] = NodeInputs(f"{cell}.{node}.inputs", node + 2, 2)
                out[f"{cell}.{node}.op0"] = OpChoice(f"{cell}.{node}.op0", ops)
                out[f"{cell}.{node}.op1"] = OpChoice(f"{cell}.{node}.op1", ops)
        out.update(self.fixed_choices())
        return out

    def fixed_choices(self) -> dict[str, Choice]:
        """``reduce_cell`` when it is not the searched one (so an arch of the DARTS space records nothing extra)."""
        if self.reduce_cell == "searched":
            return {}
        return {"reduce_cell": ValueChoice("reduce_cell", (self.reduce_cell,))}

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
        reduce_cell = arch.as_dict().get("reduce_cell", "searched")
        if reduce_cell not in REDUCE_CELLS:
            raise ArchError(f"choice 'reduce_cell': {reduce_cell!r} is not one of {list(REDUCE_CELLS)}; fix that value")
        return cls(nodes=nodes, reduce_cell=reduce_cell)

    def validate(self, arch: Arch) -> None:
        theirs = arch.as_dict().get("reduce_cell", "searched") if arch.space == self.name else self.reduce_cell
        if theirs != self.reduce_cell:
            raise ArchError(f"architecture has reduce_cell={theirs}, this darts space {self.reduce_cell}; "
                            f"set space.reduce_cell={theirs} (or use an arch of this space)")
        super().validate(arch)

    # --- genotype <-> arch ------------------------------------------------
    def genotype(self, arch: Arch) -> Genotype:
        """The DARTS genotype of an architecture of this space (its own node count and reduction cell)."""
        space = self.for_arch(arch) if arch.space == self.name else self
        cells: dict[str, tuple[tuple[str, int], ...]] = {"reduce": ()}
        for cell in space.searched_cells:
            gene = []
            for node in range(space.nodes):
                a, b = arch[f"{cell}.{node}.inputs"]
                gene += [(arch[f"{cell}.{node}.op0"], a), (arch[f"{cell}.{node}.op1"], b)]
            cells[cell] = tuple(gene)
        return Genotype(cells["normal"], cells["reduce"], space.reduce_cell)

    def arch_from_genotype(self, genotype: Genotype) -> Arch:
        """The ``Arch`` of a genotype (pairs of a node ordered by input index, then op); with this
        space's fixed reduction cell, the genotype's reduce pairs are not used."""
        if genotype.nodes != self.nodes:
            raise ArchError(f"genotype has {genotype.nodes} nodes, the space {self.nodes}")
        rank = {op: k for k, op in enumerate(PRIMITIVES)}
        choices: dict[str, Any] = {}
        for cell in self.searched_cells:
            gene = getattr(genotype, cell)
            for node in range(self.nodes):
                pair = sorted(gene[2 * node: 2 * node + 2], key=lambda p: (p[1], rank.get(p[0], len(rank))))
                choices[f"{cell}.{node}.inputs"] = [pair[0][1], pair[1][1]]
                choices[f"{cell}.{node}.op0"] = pair[0][0]
                choices[f"{cell}.{node}.op1"] = pair[1][0]
        choices.update({label: c.values[0] for label, c in self.fixed_choices().items()})
        return Arch(self.name, choices, self.version)

    def derive(self, normal: np.ndarray | Tensor, reduce: np.ndarray | Tensor | None = None,
               rule: str = "darts") -> Arch:
        """Arch from per-edge op weights (``rule``: ``darts``, the paper's top-2 edges, or ``pairs``,
        GDAS's top-2 (op, input) pairs); ``reduce`` is not used with a fixed reduction cell."""
        to_np = lambda w: w.detach().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w)  # noqa: E731
        normal_gene = derive_cell(to_np(normal), self.nodes, PRIMITIVES, rule)
        if self.reduce_cell != "searched":
            return self.arch_from_genotype(Genotype(normal_gene, (), self.reduce_cell))
        if reduce is None:
            raise ValueError("a searched reduction cell needs its weights")
        return self.arch_from_genotype(Genotype(normal_gene, derive_cell(to_np(reduce), self.nodes, PRIMITIVES, rule)))

    def describe(self, arch: Arch) -> str:
        return str(self.genotype(arch))

    # --- networks ------------------------------------------------------------
    build_options = ("layers", "channels", "auxiliary")
    supernet_options = ("layers", "channels", "fixed_reduce", "final_bn_relu", "pool_bn")

    def final_options(self) -> dict[str, Any]:
        return {"layers": 8, "channels": 16}

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
        """The network of ``arch`` with the arch's own node count and reduction cell (an arch derived with
        GDAS's fixed reduction cell builds that cell, whatever space it was searched from)."""
        space = self.for_arch(arch) if arch.space == self.name else self
        return ModuleSpace.build(space, arch, input_shape, num_classes, **options)

    def network(self, input_shape: tuple[int, int, int], num_classes: int, layers: int | None = None,
                channels: int | None = None, search: bool = False, auxiliary: bool = False,
                fixed_reduce: type[nn.Module] | None = None, final_bn_relu: bool = False,
                pool_bn: bool = True) -> DartsNet:
        """The search model (``search``: 5 cells of 8 channels unless given) or, inside
        ``fixed_arch``, the evaluation network of an arch (8 cells of 16 channels, the paper's)."""
        layers = layers or (5 if search else 8)
        channels = channels or (8 if search else 16)
        if self.reduce_cell == "gdas_frc":
            fixed_reduce = GdasReductionCell
        return DartsNet(input_shape[0], num_classes, layers, channels, self.nodes, search=search,
                        auxiliary=auxiliary, fixed_reduce=fixed_reduce, final_bn_relu=final_bn_relu,
                        pool_bn=pool_bn)
