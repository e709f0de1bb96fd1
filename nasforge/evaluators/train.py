"""The train evaluator: build an architecture, train it briefly, score it on the valid split.

This is the classic (expensive) evaluation of sample-based NAS: every trial trains a
fresh network from scratch for a small budget (``epochs``, or ``steps`` SGD steps) on
the train split and reports its accuracy on the held-out valid split as the objective;
the test split is never looked at. Parameters and FLOPs of the network come alongside,
and its CPU latency when ``latency`` is on. A NaN/inf loss raises ``TrainingError``, so
the trial loop records the trial as failed and the search goes on.

Recipe (the DARTS evaluation recipe, shortened): SGD with momentum 0.9, weight decay
3e-4, learning rate cosine-annealed per step over the budget, gradient clip 5, no augmentation
beyond the dataset's own (``nasforge.training.fit``). Before scoring, BatchNorm statistics are
re-estimated on ``engine.bn_recalibration`` training batches: after a budget this short the
running averages lag far behind the weights. Widths and depth (``layers``, ``channels``)
default to the dataset profile's "evaluate" section (small on digits, so a trial takes about
a second). The device and precision come from an ``EngineConfig`` (the run's ``engine``
section); the ``Engine`` is built inside each call, so the evaluator stays picklable.

Other papers' child training: ``optimizer=adam`` with ``lr_schedule=step`` (MetaQNN: Adam
0.001, x0.2 every 5 epochs), ``restarts`` (MetaQNN: a model no better than chance after its
first epoch is trained again from the same initialisation with the learning rate x0.4, at
most 5 times), and ``valid_epochs`` (valid accuracy after each of the last N epochs, as
``valid_accs``) with ``objective=best`` (NAS-RL's reward: the best valid accuracy of the
last 5 epochs).

Fidelities (``nasforge.fidelity``): ``fidelities`` offers 1..``epochs`` epochs, and
``evaluator(arch, seed=s, fidelity=e)`` trains ``e`` epochs instead of ``epochs``: the
learning-rate schedule spans those ``e`` epochs (a short run is a whole run, not the start
of a long one), ``valid_epochs``/``objective=best`` count back from the ``e``-th epoch, and
``steps`` still caps the run. The metrics say how many epochs were trained (``epochs``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from nasforge import training
from nasforge.arch import Arch
from nasforge.config import option
from nasforge.data import Dataset
from nasforge.fidelity import Fidelities
from nasforge.hardware import count_flops, count_params, measure_latency
from nasforge.profiles import fill_auto
from nasforge.seeds import seed_for
from nasforge.train import calibrate_bn, eval_loader
from nasforge.training import Engine, EngineConfig, FitConfig, fit


@dataclass
class TrainEvalConfig:
    """Options of the ``train`` evaluator (the ``evaluator`` config section)."""

    epochs: int | None = option(None, lo=1, hi=100000, help="training epochs per trial (auto: dataset profile)")
    steps: int | None = option(None, lo=1, hi=10**9, help="stop after this many SGD steps (default: all epochs)")
    batch_size: int | None = option(None, lo=1, hi=65536, help="batch size (auto)")
    layers: int | None = option(None, lo=1, hi=256, help="cells/depth of the trial network (auto)")
    channels: int | None = option(None, lo=1, hi=4096, help="initial channels of the trial network (auto)")
    lr: float = option(0.025, lo=0.0, hi=10.0, help="SGD learning rate (cosine-annealed over the budget)")
    momentum: float = option(0.9, lo=0.0, hi=1.0, help="SGD momentum")
    nesterov: bool = option(False, help="Nesterov momentum (NAS-RL's child training)")
    weight_decay: float = option(3e-4, lo=0.0, hi=1.0, help="weight decay")
    grad_clip: float = option(5.0, lo=0.0, hi=1e6, help="gradient-norm clip (0: off)")
    latency: bool = option(False, help="also time the trained network on the CPU (batch 1; adds latency_ms)")
    optimizer: str = option("sgd", choices=("sgd", "adam"), help="sgd (momentum), or adam (MetaQNN's)")
    lr_schedule: str = option("cosine", choices=("cosine", "step"),
                              help="cosine per step, or step: lr * lr_step_factor every lr_step_epochs epochs")
    lr_step_epochs: int = option(5, lo=1, hi=100000, help="step schedule: epochs between decays (MetaQNN 5)")
    lr_step_factor: float = option(0.2, lo=0.0, hi=1.0, help="step schedule: decay factor (MetaQNN 0.2)")
    restarts: int = option(0, lo=0, hi=100, help="restart with lr * restart_factor while the first epoch's valid "
                                                "accuracy is no better than chance (MetaQNN: 5)")
    restart_factor: float = option(0.4, lo=0.0, hi=1.0, help="learning-rate factor of a restart (MetaQNN 0.4)")
    valid_epochs: int = option(0, lo=0, hi=100000, help="also score the valid split after each of the last N "
                                                       "epochs (valid_accs; 0: at the end only)")
    objective: str = option("final", choices=("final", "best"),
                            help="final valid accuracy, or the best of valid_accs (NAS-RL: of the last 5 epochs)")

    def __post_init__(self) -> None:
        if self.objective == "best" and not self.valid_epochs:
            from nasforge.errors import ConfigError

            raise ConfigError("evaluator.objective=best needs the per-epoch valid accuracies; set "
                              "evaluator.valid_epochs (e.g. 5)")


class _Restart(Exception):
    """The first epoch ended no better than chance: train again with a lower learning rate."""


class TrainEvaluator:
    """``arch -> metrics`` by short training; objective = valid accuracy (higher is better).

    Picklable (the space, the dataset, the config and the engine config), so parallel
    runners can ship it to their workers once.
    """

    def __init__(self, space: Any, data: Dataset, config: TrainEvalConfig | None = None,
                 engine: EngineConfig | None = None):
        self.space = space
        self.data = data
        self.config = config or TrainEvalConfig()
        fill_auto(self.config, data.name, "evaluate")  # only "auto" (None) fields take the profile's value
        self.engine_config = engine or EngineConfig()
        #: a trial may train 1..epochs epochs (``fidelity``); the full fidelity is ``config.epochs``
        self.fidelities = Fidelities(1, int(self.config.epochs), "epochs") if self.config.epochs else None

    def __call__(self, arch: Arch, seed: int = 0, fidelity: int | None = None) -> dict[str, Any]:
        """Train ``arch`` from scratch (seeded) and score it on the valid split; ``fidelity``: train that
        many epochs (of ``fidelities``) instead of ``config.epochs``."""
        cfg, data = self.config, self.data
        epochs = cfg.epochs
        if fidelity is not None:
            if self.fidelities is None:
                from nasforge.errors import ConfigError

                raise ConfigError("the train evaluator has no epoch count to choose from; set evaluator.epochs")
            epochs = self.fidelities.check(fidelity, f"the train evaluator ({self.fidelities.describe()})")
        self.space.validate(arch)
        engine = Engine(dataclasses.replace(self.engine_config, compile=False))  # compile: final training only
        tic = time.time()
        loader = data.loader(data.train, cfg.batch_size, device=engine.device)
        bn_batches = data.loader(data.train, cfg.batch_size, train=False, device=engine.device)
        valid_batches = eval_loader(data, data.valid, engine.device)
        per_epoch = len(loader)

        def epoch_batches(epoch: int):
            return loader.epoch(seed_for(seed, "evaluate.batches", epoch))

        def score(epoch: int) -> tuple[float, float]:  # valid (accuracy, loss) now, BatchNorm re-estimated first
            calibrate_bn(model, bn_batches, engine, seed_for(seed, "evaluate.bn_recalibration", epoch))
            return training.evaluate(model, valid_batches.epoch(), engine)

        def end_of_epoch(epoch: int) -> dict[str, Any]:
            check = epoch == 0 and attempt < cfg.restarts  # MetaQNN: restart a model that did not start learning
            keep = epochs - cfg.valid_epochs <= epoch < epochs - 1  # the last epoch: scored below
            if not (check or keep):
                return {}
            acc = score(epoch)[0]
            if check and acc <= 1.0 / data.num_classes:
                raise _Restart
            return {"valid_acc": acc} if keep else {}

        lr = cfg.lr
        for attempt in range(cfg.restarts + 1):
            torch.manual_seed(seed)
            model = engine.module(self.space.build(arch, data.input_shape, data.num_classes, layers=cfg.layers,
                                                   channels=cfg.channels, auxiliary=False))
            fit_cfg = FitConfig(epochs=epochs, batch_size=cfg.batch_size, lr=lr, lr_min=0.0,
                                momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
                                grad_clip=cfg.grad_clip, steps=cfg.steps, optimizer=cfg.optimizer, lr_schedule=cfg.lr_schedule,
                                lr_step_epochs=cfg.lr_step_epochs, lr_step_factor=cfg.lr_step_factor)
            try:
                _, history = fit(model, epoch_batches, per_epoch, fit_cfg, engine=engine,
                                 nan_hint=f"lower evaluator.lr (e.g. --set evaluator.lr={cfg.lr / 4:g})",
                                 end_of_epoch=end_of_epoch if cfg.restarts or cfg.valid_epochs > 1 else None)
                break
            except _Restart:
                lr *= cfg.restart_factor
        train_seconds = time.time() - tic
        seen = sum(h["samples"] for h in history)
        valid_acc, valid_loss = score(epochs)
        valid_accs = [h["valid_acc"] for h in history if "valid_acc" in h] + [valid_acc]
        metrics: dict[str, Any] = {
            "objective": max(valid_accs) if cfg.objective == "best" else valid_acc,
            "valid_acc": valid_acc, "valid_loss": valid_loss,
            **({"valid_accs": valid_accs} if cfg.valid_epochs else {}),
            **({"restarts": attempt} if cfg.restarts else {}),
            "train_loss": sum(h["train_loss"] * h["samples"] for h in history) / max(seen, 1),
            "steps": min(cfg.steps or per_epoch * epochs, per_epoch * epochs),
            "epochs": epochs, "train_seconds": train_seconds,
            "params": count_params(model), "flops": count_flops(model, data.input_shape),
        }
        if cfg.latency:
            metrics["latency_ms"] = measure_latency(model, data.input_shape, warmup=3, repeats=20).median_ms
        return metrics
