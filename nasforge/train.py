"""Final training of a found architecture: the DARTS evaluation recipe.

A fresh network is built from the architecture at the chosen depth and width and trained
with SGD (momentum 0.9, weight decay 3e-4, cosine learning rate annealed per step, gradient
clip 5), optionally with cutout, drop-path (probability ramped linearly over the epochs) and
an auxiliary head (loss weight 0.4). The loop is ``nasforge.training.fit`` on the run's
``Engine`` (device, precision, optional ``torch.compile``). Before it is scored on the test
split, its BatchNorm statistics are re-estimated on training batches (``recalibrate_bn``):
the running averages of a short training lag far behind the weights.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge import distributed, training
from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset, Loader, Split
from nasforge.errors import ExperimentError
from nasforge.experiment import Experiment
from nasforge.progress import Progress
from nasforge.seeds import seed_for
from nasforge.spaces import SearchSpace, get_space_class
from nasforge.training import Engine, FitConfig, fit, recalibrate_bn
from nasforge.utils import atomic_torch_save

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int | None = option(None, lo=1, hi=100000, help="training epochs (auto: dataset profile; paper 600)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto; paper 96)")
    layers: int | None = option(None, lo=1, hi=256, help="cells of the final network (auto; paper 20)")
    channels: int | None = option(None, lo=2, hi=4096, help="initial channels of the final network (auto; paper 36)")
    lr: float = option(0.025, lo=0.0, hi=10.0, help="SGD learning rate (cosine-annealed per step)")
    lr_min: float = option(0.0, lo=0.0, hi=10.0, help="final learning rate")
    momentum: float = option(0.9, lo=0.0, hi=1.0, help="SGD momentum")
    weight_decay: float = option(3e-4, lo=0.0, hi=1.0, help="weight decay")
    grad_clip: float = option(5.0, lo=0.0, hi=1e6, help="gradient-norm clip (0: off)")
    cutout: int | None = option(None, lo=0, hi=1024, help="cutout side length, 0 off (auto; paper 16)")
    drop_path: float | None = option(None, lo=0.0, hi=0.9, help="final drop-path probability (auto; paper 0.2)")
    auxiliary: bool | None = option(None, help="auxiliary head after the second reduction (auto; paper on)")
    auxiliary_weight: float = option(0.4, lo=0.0, hi=10.0, help="auxiliary loss weight")
    train_on: str = option("train+valid", choices=("train", "train+valid"),
                           help="data the final network trains on (the paper uses the whole training set)")


@dataclass
class TrainResult:
    model: nn.Module
    metrics: dict[str, Any] = field(default_factory=dict)


def build_options(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options for ``space.build`` from a training config."""
    return {"layers": cfg.layers, "channels": cfg.channels, "auxiliary": bool(cfg.auxiliary)}


def resolve_train_config(cfg: TrainConfig, dataset: str) -> TrainConfig:
    """A copy of ``cfg`` whose "auto" fields (None: epochs, batch size, depth, width, cutout, drop-path,
    auxiliary head) take the values of ``dataset``'s profile, as on the command line."""
    from dataclasses import replace

    from nasforge.profiles import fill_auto

    return fill_auto(replace(cfg), dataset, "train")


def _loss(model: nn.Module, logits: Tensor, y: Tensor, aux_weight: float) -> Tensor:
    loss = F.cross_entropy(logits, y)
    aux = getattr(model, "aux_logits", None)
    if aux is not None:
        loss = loss + aux_weight * F.cross_entropy(aux, y)
    return loss


def eval_loader(data: Dataset, split: Split, device: Any = None, batch_size: int = 256) -> Loader:
    """Batches of a split of ``data`` in order, images as evaluation sees them."""
    return data.loader(split, batch_size, train=False, device=device)


def calibrate_bn(model: nn.Module, batches: Loader, engine: Engine, seed: int) -> int:
    """Fresh BatchNorm statistics from up to ``engine.config.bn_recalibration`` shuffled training
    batches (seeded; ``batches`` made with ``train=False``, no drop-path: the statistics of what
    evaluation sees). Leaves the model in eval mode; returns the number of batches used."""
    drop = getattr(model, "drop_path_prob", None)
    if drop is not None:
        model.drop_path_prob = 0.0
    try:
        return recalibrate_bn(model, model, batches.epoch(seed), engine, engine.config.bn_recalibration)
    finally:
        if drop is not None:
            model.drop_path_prob = drop


