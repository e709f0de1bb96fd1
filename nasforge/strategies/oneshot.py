"""The base of one-shot strategies: what a method supplies to the shared bi-level loop.

A one-shot method (DARTS, GDAS, ProxylessNAS, DenseNAS) is a relaxation of a supernet plus an
architecture step; ``search`` hands it to ``nasforge.oneshot.loop.SearchLoop``, which owns
everything else (data halves, optimisers, schedule, records, checkpoints, exact resume).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.data import Dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.oneshot.loop import Batch, SearchLoop
from nasforge.progress import Progress
from nasforge.strategies.base import EpochCallback, SearchResult, Strategy
from nasforge.training import Engine, EngineConfig, cosine_lr


class OneShotStrategy(Strategy):
    """A one-shot method: a relaxed supernet and an architecture step; ``search`` runs the shared loop.

    Subclasses implement ``build_supernet``, ``init_arch``, ``arch_parameters``,
    ``train_forward``, ``arch_step``, ``eval_forward``, ``derive`` and ``arch_weights``; the
    hooks ``setup``, ``epoch_started``, ``epoch_metrics``, ``search_info``, ``stopper``,
    ``extra_state``/``load_extra_state`` have defaults.
    """

    kind: ClassVar[str] = "oneshot"
    schedule: ClassVar[str] = "paired"
    arch_first: ClassVar[bool] = False
    #: a weight step runs a sampled sub-network (some weights get no gradient): data-parallel runs tell DDP
    samples_subnetworks: ClassVar[bool] = True

    #: set by the loop while it runs (an architecture step may need them)
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer
    lr: float

    def __init__(self, config: Any = None):
        super().__init__(config)
        #: the loop's engine while it runs; the CPU in float32 for steps called directly
        self.engine = Engine(EngineConfig(device="cpu"))

    # --- what a method supplies ------------------------------------------------------
    def setup(self, space: Any, data: Dataset, experiment: Experiment | None, progress: Progress) -> None:
        """Before the supernet is built (e.g. load or build a latency table)."""

    def build_supernet(self, space: Any, data: Dataset) -> nn.Module:
        raise NotImplementedError

    def init_arch(self, space: Any, model: nn.Module) -> None:
        """Create the architecture parameters (on ``self.engine.device``)."""
        raise NotImplementedError

    def arch_parameters(self) -> list[Tensor]:
        raise NotImplementedError

    def train_forward(self, model: nn.Module, x: Tensor, warm: bool) -> Tensor:
        """Logits of a weight step: the relaxed (or sampled) supernet."""
        raise NotImplementedError

    def weight_lr(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The learning rate of weight step ``step`` of ``epoch`` (the loop sets it before the step): one
        cosine over every weight step of the search, so a short run anneals fully."""
        cfg = self.config
        return cosine_lr((epoch * steps_per_epoch + step) / (cfg.epochs * steps_per_epoch), cfg.w_lr, cfg.w_lr_min)

    def arch_step(self, model: nn.Module, batch: Batch, train_batch: Batch | None = None) -> dict[str, float]:
        """One architecture update on a valid batch (``train_batch``: the step's train batch, for a
        second-order method); returns its metrics (the first one a loss or reward)."""
        raise NotImplementedError

    def eval_forward(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The network whose valid accuracy an epoch records (the relaxed supernet or the derived path)."""
        raise NotImplementedError

    def derive(self, space: Any) -> Arch:
        raise NotImplementedError

    def arch_weights(self, space: Any) -> Any:
        raise NotImplementedError

    def warmup_epochs(self) -> int:
        return 0

    def arch_every(self) -> int:
        return 1

    def epoch_started(self, epoch: int) -> None:
        """Per-epoch schedules (a temperature)."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Values recorded with each epoch besides the loop's."""
        return {}

    def search_info(self, space: Any, experiment: Experiment | None) -> dict[str, Any]:
        """Method-specific entries of ``SearchResult.info``."""
        return {}

    def stopper(self) -> Any:
        """An early-stopping policy with ``check(history) -> dict | None`` (DARTS+), or None."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Method state a checkpoint must hold besides the architecture parameters (a baseline)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def new_arch_param(self, *shape: int, std: float = 1e-3) -> nn.Parameter:
        """``std * N(0, 1)`` drawn on the CPU (the same values on every device), placed on the device."""
        return nn.Parameter((std * torch.randn(*shape)).to(self.engine.device))

    # --- the loop ----------------------------------------------------------------------
    def search(self, space: Any, data: Dataset, *, experiment: Experiment | None = None,
               progress: Progress | None = None, seed: int = 0, callbacks: Sequence[EpochCallback] = (),
               engine: Engine | None = None) -> SearchResult:
        """Run (or resume, when ``experiment`` holds a search checkpoint) the bi-level search."""
        reason = self.supports(space)
        if reason:
            raise ConfigError(reason)
        return SearchLoop(self, space, data, experiment, progress or Progress(), seed, callbacks,
                          engine or Engine()).run()


