"""The DenseNAS search space (Fang et al., "Densely Connected Search Space for More Flexible
Neural Architecture Search", CVPR 2020): widths, downsampling points and depth searched at once.

The network is a chain of candidate *blocks* with increasing widths, grouped in *stages*;
each block works at one resolution (``scale``: how many times the stem output has been
halved). Every node connects to its next ``connections`` successors, as long as the
successor is at most one stage later and at the same or half the resolution (the official
code's rule). Node 0 is the first block, right after the stem (a 3x3 conv and an MBConv
k3 e1, as the official MobileNetV2 space); the *tail* (a 1x1 conv to ``last`` channels,
global pooling, a linear classifier) follows the last stage. A block has

- *head layers*, one per incoming connection, parallel: an MBConv (kernel 3, expansion 3)
  bringing that input to the block's width, with stride 2 when the resolution halves;
- ``layers`` *stacking layers*, serial at the block's width: each picks one of six MBConv
  variants (kernel 3/5/7, expansion 3/6) or ``skip``, so depth is searched too.

An architecture is one path from node 0 to the tail: ``block{i}.input`` names the block
that feeds block ``i`` (-1: the block is dropped), ``tail.input`` the last block, and
``block{i}.layer{l}`` the op of each stacking layer (``skip`` drops the layer; dropped
blocks hold ``skip``). The space's shape options are recorded in the arch as single-valued
choices (``block{i}.width``, ``.scale``, ``.stage``, ``.layers``, ``space.connections``,
``space.stem_stride``, ``space.last``), so ``arch.json`` rebuilds its space alone.

The head layer's op can be searched too (``search_head``; on in the ``imagenet`` preset, as the
official ``PRIMITIVES_head``): each kept block picks the MBConv of its incoming connection
among the six (``block{i}.head``; dropped blocks hold ``mb_k3_e3``). With ``search_head:
false`` (the ``small`` preset's default, so that small spaces keep their size and arch format
of earlier versions, which other strategies' tools count on) it is fixed to MBConv k3 e3;
architectures written before the option existed load that way.
The MBConv is the one of ``spaces/ops.py`` shared with mbconv (expand 1x1, BN, ReLU6,
depthwise kxk, BN, ReLU6, project 1x1, BN; residual when shapes match).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.spaces.base import Choice, OpChoice, SearchSpace, ValueChoice, register_space
from nasforge.spaces.ops import MBConv

__all__ = [
    "OPS", "PRESETS", "HEAD_KERNEL", "HEAD_EXPAND", "HEAD_OPS", "DEFAULT_HEAD", "MBConv", "Stem", "TailConv",
    "Classifier",
    "DenseSpace", "DenseNetwork", "DenseSupernet", "op_params",
]

#: Candidate ops of a stacking layer (the official ``PRIMITIVES_stack``), ``skip`` last.
OPS: tuple[str, ...] = ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6", "skip")
SKIP = "skip"
#: The head layer's op when it is not searched (and the value dropped blocks hold when it is).
HEAD_KERNEL, HEAD_EXPAND = 3, 3
DEFAULT_HEAD = "mb_k3_e3"
#: Candidate ops of a head layer (the official ``PRIMITIVES_head``: the MBConvs, no skip).
HEAD_OPS: tuple[str, ...] = OPS[:-1]

#: Shape presets. ``small``: 8x8 digits / 32x32 CIFAR (stem stride 1, three stages at
#: three resolutions, two stacking layers per block). ``imagenet``: the official
#: MobileNetV2-based search space (configs/imagenet_search_cfg_mbv2.yaml): 16 blocks,
#: widths 24..384, feature maps 112/56/28/14/7, three stacking layers, 4 connections.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "widths": (16, 24, 32, 40, 48, 56, 64, 80, 96),
        "scales": (0, 0, 0, 1, 1, 1, 2, 2, 2),
        "stages": (0, 1, 1, 2, 2, 2, 3, 3, 3),
        "layers": (0, 2, 2, 2, 2, 2, 2, 2, 2),
        "connections": 3, "stem_stride": 1, "last": 128, "search_head": False,
    },
    "imagenet": {
        "widths": (16, 24, 32, 40, 48, 56, 64, 72, 96, 112, 128, 160, 176, 192, 320, 352, 384),
        "scales": (0, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4),
        "stages": (0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6),
        "layers": (0,) + (3,) * 13 + (0,) * 3,
        "connections": 4, "stem_stride": 2, "last": 1984, "search_head": True,
    },
}


def op_params(name: str) -> tuple[int, int]:
    """(kernel, expansion) of an MBConv op name like ``mb_k5_e6``."""
    _, k, e = name.split("_")
    return int(k[1:]), int(e[1:])


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------
class Stem(nn.Sequential):
    """3x3 conv (stride ``stride``), BN, ReLU6, then an MBConv k3 e1 (the official stem)."""

    def __init__(self, c_in: int, width: int, stride: int, affine: bool = True):
        super().__init__(nn.Conv2d(c_in, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width, affine=affine),
                         nn.ReLU6(inplace=True), MBConv(width, width, 3, 1, 1, affine, shortcut=True))


class TailConv(nn.Sequential):
    """The tail's 1x1 conv from the last block to ``last`` channels, BN, ReLU6."""

    def __init__(self, c_in: int, last: int, affine: bool = True):
        super().__init__(nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last, affine=affine),
                         nn.ReLU6(inplace=True))


