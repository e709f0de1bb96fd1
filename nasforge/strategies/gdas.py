"""GDAS: Gradient-based search using Differentiable Architecture Sampler
(Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019).

GDAS is DARTS with a different relaxation. Instead of running every candidate op of an
edge and mixing them by softmax weights, each forward pass *samples* one op per edge
with the Gumbel-max trick and runs only that op:

    g ~ Gumbel(0, 1)  (g = -log(e), e ~ Exp(1)),   p = softmax((log_softmax(alpha) + g) / tau)
    index = argmax p   (an exact sample of Categorical(softmax(alpha)))
    h = one_hot(index) + (p - p.detach())

``h`` is exactly the one-hot in the forward, while its gradient is that of the
Gumbel-softmax ``p`` (straight-through), so every op's alpha of an edge gets a gradient
although one op ran. A search step therefore costs about one sub-network instead of the
whole supernet. A sample with inf/NaN noise or probabilities is drawn again (as the
official code does); architecture parameters that are themselves NaN end the search
with a ``TrainingError`` instead of looping forever.

The temperature ``tau`` falls linearly from ``tau_max`` (first epoch) to ``tau_min``
(last epoch): ``tau_e = tau_max - (tau_max - tau_min) * e / (epochs - 1)`` (``tau_max``
for a one-epoch search); each epoch's metrics record it as ``tau``.

The step follows the official code: first a weight step on a training batch, then an
architecture step on a validation batch (first order only: the sampled network is not
differentiable through an unrolled weight step, so ``order=2`` is rejected), each with
its own Gumbel sample.

Unchosen ops (``unchosen``). The official code has two cell forwards. Its NASNet-space
(darts) search cell runs only the chosen op of an edge, scaled by its hard weight
(``MixedOp.forward_gdas``); its NAS-Bench-201 search cell (``forward_gdas`` of
``search_cells.py``) also adds the hard weight of every *unchosen* op (exactly 0 in value),
so each of them carries a gradient too. ``unchosen="auto"`` (the default) follows the
official code per space: ``zero_weight`` on nb201, ``skip`` elsewhere.

Derivation (``derive``). ``pairs`` (the default, the official GDAS code's ``genotype()``):
per node the two strongest ``(op, input)`` pairs over all non-``none`` ops of its incoming
edges, by softmax(alpha), so both ops may read one input (the arch then holds ``inputs:
[j, j]``); ``darts``: DARTS's rule (the two inputs whose strongest non-``none`` op weighs
most). Spaces without cell nodes derive by their own rule (nb201: per edge the strongest
op, ``none`` included, as the official NAS-Bench-201 GDAS).

Defaults, checked against the official code (D-X-Y/AutoDL-Projects): architecture Adam
lr 3e-4, betas (0.5, 0.999), weight decay 1e-3 (``scripts-search/NASNet-space-search-by-GDAS.sh``
``--arch_learning_rate 0.0003 --arch_weight_decay 0.001``, ``exps/NAS-Bench-201-algos/GDAS.py``);
tau 10 -> 0.1 (``--tau_max 10 --tau_min 0.1``); weights SGD lr 0.025 cosine-annealed to
0.001, momentum 0.9 with Nesterov, weight decay 5e-4 (``configs/search-opts/GDAS-NASNet-CIFAR.config``),
gradient clip 5. Epochs, batch and the supernet's size come from the dataset profile; the
official settings (250 epochs, batch 256, a 6-cell supernet of 16 channels with a final
BN-ReLU, ``final_bn_relu``, and pooling candidates without BN, ``pool_bn``) are the
``paper`` preset (``--preset paper``, bottom of this file).

Fixed reduction cell (``fixed_reduce=True``, the paper's "GDAS (FRC)"): the search runs on
the darts space with ``reduce_cell="gdas_frc"``: the supernet's reduction cells are the
hand-designed ``GdasReductionCell`` and only the normal cell is searched (no reduce alphas;
the per-epoch ``arch_weights`` record only the normal cell). The derived arch records
``reduce_cell: gdas_frc``, so the final network built from it has the FRC itself in its
reduction positions (affine BN, drop-path on its four outputs). ``--set
space.reduce_cell=gdas_frc`` does the same for any method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nasforge.config import option
from nasforge.data import Dataset
from nasforge.errors import ConfigError
from nasforge.nn.choices import HardZeroWeights, NodeChoice
from nasforge.spaces.darts import DartsSpace
from nasforge.spaces.modular import ModuleSpace
from nasforge.spaces.nb201 import NB201Space
from nasforge.strategies.base import register_strategy
from nasforge.strategies.darts import DartsConfig, DartsStrategy

UNCHOSEN = ("auto", "zero_weight", "skip")
DERIVE_RULES = ("pairs", "darts")


@dataclass
class GdasConfig(DartsConfig):
    order: int = option(1, help="GDAS is first order only (1); 2 is rejected")
    w_wd: float = option(5e-4, lo=0.0, hi=1.0, help="weight decay of the weights (official GDAS config: 5e-4)")
    w_nesterov: bool = option(True, help="Nesterov momentum for the weights (official GDAS config: on)")
    tau_max: float = option(10.0, lo=1e-3, hi=1e4, help="Gumbel-softmax temperature of the first epoch")
    tau_min: float = option(0.1, lo=1e-3, hi=1e4, help="temperature of the last epoch (linear in between)")
    fixed_reduce: bool = option(False, help="use GDAS's hand-designed reduction cell and search only the normal cell")
    derive: str = option("pairs", choices=DERIVE_RULES,
                         help="node derivation: pairs (official GDAS: top-2 (op, input) pairs, one input may "
                              "get two ops) or darts (top-2 inputs by their strongest op)")
    unchosen: str = option("auto", choices=UNCHOSEN,
                           help="unchosen ops of an edge: zero_weight (add their 0-valued hard weights, a gradient "
                                "each: official NAS-Bench-201 forward_gdas), skip (only the chosen op: official "
                                "NASNet-space cell), auto (zero_weight on nb201, skip elsewhere)")
    final_bn_relu: bool = option(False, help="BN-ReLU after the last cell of the darts supernet (official GDAS "
                                             "search network; the paper preset turns it on)")
    pool_bn: bool = option(True, help="BN after the pooling candidates of the darts supernet (DARTS's search "
                                      "model; the official GDAS search cell has none: the paper preset turns it off)")

    def __post_init__(self) -> None:
        if self.order != 1:
            raise ConfigError(f"strategy.order={self.order!r}: GDAS is first order only (its sampled network is "
                              "not differentiated through a weight step); use strategy.order=1, or "
                              "--strategy darts for second order")
        if self.tau_min > self.tau_max:
            raise ConfigError(f"strategy.tau_min={self.tau_min:g} is above strategy.tau_max={self.tau_max:g}; "
                              "the temperature anneals downwards, swap them")


def temperature(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """Linear annealing: ``tau_max`` at epoch 0, ``tau_min`` at epoch ``epochs - 1``."""
    if epochs <= 1:
        return tau_max
    frac = epoch / (epochs - 1)
    return (1.0 - frac) * tau_max + frac * tau_min  # exact at both ends


def unchosen_mode(option_value: str, space: Any) -> str:
    """``zero_weight`` or ``skip`` for ``space`` (``auto``: the official code's cell of that space)."""
    if option_value != "auto":
        return option_value
    return "zero_weight" if isinstance(space, NB201Space) else "skip"


@register_strategy
class GdasStrategy(DartsStrategy):
    """GDAS on a cell space: one Gumbel-sampled op per edge, straight-through gradients."""

    name = "gdas"
    kind = "oneshot"
    description = "GDAS: Gumbel-max sampled sub-network per step (one op per edge), first order"
    Config = GdasConfig
    arch_first = False  # the official code: a weight step, then an architecture step
    samples_subnetworks = True  # one sampled op per edge

    def __init__(self, config: GdasConfig | None = None):
        super().__init__(config)
        self.tau = self.config.tau_max
        self.zero_weights = False

    # --- the relaxation ------------------------------------------------------
    def decide(self) -> None:
        """A hard Gumbel sample per edge at the current temperature: only the chosen op runs."""
        self.relax.hard(self.tau)
        if self.zero_weights:
            self.relax.set({label: HardZeroWeights(*d) for label, d in self.relax.current.items()})

    def epoch_started(self, epoch: int) -> None:
        self.tau = temperature(epoch, self.config.epochs, self.config.tau_max, self.config.tau_min)

    # --- the space searched: the darts space with GDAS's fixed reduction cell if asked -------
    def search_space(self, space: Any) -> Any:
        """``space``, or (``fixed_reduce``) the same darts space with the hand-designed reduction cell."""
        if self.config.fixed_reduce and isinstance(space, DartsSpace) and space.reduce_cell == "searched":
            return DartsSpace(nodes=space.nodes, reduce_cell="gdas_frc")
        return space

    def build_supernet(self, space: ModuleSpace, data: Dataset) -> nn.Module:
        return self.search_space(space).supernet(data.input_shape, data.num_classes, layers=self.config.layers,
                                                 channels=self.config.channels,
                                                 final_bn_relu=self.config.final_bn_relu, pool_bn=self.config.pool_bn)

    def derive(self, space: ModuleSpace):
        """Each label by its module's rule; cell nodes by ``strategy.derive`` (official GDAS: ``pairs``)."""
        probs = self.relax.probs()
        values: dict[str, Any] = {}
        for label in self.relax.labels:
            module = self.relax.modules[label][0]
            if isinstance(module, NodeChoice):
                values.update(module.derive(probs, rule=self.config.derive))
            else:
                values.update(module.derive(probs))
        return self.search_space(space).arch(values)

    # --- the loop's hooks -----------------------------------------------------------
    def setup(self, space: Any, data: Dataset, experiment: Any, progress: Any) -> None:
        if self.config.fixed_reduce and not isinstance(space, DartsSpace):
            raise ConfigError(f"strategy.fixed_reduce replaces the searched reduction cell of the darts space; "
                              f"space '{getattr(space, 'name', space)}' searches none, set strategy.fixed_reduce=false")
        super().setup(self.search_space(space), data, experiment, progress)
        self.zero_weights = unchosen_mode(self.config.unchosen, space) == "zero_weight"

    def search_info(self, space: Any, experiment: Any) -> dict[str, Any]:
        searched = self.search_space(space)
        info: dict[str, Any] = {"fixed_reduce": self.config.fixed_reduce, "derive": self.config.derive,
                                "unchosen": unchosen_mode(self.config.unchosen, space)}
        if isinstance(searched, DartsSpace) and searched.reduce_cell != "searched":
            info["reduce_cell"] = ("not searched: GDAS's hand-designed reduction cell, in the supernet and in the "
                                   "arch (reduce_cell: gdas_frc), so the final network is built with it")
        return info

    def epoch_metrics(self) -> dict[str, Any]:
        return {"tau": self.tau}  # set by epoch_started at the start of this epoch

    def arch_step(self, model: nn.Module, batch: tuple[Tensor, Tensor],
                  train_batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """The architecture step on its own sampled sub-network (first order), then Adam."""
        self.a_opt.zero_grad(set_to_none=True)
        learned = self.alphas
        loss_v = self.loss(model, batch)
        if not torch.isfinite(loss_v):
            return {"arch_loss": float("nan")}
        grads = self.engine.grad(loss_v, learned)
        for a, g in zip(learned, grads):
            a.grad = g
        self.a_opt.step()
        return {"arch_loss": loss_v.item()}


# --- the official settings (``--preset paper``, ``paper-frc``, ``nb201``) ------------------------------
from nasforge.presets import register_preset  # noqa: E402

_GDAS_REPO = "D-X-Y/AutoDL-Projects"
_GDAS_OPTS = f"{_GDAS_REPO} configs/search-opts/GDAS-NASNet-CIFAR.config"
_GDAS_SCRIPT = f"{_GDAS_REPO} scripts-search/NASNet-space-search-by-GDAS.sh"
_GDAS_MODEL = f"{_GDAS_REPO} configs/search-archs/GDAS-NASNet-CIFAR.config, xautodl/models/cell_searchs/" \
              "search_model_gdas_nasnet.py"
_GDAS_RETRAIN = f"{_GDAS_REPO} scripts/nas-infer-train.sh (batch 96, cutout 16), configs/opts/NAS-CIFAR.config, " \
                "configs/archs/NAS-CIFAR-GDAS_V1.config"
_GDAS_SOURCES = {
    "data.valid_fraction": f"{_GDAS_REPO} configs/nas-benchmark/cifar-split.txt: 25k/25k of the training set",
    "strategy.epochs": _GDAS_OPTS, "strategy.batch_size": _GDAS_OPTS, "strategy.w_lr": _GDAS_OPTS,
    "strategy.w_lr_min": _GDAS_OPTS, "strategy.w_momentum": _GDAS_OPTS, "strategy.w_nesterov": _GDAS_OPTS,
    "strategy.w_wd": _GDAS_OPTS,
    "strategy.grad_clip": f"{_GDAS_REPO} exps/NAS-Bench-201-algos/GDAS.py (clip_grad_norm_ 5)",
    "strategy.layers": _GDAS_MODEL, "strategy.channels": _GDAS_MODEL, "strategy.final_bn_relu": _GDAS_MODEL,
    "strategy.pool_bn": f"{_GDAS_REPO} xautodl/models/cell_operations.py (POOLING: the pool alone)",
    "strategy.derive": _GDAS_MODEL + " genotype()", "strategy.unchosen": _GDAS_MODEL + " (MixedOp.forward_gdas)",
    "strategy.a_lr": _GDAS_SCRIPT, "strategy.a_wd": _GDAS_SCRIPT, "strategy.tau_max": _GDAS_SCRIPT,
    "strategy.tau_min": _GDAS_SCRIPT,
    "strategy.a_beta1": f"{_GDAS_REPO} exps/NAS-Bench-201-algos/GDAS.py", "strategy.a_beta2": f"{_GDAS_REPO} "
    "exps/NAS-Bench-201-algos/GDAS.py",
    "*": _GDAS_RETRAIN,
}
_GDAS_CIFAR = {
    "data": {"valid_fraction": 0.0},
    # the official NASNet-space search: C=16, N=2 -> 6 cells (2 normal, reduce, normal, reduce, normal)
    "strategy": {"epochs": 250, "batch_size": 256, "layers": 6, "channels": 16, "order": 1,
                 "w_lr": 0.025, "w_lr_min": 0.001, "w_momentum": 0.9, "w_nesterov": True, "w_wd": 5e-4,
                 "grad_clip": 5.0, "a_lr": 3e-4, "a_wd": 1e-3, "a_beta1": 0.5, "a_beta2": 0.999,
                 "tau_max": 10.0, "tau_min": 0.1, "final_bn_relu": True, "pool_bn": False, "derive": "pairs",
                 "unchosen": "skip"},
    # the official retraining of a searched cell: 295 + 5 warm-up epochs, no gradient clipping
    "train": {"epochs": 300, "batch_size": 96, "layers": 20, "channels": 36, "lr": 0.025, "lr_min": 0.0,
              "momentum": 0.9, "weight_decay": 5e-4, "grad_clip": 0.0, "cutout": 16, "drop_path": 0.2,
              "auxiliary": True, "auxiliary_weight": 0.4, "train_on": "train+valid"},
}
_FRC_SOURCE = f"{_GDAS_REPO} scripts-search/NASNet-space-search-by-GDAS-FRC.sh, " \
              "configs/search-archs/GDASFRC-NASNet-CIFAR.config"
for _dataset in ("cifar10", "cifar100"):
    register_preset("paper", "gdas", _dataset, _GDAS_CIFAR, sources=_GDAS_SOURCES,
                    note="official NASNet-space search; its retraining lacks Nesterov and the 5 warm-up epochs "
                         "here" + ("; the official CIFAR-100 search learns alpha on 5k test images, here on the "
                                   "other half of the training set" if _dataset == "cifar100" else ""))
    register_preset("paper-frc", "gdas", _dataset,
                    {**_GDAS_CIFAR, "strategy": {**_GDAS_CIFAR["strategy"], "fixed_reduce": True}},
                    sources={**_GDAS_SOURCES, "strategy.fixed_reduce": _FRC_SOURCE},
                    note="GDAS (FRC): the hand-designed reduction cell in the supernet and the final network")

_NB201_OPTS = f"{_GDAS_REPO} configs/nas-benchmark/algos/GDAS.config, scripts-search/NAS-Bench-201-algos/GDAS.sh"
register_preset("nb201", "gdas", "cifar10", {
    "data": {"valid_fraction": 0.0},
    "space": {"name": "nb201", "C": 16, "N": 5},
    "strategy": {"epochs": 250, "batch_size": 64, "order": 1, "w_lr": 0.025, "w_lr_min": 0.001, "w_momentum": 0.9,
                 "w_nesterov": True, "w_wd": 5e-4, "grad_clip": 5.0, "a_lr": 3e-4, "a_wd": 1e-3, "a_beta1": 0.5,
                 "a_beta2": 0.999, "tau_max": 10.0, "tau_min": 0.1, "unchosen": "zero_weight"},
    # the benchmark's training of a cell (200 epochs; its Nesterov momentum is not in the train section)
    "train": {"epochs": 200, "batch_size": 256, "lr": 0.1, "lr_min": 0.0, "momentum": 0.9, "weight_decay": 5e-4,
              "grad_clip": 0.0, "cutout": 0, "drop_path": 0.0, "auxiliary": False},
}, sources={"*": _NB201_OPTS, "strategy.unchosen": f"{_GDAS_REPO} xautodl/models/cell_searchs/search_cells.py "
                                                   "(NAS201SearchCell.forward_gdas)",
            **{f"train.{k}": f"{_GDAS_REPO} configs/nas-benchmark/hyper-opts/200E.config" for k in
               ("epochs", "batch_size", "lr", "lr_min", "momentum", "weight_decay")}},
    note="NAS-Bench-201's GDAS run; the found cell trained as the benchmark trains its cells (200 epochs)")
