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
its own Gumbel sample. The derivation is DARTS's (per node the two inputs whose
strongest non-``none`` op weighs most, by softmax(alpha)); on other spaces it is the
space's own (nb201: per edge the strongest op).

Defaults, checked against the official code (D-X-Y/AutoDL-Projects): architecture Adam
lr 3e-4, betas (0.5, 0.999), weight decay 1e-3 (scripts-search ``--arch_learning_rate
0.0003 --arch_weight_decay 0.001``, ``exps/.../GDAS.py``); tau 10 -> 0.1 (``--tau_max 10
--tau_min 0.1``); weights SGD lr 0.025 cosine-annealed to 0.001, momentum 0.9, gradient
clip 5, as in DARTS. The official search configs use weight decay 5e-4 with Nesterov
momentum (``configs/search-opts/GDAS-NASNet-CIFAR.config``); here ``w_wd`` defaults to
that 5e-4, and momentum is plain (the shared DARTS optimiser has no Nesterov option).

Fixed reduction cell (``fixed_reduce=True``, the paper's "GDAS (FRC)"): the supernet's
reduction cells are the hand-designed ``GdasReductionCell`` and only the normal cell is
searched: the supernet has no reduce choices, so there are no reduce alphas, and the
per-epoch ``arch_weights`` record only the normal cell. The FRC is built from grouped 1x3/3x1 convolutions, which
are not DARTS ops, so it cannot be written as a darts ``Arch``. The derived arch's
reduce choices are therefore the constant ``FRC_STANDIN_REDUCE`` below -- never derived
from the (untrained) reduce alphas -- the closest cell the DARTS ops can express: each
FRC branch (conv(s0), conv(s1), max-pool(s0), max-pool(s1)) appears once, paired within
a node with a parameter-free max-pool or identity so every node has two inputs. The
final network trained from that arch uses this stand-in, not the FRC itself;
``SearchResult.info["reduce_cell"]`` says so. ``fixed_reduce`` needs the 4-node space
(the FRC has four outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nasforge.config import option
from nasforge.data import Dataset
from nasforge.errors import ConfigError
from nasforge.spaces.darts import DartsSpace, GdasReductionCell, Genotype
from nasforge.spaces.modular import ModuleSpace
from nasforge.strategies.base import register_strategy
from nasforge.strategies.darts import DartsConfig, DartsStrategy

#: The darts-Arch stand-in for GDAS's fixed reduction cell (4 nodes; ``(op, input)`` pairs).
FRC_STANDIN_REDUCE: tuple[tuple[str, int], ...] = (
    ("sep_conv_3x3", 0), ("max_pool_3x3", 1),   # conv(s0)
    ("max_pool_3x3", 0), ("sep_conv_3x3", 1),   # conv(s1)
    ("max_pool_3x3", 0), ("skip_connect", 2),   # max-pool(s0)
    ("max_pool_3x3", 1), ("skip_connect", 3),   # max-pool(s1)
)
FRC_NODES = 4


@dataclass
class GdasConfig(DartsConfig):
    order: int = option(1, help="GDAS is first order only (1); 2 is rejected")
    w_wd: float = option(5e-4, lo=0.0, hi=1.0, help="weight decay of the weights (official GDAS config: 5e-4)")
    tau_max: float = option(10.0, lo=1e-3, hi=1e4, help="Gumbel-softmax temperature of the first epoch")
    tau_min: float = option(0.1, lo=1e-3, hi=1e4, help="temperature of the last epoch (linear in between)")
    fixed_reduce: bool = option(False, help="use GDAS's hand-designed reduction cell and search only the normal cell")

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


@register_strategy
class GdasStrategy(DartsStrategy):
    """GDAS on a cell space: one Gumbel-sampled op per edge, straight-through gradients."""

    name = "gdas"
    kind = "oneshot"
    description = "GDAS: Gumbel-max sampled sub-network per step (one op per edge), first order"
    Config = GdasConfig
    arch_first = False  # the official code: a weight step, then an architecture step

    def __init__(self, config: GdasConfig | None = None):
        super().__init__(config)
        self.tau = self.config.tau_max

    # --- the relaxation ------------------------------------------------------
    def decide(self) -> None:
        """A hard Gumbel sample per edge at the current temperature: only the chosen op runs."""
        self.relax.hard(self.tau)

    def epoch_started(self, epoch: int) -> None:
        self.tau = temperature(epoch, self.config.epochs, self.config.tau_max, self.config.tau_min)

    # --- fixed reduction cell --------------------------------------------------
    def build_supernet(self, space: ModuleSpace, data: Dataset) -> nn.Module:
        options = {"fixed_reduce": GdasReductionCell} if self.config.fixed_reduce else {}
        return space.supernet(data.input_shape, data.num_classes, layers=self.config.layers,
                              channels=self.config.channels, **options)

    def derive(self, space: ModuleSpace):
        if not self.config.fixed_reduce:
            return super().derive(space)
        # the supernet has no reduce choices: the arch takes the fixed stand-in's
        standin = space.arch_from_genotype(Genotype(FRC_STANDIN_REDUCE, FRC_STANDIN_REDUCE)).as_dict()
        values = {k: v for k, v in standin.items() if k.startswith("reduce.")}
        return space.arch({**self.relax.derive(), **values})

    # --- the loop's hooks -----------------------------------------------------------
    def setup(self, space: Any, data: Dataset, experiment: Any, progress: Any) -> None:
        super().setup(space, data, experiment, progress)
        if self.config.fixed_reduce and not isinstance(space, DartsSpace):
            raise ConfigError(f"strategy.fixed_reduce replaces the searched reduction cell of the darts space; "
                              f"space '{getattr(space, 'name', space)}' searches none, set strategy.fixed_reduce=false")
        if self.config.fixed_reduce and isinstance(space, DartsSpace) and space.nodes != FRC_NODES:
            raise ConfigError(f"strategy.fixed_reduce needs a {FRC_NODES}-node darts space (the hand-designed "
                              f"reduction cell has {FRC_NODES} outputs), not nodes={space.nodes}; "
                              f"set space.nodes={FRC_NODES} or strategy.fixed_reduce=false")

    def search_info(self, space: Any, experiment: Any) -> dict[str, Any]:
        info: dict[str, Any] = {"fixed_reduce": self.config.fixed_reduce}
        if self.config.fixed_reduce:
            info["reduce_cell"] = ("not searched: GDAS hand-designed reduction cell in the supernet; the arch's "
                                   "reduce choices are the fixed darts stand-in FRC_STANDIN_REDUCE")
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