class Classifier(nn.Module):
    """Global average pooling and a linear layer."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.pool(x).flatten(1))


def _head_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True) -> nn.Module:
    kernel, expand = op_params(name)
    return MBConv(c_in, c_out, kernel, stride, expand, affine, shortcut=True)


def _stack_op(name: str, width: int, affine: bool) -> nn.Module:
    kernel, expand = op_params(name)
    return MBConv(width, width, kernel, 1, expand, affine, shortcut=True)


class DenseNetwork(nn.Module):
    """A derived network: stem, the surviving blocks (head + kept stacking layers), tail, classifier."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], tail: nn.Module, classifier: nn.Module):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.tail = tail
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.tail(x))


#: ``(sources, weights)``: the incoming nodes a block mixes and their weights (one per source).
Incoming = tuple[Sequence[int], Tensor]
#: ``(op indices, weights)``: the candidate ops a stacking layer runs and their weights.
LayerOps = tuple[Sequence[int], Tensor]


class DenseSupernet(nn.Module):
    """The one-shot network of a dense space.

    Unlike the official search (BN without affine parameters), the batch norms are affine
    and the last one of every residual MBConv starts at zero, so each stacking op starts as
    the identity: with a different op sampled every step, unit-variance residual branches
    otherwise drown the signal and a small supernet barely trains (measured on digits: the
    loss stays at chance for 6 epochs; with zero-initialised branches it is 0.3 after 3).

    ``forward(x, incoming, layer_ops, head_ops)``: ``incoming[j - 1]`` gives the sources and
    weights that block ``j`` (``1..T``, ``T`` the tail) mixes its head layers with;
    ``layer_ops[k]`` the ops and weights of flat stacking layer ``k`` (``space.layer_index``);
    with a searched head, ``head_ops[j - 1][n]`` the head ops and weights of block ``j``'s
    ``n``-th source (None: ``mb_k3_e3`` alone). Only blocks that some used connection needs
    are computed, so a sampled forward costs a sub-network.
    """

    def __init__(self, space: "DenseSpace", in_channels: int, num_classes: int, affine: bool = True):
        super().__init__()
        self.space = space
        w = space.widths
        self.stem = Stem(in_channels, w[0], space.stem_stride, affine=affine)
        self.heads = nn.ModuleDict()
        for j in range(1, space.num_blocks):
            for i in space.predecessors[j]:
                stride = 2 ** (space.scales[j] - space.scales[i])
                if space.search_head:
                    self.heads[f"{i}_{j}"] = nn.ModuleDict({op: _head_op(op, w[i], w[j], stride, affine)
                                                            for op in HEAD_OPS})
                else:
                    self.heads[f"{i}_{j}"] = MBConv(w[i], w[j], HEAD_KERNEL, stride, HEAD_EXPAND, affine, shortcut=True)
        self.tails = nn.ModuleDict({str(i): TailConv(w[i], space.last, affine=affine)
                                    for i in space.predecessors[space.tail]})
        self.layers = nn.ModuleList()
        for block, _ in space.layer_index:
            self.layers.append(nn.ModuleDict({op: _stack_op(op, w[block], affine=affine) for op in OPS if op != SKIP}))
        self.classifier = Classifier(space.last, num_classes)
        if affine:
            for m in self.modules():
                if isinstance(m, MBConv) and m.residual:
                    nn.init.zeros_(m.body[-1].weight)

    def head(self, i: int, j: int, x: Tensor, ops: LayerOps | None) -> Tensor:
        """Head ``i -> j`` on ``x``: the fixed MBConv, or the searched head's ops mixed by their weights."""
        head = self.heads[f"{i}_{j}"]
        if not self.space.search_head:
            return head(x)
        if ops is None:
            return head[DEFAULT_HEAD](x)
        indices, w = ops
        return sum(w[n] * head[HEAD_OPS[o]](x) for n, o in enumerate(indices))

    def forward(self, x: Tensor, incoming: Sequence[Incoming], layer_ops: Sequence[LayerOps],
                head_ops: Sequence[Sequence[LayerOps]] | None = None) -> Tensor:
        space = self.space
        tail = space.tail
        needed = {tail}
        for j in range(tail, 0, -1):
            if j in needed:
                needed.update(incoming[j - 1][0])
        outs: dict[int, Tensor] = {0: self.stem(x)}
        k0 = 0
        for j in range(1, tail):
            n_layers = space.layers[j]
            if j in needed:
                sources, weights = incoming[j - 1]
                ops = head_ops[j - 1] if head_ops is not None else [None] * len(sources)
                h = sum(weights[n] * self.head(i, j, outs[i], ops[n]) for n, i in enumerate(sources))
                for k in range(k0, k0 + n_layers):
                    indices, op_w = layer_ops[k]
                    h = sum(op_w[n] * (h if OPS[o] == SKIP else self.layers[k][OPS[o]](h))
                            for n, o in enumerate(indices))
                outs[j] = h
            k0 += n_layers
        sources, weights = incoming[tail - 1]
        h = sum(weights[n] * self.tails[str(i)](outs[i]) for n, i in enumerate(sources))
        return self.classifier(h)


