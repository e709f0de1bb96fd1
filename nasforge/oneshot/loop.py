"""The one bi-level search loop of every one-shot method (DARTS, GDAS, ProxylessNAS, DenseNAS).

The loop owns what the methods share: the two halves of the training split (weights on
one, architecture on the other), the two optimisers, the per-step cosine schedule of the
weights, epochs and their records in the store, BatchNorm recalibration before the
supernet's valid accuracy, the DARTS+ stopping hook, checkpoints (at every epoch end and,
with ``checkpoint_steps``, inside an epoch) and exact resume. A method
(``nasforge.strategies.oneshot.OneShotStrategy``) keeps only what is its own: how its supernet is relaxed (the forward
of a weight step) and its architecture step.

How an epoch interleaves the two kinds of step is the method's ``schedule``:

- ``paired``: one (train batch, valid batch) pair per step; the architecture step comes
  first (``arch_first``, DARTS) or second (GDAS);
- ``every``: a weight step per train batch and, after every ``arch_every``-th one, an
  architecture step on the next batch of an endless valid stream (ProxylessNAS);
- ``passes``: a pass of architecture steps over the valid half, then a pass of weight
  steps over the train half (DenseNAS).

Epochs before ``warmup_epochs()`` train only the weights.

Resume. Every epoch reseeds the global RNG from ``(seed, epoch)`` and draws its batch
order from generators seeded the same way, so an epoch replays exactly. A checkpoint
inside an epoch also holds the global RNG state and the running sums; resuming rebuilds
the epoch's batch streams, skips the batches already used and restores the RNG, so a
resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from nasforge import distributed
from nasforge.config import option
from nasforge.data import Dataset, split_half
from nasforge.errors import ConfigError, TrainingError
from nasforge.experiment import Experiment
from nasforge.progress import Progress
from nasforge.training import Engine, StepResult, evaluate, recalibrate_bn, set_lr, weight_step
from nasforge.seeds import seed_for

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


@dataclass
class OneShotConfig:
    """Options every one-shot method has: the loop's (epochs, batches, both optimisers, checkpoints)."""

    epochs: int | None = option(None, lo=1, hi=100000, help="search epochs (auto: dataset profile)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto)")
    w_lr: float = option(0.025, lo=0.0, hi=10.0, help="weight SGD learning rate (cosine-annealed per step)")
    w_lr_min: float = option(0.001, lo=0.0, hi=10.0, help="final weight learning rate")
    w_momentum: float = option(0.9, lo=0.0, hi=1.0, help="weight SGD momentum")
    w_nesterov: bool = option(False, help="Nesterov momentum for the weights")
    w_wd: float = option(3e-4, lo=0.0, hi=1.0, help="weight decay of the weights")
    grad_clip: float = option(5.0, lo=0.0, hi=1e6, help="gradient-norm clip of the weights (0: off)")
    a_lr: float = option(3e-4, lo=0.0, hi=10.0, help="architecture Adam learning rate")
    a_wd: float = option(1e-3, lo=0.0, hi=1.0, help="architecture weight decay")
    a_beta1: float = option(0.5, lo=0.0, hi=1.0, help="architecture Adam beta1")
    a_beta2: float = option(0.999, lo=0.0, hi=1.0, help="architecture Adam beta2")
    a_eps: float = option(1e-8, lo=0.0, hi=1.0, help="architecture Adam eps")
    checkpoint_steps: int = option(0, lo=0, hi=10**9,
                                   help="also checkpoint every N steps inside an epoch (0: at epoch ends only)")


