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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset, iterate_batches, num_batches, split_half
from nasforge.errors import ConfigError, TrainingError
from nasforge.experiment import Experiment
from nasforge.oneshot.binary import PathSample, rescale_two_paths, sample_one, sample_two, two_path_alpha_grad
from nasforge.progress import Progress
from nasforge.spaces.mbconv import MBConvSpace, MBConvSupernet
from nasforge.strategies.base import (EpochCallback, SearchResult, Strategy, load_search_state, register_strategy,
                                      save_search_state)
from nasforge.strategies.darts import accuracy, cosine_lr
from nasforge.utils import apply_gradients, epoch_seed

log = logging.getLogger(__name__)

TABLE_FILE = "latency_table.json"
TRADEOFF_FILE = "proxyless_tradeoff.json"
#: ``latency_weight`` left empty: per (estimator, loss form), from the official defaults.
DEFAULT_WEIGHTS = {("binary", "add"): 0.1, ("binary", "mul"): 0.3, ("reinforce", "add"): 0.1,
                   ("reinforce", "mul"): 0.1, ("binary", "none"): 0.0, ("reinforce", "none"): 0.0}


@dataclass
class ProxylessConfig:
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
    w_momentum: float = option(0.9, lo=0.0, hi=1.0, help="weight SGD momentum (Nesterov)")
    w_wd: float = option(4e-5, lo=0.0, hi=1.0, help="weight decay of the weights (paper 4e-5)")
    grad_clip: float = option(5.0, lo=0.0, hi=1e6, help="gradient-norm clip of the weights (0: off)")
    a_lr: float = option(0.02, lo=0.0, hi=10.0,
                         help="architecture Adam learning rate (paper 1e-3 over ~1e5 steps; small data has ~1e2)")
    a_beta1: float = option(0.0, lo=0.0, hi=1.0, help="architecture Adam beta1 (paper 0: no momentum)")
    a_beta2: float = option(0.999, lo=0.0, hi=1.0, help="architecture Adam beta2")
    a_eps: float = option(1e-8, lo=0.0, hi=1.0, help="architecture Adam eps")
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


class LatencyModel:
    """Per-layer latency vectors from a table: expected latency (differentiable) and bounds."""

    def __init__(self, space: MBConvSpace, table: Any):
        self.table = table
        self.base = table.overhead_ms + sum(table.get(k) for k in space.fixed_latency_keys())
        self.labels: list[str] = []
        self.vectors: list[Tensor] = []
        for label, keys in space.layer_latency_keys():
            self.labels.append(label)
            self.vectors.append(torch.tensor([0.0 if k is None else table.get(k) for k in keys.values()],
                                             dtype=torch.float64))

    def expected(self, probs: Sequence[Tensor]) -> Tensor:
        """``base + sum_layers sum_j p_j * lat_j`` (ms), differentiable in ``probs``."""
        total = torch.tensor(self.base, dtype=torch.float64)
        for p, v in zip(probs, self.vectors):
            total = total + (p.to(torch.float64) * v).sum()
        return total

    def of_indices(self, indices: Sequence[int]) -> float:
        """Latency (ms) of the network with op ``indices[l]`` at layer ``l``."""
        return float(self.base + sum(float(v[i]) for v, i in zip(self.vectors, indices)))

    @property
    def smallest(self) -> float:
        return float(self.base + sum(float(v.min()) for v in self.vectors))

    @property
    def largest(self) -> float:
        return float(self.base + sum(float(v.max()) for v in self.vectors))


def latency_penalty(ce: Tensor, expected_ms: Tensor, target_ms: float, form: str, weight: float,
                    alpha: float = 0.2) -> Tensor:
    """The architecture loss with a latency term: ``none`` (CE), ``add`` (CE + w E/T) or
    ``mul`` (alpha CE (log E_us / log T_us)^w, latencies in microseconds)."""
    if form == "none" or weight == 0.0 and form == "add":
        return ce
    e = expected_ms.to(ce.dtype)
    if form == "add":
        return ce + weight * e / target_ms
    if form == "mul":
        ratio = torch.log(e * 1000.0) / math.log(target_ms * 1000.0)
        return alpha * ce * ratio.clamp_min(1e-6) ** weight
    raise ConfigError(f"strategy.latency_loss={form!r} is not allowed; use one of ['none', 'add', 'mul']")