def train_arch(space: SearchSpace, arch: Arch, data: Dataset, cfg: TrainConfig, *,
               experiment: Experiment | None = None, progress: Progress | None = None, seed: int = 0,
               engine: Engine | None = None) -> TrainResult:
    """Build ``arch`` fresh, train it, and score it on the test split (resumes from a checkpoint).

    ``engine``: device and precision (default ``Engine()``: the GPU when there is one); with
    ``engine.compile`` the training steps run a ``torch.compile``d network.
    """
    progress = progress or Progress()
    engine = engine or Engine()
    cfg = resolve_train_config(cfg, data.name)  # TrainConfig(epochs=1) from the API: auto fields resolved
    torch.manual_seed(seed)
    ctx = distributed.context()  # a data-parallel run: DDP, each rank its slice of every batch, rank 0 writes
    writer = experiment if ctx.is_main else None
    model = space.build(arch, data.input_shape, data.num_classes, **build_options(cfg))
    if ctx.active and engine.config.sync_bn:
        model = distributed.sync_batchnorm(model, engine.device)
    model = engine.module(model)
    net = engine.compile(distributed.wrap_ddp(model, engine.device) if ctx.active else model)
    if cfg.train_on == "train+valid":
        split = Split(data.train.source, np.concatenate([data.train.indices, data.valid.indices]))
    else:
        split = data.train
    loader = data.loader(split, cfg.batch_size, augment=data.augment.replace(cutout=cfg.cutout or 0),
                         device=engine.device, shard=(ctx.rank, ctx.world))
    # each rank its slice (with synchronised BatchNorm: the statistics of the whole batch), as in the search
    bn_batches = data.loader(split, cfg.batch_size, train=False, device=engine.device, shard=(ctx.rank, ctx.world))
    valid_batches = eval_loader(data, data.valid, engine.device)
    resume, history, start = None, [], 0
    if experiment is not None:
        resume = experiment.load_checkpoint("train")
        start = resume["epoch"] + 1 if resume is not None else 0
        if writer is not None:
            writer.store.truncate_epochs("train", start - 1)
        history = [r["metrics"] for r in experiment.store.epochs("train")]
    steps = len(loader)
    fit_cfg = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, lr_min=cfg.lr_min,
                        momentum=cfg.momentum, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)

    def seed_epoch(epoch: int) -> None:
        torch.manual_seed(seed_for(seed, "train.epoch", epoch))

    def drop_path_ramp(epoch: int) -> None:
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = (cfg.drop_path or 0.0) * epoch / cfg.epochs

    def epoch_batches(epoch: int):
        return loader.epoch(seed_for(seed, "train.batches", epoch))

    def valid_accuracy(epoch: int) -> dict[str, Any]:
        if cfg.train_on != "train":
            return {}
        calibrate_bn(model, bn_batches, engine, seed_for(seed, "train.bn_recalibration", epoch))
        return {"valid_acc": training.evaluate(model, valid_batches.epoch(), engine)[0]}

    def log_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        if writer is not None:
            writer.store.log_epoch("train", epoch, metrics)

    def checkpoint(epoch: int, state: dict[str, Any]) -> None:
        if writer is not None:
            writer.save_checkpoint("train", state)
        distributed.barrier()  # on disk before any rank goes on

    tic = time.time()
    with progress.task("train", total=cfg.epochs * steps, completed=start * steps) as bar:
        _, history = fit(model, epoch_batches, steps, fit_cfg, engine=engine, forward=net,
                         loss_fn=lambda logits, yb: _loss(model, logits, yb, cfg.auxiliary_weight),
                         seed_epoch=seed_epoch, on_epoch_start=drop_path_ramp, end_of_epoch=valid_accuracy,
                         log_epoch=log_epoch, checkpoint=checkpoint, resume=resume, history=history,
                         progress_bar=bar, nan_hint=f"lower the learning rate (e.g. --set train.lr={cfg.lr / 4:g})")
    calibrate_bn(model, bn_batches, engine, seed_for(seed, "train.bn_recalibration", cfg.epochs))
    test_acc, test_loss = training.evaluate(model, eval_loader(data, data.test, engine.device).epoch(), engine)
    return TrainResult(model, {"test_acc": test_acc, "test_loss": test_loss, "epochs": cfg.epochs,
                               "train_seconds": time.time() - tic, "history": history})


def save_model(model: nn.Module, arch: Arch, input_shape: tuple[int, ...], num_classes: int,
               build: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save the trained network with everything needed to rebuild it (``load_model``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # loads anywhere (map_location cpu)
    return atomic_torch_save({"arch": arch.to_dict(), "input_shape": list(input_shape), "num_classes": num_classes,
                              "build": build, "state_dict": state}, path)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, Arch, tuple[int, ...]]:
    """Rebuild a network saved by ``save_model``: (model in eval mode, its arch, input shape)."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"model file {path} does not exist; run 'nasforge search' or 'nasforge train' first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        arch = Arch.from_dict(blob["arch"])
        space = get_space_class(arch.space).for_arch(arch)
        model = space.build(arch, tuple(blob["input_shape"]), blob["num_classes"], **blob["build"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, EOFError, OSError, TypeError, ValueError, AttributeError,
            pickle.UnpicklingError) as exc:  # a damaged file, or a .pt that holds something else
        raise ExperimentError(f"model file {path} is corrupt, from another version or not a nasforge model "
                              f"({type(exc).__name__}); retrain with 'nasforge train'") from None
    return model.eval(), arch, tuple(blob["input_shape"])