# ---------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------
def _int_list(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"dense space: {name}={value!r} must be a list of integers; fix space.{name}")
    return tuple(value)


@dataclass(frozen=True)
class LatencyKeys:
    """Which lookup-table entry each piece of the supernet is: fixed keys, heads, and per layer op -> key."""

    fixed: tuple[str, ...]
    heads: dict[tuple[int, int], str]
    layers: tuple[dict[str, str | None], ...]
    #: searched heads: per connection ``(i, j)`` (``j`` a block) op -> key (``heads`` then holds the tail's only)
    head_ops: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)


@register_space
class DenseSpace(SearchSpace):
    """DenseNAS's densely connected space: a path through candidate blocks plus per-layer ops."""

    name = "dense"
    version = 1
    description = "DenseNAS: densely connected blocks; searches widths, downsampling points and depth (DenseNAS)"
    ops = OPS

    def __init__(self, preset: str = "small", widths: Sequence[int] | None = None, scales: Sequence[int] | None = None,
                 stages: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                 connections: int | None = None, stem_stride: int | None = None, last: int | None = None,
                 search_head: bool | None = None):
        if preset not in PRESETS:
            raise ConfigError(f"dense space: unknown preset {preset!r}; use one of {sorted(PRESETS)}")
        base = PRESETS[preset]
        self.preset = preset
        self.widths = _int_list("widths", widths if widths is not None else base["widths"])
        self.scales = _int_list("scales", scales if scales is not None else base["scales"])
        self.stages = _int_list("stages", stages if stages is not None else base["stages"])
        self.layers = _int_list("layers", layers if layers is not None else base["layers"])
        self.connections = connections if connections is not None else base["connections"]
        self.stem_stride = stem_stride if stem_stride is not None else base["stem_stride"]
        self.last = last if last is not None else base["last"]
        if search_head is not None and not isinstance(search_head, bool):
            raise ConfigError(f"dense space: search_head={search_head!r} must be true or false; fix space.search_head")
        #: the head layer's op is an arch choice (official); False: fixed MBConv k3 e3
        self.search_head = bool(base.get("search_head", True) if search_head is None else search_head)
        self._check()
        n = self.num_blocks
        self.tail = n
        tail_stage, tail_scale = self.stages[-1] + 1, self.scales[-1]
        stage = list(self.stages) + [tail_stage]
        scale = list(self.scales) + [tail_scale]
        self.successors: list[list[int]] = []
        for i in range(n):
            succ = []
            for j in range(i + 1, min(i + self.connections, n) + 1):
                if stage[j] - stage[i] > 1 or scale[j] - scale[i] not in (0, 1):
                    break
                succ.append(j)
            self.successors.append(succ)
        self.predecessors: list[list[int]] = [[] for _ in range(n + 1)]
        for i, succ in enumerate(self.successors):
            for j in succ:
                self.predecessors[j].append(i)
        #: ``(block, layer)`` of each stacking layer, in network order (the rows of the op weights).
        self.layer_index: list[tuple[int, int]] = [(b, l) for b in range(1, n) for l in range(self.layers[b])]

    def _check(self) -> None:
        n = len(self.widths)
        if n < 2:
            raise ConfigError(f"dense space needs node 0 and at least one block, got {n} widths; give more widths")
        for name in ("scales", "stages", "layers"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"dense space: {name} has {len(getattr(self, name))} entries but widths has {n}; "
                                  "give one per block (node 0 included)")
        if any(w < 1 or w > 4096 for w in self.widths):
            raise ConfigError(f"dense space: widths {list(self.widths)} must be in 1..4096; fix space.widths")
        if any(l < 0 or l > 8 for l in self.layers) or self.layers[0] != 0:
            raise ConfigError(f"dense space: layers {list(self.layers)} must be 0..8 with 0 for node 0 (the stem "
                              "block); fix space.layers")
        for name in ("scales", "stages"):
            seq = getattr(self, name)
            if seq[0] != 0 or any(b - a not in (0, 1) for a, b in zip(seq, seq[1:])):
                raise ConfigError(f"dense space: {name} {list(seq)} must start at 0 and grow by 0 or 1 from one block "
                                  "to the next; fix space." + name)
        if self.stages[1] != 1 or any(s == 0 for s in self.stages[1:]):
            raise ConfigError(f"dense space: stages {list(self.stages)} must give node 0 stage 0 and every block a "
                              "stage from 1 on; fix space.stages")
        for name, lo, hi in (("connections", 1, 8), ("stem_stride", 1, 2), ("last", 1, 8192)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"dense space: {name}={value!r} is out of range; use an integer in [{lo}, {hi}]")

    @property
    def num_blocks(self) -> int:
        """Nodes before the tail (node 0, the stem block, included)."""
        return len(self.widths)

    # --- declarations -----------------------------------------------------
    def choices(self) -> dict[str, Choice]:
        out: dict[str, Choice] = {}

        def fixed(label: str, value: int) -> None:
            out[label] = ValueChoice(label, (value,))

        fixed("space.connections", self.connections)
        fixed("space.stem_stride", self.stem_stride)
        fixed("space.last", self.last)
        if self.search_head:  # (absent: the head is fixed, as in architectures from before the option)
            out["space.search_head"] = ValueChoice("space.search_head", (True,))
        for i in range(self.num_blocks):
            fixed(f"block{i}.width", self.widths[i])
            fixed(f"block{i}.scale", self.scales[i])
            fixed(f"block{i}.stage", self.stages[i])
            fixed(f"block{i}.layers", self.layers[i])
            if i > 0:
                out[f"block{i}.input"] = ValueChoice(f"block{i}.input", (-1, *self.predecessors[i]))
                if self.search_head:
                    out[f"block{i}.head"] = OpChoice(f"block{i}.head", HEAD_OPS)
            for l in range(self.layers[i]):
                out[f"block{i}.layer{l}"] = OpChoice(f"block{i}.layer{l}", OPS)
        out["tail.input"] = ValueChoice("tail.input", tuple(self.predecessors[self.tail]))
        return out

    @classmethod
    def for_arch(cls, arch: Arch) -> "DenseSpace":
        choices = arch.as_dict()
        n = 0
        while f"block{n}.width" in choices:
            n += 1
        try:
            return cls(widths=[choices[f"block{i}.width"] for i in range(n)],
                       scales=[choices[f"block{i}.scale"] for i in range(n)],
                       stages=[choices[f"block{i}.stage"] for i in range(n)],
                       layers=[choices[f"block{i}.layers"] for i in range(n)],
                       connections=choices["space.connections"], stem_stride=choices["space.stem_stride"],
                       last=choices["space.last"], search_head=bool(choices.get("space.search_head", False)))
        except KeyError as exc:
            raise ArchError(f"dense architecture lacks the shape choice {exc.args[0]!r}; use an arch.json written "
                            "by a dense search (it records the space's widths, scales, stages and layers)") from None
        except ConfigError as exc:
            raise ArchError(f"dense architecture has inconsistent shape choices ({exc}); use an arch.json written "
                            "by a dense search") from None

    # --- paths ---------------------------------------------------------------
    def path(self, arch: Arch) -> list[int]:
        """The nodes an architecture keeps, from node 0 to the tail (following the inputs back)."""
        path = [self.tail]
        node = arch["tail.input"]
        while True:
            path.append(node)
            if node == 0:
                return path[::-1]
            if len(path) > self.num_blocks + 1:
                raise ArchError("dense architecture's inputs form a cycle; make each block.input an earlier block")
            node = arch[f"block{node}.input"]
            if node == -1:
                raise ArchError(f"block {path[-1]} is on the path to the tail but its input is -1 (dropped); "
                                "give it an input block")

    def arch_from_path(self, path: Sequence[int], ops: dict[tuple[int, int], str] | None = None,
                       heads: dict[int, str] | None = None) -> Arch:
        """The ``Arch`` keeping the blocks of ``path`` (0 ... tail) with ``ops[(block, layer)]``
        (``skip`` where missing and for every dropped block) and, with a searched head,
        ``heads[block]`` (``mb_k3_e3`` where missing and for every dropped block)."""
        ops = ops or {}
        heads = heads or {}
        path = list(path)
        if not path or path[0] != 0 or path[-1] != self.tail:
            raise ArchError(f"a dense path must run from node 0 to the tail ({self.tail}), got {path}")
        choices: dict[str, Any] = {label: c.values[0] for label, c in self.choices().items() if c.size == 1}
        on = set(path)
        for i in range(1, self.num_blocks):
            choices[f"block{i}.input"] = -1
            for l in range(self.layers[i]):
                choices[f"block{i}.layer{l}"] = ops.get((i, l), SKIP) if i in on else SKIP
            if self.search_head:
                choices[f"block{i}.head"] = heads.get(i, DEFAULT_HEAD) if i in on else DEFAULT_HEAD
        for a, b in zip(path, path[1:]):
            if b == self.tail:
                choices["tail.input"] = a
            else:
                choices[f"block{b}.input"] = a
        return Arch(self.name, choices, self.version)

    def check_consistency(self, arch: Arch) -> None:
        path = self.path(arch)
        on = set(path)
        for a, b in zip(path, path[1:]):
            if b not in self.successors[a]:
                raise ArchError(f"block {a} cannot feed {'the tail' if b == self.tail else f'block {b}'} in this "
                                f"space (its successors are {self.successors[a]}); fix the inputs")
        for i in range(1, self.num_blocks):
            if i in on:
                continue
            if arch[f"block{i}.input"] != -1:
                raise ArchError(f"block {i} has an input but nothing on the path to the tail uses it; set "
                                f"block{i}.input to -1 or connect it")
            for l in range(self.layers[i]):
                if arch[f"block{i}.layer{l}"] != SKIP:
                    raise ArchError(f"block {i} is dropped, so block{i}.layer{l} must be 'skip'; fix that value")
            if self.search_head and arch[f"block{i}.head"] != DEFAULT_HEAD:
                raise ArchError(f"block {i} is dropped, so block{i}.head must be '{DEFAULT_HEAD}'; fix that value")

    # --- sequential decisions -------------------------------------------------
    def next_decision(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        """The path decided backwards from the tail: ``tail.input`` among the tail's
        predecessors, then for each block reached its stacking layers' ops (``block{i}.layer{l}``,
        in order) and its input among its predecessors (``block{i}.input``), until node 0.
        Dropped blocks are never asked about (``complete`` sets them to -1 and ``skip``), so
        every finished sequence is a valid architecture."""
        if "tail.input" not in values:
            return "tail.input", tuple(self.predecessors[self.tail])
        node, succ, label = values["tail.input"], self.tail, "tail.input"
        while True:
            if node not in self.predecessors[succ]:
                raise ArchError(f"{label}={node!r} is not a predecessor of "
                                f"{'the tail' if succ == self.tail else f'block {succ}'} "
                                f"(those are {self.predecessors[succ]}); decide among them")
            if node == 0:
                return None
            if self.search_head and f"block{node}.head" not in values:
                return f"block{node}.head", HEAD_OPS
            for l in range(self.layers[node]):
                if f"block{node}.layer{l}" not in values:
                    return f"block{node}.layer{l}", OPS
            label = f"block{node}.input"
            if label not in values:
                return label, tuple(self.predecessors[node])
            node, succ = values[label], node

    def complete(self, values: Mapping[str, Any]) -> Arch:
        """The architecture of a finished decision sequence (``next_decision``): the decided path
        and ops; every dropped block gets input -1 and ``skip`` layers."""
        values = self.take_forced(values)
        path, node = [self.tail], values["tail.input"]
        while True:
            path.append(node)
            if node == 0:
                break
            node = values[f"block{node}.input"]
        path.reverse()
        ops = {(b, l): values[f"block{b}.layer{l}"] for b in path[1:-1] for l in range(self.layers[b])}
        bad = [f"{k}={v!r}" for k, v in ((f"block{b}.layer{l}", o) for (b, l), o in ops.items()) if v not in OPS]
        if bad:
            raise ArchError(f"{bad[0]} is not one of {list(OPS)}; fix that value")
        heads = {b: values[f"block{b}.head"] for b in path[1:-1]} if self.search_head else {}
        bad = [f"block{b}.head={v!r}" for b, v in heads.items() if v not in HEAD_OPS]
        if bad:
            raise ArchError(f"{bad[0]} is not one of {list(HEAD_OPS)}; fix that value")
        return self.arch_from_path(path, ops, heads)

    def sample(self, rng: np.random.Generator) -> Arch:
        """A random path (uniform successor at each node) with uniform ops on its blocks."""
        return self._complete([0], {}, rng)

    def _complete(self, prefix: list[int], ops: dict[tuple[int, int], str], rng: np.random.Generator,
                  heads: dict[int, str] | None = None) -> Arch:
        path = list(prefix)
        while path[-1] != self.tail:
            succ = self.successors[path[-1]]
            path.append(succ[int(rng.integers(len(succ)))])
        ops = dict(ops)
        for b in path[1:-1]:
            for l in range(self.layers[b]):
                if (b, l) not in ops:
                    ops[(b, l)] = OPS[int(rng.integers(len(OPS)))]
        heads = dict(heads or {})
        if self.search_head:
            for b in path[1:-1]:
                if b not in heads:
                    heads[b] = HEAD_OPS[int(rng.integers(len(HEAD_OPS)))]
        return self.arch_from_path(path, ops, heads)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one op of a kept layer, or reroute the path from one of its nodes (a new valid path)."""
        path = self.path(arch)
        ops: dict[Any, str] = {(b, l): arch[f"block{b}.layer{l}"] for b in path[1:-1] for l in range(self.layers[b])}
        heads = {b: arch[f"block{b}.head"] for b in path[1:-1]} if self.search_head else {}
        ops.update({("head", b): op for b, op in heads.items()})  # a head is one more op to change
        reroutable = [n for n, node in enumerate(path[:-1]) if len(self.successors[node]) > 1]
        if ops and (not reroutable or rng.random() < 0.5):
            key = list(ops)[int(rng.integers(len(ops)))]
            others = [o for o in (HEAD_OPS if key[0] == "head" else OPS) if o != ops[key]]
            ops[key] = others[int(rng.integers(len(others)))]
            heads = {k[1]: v for k, v in ops.items() if k[0] == "head"}
            return self.arch_from_path(path, {k: v for k, v in ops.items() if k[0] != "head"}, heads)
        if not reroutable:
            return arch
        n = reroutable[int(rng.integers(len(reroutable)))]
        node = path[n]
        others = [j for j in self.successors[node] if j != path[n + 1]]
        ops = {k: v for k, v in ops.items() if k[0] != "head"}
        return self._complete(path[: n + 1] + [others[int(rng.integers(len(others)))]], ops, rng,
                              {b: v for b, v in heads.items() if b in path[: n + 1]})

    def size(self) -> int:
        """Number of distinct architectures: over all paths, the product of op choices of their layers."""
        count = [0] * (self.tail + 1)
        count[self.tail] = 1
        for i in range(self.tail - 1, -1, -1):
            head = len(HEAD_OPS) if self.search_head else 1
            count[i] = sum(count[j] * (len(OPS) ** self.layers[j] * head if j < self.tail else 1)
                           for j in self.successors[i])
        return count[0]

    def describe(self, arch: Arch) -> str:
        path = self.path(arch)
        parts = [f"stem {self.widths[0]}"]
        for prev, b in zip(path, path[1:-1]):
            down = "/2" if self.scales[b] > self.scales[prev] else ""
            ops = [arch[f"block{b}.layer{l}"] for l in range(self.layers[b])]
            kept = [o.replace("mb_", "").replace("_", "") for o in ops if o != SKIP]
            head = f"<{arch[f'block{b}.head'].replace('mb_', '').replace('_', '')}>" if self.search_head else ""
            parts.append(f"{self.widths[b]}{down}{head}[{','.join(kept)}]")
        parts.append(f"tail {self.last}")
        return " > ".join(parts)

    def summary(self, arch: Arch) -> dict[str, Any]:
        """Widths per kept block, depth (MBConv layers incl. heads), and the depth at which each downsampling occurs."""
        path = self.path(arch)
        widths, downsample, depth = [], [], 1  # the stem's MBConv
        for prev, b in zip(path, path[1:-1]):
            depth += 1  # head layer
            if self.scales[b] > self.scales[prev]:
                downsample.append(depth)
            widths.append(self.widths[b])
            depth += sum(arch[f"block{b}.layer{l}"] != SKIP for l in range(self.layers[b]))
        out = {"path": path, "widths": widths, "depth": depth, "downsample_at": downsample,
               "stem_stride": self.stem_stride}
        if self.search_head:
            out["heads"] = [arch[f"block{b}.head"] for b in path[1:-1]]
        return out

    # --- networks --------------------------------------------------------------
    def resolutions(self, input_shape: tuple[int, int, int]) -> list[tuple[int, int]]:
        """(H, W) of every node's output, the tail included (convs halve with ceil)."""
        _, h, w = input_shape
        h, w = math.ceil(h / self.stem_stride), math.ceil(w / self.stem_stride)
        out = []
        for s in list(self.scales) + [self.scales[-1]]:
            out.append((math.ceil(h / 2 ** s), math.ceil(w / 2 ** s)))
        return out

    def _head(self, i: int, j: int, affine: bool = True, op: str = DEFAULT_HEAD) -> nn.Module:
        return _head_op(op, self.widths[i], self.widths[j], 2 ** (self.scales[j] - self.scales[i]), affine)

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **_: Any) -> DenseNetwork:
        """The derived network. The final-training options ``layers``, ``channels`` and
        ``auxiliary`` do not apply (widths and depth are part of the arch) and are ignored."""
        self.validate(arch)
        path = self.path(arch)
        blocks = []
        for prev, b in zip(path, path[1:-1]):
            layers = [_stack_op(arch[f"block{b}.layer{l}"], self.widths[b], True) for l in range(self.layers[b])
                      if arch[f"block{b}.layer{l}"] != SKIP]
            head = arch[f"block{b}.head"] if self.search_head else DEFAULT_HEAD
            blocks.append(nn.Sequential(self._head(prev, b, op=head), *layers))
        return DenseNetwork(Stem(input_shape[0], self.widths[0], self.stem_stride), blocks,
                            TailConv(self.widths[path[-2]], self.last), Classifier(self.last, num_classes))

    def supernet(self, input_shape: tuple[int, int, int], num_classes: int, affine: bool = True,
                 **_: Any) -> DenseSupernet:
        """The one-shot network (every head, every candidate op of every stacking layer)."""
        return DenseSupernet(self, input_shape[0], num_classes, affine)

    # --- latency lookup tables ------------------------------------------------
    def latency_keys(self) -> LatencyKeys:
        """Table keys of the pieces: fixed ones, ``heads[(i, j)]`` (``j`` = tail: the tail conv), and
        per stacking layer (``layer_index`` order) op -> key (``None`` for ``skip``)."""
        edges = [(i, j) for j in range(1, self.tail) for i in self.predecessors[j]]
        heads = {} if self.search_head else {(i, j): f"head:{i}>{j}" for i, j in edges}
        heads.update({(i, self.tail): f"tail:{i}" for i in self.predecessors[self.tail]})
        head_ops = {(i, j): {op: f"head:{i}>{j}:{op}" for op in HEAD_OPS} for i, j in edges} if self.search_head else {}
        layers = tuple({op: (None if op == SKIP else f"block{b}:{op}") for op in OPS} for b, _ in self.layer_index)
        return LatencyKeys(("stem", "classifier"), heads, layers, head_ops)

    def latency_parts(self, input_shape: tuple[int, int, int], num_classes: int
                      ) -> dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]]:
        """Every distinct piece of any network of the space, with the input shape it sees."""
        res = self.resolutions(input_shape)
        w = self.widths
        parts: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
            "stem": (lambda: Stem(input_shape[0], w[0], self.stem_stride), tuple(input_shape)),
            "classifier": (lambda: Classifier(self.last, num_classes), (self.last, *res[self.tail])),
        }
        keys = self.latency_keys()
        for (i, j), key in keys.heads.items():
            factory = (lambda i=i: TailConv(w[i], self.last)) if j == self.tail else (lambda i=i, j=j: self._head(i, j))
            parts[key] = (factory, (w[i], *res[i]))
        for (i, j), per_op in keys.head_ops.items():
            for op, key in per_op.items():
                parts[key] = (lambda i=i, j=j, op=op: self._head(i, j, op=op), (w[i], *res[i]))
        for b in range(1, self.tail):
            if self.layers[b] == 0:
                continue
            for op in OPS:
                if op != SKIP:
                    parts[f"block{b}:{op}"] = (lambda op=op, b=b: _stack_op(op, w[b], True), (w[b], *res[b]))
        return parts

    def arch_latency_parts(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> list[str]:
        """The table keys whose latencies add up to ``build(arch)``'s (skipped layers add nothing)."""
        path = self.path(arch)
        keys = ["stem"]
        for prev, b in zip(path, path[1:-1]):
            keys.append(f"head:{prev}>{b}:{arch[f'block{b}.head']}" if self.search_head else f"head:{prev}>{b}")
            keys += [f"block{b}:{arch[f'block{b}.layer{l}']}" for l in range(self.layers[b])
                     if arch[f"block{b}.layer{l}"] != SKIP]
        keys += [f"tail:{path[-2]}", "classifier"]
        return keys