def _cycle(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator, augment: Any) -> Iterator:
    """Batches of an endless stream of shuffled epochs (one generator, so it replays exactly)."""
    while True:
        yield from iterate_batches(x, y, batch_size, generator=generator, augment=augment)


@register_strategy
class ProxylessStrategy(Strategy):
    """ProxylessNAS: binarized paths (one per weight step, two per architecture step), latency from a table."""

    name = "proxyless"
    kind = "oneshot"
    description = "ProxylessNAS: binarized paths, two-path or REINFORCE arch gradient, latency-table loss (mbconv)"
    Config = ProxylessConfig

    def __init__(self, config: ProxylessConfig | None = None):
        super().__init__(config)
        cfg = self.config
        if cfg.warmup_epochs is None and cfg.epochs is not None:
            cfg.warmup_epochs = cfg.epochs // 4
        if cfg.warmup_epochs is not None and cfg.epochs is not None and cfg.warmup_epochs >= cfg.epochs:
            raise ConfigError(f"strategy.warmup_epochs={cfg.warmup_epochs} leaves no search epoch of "
                              f"strategy.epochs={cfg.epochs}; lower warmup_epochs or raise epochs")
        self.alphas: list[nn.Parameter] = []
        self.latency: LatencyModel | None = None
        self.target_ms: float = 0.0
        self.baseline: float | None = None

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
    def load_table(self, space: MBConvSpace, data: Dataset, experiment: Experiment | None,
                   progress: Progress) -> Any:
        """The latency table: given, saved in the experiment (resume), or built now and saved."""
        from nasforge.hardware.lut import LatencyTable, build_table

        cfg = self.config
        saved = experiment.path / TABLE_FILE if experiment is not None else None
        if cfg.latency_table:
            table = LatencyTable.load(cfg.latency_table)
        elif saved is not None and saved.is_file():
            table = LatencyTable.load(saved)
        else:
            log.info("building the latency table of %s on %s", space.name, cfg.latency_device)
            table = build_table(space, data.input_shape, data.num_classes, device=cfg.latency_device,
                                threads=cfg.latency_threads, progress=progress)
            if saved is not None:
                table.save(saved)
            return table
        table.check(space, data.input_shape, cfg.latency_device)
        if saved is not None and not saved.is_file():
            table.save(saved)
        return table

    def setup_latency(self, space: MBConvSpace, table: Any) -> None:
        """Latency vectors from ``table``, the target (auto or checked against the smallest network)."""
        self.latency = model = LatencyModel(space, table)
        target = self.config.target_latency_ms
        if target is None:
            target = math.sqrt(model.smallest * model.largest)
        elif target < model.smallest:
            raise ConfigError(f"strategy.target_latency_ms={target:g} is below the smallest network of the space "
                              f"({model.smallest:.4f} ms on {table.device} by the latency table); "
                              f"set it to at least {model.smallest:.4f}")
        self.target_ms = float(target)

    # --- the loop -------------------------------------------------------------------
    def search(self, space: MBConvSpace, data: Dataset, *, experiment: Experiment | None = None,
               progress: Progress | None = None, seed: int = 0,
               callbacks: Sequence[EpochCallback] = ()) -> SearchResult:
        """Warm-up, then alternating weight and architecture steps; resumes from the experiment's checkpoint."""
        if not isinstance(space, MBConvSpace):
            raise ConfigError(f"strategy 'proxyless' needs the mbconv space (binarized MBConv layers), not "
                              f"'{space.name}'; pass --space mbconv")
        cfg = self.config
        if cfg.epochs is None or cfg.batch_size is None:
            raise ConfigError("strategy.epochs and strategy.batch_size must be set (make the strategy with "
                              "make_strategy to fill them from the dataset profile)")
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = cfg.epochs // 4
        progress = progress or Progress()
        self.baseline = None
        self.setup_latency(space, self.load_table(space, data, experiment, progress))
        torch.manual_seed(seed)
        model = space.supernet(data.input_shape, data.num_classes)
        self.alphas = [nn.Parameter(cfg.alpha_init_std * torch.randn(len(ops))) for ops in model.candidates]
        w_opt = torch.optim.SGD(model.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                nesterov=cfg.w_momentum > 0, weight_decay=cfg.w_wd)
        a_opt = torch.optim.Adam(self.alphas, lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2), eps=cfg.a_eps,
                                 weight_decay=cfg.a_wd)
        (xw, yw), (xa, ya) = split_half(data.x_train, data.y_train, seed)

        start = 0
        if experiment is not None:
            start, extra = load_search_state(experiment, model, self.alphas, w_opt, a_opt)
            self.baseline = extra.get("baseline", self.baseline)
            experiment.store.set_meta("latency_target_ms", self.target_ms)

        steps = num_batches(len(yw), cfg.batch_size)
        history = experiment.store.epochs("search") if experiment is not None else []
        started = time.time()
        with progress.task(f"search ({self.name})", total=cfg.epochs * steps, completed=start * steps) as bar:
            for epoch in range(start, cfg.epochs):
                record = self._epoch(model, space, data, epoch, (xw, yw), (xa, ya), w_opt, a_opt, seed, bar)
                history.append(record)
                if experiment is not None:
                    experiment.store.log_epoch("search", epoch, record["metrics"], record["arch_weights"],
                                               record["arch"])
                    save_search_state(experiment, epoch, model, self.alphas, w_opt, a_opt, baseline=self.baseline)
                for cb in callbacks:
                    cb(self, epoch, record)
        arch = self.derive(space)
        info = {"epochs": len(history), "seconds": time.time() - started, "grad_estimator": cfg.grad_estimator,
                "latency_loss": cfg.latency_loss, "target_latency_ms": self.target_ms,
                "predicted_latency_ms": self.latency.of_indices(self.derive_indices()),
                "smallest_latency_ms": self.latency.smallest, "largest_latency_ms": self.latency.largest,
                "latency_device": cfg.latency_device}
        return SearchResult(arch, history, info)

    def _epoch(self, model: MBConvSupernet, space: MBConvSpace, data: Dataset, epoch: int, w_half, a_half,
               w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer, seed: int, bar: Any) -> dict[str, Any]:
        cfg = self.config
        lr = cosine_lr(epoch, cfg.epochs, cfg.w_lr, cfg.w_lr_min)
        for group in w_opt.param_groups:
            group["lr"] = lr
        warmup = epoch < cfg.warmup_epochs
        torch.manual_seed(epoch_seed(seed, epoch))
        g_w = torch.Generator().manual_seed(epoch_seed(seed, epoch, 1))
        g_a = torch.Generator().manual_seed(epoch_seed(seed, epoch, 2))
        valid_stream = _cycle(*a_half, cfg.batch_size, g_a, data.augment)
        model.train()
        tic = time.time()
        sums = {"train_loss": 0.0, "train_acc": 0.0, "arch_loss": 0.0}
        n = n_arch = 0
        params = list(model.parameters())
        for step, batch in enumerate(iterate_batches(*w_half, cfg.batch_size, generator=g_w, augment=data.augment)):
            loss, acc = self.weight_step(model, params, w_opt, batch)
            if not math.isfinite(loss):
                raise TrainingError(f"search loss became NaN/inf at epoch {epoch} step {step}; lower the learning "
                                    f"rate (e.g. --set strategy.w_lr={cfg.w_lr / 4:g}); earlier epochs are "
                                    "checkpointed, resume after fixing the config")
            sums["train_loss"] += loss
            sums["train_acc"] += acc
            n += 1
            if not warmup and (step + 1) % cfg.arch_every == 0:
                value = self.arch_step(model, a_opt, next(valid_stream))
                if not math.isfinite(value):
                    raise TrainingError(f"architecture loss became NaN/inf at epoch {epoch} step {step}; lower "
                                        f"strategy.a_lr (now {cfg.a_lr:g}) and resume")
                sums["arch_loss"] += value
                n_arch += 1
            bar.advance(1, epoch=epoch, loss=loss)
        metrics: dict[str, Any] = {"train_loss": sums["train_loss"] / max(n, 1),
                                   "train_acc": sums["train_acc"] / max(n, 1)}
        if n_arch:
            key = "arch_reward" if cfg.grad_estimator == "reinforce" else "arch_loss"
            metrics[key] = sums["arch_loss"] / n_arch
        metrics["valid_acc"] = self.evaluate(model, data.x_valid, data.y_valid)
        with torch.no_grad():
            metrics["expected_latency_ms"] = float(self.latency.expected(self.probs()))
        metrics["derived_latency_ms"] = self.latency.of_indices(self.derive_indices())
        metrics["target_latency_ms"] = self.target_ms
        metrics["entropy"] = self.entropy()
        metrics["phase"] = "warmup" if warmup else "search"
        metrics["lr"] = lr
        metrics["seconds"] = time.time() - tic
        arch = self.derive(space)
        bar.update(epoch=epoch, valid_acc=metrics["valid_acc"], lat=metrics["expected_latency_ms"])
        log.info("search epoch %d: %s", epoch, metrics)
        return {"epoch": epoch, "metrics": metrics, "arch_weights": self.arch_weights(space), "arch": arch.to_dict()}

    # --- steps ------------------------------------------------------------------------
    def weight_step(self, model: MBConvSupernet, params: Sequence[Tensor], w_opt: torch.optim.Optimizer,
                    batch: tuple[Tensor, Tensor]) -> tuple[float, float]:
        """One path per layer from softmax(alpha); only those ops run and get gradients (SGD skips the rest)."""
        x, y = batch
        paths = [PathSample(sample_one(a)) for a in self.alphas]
        w_opt.zero_grad(set_to_none=True)
        logits = model(x, paths)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            return float("nan"), 0.0
        apply_gradients(loss, w_opt, params, self.config.grad_clip)
        return loss.item(), accuracy(logits, y)

    def arch_step(self, model: MBConvSupernet, a_opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> float:
        """One architecture update; returns the architecture loss (binary) or the mean reward (reinforce)."""
        if self.config.grad_estimator == "reinforce":
            return self.reinforce_step(model, a_opt, batch)
        return self.binary_step(model, a_opt, batch)

    def binary_step(self, model: MBConvSupernet, a_opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> float:
        """Two sampled paths per layer, binary gates, the paper's alpha gradient, Adam, re-offset."""
        cfg = self.config
        x, y = batch
        pairs = [sample_two(a) for a in self.alphas]
        gates = [torch.tensor([1.0, 0.0], requires_grad=True) for _ in pairs]
        paths = [PathSample(act, inact, g) for (act, inact), g in zip(pairs, gates)]
        ce = F.cross_entropy(model(x, paths), y)
        latency_grads: list[Tensor | None] = [None] * len(self.alphas)
        if cfg.latency_loss != "none":
            pair_probs = []
            for a, (i, j) in zip(self.alphas, pairs):
                p = F.softmax(a[[i, j]], dim=-1)
                pair_probs.append(torch.zeros_like(a).index_put((torch.tensor([i, j]),), p))
            loss = latency_penalty(ce, self.latency.expected(pair_probs), self.target_ms, cfg.latency_loss,
                                   cfg.latency_weight, cfg.latency_alpha)
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
                acc = accuracy(model(x, [PathSample(i) for i in indices]), y)
            lat = self.latency.of_indices(indices)
            if cfg.latency_loss == "mul":
                reward = acc * (self.target_ms / lat) ** cfg.latency_weight
            elif cfg.latency_loss == "add":
                reward = acc - cfg.latency_weight * lat / self.target_ms
            else:
                reward = acc
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

    @torch.no_grad()
    def evaluate(self, model: MBConvSupernet, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
        """Accuracy of the derived network inside the supernet (BN in train mode, as the official code
        validates: running statistics mix the sampled paths)."""
        paths = [PathSample(i) for i in self.derive_indices()]
        model.train()
        correct = 0
        for xb, yb in iterate_batches(x, y, batch_size):
            correct += (model(xb, paths).argmax(1) == yb).sum().item()
        return correct / max(len(y), 1)
