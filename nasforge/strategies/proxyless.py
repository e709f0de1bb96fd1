"""ProxylessNAS: direct architecture search on the target task and hardware
(Cai, Zhu & Han, ICLR 2019), on the MBConv layer-wise space (``nasforge.spaces.mbconv``).

Per searchable layer the strategy owns an architecture vector ``alpha`` (one entry per
candidate op). Training alternates, on the two halves of the training split:

- **weight step** (train half): one path per layer sampled from ``softmax(alpha)``; only
  that op runs (memory of one compact network); SGD (momentum 0.9, Nesterov, cosine lr).
- **architecture step** (valid half, every ``arch_every`` weight steps, after the
  ``warmup_epochs`` where only weights train), by one of two estimators
  (``grad_estimator``):

  * ``binary`` (the paper's gradient, its code's ``two`` mode): two paths per layer, a
    binary gate over them, ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` on the two
    sampled alphas, an Adam step (betas (0, 0.999): an alpha with no gradient does not
    move), then both re-offset so every unsampled op keeps its probability
    (``nasforge.oneshot.binary``).
  * ``reinforce``: ``rl_samples`` networks (one path per layer) scored on a valid batch;
    reward = accuracy (times the latency term), moving-average baseline
    ``b += rl_baseline_decay * (mean reward - b)`` (the official update), gradient
    ``-(r - b) * grad log p(path)`` averaged over the samples, Adam.

The bi-level loop is the shared one (``nasforge.oneshot.loop``, schedule ``every``); the
loss forms and the table loading are ``nasforge.hardware.penalty``'s.

**Latency** comes from a lookup table (``nasforge.hardware.lut``) of the space on
``latency_device``: the expected latency of the supernet is
``E[lat] = overhead + fixed parts + sum_layers sum_j p_j * table(op j at that layer)``
(``zero`` costs nothing), differentiable in alpha. In the binary architecture step ``p``
is, as in the official code, the softmax over each layer's two sampled ops (zeros
elsewhere), so the latency gradient touches only the sampled alphas and the re-offset
keeps holding; the recorded per-epoch ``expected_latency_ms`` uses the full softmax.
Loss forms (``latency_loss``):

- ``add``: ``CE + latency_weight * E[lat] / target`` (the official ``add#linear``
  ``lambda * (E - T) / T`` up to a constant; default weight 0.1);
- ``mul``: ``latency_alpha * CE * (log E[lat] / log target) ^ latency_weight`` (the
  official ``mul#log``, alpha 0.2, beta 0.3), with both latencies in **microseconds** so
  that the logs are positive for any network (the official code uses ms on phones, where
  latencies are tens of ms; networks of small images run under 1 ms);
- REINFORCE rewards: ``acc * (target / lat) ^ latency_weight`` (mul; official
  ``rl_tradeoff_ratio`` 0.1) or ``acc - latency_weight * lat / target`` (add).

The table is loaded from ``latency_table`` (checked against the space, input shape and
device), or else built at search start on ``latency_device`` and saved as
``DIR/latency_table.json`` (reused on resume). ``target_latency_ms`` left empty takes the
geometric mean of the smallest and the largest network of the space; a target below the
smallest network is refused.

Defaults from the official search script (``imagenet_arch_search.py``): weights SGD
lr 0.025, momentum 0.9, Nesterov, weight decay 4e-5, cosine; architecture Adam lr 1e-3,
betas (0, 0.999), eps 1e-8, no weight decay, init N(0, 1e-3). Scaled for small data: the
official 40 warm-up epochs before 120 search epochs become a quarter of ``epochs``
(auto), architecture updates run after every weight step (official: every 5, on
ImageNet's thousands of steps per epoch), label smoothing is not used, a gradient clip
of 5 guards the weights; the REINFORCE variant updates once per architecture step with
``rl_samples`` (official 10) networks. Derivation: per layer the op with the largest alpha.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware.penalty import TABLE_FILE, LatencyPenalty, LayerLatency, load_or_build_table
from nasforge.oneshot.binary import PathSample, rescale_two_paths, sample_one, sample_two, two_path_alpha_grad
from nasforge.oneshot.loop import OneShotConfig
from nasforge.progress import Progress
from nasforge.spaces.mbconv import MBConvSpace, MBConvSupernet
from nasforge.strategies.base import register_strategy
from nasforge.strategies.oneshot import OneShotStrategy

log = logging.getLogger(__name__)

__all__ = ["TABLE_FILE", "TRADEOFF_FILE", "ProxylessConfig", "ProxylessStrategy"]

TRADEOFF_FILE = "proxyless_tradeoff.json"
#: ``latency_weight`` left empty: per (estimator, loss form), from the official defaults.
DEFAULT_WEIGHTS = {("binary", "add"): 0.1, ("binary", "mul"): 0.3, ("reinforce", "add"): 0.1,
                   ("reinforce", "mul"): 0.1, ("binary", "none"): 0.0, ("reinforce", "none"): 0.0}


@dataclass
class ProxylessConfig(OneShotConfig):
    epochs: int | None = option(None, lo=1, hi=100000, help="epochs, warm-up included (auto: dataset profile)")
    warmup_epochs: int | None = option(None, lo=0, hi=100000,
                                       help="first epochs that train only the weights (auto: a quarter of epochs; "
                                            "paper 40 before 120)")
    batch_size: int | None = option(32, lo=1, hi=65536,
                                    help="batch size (paper 256 on ImageNet; 32 gives small data enough steps)")
    grad_estimator: str = option("binary", choices=("binary", "reinforce"),
                                 help="architecture gradient: binary (two-path gates) or reinforce")
    w_lr: float = option(0.05, lo=0.0, hi=10.0,
                         help="weight SGD learning rate (cosine-annealed; paper 0.05 warm-up, 0.025 search)")
    w_lr_min: float = option(0.0, lo=0.0, hi=10.0, help="final weight learning rate")
    w_nesterov: bool = option(True, help="Nesterov momentum for the weights (paper: on)")
    w_wd: float = option(4e-5, lo=0.0, hi=1.0, help="weight decay of the weights (paper 4e-5)")
    a_lr: float = option(0.02, lo=0.0, hi=10.0,
                         help="architecture Adam learning rate (paper 1e-3 over ~1e5 steps; small data has ~1e2)")
    a_beta1: float = option(0.0, lo=0.0, hi=1.0, help="architecture Adam beta1 (paper 0: no momentum)")
    a_wd: float = option(0.0, lo=0.0, hi=1.0, help="architecture weight decay (paper 0)")
    alpha_init_std: float = option(1e-3, lo=0.0, hi=10.0, help="std of the normal init of alpha (paper 1e-3)")
    arch_every: int = option(1, lo=1, hi=100000, help="weight steps per architecture step (paper 5 on ImageNet)")
    latency_loss: str = option("mul", choices=("none", "add", "mul"),
                               help="latency term: none, add (CE + w*E/T) or mul (a*CE*(log E/log T)^w)")
    latency_weight: float | None = option(None, lo=0.0, hi=1e6,
                                          help="add: lambda, mul: exponent beta (auto: 0.1 add, 0.3 mul; "
                                               "reinforce 0.1)")
    latency_alpha: float = option(0.2, lo=1e-6, hi=1e6, help="mul: factor of the loss (paper 0.2)")
    target_latency_ms: float | None = option(None, lo=1e-6, hi=1e7,
                                             help="target latency in ms (auto: geometric mean of the smallest "
                                                  "and largest network)")
    latency_device: str = option("cpu", choices=("cpu", "cuda", "onnxruntime"),
                                 help="device the latency table is measured on")
    latency_table: str | None = option(None, help="a table from 'nasforge latency' (auto: build one at search start)")
    latency_threads: int | None = option(None, lo=1, hi=1024, help="CPU threads while building the table")
    rl_samples: int = option(10, lo=1, hi=10000, help="reinforce: networks sampled per architecture step (paper 10)")
    rl_baseline_decay: float = option(0.99, lo=0.0, hi=1.0,
                                      help="reinforce: baseline step b += d * (reward - b) (paper 0.99)")

    def __post_init__(self) -> None:
        if self.latency_weight is None:
            self.latency_weight = DEFAULT_WEIGHTS[(self.grad_estimator, self.latency_loss)]


@register_strategy
class ProxylessStrategy(OneShotStrategy):
    """ProxylessNAS: binarized paths (one per weight step, two per architecture step), latency from a table."""

    name = "proxyless"
    description = "ProxylessNAS: binarized paths, two-path or REINFORCE arch gradient, latency-table loss (mbconv)"
    Config = ProxylessConfig
    schedule = "every"

    def __init__(self, config: ProxylessConfig | None = None):
        super().__init__(config)
        cfg = self.config
        if cfg.warmup_epochs is None and cfg.epochs is not None:
            cfg.warmup_epochs = cfg.epochs // 4
        if cfg.warmup_epochs is not None and cfg.epochs is not None and cfg.warmup_epochs >= cfg.epochs:
            raise ConfigError(f"strategy.warmup_epochs={cfg.warmup_epochs} leaves no search epoch of "
                              f"strategy.epochs={cfg.epochs}; lower warmup_epochs or raise epochs")
        self.alphas: list[nn.Parameter] = []
        self.latency: LayerLatency | None = None
        self.penalty = LatencyPenalty()
        self.target_ms: float = 0.0
        self.baseline: float | None = None
        self.warm = False

    @classmethod
    def supports(cls, space: Any) -> str | None:
        if isinstance(space, MBConvSpace):
            return None
        return (f"strategy 'proxyless' needs the mbconv space (binarized layer choices with per-layer latency "
                f"keys), not '{getattr(space, 'name', space)}'; pass --space mbconv")

    # --- architecture parameters ----------------------------------------------------
    def probs(self) -> list[Tensor]:
        return [F.softmax(a, dim=-1) for a in self.alphas]

    def derive_indices(self) -> list[int]:
        """Per layer the op with the largest alpha."""
        return [int(a.detach().argmax()) for a in self.alphas]

    def derive(self, space: MBConvSpace) -> Arch:
        specs = space.layer_specs()
        return space.shape_arch({s.label: s.ops[i] for s, i in zip(specs, self.derive_indices())})

    def arch_weights(self, space: MBConvSpace) -> dict[str, Any]:
        """Op probabilities per layer, for the record: ``{"layers": {label: {op: p}}}``."""
        return {"layers": {s.label: dict(zip(s.ops, p.detach().tolist()))
                           for s, p in zip(space.layer_specs(), self.probs())}}

    def entropy(self) -> float:
        return float(sum(-(p * p.clamp_min(1e-12).log()).sum() for p in self.probs()).detach()) / max(len(self.alphas), 1)

    # --- latency ------------------------------------------------------------------
    def setup_latency(self, space: MBConvSpace, table: Any) -> None:
        """Latency vectors from ``table``, the target (auto or checked against the smallest network)."""
        cfg = self.config
        self.latency = model = LayerLatency(space, table, self.engine.device)
        target = cfg.target_latency_ms
        if target is None:
            target = math.sqrt(model.smallest * model.largest)
        elif target < model.smallest:
            raise ConfigError(f"strategy.target_latency_ms={target:g} is below the smallest network of the space "
                              f"({model.smallest:.4f} ms on {table.device} by the latency table); "
                              f"set it to at least {model.smallest:.4f}")
        self.target_ms = float(target)
        self.penalty = LatencyPenalty(cfg.latency_loss, cfg.latency_weight, self.target_ms, cfg.latency_alpha)

    # --- the loop's hooks -------------------------------------------------------------
    def setup(self, space: MBConvSpace, data: Dataset, experiment: Experiment | None, progress: Progress) -> None:
        cfg = self.config
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = cfg.epochs // 4
        self.baseline = None
        self.setup_latency(space, load_or_build_table(space, data, cfg.latency_device, table=cfg.latency_table,
                                                      experiment=experiment, threads=cfg.latency_threads,
                                                      progress=progress))
        if experiment is not None:
            experiment.store.set_meta("latency_target_ms", self.target_ms)

    def build_supernet(self, space: MBConvSpace, data: Dataset) -> nn.Module:
        return space.supernet(data.input_shape, data.num_classes)

    def init_arch(self, space: MBConvSpace, model: nn.Module) -> None:
        self.alphas = [self.new_arch_param(len(ops), std=self.config.alpha_init_std) for ops in model.candidates]

    def arch_parameters(self) -> list[Tensor]:
        return list(self.alphas)

    def warmup_epochs(self) -> int:
        return self.config.warmup_epochs

    def arch_every(self) -> int:
        return self.config.arch_every

    def epoch_started(self, epoch: int) -> None:
        self.warm = epoch < self.config.warmup_epochs

    def extra_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.baseline = state.get("baseline", self.baseline)

    def epoch_metrics(self) -> dict[str, Any]:
        with torch.no_grad():
            expected = float(self.latency.expected(self.probs()))
        return {"expected_latency_ms": expected, "derived_latency_ms": self.latency.of_indices(self.derive_indices()),
                "target_latency_ms": self.target_ms, "entropy": self.entropy(),
                "phase": "warmup" if self.warm else "search"}

    def search_info(self, space: MBConvSpace, experiment: Experiment | None) -> dict[str, Any]:
        cfg = self.config
        return {"grad_estimator": cfg.grad_estimator, "latency_loss": cfg.latency_loss,
                "target_latency_ms": self.target_ms,
                "predicted_latency_ms": self.latency.of_indices(self.derive_indices()),
                "smallest_latency_ms": self.latency.smallest, "largest_latency_ms": self.latency.largest,
                "latency_device": cfg.latency_device}

    def eval_forward(self, model: MBConvSupernet) -> Callable[[Tensor], Tensor]:
        """The derived network inside the supernet."""
        paths = [PathSample(i) for i in self.derive_indices()]
        return lambda x: model(x, paths)

    # --- steps ------------------------------------------------------------------------
    def train_forward(self, model: MBConvSupernet, x: Tensor, warm: bool) -> Tensor:
        """One path per layer from softmax(alpha); only those ops run and get gradients (SGD skips the rest)."""
        return model(x, [PathSample(sample_one(a)) for a in self.alphas])

    def arch_step(self, model: MBConvSupernet, batch: tuple[Tensor, Tensor],
                  train_batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """One architecture update: the architecture loss (binary) or the mean reward (reinforce)."""
        if self.config.grad_estimator == "reinforce":
            return {"arch_reward": self.reinforce_step(model, self.a_opt, batch)}
        return {"arch_loss": self.binary_step(model, self.a_opt, batch)}

    def binary_step(self, model: MBConvSupernet, a_opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> float:
        """Two sampled paths per layer, binary gates, the paper's alpha gradient, Adam, re-offset."""
        x, y = batch
        device = x.device
        pairs = [sample_two(a) for a in self.alphas]
        gates = [torch.tensor([1.0, 0.0], requires_grad=True, device=device) for _ in pairs]
        paths = [PathSample(act, inact, g) for (act, inact), g in zip(pairs, gates)]
        with self.engine.autocast():
            ce = F.cross_entropy(model(x, paths), y)
        latency_grads: list[Tensor | None] = [None] * len(self.alphas)
        if self.penalty.active:
            pair_probs = []
            for a, (i, j) in zip(self.alphas, pairs):
                p = F.softmax(a[[i, j]], dim=-1)
                pair_probs.append(torch.zeros_like(a).index_put((torch.tensor([i, j], device=a.device),), p))
            loss = self.penalty(ce, self.latency.expected(pair_probs))
            out = torch.autograd.grad(loss, gates + list(self.alphas), allow_unused=True)
            gate_grads, latency_grads = out[:len(gates)], list(out[len(gates):])
        else:
            loss = ce
            gate_grads = torch.autograd.grad(loss, gates)
        if not torch.isfinite(loss):
            return float("nan")
        old = []
        for a, (i, j), gg, lg in zip(self.alphas, pairs, gate_grads, latency_grads):
            grad = two_path_alpha_grad(a, (i, j), gg)
            if lg is not None:
                grad = grad + lg
            a.grad = grad
            old.append(a.detach()[[i, j]].clone())
        a_opt.step()
        for a, pair, before in zip(self.alphas, pairs, old):
            rescale_two_paths(a, pair, before)
        a_opt.zero_grad(set_to_none=True)
        return loss.item()

    def reinforce_step(self, model: MBConvSupernet, a_opt: torch.optim.Optimizer,
                       batch: tuple[Tensor, Tensor]) -> float:
        """REINFORCE over ``rl_samples`` single-path networks, reward from valid accuracy and latency."""
        cfg = self.config
        x, y = batch
        rewards, grads = [], []
        for _ in range(cfg.rl_samples):
            indices = [sample_one(a) for a in self.alphas]
            with torch.no_grad():
                acc = (model(x, [PathSample(i) for i in indices]).argmax(1) == y).float().mean().item()
            reward = self.penalty.reward(acc, self.latency.of_indices(indices))
            log_prob = sum(F.log_softmax(a, dim=-1)[i] for a, i in zip(self.alphas, indices))
            grads.append(torch.autograd.grad(-log_prob, self.alphas))
            rewards.append(reward)
        mean = sum(rewards) / len(rewards)
        self.baseline = mean if self.baseline is None else self.baseline + cfg.rl_baseline_decay * (mean - self.baseline)
        for k, a in enumerate(self.alphas):
            a.grad = sum((r - self.baseline) * g[k] for r, g in zip(rewards, grads)) / len(rewards)
        a_opt.step()
        a_opt.zero_grad(set_to_none=True)
        return mean

