"""DARTS: differentiable architecture search (Liu, Simonyan & Yang, ICLR 2019).

Algorithm (the paper's Algorithm 1), per step:
  1. update the architecture parameters alpha by descending the validation loss
     L_val(w - xi * grad_w L_train(w, alpha), alpha)   (second order), or
     L_val(w, alpha)                                      (first order, xi = 0);
  2. update the weights w by descending L_train(w, alpha).
The training set is split in half: one half for w, the other for alpha. After the
search, each node keeps its two strongest non-zero incoming edges.

The bi-level loop itself (halves, optimisers, schedule, records, checkpoints) is the shared
one of ``nasforge.oneshot.loop``; this file holds the relaxation and the architecture step.
Any space written with choice modules (``nasforge.nn``) can be searched: the relaxation
(``nasforge.oneshot.relax``) keeps one alpha per label (darts: one ``[inputs, ops]`` matrix per
node of the normal and the reduction cell, shared by all cells of that type) and sets softmax
weights before every forward pass; each choice module derives its own values (the DARTS node:
top-2 inputs by their strongest non-``none`` op).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.config import option
from nasforge.data import Dataset
from nasforge.oneshot.loop import OneShotConfig
from nasforge.oneshot.relax import Relaxation
from nasforge.spaces.modular import ModuleSpace
from nasforge.strategies.base import register_strategy
from nasforge.strategies.oneshot import OneShotStrategy
from nasforge.strategies.stopping import DartsPlusStopper, dartsplus_stopper


@dataclass
class DartsConfig(OneShotConfig):
    epochs: int | None = option(None, lo=1, hi=100000, help="search epochs (auto: dataset profile; paper 50)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto; paper 64)")
    layers: int | None = option(None, lo=3, hi=64, help="supernet cells (auto; paper 8)")
    channels: int | None = option(None, lo=2, hi=1024, help="supernet initial channels (auto; paper 16)")
    order: int = option(1, choices=(1, 2), help="1: first-order approximation, 2: unrolled second order")
    unrolled_r: float = option(0.01, lo=1e-8, hi=1.0, help="finite-difference scale of the Hessian-vector product")
    early_stop: str = option("none", choices=("none", "dartsplus"),
                             help="stopping policy: none, or dartsplus (stop at 2 skip-connects in the normal cell "
                                  "or a stable ranking of the learnable ops; any space with choice modules)")
    early_stop_skips: int = option(2, lo=1, hi=64, help="DARTS+ criterion 1: skip-connects in the normal cell")
    early_stop_patience: int = option(10, lo=1, hi=100000,
                                      help="DARTS+ criterion 2: epochs the learnable ops' ranking must stay unchanged")


def needs_choice_modules(name: str, space: Any) -> str | None:
    """The capability of the gradient one-shot methods: a space written with choice modules."""
    if isinstance(space, ModuleSpace):
        return None
    return (f"strategy '{name}' relaxes a space written with choice modules (darts, nb201, mbconv, or your own "
            f"--space file.py:name); '{getattr(space, 'name', space)}' has its own grammar instead: use "
            "random, evolution, reinforce or metaqnn on it")


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


@register_strategy
class DartsStrategy(OneShotStrategy):
    """DARTS on a cell space with a supernet (first or second order)."""

    name = "darts"
    description = "DARTS: softmax relaxation, bi-level gradient search (first/second order)"
    Config = DartsConfig
    schedule = "paired"
    arch_first = True  # the paper's Algorithm 1: alpha on a valid batch, then w on a train batch
    samples_subnetworks = False  # every op of the relaxed supernet runs

    @classmethod
    def supports(cls, space: Any) -> str | None:
        return needs_choice_modules(cls.name, space)

    # --- the relaxation: subclasses (GDAS) change this ------------------------
    def decide(self) -> None:
        """Set every label's decision for the next forward pass: softmax weights (all ops run)."""
        self.relax.soft()

    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        self.decide()
        return model(x)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        with self.engine.autocast():
            return F.cross_entropy(self.forward(model, x), y)

    # --- what the loop asks -----------------------------------------------------
    def build_supernet(self, space: ModuleSpace, data: Dataset) -> nn.Module:
        return space.supernet(data.input_shape, data.num_classes, layers=self.config.layers,
                              channels=self.config.channels)

    def init_arch(self, space: Any, model: nn.Module) -> None:
        self.relax = Relaxation(model, self.engine.device)

    @property
    def alphas(self) -> list[nn.Parameter]:
        return self.relax.parameters()

    def arch_parameters(self) -> list[Tensor]:
        return self.relax.parameters()

    def train_forward(self, model: nn.Module, x: Tensor, warm: bool) -> Tensor:
        return self.forward(model, x)

    def eval_forward(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        return lambda x: self.forward(model, x)

    def arch_weights(self, space: Any = None) -> dict[str, list[list[float]]]:
        """Softmax of alpha per row, by record group (a cell type's edges), for the record."""
        return self.relax.weights_record()

    def derive(self, space: ModuleSpace):
        return space.arch(self.relax.derive())

    def stopper(self) -> DartsPlusStopper | None:
        """DARTS+ (``early_stop=dartsplus``) on the relaxed space: its op names, its normal cell."""
        cfg = self.config
        if cfg.early_stop != "dartsplus":
            return None
        return dartsplus_stopper(self.relax, cfg.early_stop_skips, cfg.early_stop_patience)

    def arch_step(self, model: nn.Module, batch: tuple[Tensor, Tensor],
                  train_batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """The architecture step: gradient of the valid loss w.r.t. alpha (first order) or the
        unrolled second-order gradient (through a virtual weight step on ``train_batch``), then Adam."""
        cfg = self.config
        self.a_opt.zero_grad(set_to_none=True)
        if cfg.order == 2:
            w_opt = self.w_opt
            params = [p for g in w_opt.param_groups for p in g["params"]]
            momentum = [
                w_opt.state[p]["momentum_buffer"] * cfg.w_momentum
                if "momentum_buffer" in w_opt.state.get(p, {}) else None for p in params
            ]
            grads, arch_loss = unrolled_arch_grads(
                lambda b: self.loss(model, b), params, self.alphas, train_batch, batch,
                self.lr, cfg.w_wd, momentum, cfg.unrolled_r)
        else:
            loss_v = self.loss(model, batch)
            grads = self.engine.grad(loss_v, self.alphas)
            arch_loss = loss_v.detach()
            del loss_v  # free the graph now: parts not on the alphas' path keep activations alive
        if not torch.isfinite(arch_loss):
            return {"arch_loss": float("nan")}
        for a, g in zip(self.alphas, grads):
            a.grad = g
        self.a_opt.step()
        return {"arch_loss": arch_loss.item()}


# --- the paper's settings (``--preset paper``) --------------------------------------------------
from nasforge.presets import register_preset  # noqa: E402

_DARTS_SOURCE = "DARTS paper (Liu et al. 2019) sec. 3.1-3.2, A.1; quark0/darts cnn/train_search.py, cnn/train.py"
_DARTS_CIFAR = {
    # 25k/25k: CIFAR-10's 50k training images halved, no held-out valid split during search
    "data": {"valid_fraction": 0.0},
    "strategy": {"epochs": 50, "batch_size": 64, "layers": 8, "channels": 16, "order": 2,
                 "w_lr": 0.025, "w_lr_min": 0.001, "w_momentum": 0.9, "w_wd": 3e-4, "grad_clip": 5.0,
                 "a_lr": 3e-4, "a_wd": 1e-3, "a_beta1": 0.5, "a_beta2": 0.999},
    "train": {"epochs": 600, "batch_size": 96, "layers": 20, "channels": 36, "lr": 0.025, "lr_min": 0.0,
              "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0, "cutout": 16, "drop_path": 0.2,
              "auxiliary": True, "auxiliary_weight": 0.4, "train_on": "train+valid"},
}
register_preset("paper", "darts", "cifar10", _DARTS_CIFAR, sources={"*": _DARTS_SOURCE},
                note="second order (the paper's best cell); first order: --set strategy.order=1")

# DARTS+ (Liang et al. 2019): DARTS's search with early stopping; the paper searched CIFAR-10 and CIFAR-100
# with DARTS's settings. Its CIFAR-100 setting is the paper preset for CIFAR-100 (DARTS itself has none).
_DARTSPLUS_SOURCE = "DARTS+ paper (Liang et al. 2019, arXiv 1909.06035) sec. 3-4: DARTS's settings, stopped early"
_DARTSPLUS = {**_DARTS_CIFAR, "strategy": {**_DARTS_CIFAR["strategy"], "early_stop": "dartsplus",
                                           "early_stop_skips": 2, "early_stop_patience": 10}}
_DARTSPLUS_NOTE = ("DARTS+: DARTS's CIFAR settings with its early stop (2 skip-connects in the normal cell, or the "
                   "learnable ops' ranking stable for 10 epochs)")
register_preset("paper", "darts", "cifar100", _DARTSPLUS, sources={"*": _DARTS_SOURCE,
                                                                   "strategy.early_stop": _DARTSPLUS_SOURCE},
                note=_DARTSPLUS_NOTE + "; DARTS has no CIFAR-100 setting of its own")
for _dataset in ("cifar10", "cifar100"):
    register_preset("dartsplus", "darts", _dataset, _DARTSPLUS,
                    sources={"*": _DARTS_SOURCE, "strategy.early_stop": _DARTSPLUS_SOURCE}, note=_DARTSPLUS_NOTE)
