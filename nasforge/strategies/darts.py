"""DARTS: differentiable architecture search (Liu, Simonyan & Yang, ICLR 2019).

Algorithm (the paper's Algorithm 1), per step:
  1. update the architecture parameters alpha by descending the validation loss
     L_val(w - xi * grad_w L_train(w, alpha), alpha)   (second order), or
     L_val(w, alpha)                                      (first order, xi = 0);
  2. update the weights w by descending L_train(w, alpha).
The training set is split in half: one half for w, the other for alpha. After the
search, each node keeps its two strongest non-zero incoming edges.

Any space with a supernet can be searched (``OneShotSpace`` in ``nasforge/oneshot/mixed.py``):
the strategy keeps one alpha matrix per group the space names (darts: ``normal`` and
``reduce``; nb201: one ``normal`` matrix shared by all cells) and the space derives the
architecture from their softmax.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.config import option
from nasforge.data import Dataset, iterate_batches, num_batches, split_half
from nasforge.errors import ConfigError, TrainingError
from nasforge.experiment import Experiment
from nasforge.oneshot.mixed import EdgeWeights, OneShotSpace
from nasforge.progress import Progress
from nasforge.spaces.darts import DartsSpace, num_edges
from nasforge.strategies.base import (EpochCallback, SearchResult, Strategy, load_search_state, register_strategy,
                                      save_search_state)
from nasforge.strategies.stopping import DartsPlusStopper
from nasforge.utils import apply_gradients, epoch_seed

log = logging.getLogger(__name__)


@dataclass
class DartsConfig:
    epochs: int | None = option(None, lo=1, hi=100000, help="search epochs (auto: dataset profile; paper 50)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto; paper 64)")
    layers: int | None = option(None, lo=3, hi=64, help="supernet cells (auto; paper 8)")
    channels: int | None = option(None, lo=2, hi=1024, help="supernet initial channels (auto; paper 16)")
    order: int = option(1, choices=(1, 2), help="1: first-order approximation, 2: unrolled second order")
    w_lr: float = option(0.025, lo=0.0, hi=10.0, help="weight SGD learning rate (cosine-annealed)")
    w_lr_min: float = option(0.001, lo=0.0, hi=10.0, help="final weight learning rate")
    w_momentum: float = option(0.9, lo=0.0, hi=1.0, help="weight SGD momentum")
    w_wd: float = option(3e-4, lo=0.0, hi=1.0, help="weight decay of the weights")
    grad_clip: float = option(5.0, lo=0.0, hi=1e6, help="gradient-norm clip of the weights (0: off)")
    a_lr: float = option(3e-4, lo=0.0, hi=10.0, help="architecture Adam learning rate")
    a_wd: float = option(1e-3, lo=0.0, hi=1.0, help="architecture weight decay")
    a_beta1: float = option(0.5, lo=0.0, hi=1.0, help="architecture Adam beta1")
    a_beta2: float = option(0.999, lo=0.0, hi=1.0, help="architecture Adam beta2")
    unrolled_r: float = option(0.01, lo=1e-8, hi=1.0, help="finite-difference scale of the Hessian-vector product")
    early_stop: str = option("none", choices=("none", "dartsplus"),
                             help="stopping policy: none, or dartsplus (stop at 2 skip-connects or a stable ranking)")
    early_stop_skips: int = option(2, lo=1, hi=64, help="DARTS+ criterion 1: skip-connects in the normal cell")
    early_stop_patience: int = option(10, lo=1, hi=100000,
                                      help="DARTS+ criterion 2: epochs the learnable ops' ranking must stay unchanged")


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from ``lr`` at epoch 0 towards ``lr_min`` at ``epochs``."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def unrolled_arch_grads(loss_fn: Callable[[tuple[Tensor, Tensor]], Tensor], weights: Sequence[Tensor],
                        alphas: Sequence[Tensor], train_batch: tuple[Tensor, Tensor],
                        valid_batch: tuple[Tensor, Tensor], eta: float, weight_decay: float,
                        momentum_terms: Sequence[Tensor | None], r: float = 0.01) -> tuple[list[Tensor], Tensor]:
    """The second-order architecture gradient of DARTS (its eq. 7 and 8).

    grad_alpha L_val(w', alpha) - eta * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)
    with w' = w - eta * (momentum + grad_w L_train + wd * w), w+- = w +- eps * grad_w' L_val(w', alpha),
    eps = r / ||grad_w' L_val||. ``loss_fn(batch)`` evaluates the model at the current weights.
    The weights are restored exactly before returning.
    """
    weights, alphas = list(weights), list(alphas)
    backup = [w.detach().clone() for w in weights]
    grads = torch.autograd.grad(loss_fn(train_batch), weights, allow_unused=True)
    with torch.no_grad():
        for w, g, m in zip(weights, grads, momentum_terms):
            step = weight_decay * w
            if g is not None:
                step = step + g
            if m is not None:
                step = step + m
            w.sub_(eta * step)
    valid_loss = loss_fn(valid_batch)
    out = torch.autograd.grad(valid_loss, alphas + weights, allow_unused=True)
    d_alpha = [g if g is not None else torch.zeros_like(a) for g, a in zip(out[: len(alphas)], alphas)]
    d_w = [g if g is not None else torch.zeros_like(w) for g, w in zip(out[len(alphas):], weights)]
    norm = torch.sqrt(sum((g * g).sum() for g in d_w))
    eps = r / norm.clamp_min(1e-12)

    def grad_alpha_at(sign: float) -> list[Tensor]:
        with torch.no_grad():
            for w, b, v in zip(weights, backup, d_w):
                w.copy_(b + sign * eps * v)
        g = torch.autograd.grad(loss_fn(train_batch), alphas, allow_unused=True)
        return [x if x is not None else torch.zeros_like(a) for x, a in zip(g, alphas)]

    g_plus = grad_alpha_at(+1.0)
    g_minus = grad_alpha_at(-1.0)
    with torch.no_grad():
        for w, b in zip(weights, backup):
            w.copy_(b)
    hessian = [(p - m) / (2 * eps) for p, m in zip(g_plus, g_minus)]
    return [da - eta * h for da, h in zip(d_alpha, hessian)], valid_loss.detach()


def alpha_shapes(space: Any, strategy: str = "darts") -> dict[str, tuple[int, int]]:
    """Groups of architecture weights of a one-shot space: name -> ``(edges, ops)``, supernet order."""
    if isinstance(space, DartsSpace):
        shape = (num_edges(space.nodes), len(space.primitives))
        return {"normal": shape, "reduce": shape}
    if not isinstance(space, OneShotSpace):
        raise ConfigError(f"strategy '{strategy}' needs a space with a supernet (darts, nb201), "
                          f"not '{getattr(space, 'name', space)}'; pass --space darts or --space nb201")
    return dict(space.alpha_shapes())


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


@register_strategy
class DartsStrategy(Strategy):
    """DARTS on a cell space with a supernet (first or second order)."""

    name = "darts"
    kind = "oneshot"
    description = "DARTS: softmax relaxation, bi-level gradient search (first/second order)"
    Config = DartsConfig
    #: names of the alpha groups (set per space by ``search``; ``arch_weights`` keys)
    groups: tuple[str, ...] = ("normal", "reduce")

    # --- the relaxation: subclasses (GDAS) change these two ------------------
    def edge_weights(self, alpha: Tensor) -> EdgeWeights:
        """Per-edge op weights from the architecture parameters: softmax (all ops run)."""
        return EdgeWeights(F.softmax(alpha, dim=-1))

    def epoch_started(self, epoch: int) -> None:
        """Hook for per-epoch schedules (e.g. a temperature)."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Extra values a subclass records with each epoch (e.g. the temperature)."""
        return {}

    # --- plumbing ---------------------------------------------------------
    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        return model(x, *(self.edge_weights(a) for a in self.alphas))

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.forward(model, x), y)

    def arch_weights(self) -> dict[str, list[list[float]]]:
        """Softmax of alpha per edge, for the record."""
        return {c: F.softmax(a.detach(), dim=-1).tolist() for c, a in zip(self.groups, self.alphas)}

    def derive(self, space: DartsSpace | OneShotSpace):
        return space.derive(*(F.softmax(a.detach(), dim=-1) for a in self.alphas))

    def build_supernet(self, space: DartsSpace | OneShotSpace, data: Dataset) -> nn.Module:
        return space.supernet(data.input_shape, data.num_classes, layers=self.config.layers,
                              channels=self.config.channels)

    def search(self, space: DartsSpace | OneShotSpace, data: Dataset, *, experiment: Experiment | None = None,
               progress: Progress | None = None, seed: int = 0,
               callbacks: Sequence[EpochCallback] = ()) -> SearchResult:
        """Run (or resume, when ``experiment`` holds a search checkpoint) the bi-level search."""
        shapes = alpha_shapes(space, self.name)
        cfg = self.config
        if cfg.early_stop == "dartsplus" and not isinstance(space, DartsSpace):
            raise ConfigError(f"strategy.early_stop=dartsplus reads the darts normal cell, not a '{space.name}' "
                              "architecture; use --space darts or strategy.early_stop=none")
        progress = progress or Progress()
        torch.manual_seed(seed)
        model = self.build_supernet(space, data)
        self.groups = tuple(shapes)
        self.alphas = [nn.Parameter(1e-3 * torch.randn(edges, ops)) for edges, ops in shapes.values()]
        w_opt = torch.optim.SGD(model.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_wd)
        a_opt = torch.optim.Adam(self.alphas, lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2), weight_decay=cfg.a_wd)
        (xw, yw), (xa, ya) = split_half(data.x_train, data.y_train, seed)

        start = 0
        if experiment is not None:
            start, _ = load_search_state(experiment, model, self.alphas, w_opt, a_opt)

        steps = min(num_batches(len(yw), cfg.batch_size), num_batches(len(ya), cfg.batch_size))
        history = experiment.store.epochs("search") if experiment is not None else []
        stopper = (DartsPlusStopper(cfg.early_stop_skips, cfg.early_stop_patience)
                   if cfg.early_stop == "dartsplus" else None)
        stopped = stopper.check(history) if stopper and history else None  # a resumed run that had stopped
        started = time.time()
        with progress.task(f"search ({self.name})", total=cfg.epochs * steps, completed=start * steps) as bar:
            for epoch in range(start if stopped is None else cfg.epochs, cfg.epochs):
                record = self._epoch(model, space, data, epoch, (xw, yw), (xa, ya), w_opt, a_opt, seed, bar)
                history.append(record)
                if experiment is not None:
                    experiment.store.log_epoch("search", epoch, record["metrics"], record["arch_weights"],
                                               record["arch"])
                    save_search_state(experiment, epoch, model, self.alphas, w_opt, a_opt)
                for cb in callbacks:
                    cb(self, epoch, record)
                stopped = stopper.check(history) if stopper else None
                if stopped is not None:
                    log.info("early stop (%s) at epoch %d: %s", stopped["criterion"], epoch, stopped["detail"])
                    break
        arch = self.derive(space)
        info = {"epochs": len(history), "seconds": time.time() - started, "early_stop": stopped}
        if experiment is not None:
            experiment.store.set_meta("early_stop", stopped)
        return SearchResult(arch, history, info)

    def _epoch(self, model: nn.Module, space: DartsSpace | OneShotSpace, data: Dataset, epoch: int, w_half, a_half,
               w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer, seed: int, bar: Any) -> dict[str, Any]:
        cfg = self.config
        lr = cosine_lr(epoch, cfg.epochs, cfg.w_lr, cfg.w_lr_min)
        for group in w_opt.param_groups:
            group["lr"] = lr
        self.epoch_started(epoch)
        torch.manual_seed(epoch_seed(seed, epoch))
        g_w = torch.Generator().manual_seed(epoch_seed(seed, epoch, 1))
        g_a = torch.Generator().manual_seed(epoch_seed(seed, epoch, 2))
        model.train()
        tic = time.time()
        sums = {"train_loss": 0.0, "train_acc": 0.0, "arch_loss": 0.0}
        n = 0
        batches = zip(iterate_batches(*w_half, cfg.batch_size, generator=g_w, augment=data.augment),
                      iterate_batches(*a_half, cfg.batch_size, generator=g_a, augment=data.augment))
        params = [p for p in model.parameters()]
        for step, (train_batch, valid_batch) in enumerate(batches):
            loss, train_acc, arch_loss = self.search_step(model, params, w_opt, a_opt, train_batch, valid_batch, lr)
            if not math.isfinite(loss) or not math.isfinite(arch_loss):
                raise TrainingError(f"search loss became NaN/inf at epoch {epoch} step {step}; lower the "
                                    f"learning rates (e.g. --set strategy.w_lr={cfg.w_lr / 4:g}); "
                                    "earlier epochs are checkpointed, resume after fixing the config")
            sums["train_loss"] += loss
            sums["train_acc"] += train_acc
            sums["arch_loss"] += arch_loss
            n += 1
            bar.advance(1, epoch=epoch, loss=loss)
        metrics = {k: v / max(n, 1) for k, v in sums.items()}
        metrics["valid_acc"] = self.evaluate(model, data.x_valid, data.y_valid, cfg.batch_size)
        metrics["lr"] = lr
        metrics.update(self.epoch_metrics())
        metrics["seconds"] = time.time() - tic
        arch = self.derive(space)
        bar.update(epoch=epoch, valid_acc=metrics["valid_acc"])
        log.info("search epoch %d: %s", epoch, metrics)
        return {"epoch": epoch, "metrics": metrics, "arch_weights": self.arch_weights(), "arch": arch.to_dict()}

    def search_step(self, model: nn.Module, params: Sequence[Tensor], w_opt: torch.optim.Optimizer,
                    a_opt: torch.optim.Optimizer, train_batch: tuple[Tensor, Tensor],
                    valid_batch: tuple[Tensor, Tensor], lr: float) -> tuple[float, float, float]:
        """One DARTS iteration: an architecture step on ``valid_batch``, then a weight step on
        ``train_batch``. Returns (train loss, train accuracy, architecture loss); the weight
        step is skipped when a loss is not finite (the caller reports it)."""
        cfg = self.config
        a_opt.zero_grad(set_to_none=True)
        if cfg.order == 2:
            momentum = [
                w_opt.state[p]["momentum_buffer"] * cfg.w_momentum
                if "momentum_buffer" in w_opt.state.get(p, {}) else None for p in params
            ]
            grads, arch_loss = unrolled_arch_grads(
                lambda b: self.loss(model, b), params, self.alphas, train_batch, valid_batch,
                lr, cfg.w_wd, momentum, cfg.unrolled_r)
        else:
            loss_v = self.loss(model, valid_batch)
            grads = torch.autograd.grad(loss_v, self.alphas)
            arch_loss = loss_v.detach()
            del loss_v  # free the graph now: parts not on the alphas' path keep activations alive
        for a, g in zip(self.alphas, grads):
            a.grad = g
        a_opt.step()
        w_opt.zero_grad(set_to_none=True)
        x, y = train_batch
        logits = self.forward(model, x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss) or not torch.isfinite(arch_loss):
            return float("nan"), 0.0, float("nan")
        apply_gradients(loss, w_opt, params, cfg.grad_clip)
        return loss.item(), accuracy(logits, y), arch_loss.item()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
        """Supernet accuracy on a held-out set with the current architecture weights."""
        model.eval()
        correct = 0
        for xb, yb in iterate_batches(x, y, max(batch_size, 256)):
            correct += (self.forward(model, xb).argmax(1) == yb).sum().item()
        model.train()
        return correct / max(len(y), 1)