def make_optimizers(method: Any, params: Sequence[Tensor]) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The two optimisers of a bi-level search (also set on ``method``): SGD on the weights, Adam on alpha."""
    cfg = method.config
    method.w_opt = torch.optim.SGD(params, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                   nesterov=cfg.w_nesterov and cfg.w_momentum > 0, weight_decay=cfg.w_wd)
    method.a_opt = torch.optim.Adam(method.arch_parameters(), lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2),
                                    eps=cfg.a_eps, weight_decay=cfg.a_wd)
    method.lr = cfg.w_lr
    return method.w_opt, method.a_opt


def search_step(method: Any, engine: Engine, model: torch.nn.Module, params: Sequence[Tensor],
                train_batch: Batch | None, valid_batch: Batch | None, warm: bool = False,
                net: torch.nn.Module | None = None) -> tuple[StepResult | None, dict[str, float] | None]:
    """One step of the loop: the architecture step on ``valid_batch`` (before or after, per the method)
    and the weight step on ``train_batch`` (either may be None). Returns (weight step, arch metrics).
    ``net``: what the weight step runs (the supernet under DistributedDataParallel; default ``model``)."""
    net = model if net is None else net
    wb = engine.batch(train_batch) if train_batch is not None else None
    ab = engine.batch(valid_batch) if valid_batch is not None else None
    arch = res = None
    if ab is not None and method.arch_first:
        arch = method.arch_step(model, ab, wb)
        if not math.isfinite(next(iter(arch.values()))):
            return None, arch
    if wb is not None:
        # a method's own weight loss where it has one (ProxylessNAS's label smoothing), else cross-entropy
        res = weight_step(engine, method.w_opt, params, lambda x: method.train_forward(net, x, warm), wb,
                          method.config.grad_clip, getattr(method, "train_loss", None))
        if not res.finite:
            return res, arch
    if ab is not None and not method.arch_first:
        arch = method.arch_step(model, ab, wb)
    return res, arch


class SearchLoop:
    """One run of the bi-level loop for ``method`` (see the module docstring)."""

    def __init__(self, method: Any, space: Any, data: Dataset, experiment: Experiment | None,
                 progress: Progress, seed: int, callbacks: Sequence[Callable[..., None]], engine: Engine):
        cfg = method.config
        if cfg.epochs is None or cfg.batch_size is None:
            raise ConfigError("strategy.epochs and strategy.batch_size must be set (make the strategy with "
                              "make_strategy to fill them from the dataset profile)")
        self.method, self.space, self.data, self.experiment = method, space, data, experiment
        self.progress, self.seed, self.callbacks, self.engine = progress, seed, callbacks, engine
        self.cfg = cfg
        method.engine = engine
        #: this process's place in a data-parallel run (rank 0 of 1 outside torchrun)
        self.dist = distributed.context()
        #: where the run's records go: rank 0 alone writes (every rank reads a checkpoint)
        self.writer = experiment if self.dist.is_main else None
        # rank 0 prepares first (a latency table is measured once, by it, and written); the others then
        # read what it wrote, so every rank holds the same table
        if self.dist.is_main:
            method.setup(space, data, experiment, progress)
        distributed.barrier()
        if not self.dist.is_main:
            method.setup(space, data, experiment, progress)
        torch.manual_seed(seed)
        model = method.build_supernet(space, data)
        if self.dist.active and engine.config.sync_bn:
            model = distributed.sync_batchnorm(model, engine.device)
        self.model = engine.module(model)
        method.init_arch(space, self.model)
        self.params = list(self.model.parameters())
        self.w_opt, self.a_opt = make_optimizers(method, self.params)
        self.net = self.model
        if self.dist.active:
            self.net = distributed.wrap_ddp(self.model, engine.device, unused=method.samples_subnetworks)
            distributed.average_grads_before_step(self.a_opt)
        shard = (self.dist.rank, self.dist.world)
        self.w_half, self.a_half = split_half(data.train, seed)
        self.w_loader = data.loader(self.w_half, cfg.batch_size, device=engine.device, shard=shard)
        self.a_loader = data.loader(self.a_half, cfg.batch_size, device=engine.device, shard=shard)
        # what an epoch's valid accuracy reads: BatchNorm recalibration batches of the weight half (each rank
        # its slice; with synchronised BatchNorm the statistics of the whole batch) and the valid split, or,
        # with no held-out split (DARTS's 25k/25k halves of CIFAR-10), the architecture half as the paper reports
        self.bn_loader = data.loader(self.w_half, cfg.batch_size, train=False, device=engine.device, shard=shard)
        self.valid_loader = data.loader(data.valid if len(data.valid) else self.a_half, max(cfg.batch_size, 256),
                                        train=False, device=engine.device)
        n_w, n_a = len(self.w_loader), len(self.a_loader)
        self.n_w, self.n_a = n_w, n_a
        #: weight steps per epoch (the schedule spans epochs x this)
        self.w_steps = min(n_w, n_a) if method.schedule == "paired" else n_w
        if method.schedule not in ("paired", "every", "passes"):
            raise ValueError(f"unknown one-shot schedule {method.schedule!r}")

    # --- steps of an epoch ---------------------------------------------------------------
    def positions(self, tick: int, warm: bool) -> tuple[int, int]:
        """Where the weight and the architecture streams stand after ``tick`` steps of an epoch (batches
        drawn from each): all a checkpoint inside an epoch needs to restart both loaders there."""
        schedule = self.method.schedule
        if schedule == "paired":
            return tick, (0 if warm else tick)
        if schedule == "every":
            return tick, (0 if warm else tick // self.method.arch_every())
        n_a = 0 if warm else self.n_a  # passes: the architecture pass first
        return max(0, tick - n_a), min(tick, n_a)

    def ticks(self, epoch: int, warm: bool, start: int = 0) -> Iterator[tuple[Batch | None, Batch | None]]:
        """The epoch as (train batch or None, valid batch or None) steps from step ``start``, from its
        seeded streams (batches before ``start`` are not loaded)."""
        w_seed = seed_for(self.seed, "search.train_batches", epoch)
        a_seed = seed_for(self.seed, "search.valid_batches", epoch)
        w_pos, a_pos = self.positions(start, warm)
        w_iter = self.w_loader.epoch(w_seed, w_pos)
        schedule = self.method.schedule
        if schedule == "paired":
            if warm:
                for wb in itertools.islice(w_iter, self.w_steps - start):
                    yield wb, None
                return
            yield from zip(w_iter, self.a_loader.epoch(a_seed, a_pos))
        elif schedule == "every":
            every = self.method.arch_every()
            # the architecture stream runs on over passes of its half (pass 0 seeded as the epoch's stream)
            a_stream = None if warm else self.a_loader.endless(
                lambda p: a_seed if p == 0 else seed_for(a_seed, "search.valid_batches", p), a_pos)
            for step, wb in enumerate(w_iter, start):
                ab = next(a_stream) if a_stream is not None and (step + 1) % every == 0 else None
                yield wb, ab
        else:  # passes
            if not warm:
                for ab in self.a_loader.epoch(a_seed, a_pos):
                    yield None, ab
            for wb in w_iter:
                yield wb, None

    def ticks_per_epoch(self, warm: bool) -> int:
        if self.method.schedule == "passes":
            return self.n_w + (0 if warm else self.n_a)
        return self.w_steps

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, epoch: int, partial: dict[str, Any] | None = None) -> None:
        """Checkpoint after ``epoch`` (complete), plus ``partial``: progress inside the next epoch (rank 0)."""
        if self.writer is None:
            return
        method = self.method
        state = {"epoch": epoch, "model": self.model.state_dict(),
                 "alphas": [a.detach().clone() for a in method.arch_parameters()],
                 "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                 "engine": self.engine.state_dict(), "extra": method.extra_state(), "partial": partial}
        self.writer.save_checkpoint("search", state)

    def load(self) -> tuple[int, dict[str, Any] | None]:
        """Restore the last checkpoint in place: (first epoch to run, progress inside it or None).

        Epoch rows logged past the checkpoint (a crash between logging and checkpointing) are
        forgotten, so they are recomputed exactly.
        """
        if self.experiment is None:
            return 0, None
        start, partial = 0, None
        state = self.experiment.load_checkpoint("search")
        if state is not None:
            method = self.method
            self.model.load_state_dict(state["model"])
            with torch.no_grad():
                for a, saved in zip(method.arch_parameters(), state["alphas"]):
                    a.copy_(saved)
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
            self.engine.load_state_dict(state.get("engine") or {})
            method.load_extra_state(state.get("extra") or {})
            start, partial = state["epoch"] + 1, state.get("partial")
            log.info("resuming search at epoch %d%s", start, f" step {partial['tick']}" if partial else "")
        if self.writer is not None:
            self.writer.store.truncate_epochs("search", start - 1)
        return start, partial

    # --- the run -------------------------------------------------------------------------
    def run(self) -> Any:
        """The whole search: epochs from the last checkpoint to the end (or a DARTS+ stop); a ``SearchResult``."""
        from nasforge.strategies.base import SearchResult

        method, cfg, experiment = self.method, self.cfg, self.experiment
        start, partial = self.load()
        history = experiment.store.epochs("search") if experiment is not None else []
        stopper = method.stopper()
        stopped = stopper.check(history) if stopper and history else None  # a resumed run that had stopped
        warmup = method.warmup_epochs()
        total = sum(self.ticks_per_epoch(e < warmup) for e in range(cfg.epochs))
        done = sum(self.ticks_per_epoch(e < warmup) for e in range(start)) + (partial["tick"] if partial else 0)
        started = time.time()
        with self.progress.task(f"search ({method.name})", total=total, completed=done) as bar:
            for epoch in range(start if stopped is None else cfg.epochs, cfg.epochs):
                record = self.epoch(epoch, epoch < warmup, bar, partial if partial and partial["epoch"] == epoch
                                    else None)
                partial = None
                history.append(record)
                if self.writer is not None:
                    self.writer.store.log_epoch("search", epoch, record["metrics"], record["arch_weights"],
                                                record["arch"])
                    self.save(epoch)
                distributed.barrier()  # every rank goes on once the epoch is checkpointed: a rank dying later
                # cannot take an unwritten checkpoint with it
                for cb in self.callbacks:
                    cb(method, epoch, record)
                stopped = stopper.check(history) if stopper else None
                if stopped is not None:
                    log.info("early stop (%s) at epoch %d: %s", stopped["criterion"], epoch, stopped["detail"])
                    break
        arch = method.derive(self.space)
        info = {"epochs": len(history), "seconds": time.time() - started, "device": str(self.engine.device),
                "early_stop": stopped}
        if self.writer is not None:
            self.writer.store.set_meta("early_stop", stopped)
        info.update(method.search_info(self.space, self.writer))
        return SearchResult(arch, history, info)

    def epoch(self, epoch: int, warm: bool, bar: Any, partial: dict[str, Any] | None) -> dict[str, Any]:
        """Run one epoch (or its rest, after ``partial``) and return its record."""
        method, cfg, engine, model = self.method, self.cfg, self.engine, self.model
        method.epoch_started(epoch)
        torch.manual_seed(seed_for(self.seed, "search.epoch", epoch))
        model.train()
        tic = time.time()
        sums: dict[str, float] = {"train_loss": 0.0, "train_acc": 0.0}
        arch_sums: dict[str, float] = {}
        n_w = n_a = 0
        skip = 0
        if partial is not None:
            sums, arch_sums, n_w, n_a = partial["sums"], partial["arch_sums"], partial["n_w"], partial["n_a"]
            skip = partial["tick"]
            tic -= partial["seconds"]
        if partial is not None:  # the RNG as it was at the checkpoint; the loaders restart at its position
            _set_rng(partial["rng"], engine)
        for tick, (wb, ab) in enumerate(self.ticks(epoch, warm, skip), skip):
            method.lr = method.weight_lr(epoch, n_w, self.w_steps)
            set_lr(self.w_opt, method.lr)
            res, arch = search_step(method, engine, model, self.params, wb, ab, warm, self.net)
            if arch is not None:
                self._check_arch(epoch, tick, arch)
                for k, v in arch.items():
                    arch_sums[k] = arch_sums.get(k, 0.0) + v
                n_a += 1
            if res is not None:
                if not res.finite:
                    raise TrainingError(f"search loss became NaN/inf at epoch {epoch} step {tick}; lower the "
                                        f"learning rates (e.g. --set strategy.w_lr={cfg.w_lr / 4:g}); earlier "
                                        "epochs are checkpointed, resume after fixing the config")
                sums["train_loss"] += res.loss
                sums["train_acc"] += res.acc
                n_w += 1
                bar.advance(1, epoch=epoch, loss=res.loss)
            else:
                bar.advance(1, epoch=epoch)
            if cfg.checkpoint_steps and (tick + 1) % cfg.checkpoint_steps == 0:
                self.save(epoch - 1, {"epoch": epoch, "tick": tick + 1,
                                      "loader": dict(zip(("train", "valid"), self.positions(tick + 1, warm))),
                                      "sums": dict(sums),
                                      "arch_sums": dict(arch_sums), "n_w": n_w, "n_a": n_a,
                                      "seconds": time.time() - tic, "rng": _get_rng(engine)})
                distributed.barrier()
                for cb in self.callbacks:
                    hook = getattr(cb, "step_checkpointed", None)
                    if hook is not None:
                        hook(method, epoch, tick + 1)
        metrics: dict[str, Any] = {k: v / max(n_w, 1) for k, v in sums.items()}
        if n_a:
            metrics.update({k: v / n_a for k, v in arch_sums.items()})
        metrics["valid_acc"] = self.valid_accuracy(epoch)
        metrics["lr"] = method.lr
        metrics.update(method.epoch_metrics())
        metrics["seconds"] = time.time() - tic
        arch = method.derive(self.space)
        bar.update(epoch=epoch, valid_acc=metrics["valid_acc"])
        log.info("search epoch %d: %s", epoch, metrics)
        return {"epoch": epoch, "metrics": metrics, "arch_weights": method.arch_weights(self.space),
                "arch": arch.to_dict()}

    def _check_arch(self, epoch: int, tick: int, values: dict[str, float]) -> None:
        if not math.isfinite(next(iter(values.values()))):
            raise TrainingError(f"architecture loss became NaN/inf at epoch {epoch} step {tick}; lower "
                                f"strategy.a_lr (now {self.cfg.a_lr:g}); earlier epochs are checkpointed, "
                                "resume after fixing the config")

    def valid_accuracy(self, epoch: int) -> float:
        """Accuracy of the method's evaluation network on the valid split, after BN recalibration."""
        method, engine, model = self.method, self.engine, self.model
        forward = method.eval_forward(model)
        recal = engine.config.bn_recalibration
        if recal:
            recalibrate_bn(model, forward, self.bn_loader.epoch(seed_for(self.seed, "search.bn_recalibration", epoch)),
                           engine, recal)
        acc, _ = evaluate(model, self.valid_loader.epoch(), engine, forward)
        model.train()
        return acc


def _get_rng(engine: Engine) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if engine.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(engine.device)
    return state


def _set_rng(state: dict[str, Any], engine: Engine) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and engine.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], engine.device)

