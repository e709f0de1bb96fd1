"""Final training of a found architecture: the DARTS evaluation recipe.

A fresh network is built from the architecture at the chosen depth and width and trained
with SGD (momentum 0.9, weight decay 3e-4, cosine learning rate, gradient clip 5),
optionally with cutout, drop-path (probability ramped linearly over training) and an
auxiliary head (loss weight 0.4). It is then scored on the test split.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset, iterate_batches, num_batches
from nasforge.errors import ExperimentError, TrainingError
from nasforge.experiment import Experiment
from nasforge.progress import Progress
from nasforge.spaces import SearchSpace, get_space_class
from nasforge.utils import apply_gradients, atomic_torch_save, epoch_seed

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int | None = option(None, lo=1, hi=100000, help="training epochs (auto: dataset profile; paper 600)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto; paper 96)")
    layers: int | None = option(None, lo=1, hi=256, help="cells of the final network (auto; paper 20)")
    channels: int | None = option(None, lo=2, hi=4096, help="initial channels of the final network (auto; paper 36)")
    lr: float = option(0.025, lo=0.0, hi=10.0, help="SGD learning rate (cosine-annealed)")
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


def _loss(model: nn.Module, logits: Tensor, y: Tensor, aux_weight: float) -> Tensor:
    loss = F.cross_entropy(logits, y)
    aux = getattr(model, "aux_logits", None)
    if aux is not None:
        loss = loss + aux_weight * F.cross_entropy(aux, y)
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``x, y`` in eval mode."""
    was_training = model.training
    model.eval()
    correct, total_loss = 0, 0.0
    for xb, yb in iterate_batches(x, y, batch_size):
        logits = model(xb)
        correct += (logits.argmax(1) == yb).sum().item()
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
    model.train(was_training)
    n = max(len(y), 1)
    return correct / n, total_loss / n


def train_arch(space: SearchSpace, arch: Arch, data: Dataset, cfg: TrainConfig, *,
               experiment: Experiment | None = None, progress: Progress | None = None, seed: int = 0) -> TrainResult:
    """Build ``arch`` fresh, train it, and score it on the test split (resumes from a checkpoint)."""
    progress = progress or Progress()
    torch.manual_seed(seed)
    model = space.build(arch, data.input_shape, data.num_classes, **build_options(cfg))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.train_on == "train+valid":
        x, y = torch.cat([data.x_train, data.x_valid]), torch.cat([data.y_train, data.y_valid])
    else:
        x, y = data.x_train, data.y_train
    augment = data.augment.replace(cutout=cfg.cutout or 0)
    start = 0
    history: list[dict[str, Any]] = []
    if experiment is not None:
        state = experiment.load_checkpoint("train")
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            start = state["epoch"] + 1
        experiment.store.truncate_epochs("train", start - 1)
        history = [r["metrics"] for r in experiment.store.epochs("train")]
    steps = num_batches(len(y), cfg.batch_size)
    tic = time.time()
    with progress.task("train", total=cfg.epochs * steps, completed=start * steps) as bar:
        for epoch in range(start, cfg.epochs):
            lr = cfg.lr_min + (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs)) / 2
            for group in opt.param_groups:
                group["lr"] = lr
            if hasattr(model, "drop_path_prob"):
                model.drop_path_prob = (cfg.drop_path or 0.0) * epoch / cfg.epochs
            torch.manual_seed(epoch_seed(seed, epoch, 11))
            gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, 12))
            model.train()
            loss_sum, correct, seen, t0 = 0.0, 0, 0, time.time()
            for xb, yb in iterate_batches(x, y, cfg.batch_size, generator=gen, augment=augment):
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = _loss(model, logits, yb, cfg.auxiliary_weight)
                if not torch.isfinite(loss):
                    raise TrainingError(f"training loss became NaN/inf at epoch {epoch}; lower the learning rate "
                                        f"(e.g. --set train.lr={cfg.lr / 4:g}); the last epoch checkpoint is kept")
                apply_gradients(loss, opt, model.parameters(), cfg.grad_clip)
                loss_sum += loss.item() * len(yb)
                correct += (logits.argmax(1) == yb).sum().item()
                seen += len(yb)
                bar.advance(1, epoch=epoch, loss=loss.item())
            metrics = {"train_loss": loss_sum / seen, "train_acc": correct / seen, "lr": lr,
                       "seconds": time.time() - t0}
            if cfg.train_on == "train":
                metrics["valid_acc"] = evaluate(model, data.x_valid, data.y_valid)[0]
            history.append(metrics)
            if experiment is not None:
                experiment.store.log_epoch("train", epoch, metrics)
                experiment.save_checkpoint("train", {"epoch": epoch, "model": model.state_dict(),
                                                     "opt": opt.state_dict()})
    test_acc, test_loss = evaluate(model, data.x_test, data.y_test)
    return TrainResult(model, {"test_acc": test_acc, "test_loss": test_loss, "epochs": cfg.epochs,
                               "train_seconds": time.time() - tic, "history": history})


def save_model(model: nn.Module, arch: Arch, input_shape: tuple[int, ...], num_classes: int,
               build: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save the trained network with everything needed to rebuild it (``load_model``)."""
    return atomic_torch_save({"arch": arch.to_dict(), "input_shape": list(input_shape), "num_classes": num_classes,
                              "build": build, "state_dict": model.state_dict()}, path)


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
    except (KeyError, RuntimeError, EOFError, OSError) as exc:
        raise ExperimentError(f"model file {path} is corrupt or from another version ({type(exc).__name__}); "
                              "retrain with 'nasforge train'") from None
    return model.eval(), arch, tuple(blob["input_shape"])
