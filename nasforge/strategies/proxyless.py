"""ProxylessNAS: direct architecture search on the target task and hardware
(Cai, Zhu & Han, ICLR 2019): the paper's MBConv layer-wise space (``nasforge.spaces.mbconv``),
and any other space written with choice modules (darts, nb201, users' spaces).

Per choice (a layer; an edge of a cell) the strategy owns an architecture row ``alpha``
(one entry per candidate; ``nasforge.oneshot.relax``). Training alternates, on the two
halves of the training split:

- **weight step** (train half): one path per choice sampled from ``softmax(alpha)``; only
  that candidate runs (memory of one compact network); SGD (momentum 0.9, Nesterov, cosine lr).
- **architecture step** (valid half, every ``arch_every`` weight steps, after the
  ``warmup_epochs`` where only weights train and ``arch_delay_epochs`` more), by one of
  three estimators (``grad_estimator``):

  * ``binary`` (the paper's gradient, its code's ``two`` mode): two paths per choice, a
    binary gate over them, ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` on the two
    sampled alphas, an Adam step (betas (0, 0.999): an alpha with no gradient does not
    move), then both re-offset so every unsampled op keeps its probability
    (``nasforge.oneshot.binary``). A choice whose active op is ``zero`` is not updated
    (official ``set_arch_param_grad``).
  * ``full_v2`` (the official script's default): one path per choice runs; after the
    backward every candidate's gate gradient ``<o_k(x), dL/dy>`` (``o_k`` without autograd
    on the choice's input), the alpha gradient over the full softmax, plus the latency
    term's; Adam, no re-offset (``full_v2_step``; single-op choices only).
  * ``reinforce``: ``rl_samples`` networks (one path per choice) scored on a valid batch;
    reward = accuracy (times the latency term), moving-average baseline
    ``b += rl_baseline_decay * (mean reward - b)`` (the official update), gradient
    ``-(r - b) * grad log p(path)`` averaged over the samples, Adam.

The bi-level loop is the shared one (``nasforge.oneshot.loop``, schedule ``every``); the
loss forms, the table loading and the ``latency`` config section are ``nasforge.hardware.penalty``'s.

**Latency** comes from a lookup table (``nasforge.hardware.lut``) of the space on
``latency.device``: the expected latency of the supernet is
``E[lat] = overhead + rest + sum_choices sum_j p_j * table(candidate j there)``
(``zero`` costs nothing; ``ModuleLatency``), differentiable in alpha. In the binary
architecture step ``p`` is, as in the official code, the softmax over each choice's two
sampled ops (zeros elsewhere), so the latency gradient touches only the sampled alphas
and the re-offset keeps holding; the recorded per-epoch ``expected_latency_ms`` uses the
full softmax. Loss forms (``latency.loss``, auto ``mul``):

- ``add``: ``CE + w * E[lat] / T`` (the official ``add#linear`` ``lambda * (E - T) / T``
  up to a constant; default weight 0.1);
- ``mul``: ``a * CE * (log E[lat] / log T) ^ w`` (the official ``mul#log``, a 0.2, w 0.3),
  latencies in ms as the official code when every network of the space takes over 1 ms,
  else in microseconds so that the logs stay positive (``latency.log_unit``);
- REINFORCE rewards: ``acc * (T / lat) ^ w`` (mul; official ``rl_tradeoff_ratio`` 0.1) or
  ``acc - w * lat / T`` (add).

The table is loaded from ``latency.table`` (checked against the space, input shape and
device), or else built at search start on ``latency.device`` and saved as
``DIR/latency_table.json`` (reused on resume); with ``latency.loss: none`` (or weight 0)
and no table none is built. ``latency.target_ms`` left empty takes the geometric mean of
the smallest and the largest network of the space; a target below the smallest network is
refused.

``objective: flops`` counts FLOPs instead (``build_flops_table``: every piece of the space
counted at its input shape, MFLOPs; the official ``expected_flops``), against
``target_mflops``; ``latency.log_unit`` picks the unit inside ``mul``'s logs (ms: official).

Defaults from the official search script (``imagenet_arch_search.py``): weights SGD
momentum 0.9, Nesterov, weight decay 4e-5, cosine; architecture Adam betas (0, 0.999), eps
1e-8, no weight decay, init N(0, 1e-3). Scaled for small data: the official 40 warm-up
epochs before 120 search epochs become a quarter of ``epochs`` (auto), one cosine from
``w_lr`` 0.05 spans them (``warmup_lr`` set: the official separate schedules, 0.05 then
0.025), architecture Adam lr 0.02 (official 1e-3) after every weight step (official: every
5, on ImageNet's thousands of steps per epoch, none in the first search epoch:
``arch_delay_epochs``), no label smoothing (official 0.1: ``label_smoothing``, the
``train_loss`` of the weight steps), a gradient clip of 5 guards the weights; the REINFORCE
variant updates once per architecture step with ``rl_samples`` (official 10) networks.
``--preset paper`` (imagenet, cifar10) sets the official values (bottom of this module).
Derivation: per choice the candidate with the largest
alpha (a DARTS node keeps its two strongest inputs).
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
from nasforge.hardware.penalty import TABLE_FILE, LatencyPenalty, ModuleLatency, load_or_build_table
from nasforge.nn.choices import OpChoice, Paths, choice_modules, is_zero
from nasforge.oneshot.binary import rescale_two_paths, sample_two, two_path_alpha_grad
from nasforge.oneshot.loop import OneShotConfig
from nasforge.oneshot.relax import Relaxation
from nasforge.progress import Progress
from nasforge.training import cosine_lr
from nasforge.spaces.modular import ModuleSpace
from nasforge.strategies.darts import needs_choice_modules
from nasforge.strategies.base import register_strategy
from nasforge.strategies.oneshot import OneShotStrategy

log = logging.getLogger(__name__)

__all__ = ["TABLE_FILE", "TRADEOFF_FILE", "ProxylessConfig", "ProxylessStrategy"]

TRADEOFF_FILE = "proxyless_tradeoff.json"
#: the loss form of ``latency.loss: auto`` (the official ``mul#log``)
DEFAULT_FORM = "mul"
#: ``latency.weight`` left at auto: per (estimator, loss form), from the official defaults.
DEFAULT_WEIGHTS = {("binary", "add"): 0.1, ("binary", "mul"): 0.3, ("reinforce", "add"): 0.1,
                   ("reinforce", "mul"): 0.1, ("binary", "none"): 0.0, ("reinforce", "none"): 0.0,
                   ("binary", "log"): 0.15, ("reinforce", "log"): 0.15}


@dataclass
class ProxylessConfig(OneShotConfig):
    epochs: int | None = option(None, lo=1, hi=100000, help="epochs, warm-up included (auto: dataset profile)")
    warmup_epochs: int | None = option(None, lo=0, hi=100000,
                                       help="first epochs that train only the weights (auto: a quarter of epochs; "
                                            "paper 40 before 120)")
    batch_size: int | None = option(32, lo=1, hi=65536,
                                    help="batch size (paper 256 on ImageNet; 32 gives small data enough steps)")
    early_stop: str = option("none", choices=("none", "dartsplus"),
                             help="stopping policy: none, or dartsplus (DARTS+'s two criteria on the relaxed choices)")
    early_stop_skips: int = option(2, lo=1, hi=64, help="DARTS+ criterion 1: skip-connects in the normal cell")
    early_stop_patience: int = option(10, lo=1, hi=100000,
                                      help="DARTS+ criterion 2: epochs the learnable ops' ranking must stay unchanged")
    grad_estimator: str = option("binary", choices=("binary", "full_v2", "reinforce"),
                                 help="architecture gradient: binary (two-path gates, the paper's text; the code's "
                                      "'two'), full_v2 (all gates, the official script's default) or reinforce")
    w_lr: float = option(0.05, lo=0.0, hi=10.0,
                         help="weight SGD learning rate (cosine-annealed; the search phase's when warmup_lr is set; "
                              "official 0.025 search)")
    warmup_lr: float | None = option(None, lo=0.0, hi=10.0,
                                     help="separate schedules: the warm-up's own cosine from this lr to 0, then the "
                                          "search's from w_lr to w_lr_min (official 0.05 then 0.025); none: one "
                                          "cosine over all epochs")
    arch_delay_epochs: int = option(0, lo=0, hi=100000,
                                    help="search epochs at the start of the search phase without architecture "
                                         "steps (official 1: none in the first search epoch)")
    label_smoothing: float = option(0.0, lo=0.0, hi=1.0,
                                    help="label smoothing of the weight steps' loss (official 0.1; the "
                                         "architecture loss keeps plain CE)")
    objective: str = option("latency", choices=("latency", "flops"),
                            help="what the hardware term of the loss counts: latency from the lookup table or "
                                 "FLOPs (the official target_hardware=flops)")
    target_mflops: float | None = option(None, lo=1e-6, hi=1e9,
                                         help="objective flops: target T in MFLOPs (auto: geometric mean of the "
                                              "smallest and largest network; official 300 at width 1.0)")
    w_lr_min: float = option(0.0, lo=0.0, hi=10.0, help="final weight learning rate")
    w_nesterov: bool = option(True, help="Nesterov momentum for the weights (paper: on)")
    w_wd: float = option(4e-5, lo=0.0, hi=1.0, help="weight decay of the weights (paper 4e-5)")
    a_lr: float = option(0.02, lo=0.0, hi=10.0,
                         help="architecture Adam learning rate (official 1e-3 over ~1e5 steps; small data has ~1e2)")
    a_beta1: float = option(0.0, lo=0.0, hi=1.0, help="architecture Adam beta1 (paper 0: no momentum)")
    a_wd: float = option(0.0, lo=0.0, hi=1.0, help="architecture weight decay (paper 0)")
    alpha_init_std: float = option(1e-3, lo=0.0, hi=10.0, help="std of the normal init of alpha (paper 1e-3)")
    arch_every: int = option(1, lo=1, hi=100000, help="weight steps per architecture step (official 5)")
    rl_samples: int = option(10, lo=1, hi=10000, help="reinforce: networks sampled per architecture step (paper 10)")
    rl_baseline_decay: float = option(0.99, lo=0.0, hi=1.0,
                                      help="reinforce: baseline step b += d * (reward - b) (paper 0.99)")



def build_flops_table(space: Any, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """A table like the latency one, but of MFLOPs: every piece of ``space`` counted (one image,
    ``nasforge.hardware.count_flops``) at the shape it sees; no call overhead. ``ModuleLatency`` over it
    is the official ``expected_flops`` (per choice ``sum_j p_j * flops(candidate j)`` plus the rest)."""
    from nasforge.hardware.cost import count_flops
    from nasforge.hardware.lut import LatencyTable, space_fingerprint

    parts = space.latency_parts(tuple(input_shape), num_classes)
    entries = {key: count_flops(factory(), tuple(shape)) / 1e6 for key, (factory, shape) in parts.items()}
    residual = getattr(space, "latency_residual_parts", None)
    if residual is not None:  # whole-network entries net of the pieces they contain
        for key, contained in residual(tuple(input_shape), num_classes).items():
            entries[key] = max(entries[key] - sum(entries[k] for k in contained), 0.0)
    return LatencyTable(space=space.name, space_version=space.version, fingerprint=space_fingerprint(space),
                        input_shape=tuple(input_shape), num_classes=num_classes, device="flops",
                        device_name="MFLOPs (counted)", batch_size=1, threads=0, overhead_ms=0.0, entries=entries)


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
        if (cfg.warmup_epochs is not None and cfg.epochs is not None and cfg.arch_delay_epochs
                and cfg.warmup_epochs + cfg.arch_delay_epochs >= cfg.epochs):
            raise ConfigError(f"strategy.arch_delay_epochs={cfg.arch_delay_epochs} after warmup_epochs="
                              f"{cfg.warmup_epochs} leaves no epoch with architecture steps of strategy.epochs="
                              f"{cfg.epochs}; lower arch_delay_epochs or raise epochs")
        self.relax: Relaxation | None = None
        self.latency: ModuleLatency | None = None
        self.penalty = LatencyPenalty()
        self.target_ms: float = 0.0
        self.baseline: float | None = None
        self.warm = False
        #: (epoch, weight steps done in it): where the separate warm-up/search schedules stand
        self.steps_per_epoch = 1

    @classmethod
    def supports(cls, space: Any) -> str | None:
        return needs_choice_modules(cls.name, space)

    # --- architecture parameters ----------------------------------------------------
    def rows(self) -> list[tuple[str, int, Tensor]]:
        """Every (label, row, alpha row): each row is one binarized choice (a layer, a cell edge)."""
        return [(label, r, a[r]) for label, a in self.relax.alphas.items() for r in range(a.shape[0])]

    def probs(self) -> dict[str, Tensor]:
        return {label: F.softmax(a, dim=-1) for label, a in self.relax.alphas.items()}

    def derive(self, space: ModuleSpace) -> Arch:
        """Per choice the candidate with the largest alpha (a DARTS node keeps its top inputs)."""
        return space.arch(self.relax.derive())

    def stopper(self) -> Any:
        """DARTS+ (``early_stop=dartsplus``) on the relaxed choices (a darts cell space: its normal cell)."""
        if self.config.early_stop != "dartsplus":
            return None
        from nasforge.strategies.stopping import dartsplus_stopper

        return dartsplus_stopper(self.relax, self.config.early_stop_skips, self.config.early_stop_patience,
                                 per_choice=True)

    def arch_weights(self, space: Any = None) -> dict[str, Any]:
        """Candidate probabilities per choice, for the record: ``{"layers": {label: {name: p}}}``
        (a multi-row label, e.g. a DARTS node, as ``label[row]``)."""
        layers: dict[str, dict[str, float]] = {}
        for label, rows in self.relax.probs().items():
            names = self.relax.names[label]
            for r, row in enumerate(rows):
                layers[label if len(rows) == 1 else f"{label}[{r}]"] = dict(zip(names, row.tolist()))
        return {"layers": layers}

    def entropy(self) -> float:
        rows = [F.softmax(a, dim=-1) for _, _, a in self.rows()]
        return float(sum(-(p * p.clamp_min(1e-12).log()).sum() for p in rows).detach()) / max(len(rows), 1)

    def derived_latency(self, space: ModuleSpace) -> float | None:
        """The table's prediction for the derived architecture (None without a table)."""
        return self.table.predict(space, self.derive(space)) if self.table is not None else None

    def latency_weight(self) -> float:
        """``latency.weight``, or the official default for this estimator and loss form."""
        lat = self.latency_config
        if lat.weight is not None:
            return lat.weight
        estimator = "binary" if self.config.grad_estimator == "full_v2" else self.config.grad_estimator
        return DEFAULT_WEIGHTS.get((estimator, lat.form(DEFAULT_FORM)), 0.0)

    @property
    def flops(self) -> bool:
        """Whether the hardware term counts FLOPs (``objective: flops``) rather than latency."""
        return self.config.objective == "flops"

    @property
    def unit(self) -> str:
        return "mflops" if self.flops else "latency_ms"

    # --- the loop's hooks -------------------------------------------------------------
    def setup(self, space: ModuleSpace, data: Dataset, experiment: Experiment | None, progress: Progress) -> None:
        cfg = self.config
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = cfg.epochs // 4
        self.baseline = None
        self.experiment = experiment
        self._space = space
        self.table = None  # no latency term and no table given: nothing to measure
        lat = self.latency_config
        if self.flops:
            if lat.active(DEFAULT_FORM):
                self.table = build_flops_table(space, data.input_shape, data.num_classes)
        elif lat.active(DEFAULT_FORM) or lat.table:
            self.table = load_or_build_table(space, data, lat, experiment=experiment, progress=progress)

    def build_supernet(self, space: ModuleSpace, data: Dataset) -> nn.Module:
        """The space's network at its final size (ProxylessNAS searches the target network itself)."""
        return space.supernet(data.input_shape, data.num_classes, **space.final_options())

    def init_arch(self, space: ModuleSpace, model: nn.Module) -> None:
        """Alphas per label, the latency model of this supernet, the target (auto or checked)."""
        cfg, lat_cfg = self.config, self.latency_config
        self.relax = Relaxation(model, self.engine.device, std=cfg.alpha_init_std)
        if cfg.grad_estimator == "full_v2":
            other = [f"{path} ({type(m).__name__})" for path, m in choice_modules(model) if not isinstance(m, OpChoice)]
            if other:
                raise ConfigError(f"strategy.grad_estimator=full_v2 gates single-op choices (OpChoice) only, but "
                                  f"{other[0]} is another kind; use grad_estimator=binary for this space")
        if self.table is None:
            self.latency, self.target_ms, self.penalty = None, 0.0, LatencyPenalty()
            return
        self.latency = lat = ModuleLatency(space, model, self.table, self.engine.device)
        target = cfg.target_mflops if self.flops else lat_cfg.target_ms
        key, unit = ("strategy.target_mflops", "MFLOPs") if self.flops else ("latency.target_ms", "ms")
        if target is None:
            target = math.sqrt(lat.smallest * lat.largest)
        elif target < lat.smallest:
            where = "by counting" if self.flops else f"on {self.table.device} by the latency table"
            raise ConfigError(f"{key}={target:g} is below the smallest network of the space "
                              f"({lat.smallest:.4f} {unit} {where}); set it to at least {lat.smallest:.4f}")
        self.target_ms = float(target)
        form = lat_cfg.form(DEFAULT_FORM)
        if self.flops:
            scale = 1e6  # MFLOPs -> FLOPs inside the logs, as the official expected_flops
        elif lat_cfg.log_unit == "auto":
            scale = 1.0 if lat.smallest > 1.0 else 1000.0
        else:
            scale = 1.0 if lat_cfg.log_unit == "ms" else 1000.0
        self.penalty = LatencyPenalty(form, self.latency_weight(), self.target_ms, lat_cfg.alpha, lat_cfg.base,
                                      scale)
        if self.experiment is not None:
            self.experiment.store.set_meta("target_mflops" if self.flops else "latency_target_ms", self.target_ms)

    def arch_parameters(self) -> list[Tensor]:
        return self.relax.parameters()

    def warmup_epochs(self) -> int:
        """Epochs without architecture steps: the warm-up, then ``arch_delay_epochs`` search epochs."""
        return self.config.warmup_epochs + self.config.arch_delay_epochs

    def arch_every(self) -> int:
        return self.config.arch_every

    def epoch_started(self, epoch: int) -> None:
        self.warm = epoch < self.config.warmup_epochs

    def extra_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.baseline = state.get("baseline", self.baseline)

    def weight_lr(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The loop's per-step learning rate; with ``warmup_lr`` set, the separate schedules'."""
        self.steps_per_epoch = steps_per_epoch
        if self.config.warmup_lr is None:
            return super().weight_lr(epoch, step, steps_per_epoch)
        return self.scheduled_lr(epoch, step)

    def scheduled_lr(self, epoch: int, step: int) -> float:
        """``warmup_lr`` set: the official two schedules, each a cosine to its end over its own steps: the
        warm-up's from ``warmup_lr`` to 0 (``nas_manager.warm_up``), the search's from ``w_lr`` to ``w_lr_min``
        (``run_manager.adjust_learning_rate``, over the search epochs)."""
        cfg, n = self.config, self.steps_per_epoch
        warm = cfg.warmup_epochs
        if epoch < warm:
            return cosine_lr((epoch * n + step) / (warm * n), cfg.warmup_lr, 0.0)
        return cosine_lr(((epoch - warm) * n + step) / ((cfg.epochs - warm) * n), cfg.w_lr, cfg.w_lr_min)

    def train_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The weight steps' loss: cross-entropy with ``label_smoothing`` (the official
        ``cross_entropy_with_label_smoothing``: targets ``(1 - e) * onehot + e / classes``)."""
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    def epoch_metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {"entropy": self.entropy(), "phase": "warmup" if self.warm else "search"}
        if self.latency is not None:
            with torch.no_grad():
                metrics[f"expected_{self.unit}"] = float(self.latency.expected(self.probs()))
            metrics.update({f"derived_{self.unit}": self.derived_latency(self._space),
                            ("target_mflops" if self.flops else "target_latency_ms"): self.target_ms})
        return metrics

    def search_info(self, space: ModuleSpace, experiment: Experiment | None) -> dict[str, Any]:
        cfg = self.config
        info: dict[str, Any] = {"grad_estimator": cfg.grad_estimator, "objective": cfg.objective,
                                "latency_loss": self.penalty.form, "latency_weight": self.penalty.weight}
        if self.latency is not None and self.flops:
            info.update(target_mflops=self.target_ms, predicted_mflops=self.derived_latency(space),
                        smallest_mflops=self.latency.smallest, largest_mflops=self.latency.largest)
        elif self.latency is not None:
            info.update(target_latency_ms=self.target_ms, predicted_latency_ms=self.derived_latency(space),
                        smallest_latency_ms=self.latency.smallest, largest_latency_ms=self.latency.largest,
                        latency_device=self.table.device, latency_log_unit="ms" if self.penalty.scale == 1 else "us")
        return info

    def eval_forward(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The network of the largest alpha per choice, inside the supernet."""
        def forward(x: Tensor) -> Tensor:
            self.relax.argmax_paths()
            return model(x)
        return forward

    # --- steps ------------------------------------------------------------------------
    def train_forward(self, model: nn.Module, x: Tensor, warm: bool) -> Tensor:
        """One path per choice from softmax(alpha); only those candidates run and get gradients."""
        self.relax.sample_paths()
        return model(x)

    def arch_step(self, model: nn.Module, batch: tuple[Tensor, Tensor],
                  train_batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """One architecture update: the architecture loss (binary) or the mean reward (reinforce)."""
        if self.config.grad_estimator == "reinforce":
            return {"arch_reward": self.reinforce_step(model, self.a_opt, batch)}
        if self.config.grad_estimator == "full_v2":
            return {"arch_loss": self.full_v2_step(model, self.a_opt, batch)}
        return {"arch_loss": self.binary_step(model, self.a_opt, batch)}

    def binary_step(self, model: nn.Module, a_opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> float:
        """Two sampled paths per choice, binary gates, the paper's alpha gradient, Adam, re-offset."""
        x, y = batch
        device = x.device
        alphas = self.relax.alphas
        pairs = {label: [sample_two(row) for row in a] for label, a in alphas.items()}
        gates = {label: torch.tensor([[1.0, 0.0]] * a.shape[0], requires_grad=True, device=device)
                 for label, a in alphas.items()}
        self.relax.set({label: Paths([p[0] for p in pairs[label]], [p[1] for p in pairs[label]], gates[label])
                        for label in alphas})
        with self.engine.autocast():
            ce = F.cross_entropy(model(x), y)
        labels = list(alphas)
        latency_grads: list[Tensor | None] = [None] * len(labels)
        if self.penalty.active:
            pair_probs = {}
            for label, a in alphas.items():
                rows = []
                for r, (i, j) in enumerate(pairs[label]):
                    p = F.softmax(a[r, [i, j]], dim=-1)
                    rows.append(torch.zeros_like(a[r]).index_put((torch.tensor([i, j], device=a.device),), p))
                pair_probs[label] = torch.stack(rows)
            loss = self.penalty(ce, self.latency.expected(pair_probs))
            out = torch.autograd.grad(loss, [gates[lb] for lb in labels] + [alphas[lb] for lb in labels],
                                      allow_unused=True)
            gate_grads, latency_grads = out[:len(labels)], list(out[len(labels):])
        else:
            loss = ce
            gate_grads = torch.autograd.grad(loss, [gates[lb] for lb in labels], allow_unused=True)
        if not torch.isfinite(loss):
            return float("nan")
        old = {}
        for label, gg, lg in zip(labels, gate_grads, latency_grads):
            a = alphas[label]
            grad = torch.zeros_like(a)
            for r, pair in enumerate(pairs[label]):
                g = gg[r] if gg is not None else torch.zeros(2, device=a.device)
                grad[r] = two_path_alpha_grad(a[r], pair, g)
            if lg is not None:
                grad = grad + lg
            for r, pair in enumerate(pairs[label]):
                if is_zero(self.relax.names[label][pair[0]]):
                    grad[r] = 0.0  # the official set_arch_param_grad: an active zero op updates nothing
            a.grad = grad
            old[label] = [a.detach()[r, list(pair)].clone() for r, pair in enumerate(pairs[label])]
        a_opt.step()
        for label in labels:
            for r, pair in enumerate(pairs[label]):
                rescale_two_paths(alphas[label][r], pair, old[label][r])
        a_opt.zero_grad(set_to_none=True)
        return loss.item()

    def full_v2_step(self, model: nn.Module, a_opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]) -> float:
        """The official ``full_v2`` mode: one path per choice runs (from softmax(alpha)); every candidate's
        gate gradient ``dL/dg_k = <o_k(x), dL/dy>`` (``o_k`` run without autograd on the choice's input ``x``,
        the active one's output reused); ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` over the full
        softmax, plus the latency term's gradient through the full softmax; Adam; no re-offset. A choice
        whose sampled op is ``zero`` is not updated (official ``set_arch_param_grad``)."""
        x, y = batch
        alphas = self.relax.alphas
        drawn = self.relax.sample_paths()
        seen: list[tuple[OpChoice, Tensor, Tensor]] = []

        def keep(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            seen.append((module, inputs[0], output))

        handles = [m.register_forward_hook(keep) for _, m in choice_modules(model) if isinstance(m, OpChoice)]
        try:
            with self.engine.autocast():
                ce = F.cross_entropy(model(x), y)
        finally:
            for h in handles:
                h.remove()
        labels = list(alphas)
        probs = self.probs()
        loss = self.penalty(ce, self.latency.expected(probs)) if self.penalty.active else ce
        if not torch.isfinite(loss):
            return float("nan")
        live = [(m, inp, out) for m, inp, out in seen if out.requires_grad]
        out_grads = torch.autograd.grad(loss, [o for _, _, o in live] + [alphas[lb] for lb in labels],
                                        allow_unused=True)
        gate_grads = {label: torch.zeros_like(a) for label, a in alphas.items()}
        with torch.no_grad():
            for (m, inp, out), g in zip(live, out_grads[:len(live)]):
                if g is None:
                    continue
                active = drawn[m.label][0]
                row = gate_grads[m.label][0]
                for k in range(len(m.names)):
                    if k in m.zero:
                        continue
                    o = out if k == active else m.candidates[k](inp)
                    row[k] += (o.to(g.dtype) * g).sum().to(row.dtype)
        for label, lg in zip(labels, out_grads[len(live):]):
            a = alphas[label]
            p = F.softmax(a.detach(), dim=-1)
            jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # [rows, i, j] = p_j (delta_ij - p_i)
            grad = (jac @ gate_grads[label].unsqueeze(-1)).squeeze(-1)
            if lg is not None:
                grad = grad + lg
            for r, i in enumerate(drawn[label]):
                if is_zero(self.relax.names[label][i]):
                    grad[r] = 0.0
            a.grad = grad
        a_opt.step()
        a_opt.zero_grad(set_to_none=True)
        return loss.item()

    def reinforce_step(self, model: nn.Module, a_opt: torch.optim.Optimizer,
                       batch: tuple[Tensor, Tensor]) -> float:
        """REINFORCE over ``rl_samples`` single-path networks, reward from valid accuracy and latency."""
        cfg = self.config
        x, y = batch
        alphas = self.relax.alphas
        rewards, grads = [], []
        for _ in range(cfg.rl_samples):
            drawn = self.relax.sample_paths()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            reward = self.penalty.reward(acc, self.latency.of_choice(drawn) if self.latency is not None else 0.0)
            log_prob = sum(F.log_softmax(alphas[label][r], dim=-1)[i]
                           for label, rows in drawn.items() for r, i in enumerate(rows))
            grads.append(torch.autograd.grad(-log_prob, self.relax.parameters()))
            rewards.append(reward)
        mean = sum(rewards) / len(rewards)
        self.baseline = mean if self.baseline is None else self.baseline + cfg.rl_baseline_decay * (mean - self.baseline)
        for k, a in enumerate(self.relax.parameters()):
            a.grad = sum((r - self.baseline) * g[k] for r, g in zip(rewards, grads)) / len(rewards)
        a_opt.step()
        a_opt.zero_grad(set_to_none=True)
        return mean


# --- presets ----------------------------------------------------------------------------
from nasforge.presets import register_preset  # noqa: E402

_PROXYLESS_CODE = ("mit-han-lab/proxylessnas search/imagenet_arch_search.py (arguments), search/nas_manager.py "
                   "(warm_up, train, gradient_step), search/run_manager.py (cosine), search/imagenet_run_exp.py "
                   "(retraining)")
register_preset("paper", "proxyless", "imagenet", {
    "space": {"name": "mbconv", "preset": "imagenet"},
    "strategy": {"epochs": 160, "warmup_epochs": 40, "warmup_lr": 0.05, "w_lr": 0.025, "w_lr_min": 0.0,
                 "w_momentum": 0.9, "w_nesterov": True, "w_wd": 4e-5, "grad_clip": 0.0, "label_smoothing": 0.1,
                 "batch_size": 256, "grad_estimator": "full_v2", "a_lr": 1e-3, "a_beta1": 0.0, "a_beta2": 0.999,
                 "a_eps": 1e-8, "a_wd": 0.0, "alpha_init_std": 1e-3, "arch_every": 5, "arch_delay_epochs": 1,
                 "rl_samples": 10, "rl_baseline_decay": 0.99},
    "latency": {"loss": "mul", "weight": 0.3, "alpha": 0.2, "log_unit": "ms"},
    "train": {"epochs": 300, "batch_size": 256, "lr": 0.05, "lr_min": 0.0, "momentum": 0.9, "weight_decay": 4e-5,
              "grad_clip": 0.0, "cutout": 0},
}, sources={"*": _PROXYLESS_CODE},
    note="official: 40 warm-up + 120 search epochs, 50,000 training images held out for the architecture steps "
         "(nasforge: the two halves of the training split), the mobile target 80 ms on a phone (nasforge: auto "
         "target on latency.device; FLOPs: --set strategy.objective=flops --set strategy.target_mflops=300)")

register_preset("paper", "proxyless", "cifar10", {
    "space": {"name": "mbconv", "preset": "cifar"},
    "data": {"valid_fraction": 0.1},
    "strategy": {"epochs": 200, "a_lr": 6e-3},
    "train": {"epochs": 300, "cutout": 16},
}, sources={"*": "ProxylessNAS paper (Cai et al., ICLR 2019) sec. 4.1; the official repository has no CIFAR-10 "
                 "search code"},
    note="the paper searched a tree-structured PyramidNet cell space (2.08% with cutout, 5.7M params) that nasforge "
         "does not have: this preset runs the paper's CIFAR-10 optimisation settings on the mbconv 'cifar' space; "
         "5,000 held-out images (valid_fraction 0.1); architecture Adam lr 6e-3 (REINFORCE: 3e-4)")
