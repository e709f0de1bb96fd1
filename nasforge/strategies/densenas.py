"""DenseNAS (Fang et al., "Densely Connected Search Space for More Flexible Neural Architecture
Search", CVPR 2020) on the ``dense`` space: widths, downsampling points and depth at once.

Relaxation. Every stacking layer ``l`` has op parameters ``alpha_l`` (softmax over the
seven candidates, ``skip`` included); every node ``i`` has path parameters ``beta_i``
(softmax over its successors: the probability ``p(i->j)`` of leaving ``i`` towards ``j``).
A block's input is its head layers' outputs mixed by the probabilities of the incoming
connections, renormalised over the connections used: ``h_j = sum_i p(i->j) head_ij(x_i) /
sum_i p(i->j)``. (The paper sums ``p(i->j) head_ij(x_i)`` unnormalised; the renormalisation
keeps a block's input at one scale when only some connections run.)

Path sampling (what runs in one step; the official code samples ops, this adds connections):

- weight step (train half): per stacking layer one op, per block ``head_samples`` incoming
  connections (all when a block has no more), drawn uniformly during the warm-up and by
  their probabilities afterwards (the official ``sample_policy``); sampled ops run with
  weight 1, sampled connections with their renormalised probabilities (no gradient);
- architecture step (valid half): per stacking layer ``arch_op_samples`` (2) ops and per
  block ``head_samples`` connections drawn by probability; the ops are mixed by the softmax
  of their own ``alpha`` entries, and after the Adam step those entries are shifted so their
  total ``exp`` mass is what it was (the official ``rescale_arch_params``): ops that were not
  sampled keep their probabilities relative to the sampled pair.

Only blocks that a sampled connection reaches from the tail are computed.

Latency. The architecture loss is the official one: ``CE + lat_weight * log(lat) /
log(lat_base)`` (``sub_loss_factor`` 0.15, ``log_base`` 15), where ``lat`` is the expected
latency (ms) of the supernet from a lookup table, computed block by block from the tail
back (``nasforge.oneshot.dense.expected_latency``) with the full transition probabilities
and each layer's full op distribution (sampling only decides what runs, not the
expectation). ``lat_weight = 0`` searches for accuracy alone and builds no table.

Schedule (official ``run_apis/search.py``): the first ``warmup_fraction`` of the epochs
(official: 50 of 150) train only the weights; after that each epoch first updates the
architecture for one pass over the valid half, then the weights for one pass over the
train half. Derivation: per layer the op with the largest weight; the path is the Viterbi
path (largest product of transition probabilities) from node 0 to the tail.

Defaults: architecture Adam betas (0.5, 0.999), weight decay 1e-3, weight SGD momentum 0.9,
cosine schedule, are the official ones; the learning rates are raised for short CPU runs
(official: weights 0.2 at batch 352 on ImageNet, architecture 3e-4 over 100 epochs).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset, iterate_batches, num_batches, split_half
from nasforge.errors import ConfigError, TrainingError
from nasforge.experiment import Experiment
from nasforge.hardware.latency import DEVICES
from nasforge.oneshot.dense import expected_latency, viterbi
from nasforge.progress import Progress
from nasforge.spaces.dense import OPS, SKIP, DenseSpace
from nasforge.strategies.base import (EpochCallback, SearchResult, Strategy, load_search_state, register_strategy,
                                      save_search_state)
from nasforge.strategies.darts import accuracy, cosine_lr
from nasforge.utils import apply_gradients, epoch_seed

log = logging.getLogger(__name__)

#: File name of the lookup table built at search start inside the experiment directory.
TABLE_FILE = "latency_table.json"


@dataclass
class DenseNasConfig:
    epochs: int | None = option(None, lo=1, hi=100000, help="search epochs (auto: dataset profile; paper 150)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto; paper 352)")
    warmup_fraction: float = option(1 / 3, lo=0.0, hi=1.0,
                                    help="share of the epochs that train only the weights (paper 50 of 150)")
    w_lr: float = option(0.1, lo=0.0, hi=10.0, help="weight SGD learning rate (cosine-annealed; paper 0.2)")
    w_lr_min: float = option(1e-4, lo=0.0, hi=10.0, help="final weight learning rate (paper 1e-4)")
    w_momentum: float = option(0.9, lo=0.0, hi=1.0, help="weight SGD momentum")
    w_wd: float = option(4e-5, lo=0.0, hi=1.0, help="weight decay of the weights (paper 4e-5)")
    grad_clip: float = option(5.0, lo=0.0, hi=1e6, help="gradient-norm clip of the weights (0: off)")
    a_lr: float = option(3e-3, lo=0.0, hi=10.0, help="architecture Adam learning rate (paper 3e-4)")
    a_wd: float = option(1e-3, lo=0.0, hi=1.0, help="architecture weight decay (paper 1e-3)")
    a_beta1: float = option(0.5, lo=0.0, hi=1.0, help="architecture Adam beta1")
    a_beta2: float = option(0.999, lo=0.0, hi=1.0, help="architecture Adam beta2")
    head_samples: int = option(2, lo=0, hi=64, help="incoming connections run per block and step (0: all)")
    arch_op_samples: int = option(2, lo=1, hi=len(OPS), help="ops run per stacking layer in an architecture step")
    lat_weight: float = option(0.15, lo=0.0, hi=100.0,
                               help="latency loss factor: CE + lat_weight * log(lat)/log(lat_base) (0: off)")
    lat_base: float = option(15.0, lo=1.0001, hi=1e6, help="base of the latency loss's logarithm (paper 15)")
    latency_table: str | None = option(None, help="lookup table JSON (auto: built at search start, kept in the run)")
    latency_device: str = option("cpu", choices=DEVICES, help="device the lookup table is measured on")
    table_warmup: int = option(5, lo=0, hi=100000, help="untimed runs per table entry")
    table_repeats: int = option(20, lo=1, hi=100000, help="timed runs per table entry (median kept)")
    table_threads: int = option(1, lo=1, hi=1024, help="CPU threads while building the table")


def rescale_(alpha: Tensor, old: Tensor, indices: Tensor) -> None:
    """Shift the sampled entries of each row so their logsumexp is what it was before the step."""
    with torch.no_grad():
        new_lse = alpha.gather(1, indices).logsumexp(1, keepdim=True)
        old_lse = old.gather(1, indices).logsumexp(1, keepdim=True)
        alpha.scatter_add_(1, indices, (old_lse - new_lse).expand_as(indices).contiguous())


@register_strategy
class DenseNasStrategy(Strategy):
    """DenseNAS: path and op search in the dense space with a latency lookup table."""

    name = "densenas"
    kind = "oneshot"
    description = "DenseNAS: densely connected space, Viterbi path of widths/resolutions, latency-aware"
    Config = DenseNasConfig

    # --- architecture parameters -------------------------------------------
    def init_arch(self, space: DenseSpace) -> None:
        """``betas[i]`` over node ``i``'s successors and ``alpha`` ``[layers, ops]`` (1e-3 * randn, official)."""
        self.space = space
        self.betas = [nn.Parameter(1e-3 * torch.randn(len(s))) for s in space.successors]
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(space.layer_index), len(OPS)))

    def arch_params(self) -> list[nn.Parameter]:
        return [*self.betas, self.alpha]

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
        """Draw ``head_samples`` sources per block (uniformly or by probability); weights renormalised."""
        k = self.config.head_samples
        out = []
        for sources, p in self.incoming_probs(probs):
            if k and len(sources) > k:
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
                      progress: Progress) -> None:
        """Load or build the lookup table and turn it into per-head and per-layer-op latencies."""
        self.table = None
        if self.config.lat_weight <= 0:
            return
        from nasforge.hardware.lut import LatencyTable, build_table

        cfg = self.config
        path = Path(cfg.latency_table) if cfg.latency_table else None
        if path is None and experiment is not None and (experiment.path / TABLE_FILE).is_file():
            path = experiment.path / TABLE_FILE  # built by this run before an interruption: reuse it
        if path is not None:
            table = LatencyTable.load(path)
            table.check(space, data.input_shape, cfg.latency_device)
        else:
            table = build_table(space, data.input_shape, data.num_classes, device=cfg.latency_device,
                                warmup=cfg.table_warmup, repeats=cfg.table_repeats, threads=cfg.table_threads,
                                progress=progress)
            if experiment is not None:
                table.save(experiment.path / TABLE_FILE)
        self.table = table
        keys = space.latency_keys()
        self.head_latency = {edge: table.get(key) for edge, key in keys.heads.items()}
        self.op_latency = torch.tensor([[table.get(k) if k else 0.0 for k in (layer[op] for op in OPS)]
                                        for layer in keys.layers], dtype=torch.float32).reshape(-1, len(OPS))
        self.fixed_latency = table.overhead_ms + sum(table.get(k) for k in keys.fixed)

    def expected_latency(self, probs: Sequence[Tensor] | None = None) -> Tensor:
        """Expected latency (ms) of the supernet under the current path and op distributions."""
        if getattr(self, "table", None) is None:
            raise ConfigError("no latency table: the search ran with strategy.lat_weight=0; set a positive "
                              "lat_weight (or strategy.latency_table) to use the latency objective")
        space = self.space
        probs = self.path_probs() if probs is None else probs
        per_layer = (F.softmax(self.alpha, dim=-1) * self.op_latency).sum(-1)
        stack: list[Tensor | float] = [0.0] * space.tail
        for k, (b, _) in enumerate(space.layer_index):
            stack[b] = stack[b] + per_layer[k]
        return expected_latency(space.successors, probs, self.head_latency, stack, self.fixed_latency)

    # --- derivation -----------------------------------------------------------
    def derive(self, space: DenseSpace | None = None) -> Arch:
        """Viterbi path over the transition probabilities; per kept layer the op with the largest weight."""
        space = space or self.space
        path = viterbi(space.successors, [p.detach() for p in self.path_probs()])
        best = self.alpha.detach().argmax(-1).tolist()
        ops = {key: OPS[best[k]] for k, key in enumerate(space.layer_index)}
        return space.arch_from_path(path, ops)

    def arch_weights(self) -> dict[str, Any]:
        """Transition probabilities per node and op probabilities per stacking layer, for the record."""
        return {"paths": [p.detach().tolist() for p in self.path_probs()],
                "ops": F.softmax(self.alpha.detach(), dim=-1).tolist(), "op_names": list(OPS)}

    def path_inputs(self, arch: Arch) -> tuple[list[tuple[list[int], Tensor]], list[tuple[list[int], Tensor]]]:
        """Supernet inputs that run exactly the network of ``arch`` (one source per block, one op per layer)."""
        space = self.space
        path = space.path(arch)
        prev = {b: a for a, b in zip(path, path[1:])}
        one = torch.ones(1)
        incoming = [([prev[j]] if j in prev else [space.predecessors[j][0]], one) for j in range(1, space.tail + 1)]
        layer_ops = [([OPS.index(arch[f"block{b}.layer{l}"])], one) for b, l in space.layer_index]
        return incoming, layer_ops

    @torch.no_grad()
    def evaluate(self, model: nn.Module, arch: Arch, x: Tensor, y: Tensor, batch_size: int) -> float:
        """Accuracy of the derived sub-network with the supernet's shared weights."""
        incoming, layer_ops = self.path_inputs(arch)
        model.eval()
        correct = 0
        for xb, yb in iterate_batches(x, y, max(batch_size, 256)):
            correct += (model(xb, incoming, layer_ops).argmax(1) == yb).sum().item()
        model.train()
        return correct / max(len(y), 1)

    # --- steps ------------------------------------------------------------------
    def weight_step(self, model: nn.Module, params: Sequence[Tensor], opt: torch.optim.Optimizer,
                    batch: tuple[Tensor, Tensor], warm: bool) -> tuple[float, float]:
        """One weight update on a sampled sub-network (uniform sampling during the warm-up)."""
        with torch.no_grad():
            incoming = self.sample_incoming(self.path_probs(), uniform=warm)
            _, layer_ops = self.sample_ops(1, uniform=warm)
        x, y = batch
        opt.zero_grad(set_to_none=True)
        logits = model(x, incoming, layer_ops)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            return float("nan"), 0.0
        apply_gradients(loss, opt, params, self.config.grad_clip)
        return loss.item(), accuracy(logits, y)

    def arch_step(self, model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]
                  ) -> tuple[float, float, float]:
        """One architecture update: CE on sampled paths plus the latency term. Returns (loss, CE, latency ms)."""
        cfg = self.config
        probs = self.path_probs()
        incoming = self.sample_incoming(probs, uniform=False)
        idx, layer_ops = self.sample_ops(cfg.arch_op_samples, uniform=False)
        x, y = batch
        ce = F.cross_entropy(model(x, incoming, layer_ops), y)
        loss = ce
        lat = float("nan")
        if self.table is not None:
            expected = self.expected_latency(probs)
            loss = loss + cfg.lat_weight * torch.log(expected) / math.log(cfg.lat_base)
            lat = expected.item()
        if not torch.isfinite(loss):
            return float("nan"), float("nan"), lat
        params = self.arch_params()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        old = self.alpha.detach().clone()
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g if g is not None else torch.zeros_like(p)
        opt.step()
        if idx.numel():
            rescale_(self.alpha.data, old, idx)
        return loss.item(), ce.item(), lat

    # --- the loop ------------------------------------------------------------------
    def warmup_epochs(self) -> int:
        return int(self.config.epochs * self.config.warmup_fraction)

    def search(self, space: DenseSpace, data: Dataset, *, experiment: Experiment | None = None,
               progress: Progress | None = None, seed: int = 0,
               callbacks: Sequence[EpochCallback] = ()) -> SearchResult:
        """Run (or resume from the experiment's checkpoint) the two-stage DenseNAS search."""
        if not isinstance(space, DenseSpace):
            raise ConfigError(f"strategy 'densenas' needs the densely connected space, not '{space.name}'; "
                              "pass --space dense")
        cfg = self.config
        progress = progress or Progress()
        torch.manual_seed(seed)
        model = space.supernet(data.input_shape, data.num_classes)
        self.init_arch(space)
        self.setup_latency(space, data, experiment, progress)
        params = list(model.parameters())
        w_opt = torch.optim.SGD(params, lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_wd)
        a_opt = torch.optim.Adam(self.arch_params(), lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2),
                                 weight_decay=cfg.a_wd)
        (xw, yw), (xa, ya) = split_half(data.x_train, data.y_train, seed)

        start = 0
        if experiment is not None:
            start, _ = load_search_state(experiment, model, self.arch_params(), w_opt, a_opt)
            if self.table is not None and cfg.latency_table is None:
                experiment.store.set_meta("latency_table", str(experiment.path / TABLE_FILE))

        warmup = self.warmup_epochs()
        w_steps, a_steps = num_batches(len(yw), cfg.batch_size), num_batches(len(ya), cfg.batch_size)
        total = cfg.epochs * w_steps + (cfg.epochs - warmup) * a_steps
        done = start * w_steps + max(start - warmup, 0) * a_steps
        history = experiment.store.epochs("search") if experiment is not None else []
        started = time.time()
        with progress.task(f"search ({self.name})", total=total, completed=done) as bar:
            for epoch in range(start, cfg.epochs):
                record = self._epoch(model, params, data, epoch, (xw, yw), (xa, ya), w_opt, a_opt, seed, bar,
                                     warm=epoch < warmup)
                history.append(record)
                if experiment is not None:
                    experiment.store.log_epoch("search", epoch, record["metrics"], record["arch_weights"],
                                               record["arch"])
                    save_search_state(experiment, epoch, model, self.arch_params(), w_opt, a_opt)
                for cb in callbacks:
                    cb(self, epoch, record)
        arch = self.derive(space)
        info: dict[str, Any] = {"epochs": len(history), "warmup_epochs": warmup, "seconds": time.time() - started,
                                "summary": space.summary(arch)}
        if self.table is not None:
            info["expected_latency_ms"] = self.expected_latency().item()
            info["predicted_latency_ms"] = self.table.predict(space, arch)
            info["latency_table"] = cfg.latency_table or (str(experiment.path / TABLE_FILE) if experiment else None)
        return SearchResult(arch, history, info)

    def _epoch(self, model: nn.Module, params: Sequence[Tensor], data: Dataset, epoch: int, w_half, a_half,
               w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer, seed: int, bar: Any,
               warm: bool) -> dict[str, Any]:
        cfg = self.config
        lr = cosine_lr(epoch, cfg.epochs, cfg.w_lr, cfg.w_lr_min)
        for group in w_opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(epoch_seed(seed, epoch))
        g_w = torch.Generator().manual_seed(epoch_seed(seed, epoch, 1))
        g_a = torch.Generator().manual_seed(epoch_seed(seed, epoch, 2))
        model.train()
        tic = time.time()
        metrics: dict[str, Any] = {"stage": "warmup" if warm else "search"}
        if not warm:
            sums, n = [0.0, 0.0, 0.0], 0
            for step, batch in enumerate(iterate_batches(*a_half, cfg.batch_size, generator=g_a,
                                                         augment=data.augment)):
                loss, ce, lat = self.arch_step(model, a_opt, batch)
                if not math.isfinite(loss):
                    raise TrainingError(f"architecture loss became NaN/inf at epoch {epoch} step {step}; lower "
                                        f"strategy.a_lr (e.g. {cfg.a_lr / 4:g}); earlier epochs are checkpointed")
                sums = [sums[0] + loss, sums[1] + ce, sums[2] + (lat if math.isfinite(lat) else 0.0)]
                n += 1
                bar.advance(1, epoch=epoch, arch_loss=loss)
            metrics.update(arch_loss=sums[0] / max(n, 1), arch_ce=sums[1] / max(n, 1))
        loss_sum, acc_sum, n = 0.0, 0.0, 0
        for step, batch in enumerate(iterate_batches(*w_half, cfg.batch_size, generator=g_w, augment=data.augment)):
            loss, acc = self.weight_step(model, params, w_opt, batch, warm)
            if not math.isfinite(loss):
                raise TrainingError(f"search loss became NaN/inf at epoch {epoch} step {step}; lower the weight "
                                    f"learning rate (e.g. --set strategy.w_lr={cfg.w_lr / 4:g}); earlier epochs "
                                    "are checkpointed, resume after fixing the config")
            loss_sum, acc_sum, n = loss_sum + loss, acc_sum + acc, n + 1
            bar.advance(1, epoch=epoch, loss=loss)
        metrics.update(train_loss=loss_sum / max(n, 1), train_acc=acc_sum / max(n, 1), lr=lr)
        arch = self.derive()
        metrics["valid_acc"] = self.evaluate(model, arch, data.x_valid, data.y_valid, cfg.batch_size)
        if self.table is not None:
            with torch.no_grad():
                metrics["expected_latency_ms"] = self.expected_latency().item()
            metrics["predicted_latency_ms"] = self.table.predict(self.space, arch)
        metrics["seconds"] = time.time() - tic
        bar.update(epoch=epoch, valid_acc=metrics["valid_acc"])
        log.info("search epoch %d: %s", epoch, metrics)
        return {"epoch": epoch, "metrics": metrics, "arch_weights": self.arch_weights(), "arch": arch.to_dict()}
