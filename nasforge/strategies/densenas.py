"""DenseNAS (Fang et al., "Densely Connected Search Space for More Flexible Neural Architecture
Search", CVPR 2020) on the ``dense`` space: widths, downsampling points and depth at once.

Relaxation. Every stacking layer ``l`` has op parameters ``alpha_l`` (softmax over the
seven candidates, ``skip`` included); every node ``i`` has path parameters ``beta_i``
(softmax over its successors: the probability ``p(i->j)`` of leaving ``i`` towards ``j``).
Every incoming connection of a block runs (``head_samples`` 0, the default), as in the
official code (``models/dropped_model.py``): block ``j``'s input is
``h_j = sum_i p(i->j) head_ij(x_i)``, unnormalised; the tail mixes its 1x1 convs by
``softmax_i(p(i->T))`` (the official ``Conv1_1_Block`` applies a softmax to the incoming
probabilities). ``head_samples: k`` instead runs ``k`` sampled connections per block,
renormalised over those (``sum_i p(i->j) head_ij(x_i) / sum_i p(i->j)``; the earlier default,
k = 2, which the official code does not do).

Op sampling (what runs in one step, the official ``sample_branch``):

- weight step (train half): per stacking layer one op, drawn uniformly during the warm-up
  and by its probabilities afterwards (the official ``sample_policy``); it runs with weight
  1; connections weighted by their probabilities (no gradient);
- architecture step (valid half): per stacking layer ``arch_op_samples`` (2) ops drawn by
  probability, mixed by the softmax of their own ``alpha`` entries; after the Adam step
  those entries are shifted so their total ``exp`` mass is what it was (the official
  ``rescale_arch_params``): ops that were not sampled keep their probabilities relative to
  the sampled pair. The gradient reaches every ``beta`` through the connection weights.

With sampled connections only blocks that a sampled connection reaches from the tail are computed.

Latency (the run's ``latency`` section). The architecture loss is the official one:
``CE + w * log(lat) / log(base)`` (``latency.loss`` auto = ``log``, ``latency.weight`` auto =
0.15 = the official ``sub_loss_factor``, ``latency.base`` 15 = ``log_base``), where ``lat`` is the expected
latency (ms) of the supernet from a lookup table, computed block by block from the tail
back (``nasforge.oneshot.dense.expected_latency``) with the full transition probabilities
and each layer's full op distribution (sampling only decides what runs, not the
expectation). ``latency.weight: 0`` (or ``latency.loss: none``) searches for accuracy alone
and builds no table.

Schedule (official ``run_apis/search.py``): the first ``warmup_fraction`` of the epochs
(official: 50 of 150) train only the weights; after that each epoch first updates the
architecture for one pass over the valid half, then the weights for one pass over the
train half. Derivation: per layer the op with the largest weight; the path is the Viterbi
path (largest product of transition probabilities) from node 0 to the tail.

Search-time valid accuracy: the derived sub-network inside the supernet, after its
BatchNorm statistics are re-estimated on ``engine.bn_recalibration`` (20) batches of the
weights half (the shared loop's ``valid_accuracy``): the running statistics of a supernet
whose paths change every step do not fit any one path. (The official ``infer`` instead runs
the whole supernet, every op mixed, with batch statistics: ``model.train()``.)

The bi-level loop is the shared one (``nasforge.oneshot.loop``, schedule ``passes``); the
table loading and the ``log`` loss form are ``nasforge.hardware.penalty``'s.

Defaults: architecture Adam betas (0.5, 0.999), weight decay 1e-3, weight SGD momentum 0.9,
cosine schedule, are the official ones; the learning rates are raised for short CPU runs
(official: weights 0.2 at batch 352 on ImageNet, architecture 3e-4 over 100 epochs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware.penalty import TABLE_FILE, LatencyPenalty, load_or_build_table
from nasforge.oneshot.dense import expected_latency, viterbi
from nasforge.oneshot.loop import OneShotConfig
from nasforge.progress import Progress
from nasforge.spaces.dense import HEAD_OPS, OPS, DenseSpace
from nasforge.strategies.base import register_strategy
from nasforge.strategies.oneshot import OneShotStrategy

log = logging.getLogger(__name__)

#: ``latency.loss: auto`` and ``latency.weight: auto`` of DenseNAS: the official ``CE + 0.15 * log(lat) / log(15)``
DEFAULT_FORM, DEFAULT_WEIGHT = "log", 0.15

__all__ = ["TABLE_FILE", "DenseNasConfig", "DenseNasStrategy", "rescale_"]


@dataclass
class DenseNasConfig(OneShotConfig):
    epochs: int | None = option(None, lo=1, hi=100000, help="search epochs (auto: dataset profile; paper 150)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto; paper 352)")
    warmup_fraction: float = option(1 / 3, lo=0.0, hi=1.0,
                                    help="share of the epochs that train only the weights (paper 50 of 150)")
    w_lr: float = option(0.1, lo=0.0, hi=10.0, help="weight SGD learning rate (cosine-annealed; paper 0.2)")
    w_lr_min: float = option(1e-4, lo=0.0, hi=10.0, help="final weight learning rate (paper 1e-4)")
    w_wd: float = option(4e-5, lo=0.0, hi=1.0, help="weight decay of the weights (paper 4e-5)")
    a_lr: float = option(3e-3, lo=0.0, hi=10.0, help="architecture Adam learning rate (paper 3e-4)")
    a_wd: float = option(1e-3, lo=0.0, hi=1.0, help="architecture weight decay (paper 1e-3)")
    head_samples: int = option(0, lo=0, hi=64,
                               help="incoming connections run per block and step: 0 = all, weighted as the official "
                                    "code; k = k sampled, weights renormalised")
    arch_op_samples: int = option(2, lo=1, hi=len(OPS), help="ops run per stacking layer in an architecture step")


def rescale_(alpha: Tensor, old: Tensor, indices: Tensor) -> None:
    """Shift the sampled entries of each row so their logsumexp is what it was before the step."""
    with torch.no_grad():
        new_lse = alpha.gather(1, indices).logsumexp(1, keepdim=True)
        old_lse = old.gather(1, indices).logsumexp(1, keepdim=True)
        alpha.scatter_add_(1, indices, (old_lse - new_lse).expand_as(indices).contiguous())


@register_strategy
class DenseNasStrategy(OneShotStrategy):
    """DenseNAS: path and op search in the dense space with a latency lookup table."""

    name = "densenas"
    kind = "oneshot"
    description = "DenseNAS: densely connected space, Viterbi path of widths/resolutions, latency-aware"
    Config = DenseNasConfig
    schedule = "passes"

    @classmethod
    def supports(cls, space: Any) -> str | None:
        if isinstance(space, DenseSpace):
            return None
        return (f"strategy 'densenas' needs the densely connected space (blocks, head and stacking layers, "
                f"path successors), not '{getattr(space, 'name', space)}'; pass --space dense")

    # --- architecture parameters -------------------------------------------
    def init_arch(self, space: DenseSpace, model: nn.Module | None = None) -> None:
        """``betas[i]`` over node ``i``'s successors and ``alpha`` ``[layers, ops]`` (1e-3 * randn, official)."""
        self.space = space
        self.betas = [self.new_arch_param(len(s)) for s in space.successors]
        self.alpha = self.new_arch_param(len(space.layer_index), len(OPS))
        #: searched heads: one row of op parameters per connection into a block (official ``alpha_head_weights``)
        self.edges = [(i, j) for j in range(1, space.tail) for i in space.predecessors[j]] if space.search_head else []
        self.edge_index = {e: k for k, e in enumerate(self.edges)}
        self.alpha_head = self.new_arch_param(len(self.edges), len(HEAD_OPS)) if self.edges else None

    def arch_parameters(self) -> list[Tensor]:
        return [*self.betas, self.alpha] + ([self.alpha_head] if self.alpha_head is not None else [])

    def sample_heads(self, k: int, uniform: bool, incoming: Sequence[tuple[list[int], Tensor]]
                     ) -> tuple[Tensor | None, list[list[tuple[list[int], Tensor]]] | None]:
        """``k`` head ops per connection (uniformly or by softmax of its ``alpha_head`` row), mixed by the
        softmax of their own entries; arranged as the supernet's ``head_ops`` for the sources of ``incoming``."""
        if self.alpha_head is None:
            return None, None
        a = self.alpha_head
        weights = torch.ones_like(a) if uniform else F.softmax(a.detach(), dim=-1)
        idx = torch.multinomial(weights, k, replacement=False).sort(dim=1).values
        mixed = F.softmax(a.gather(1, idx), dim=-1)
        rows = [(r.tolist(), w) for r, w in zip(idx, mixed)]
        tail = self.space.tail
        head_ops = [[rows[self.edge_index[(i, j)]] for i in sources] if j < tail else [None] * len(sources)
                    for j, (sources, _) in enumerate(incoming, start=1)]
        return idx, head_ops

    def path_probs(self) -> list[Tensor]:
        return [F.softmax(b, dim=-1) for b in self.betas]

    def incoming_probs(self, probs: Sequence[Tensor]) -> list[tuple[list[int], Tensor]]:
        """Per destination ``1..T``: its sources and ``p(i->j)`` for each (a differentiable tensor)."""
        space = self.space
        out = []
        for j in range(1, space.tail + 1):
            sources = space.predecessors[j]
            out.append((sources, torch.stack([probs[i][space.successors[i].index(j)] for i in sources])))
        return out

    def sample_incoming(self, probs: Sequence[Tensor], uniform: bool) -> list[tuple[list[int], Tensor]]:
        """The incoming connections each block (and the tail) runs, with their weights.

        ``head_samples`` 0 (default): every connection, as the official code runs them: a block
        weights head ``i -> j`` by ``p(i->j)`` itself (not renormalised), the tail by the softmax
        of its incoming ``p`` (the official ``Conv1_1_Block``). ``head_samples`` k > 0: k sources
        per block drawn (uniformly or by probability), weights renormalised over those drawn.
        """
        k = self.config.head_samples
        tail = self.space.tail
        out = []
        for j, (sources, p) in enumerate(self.incoming_probs(probs), start=1):
            if not k:
                out.append((sources, F.softmax(p, dim=-1) if j == tail else p))
                continue
            if len(sources) > k:
                draw = torch.ones_like(p) if uniform else p.detach()
                idx = torch.multinomial(draw, k, replacement=False).sort().values
                sources, p = [sources[i] for i in idx.tolist()], p[idx]
            out.append((sources, p / p.sum()))
        return out

    def sample_ops(self, k: int, uniform: bool) -> tuple[Tensor, list[tuple[list[int], Tensor]]]:
        """Draw ``k`` ops per layer (uniformly or by softmax(alpha)); mixed by softmax of their alphas."""
        if self.alpha.shape[0] == 0:
            return torch.zeros(0, k, dtype=torch.long), []
        weights = torch.ones_like(self.alpha) if uniform else F.softmax(self.alpha.detach(), dim=-1)
        idx = torch.multinomial(weights, k, replacement=False).sort(dim=1).values
        mixed = F.softmax(self.alpha.gather(1, idx), dim=-1)
        return idx, [(row.tolist(), w) for row, w in zip(idx, mixed)]

    # --- latency ---------------------------------------------------------------
    def setup_latency(self, space: DenseSpace, data: Dataset, experiment: Experiment | None,
                      progress: Progress | None) -> None:
        """Load or build the lookup table and turn it into per-head and per-layer-op latencies."""
        self.table = None
        lat = self.latency_config
        if not lat.active(DEFAULT_FORM):
            return
        self.table = table = load_or_build_table(space, data, lat, experiment=experiment, progress=progress)
        keys = space.latency_keys()
        self.head_latency = {edge: table.get(key) for edge, key in keys.heads.items()}
        self.op_latency = torch.tensor([[table.get(k) if k else 0.0 for k in (layer[op] for op in OPS)]
                                        for layer in keys.layers], dtype=torch.float32,
                                       device=self.engine.device).reshape(-1, len(OPS))
        self.fixed_latency = table.overhead_ms + sum(table.get(k) for k in keys.fixed)
        self.head_op_latency = torch.tensor([[table.get(keys.head_ops[e][op]) for op in HEAD_OPS]
                                             for e in self.edges_of(space)], dtype=torch.float32,
                                            device=self.engine.device).reshape(-1, len(HEAD_OPS))
        weight = DEFAULT_WEIGHT if lat.weight is None else lat.weight
        self.penalty = LatencyPenalty(lat.form(DEFAULT_FORM), weight, lat.target_ms or 1.0, lat.alpha, lat.base)

    @staticmethod
    def edges_of(space: DenseSpace) -> list[tuple[int, int]]:
        """The connections into blocks whose head op is searched (none when the space fixes it)."""
        return [(i, j) for j in range(1, space.tail) for i in space.predecessors[j]] if space.search_head else []

    def expected_latency(self, probs: Sequence[Tensor] | None = None) -> Tensor:
        """Expected latency (ms) of the supernet under the current path and op distributions."""
        if getattr(self, "table", None) is None:
            raise ConfigError("no latency table: the search ran with latency.weight=0 or latency.loss=none; set a "
                              "positive latency.weight (or latency.table) to use the latency objective")
        space = self.space
        probs = self.path_probs() if probs is None else probs
        per_layer = (F.softmax(self.alpha, dim=-1) * self.op_latency).sum(-1)
        stack: list[Tensor | float] = [0.0] * space.tail
        for k, (b, _) in enumerate(space.layer_index):
            stack[b] = stack[b] + per_layer[k]
        heads: dict[tuple[int, int], Any] = dict(self.head_latency)
        if self.alpha_head is not None:  # a searched head costs its op-probability-weighted latency
            per_head = (F.softmax(self.alpha_head, dim=-1) * self.head_op_latency).sum(-1)
            heads.update({e: per_head[k] for k, e in enumerate(self.edges)})
        return expected_latency(space.successors, probs, heads, stack, self.fixed_latency)

    # --- derivation -----------------------------------------------------------
    def derive(self, space: DenseSpace | None = None) -> Arch:
        """Viterbi path over the transition probabilities; per kept layer the op with the largest weight."""
        space = space or self.space
        path = viterbi(space.successors, [p.detach() for p in self.path_probs()])
        best = self.alpha.detach().argmax(-1).tolist()
        ops = {key: OPS[best[k]] for k, key in enumerate(space.layer_index)}
        heads = {}
        if self.alpha_head is not None:  # the head op of the connection the path takes into each block
            best_head = self.alpha_head.detach().argmax(-1).tolist()
            heads = {b: HEAD_OPS[best_head[self.edge_index[(a, b)]]] for a, b in zip(path, path[1:-1])}
        return space.arch_from_path(path, ops, heads)

    def arch_weights(self, space: DenseSpace | None = None) -> dict[str, Any]:
        """Transition probabilities per node and op probabilities per stacking layer, for the record."""
        out = {"paths": [p.detach().tolist() for p in self.path_probs()],
               "ops": F.softmax(self.alpha.detach(), dim=-1).tolist(), "op_names": list(OPS)}
        if self.alpha_head is not None:
            out["heads"] = {f"{i}>{j}": row for (i, j), row in
                            zip(self.edges, F.softmax(self.alpha_head.detach(), dim=-1).tolist())}
            out["head_op_names"] = list(HEAD_OPS)
        return out

    def path_inputs(self, arch: Arch) -> tuple[Any, Any, Any]:
        """Supernet inputs (incoming, layer ops, head ops) that run exactly the network of ``arch`` (one source
        per block, one op per layer and head)."""
        space = self.space
        path = space.path(arch)
        prev = {b: a for a, b in zip(path, path[1:])}
        one = torch.ones(1, device=self.engine.device)
        incoming = [([prev[j]] if j in prev else [space.predecessors[j][0]], one) for j in range(1, space.tail + 1)]
        layer_ops = [([OPS.index(arch[f"block{b}.layer{l}"])], one) for b, l in space.layer_index]
        if not space.search_head:
            return incoming, layer_ops, None
        head_ops = [[([HEAD_OPS.index(arch[f"block{j}.head"])], one) for _ in sources] if j < space.tail
                    else [None] * len(sources) for j, (sources, _) in enumerate(incoming, start=1)]
        return incoming, layer_ops, head_ops

    # --- the loop's hooks ----------------------------------------------------------
    def setup(self, space: DenseSpace, data: Dataset, experiment: Experiment | None, progress: Progress) -> None:
        self.space = space
        self.setup_latency(space, data, experiment, progress)
        if experiment is not None and self.table is not None and self.latency_config.table is None:
            experiment.store.set_meta("latency_table", str(experiment.path / TABLE_FILE))

    def build_supernet(self, space: DenseSpace, data: Dataset) -> nn.Module:
        return space.supernet(data.input_shape, data.num_classes)

    def warmup_epochs(self) -> int:
        return int(self.config.epochs * self.config.warmup_fraction)

    def epoch_started(self, epoch: int) -> None:
        self.warm = epoch < self.warmup_epochs()

    def epoch_metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {"stage": "warmup" if self.warm else "search"}
        if self.table is not None:
            with torch.no_grad():
                metrics["expected_latency_ms"] = self.expected_latency().item()
            metrics["predicted_latency_ms"] = self.table.predict(self.space, self.derive())
        return metrics

    def search_info(self, space: DenseSpace, experiment: Experiment | None) -> dict[str, Any]:
        arch = self.derive(space)
        info: dict[str, Any] = {"warmup_epochs": self.warmup_epochs(), "summary": space.summary(arch)}
        if self.table is not None:
            info["expected_latency_ms"] = self.expected_latency().item()
            info["predicted_latency_ms"] = self.table.predict(space, arch)
            info["latency_table"] = self.latency_config.table or (
                str(experiment.path / TABLE_FILE) if experiment else None)
        return info

    def eval_forward(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The derived sub-network with the supernet's shared weights."""
        incoming, layer_ops, head_ops = self.path_inputs(self.derive())
        return lambda x: model(x, incoming, layer_ops, head_ops)

    # --- steps ------------------------------------------------------------------
    def train_forward(self, model: nn.Module, x: Tensor, warm: bool) -> Tensor:
        """A sampled sub-network (uniform sampling during the warm-up)."""
        with torch.no_grad():
            incoming = self.sample_incoming(self.path_probs(), uniform=warm)
            _, layer_ops = self.sample_ops(1, uniform=warm)
            _, head_ops = self.sample_heads(1, warm, incoming)
        return model(x, incoming, layer_ops, head_ops)

    def arch_step(self, model: nn.Module, batch: tuple[Tensor, Tensor],
                  train_batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """One architecture update: CE on sampled paths plus the latency term, Adam, re-offset of the sampled ops."""
        cfg = self.config
        probs = self.path_probs()
        incoming = self.sample_incoming(probs, uniform=False)
        idx, layer_ops = self.sample_ops(cfg.arch_op_samples, uniform=False)
        head_idx, head_ops = self.sample_heads(min(cfg.arch_op_samples, len(HEAD_OPS)), False, incoming)
        x, y = batch
        with self.engine.autocast():
            ce = F.cross_entropy(model(x, incoming, layer_ops, head_ops), y)
        loss = self.penalty(ce, self.expected_latency(probs)) if self.table is not None else ce
        if not torch.isfinite(loss):
            return {"arch_loss": float("nan")}
        params = self.arch_parameters()
        grads = self.engine.grad(loss, params, allow_unused=True)
        old = self.alpha.detach().clone()
        old_head = self.alpha_head.detach().clone() if self.alpha_head is not None else None
        self.a_opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g if g is not None else torch.zeros_like(p)
        self.a_opt.step()
        if idx.numel():
            rescale_(self.alpha.data, old, idx)
        if head_idx is not None and head_idx.numel():
            rescale_(self.alpha_head.data, old_head, head_idx)
        return {"arch_loss": loss.item(), "arch_ce": ce.item()}


# --- presets ----------------------------------------------------------------------------
from nasforge.presets import register_preset  # noqa: E402

_DENSENAS_SOURCE = ("JaminFong/DenseNAS configs/imagenet_search_cfg_mbv2.yaml (search), run_apis/optimizer.py "
                    "(Adam betas, no clip), configs/imagenet_train_cfg.py (retraining); paper sec. 4.1")
register_preset("paper", "densenas", "imagenet", {
    "space": {"name": "dense", "preset": "imagenet"},
    "strategy": {"epochs": 150, "warmup_fraction": 1 / 3, "batch_size": 352, "w_lr": 0.2, "w_lr_min": 1e-4,
                 "w_momentum": 0.9, "w_nesterov": False, "w_wd": 4e-5, "grad_clip": 0.0, "a_lr": 3e-4,
                 "a_wd": 1e-3, "a_beta1": 0.5, "a_beta2": 0.999, "head_samples": 0, "arch_op_samples": 2},
    "latency": {"loss": "log", "weight": 0.15, "base": 15.0},
    "train": {"epochs": 240, "batch_size": 1024, "lr": 0.5, "lr_min": 1e-5, "momentum": 0.9,
              "weight_decay": 4e-5, "grad_clip": 0.0, "cutout": 0},
}, sources={"*": _DENSENAS_SOURCE},
    note="the official search uses a 100-class subset of ImageNet and a latency table measured on a TITAN-XP GPU "
         "(batch 32); nasforge measures latency.device; retraining's label smoothing 0.1 is not a train option")
