"""The one training engine: device, precision, the training step, schedules, BN recalibration, the fit loop.

Every place that trains weights goes through here: the final training (``nasforge.train``),
the train evaluator of sample-based search, HAQ's fine-tune, and the weight step of every
one-shot search (``nasforge.oneshot.loop``). So a capability added here (a device, a
precision, a guard) reaches every method at once.

- ``Engine``: where and in which precision tensors live and run: ``--device
  auto|cpu|cuda|cuda:N|mps`` (auto: the GPU when there is one), ``--precision
  32|bf16|16-mixed`` (autocast; a gradient scaler for float16 on CUDA), optional
  ``channels_last`` and ``torch.compile``.
- ``Engine.step``: backward (scaled where needed), gradient-norm clip, optimiser step.
- ``weight_step``: forward + loss + NaN guard + ``Engine.step`` on one batch.
- ``cosine_lr``: the one cosine schedule, evaluated per step so a short run anneals fully.
- ``recalibrate_bn``: fresh BatchNorm statistics from training batches before an evaluation.
- ``fit``: epochs of ``weight_step`` with the schedule, checkpoints, exact resume, progress and callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.config import option
from nasforge.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

PRECISIONS = ("32", "bf16", "16-mixed")


@dataclass
class EngineConfig:
    """Where and how every network of a run trains (the ``engine`` config section)."""

    device: str = option("auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N or mps")
    precision: str = option("32", choices=PRECISIONS,
                            help="32 (float32), bf16 (bfloat16 autocast) or 16-mixed (float16 autocast + grad scaler)")
    channels_last: bool = option(False, help="NHWC memory format for convolutions (faster on recent GPUs)")
    compile: bool = option(False, help="torch.compile the final training's network")
    bn_recalibration: int = option(20, lo=0, hi=100000,
                                   help="training batches that re-estimate BatchNorm statistics before each "
                                        "evaluation (0: off)")
    sync_bn: bool = option(False, help="data-parallel runs: BatchNorm statistics over all ranks' batches "
                                       "(default: each rank's own, as the papers' multi-GPU code)")

    def __post_init__(self) -> None:
        resolve_device(self.device)  # a bad name fails when the config is read, before anything runs
        if self.precision not in PRECISIONS:
            raise ConfigError(f"engine.precision={self.precision!r} is not allowed; use one of {list(PRECISIONS)}")


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda|cuda:N|mps`` -> a ``torch.device`` that exists here, or a one-line error."""
    name = str(name).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: this machine has no Apple GPU (MPS); use --device cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if name.startswith("cuda:") and not index.isdigit():
            raise ConfigError(f"--device {name}: the GPU index must be a number, e.g. cuda:0")
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible to PyTorch here; use --device cpu or auto")
        if index:
            if int(index) >= torch.cuda.device_count():
                raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here "
                                  f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here (None when it can)."""
    if not hasattr(torch, "compile"):
        return f"this PyTorch ({torch.__version__}) has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return f"torch.compile does not support Python {platform.python_version()} with torch {torch.__version__}"
        if device.type == "cpu":
            from torch._inductor import cpp_builder

            compiler = cpp_builder.get_cpp_compiler()
            if not shutil.which(compiler):
                return f"torch.compile on the CPU needs a C++ compiler ({compiler!r} not found; set CXX)"
        elif device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return "torch.compile on CUDA needs Triton (pip install triton)"
    except Exception as exc:  # a broken or partial install
        return f"torch.compile is unavailable ({type(exc).__name__}: {exc})".splitlines()[0]
    return None


def check_engine(config: EngineConfig) -> None:
    """Fail now, with one line, on an engine this machine cannot run (used when a config is resolved)."""
    Engine(config)


class Engine:
    """Device and precision of a run; moves modules and batches and performs the training step."""

    def __init__(self, config: EngineConfig | None = None):
        self.config = config = config or EngineConfig()
        self.device = resolve_device(config.device)
        self.precision = config.precision
        if config.compile:
            reason = compile_unavailable(self.device)
            if reason:
                raise ConfigError(f"--compile: {reason}; leave it off (engine.compile=false)")
        dtype = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}[config.precision]
        if dtype is torch.float16 and self.device.type == "cpu":
            raise ConfigError("--precision 16-mixed needs a GPU (float16 autocast is not supported on the CPU); "
                              "use --precision bf16 or 32")
        if dtype is torch.bfloat16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(self.device)} has no bfloat16 support; "
                              "use --precision 16-mixed or 32")
        self.amp_dtype = dtype
        self.scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 and self.device.type == "cuda" else None

    @property
    def describe(self) -> str:
        return f"{self.device} ({self.precision})"

    # --- placement ------------------------------------------------------------------
    def module(self, model: nn.Module) -> nn.Module:
        """``model`` on the device (in channels-last memory format if configured)."""
        model = model.to(self.device)
        if self.config.channels_last and self.device.type != "cpu":
            model = model.to(memory_format=torch.channels_last)
        return model

    def tensor(self, t: Tensor) -> Tensor:
        return t.to(self.device, non_blocking=True)

    def batch(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """A batch on the device (non-blocking copies from pinned memory when the source is on the CPU)."""
        x, y = batch
        if x.device == self.device:
            return x, y
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4 and self.device.type != "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def batches(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        for b in batches:
            yield self.batch(b)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's precision (a no-op for float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def compile(self, model: nn.Module) -> nn.Module:
        """``torch.compile(model)`` when ``engine.compile`` is on, else ``model`` (keep ``model`` for its state)."""
        return torch.compile(model) if self.config.compile else model

    # --- the step -------------------------------------------------------------------
    def step(self, loss: Tensor, opt: torch.optim.Optimizer, params: Sequence[Tensor] | Iterable[Tensor],
             grad_clip: float) -> None:
        """The end of every weight step: backward, gradient-norm clip (``grad_clip`` 0: off), optimiser step."""
        if self.scaler is None:
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(opt)
        self.scaler.update()

    def grad(self, loss: Tensor, params: Sequence[Tensor], **kwargs: Any) -> tuple[Tensor | None, ...]:
        """``torch.autograd.grad`` under the loss scale (float16), unscaled (architecture steps)."""
        if self.scaler is None:
            return torch.autograd.grad(loss, params, **kwargs)
        scale = self.scaler.get_scale()
        grads = torch.autograd.grad(loss * scale, params, **kwargs)
        return tuple(None if g is None else g / scale for g in grads)

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def engine_for(model: nn.Module) -> Engine:
    """A float32 engine on the device ``model`` lives on (the default of callers given no engine)."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    device = first.device if first is not None else torch.device("cpu")
    return Engine(EngineConfig(device=device.type if device.type in ("cpu", "mps") else str(device)))


@dataclass
class StepResult:
    """One weight step: its loss, the batch accuracy and size (loss NaN when the step was refused)."""

    loss: float
    acc: float
    n: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


def cross_entropy(model: nn.Module, logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def weight_step(engine: Engine, opt: torch.optim.Optimizer, params: Sequence[Tensor],
                forward: Callable[[Tensor], Tensor], batch: tuple[Tensor, Tensor], grad_clip: float,
                loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> StepResult:
    """Forward, loss, NaN guard and ``Engine.step`` on one batch (already on the device).

    A non-finite loss leaves the weights untouched and returns ``loss=nan``; the caller
    names the fix in its error.
    """
    x, y = batch
    opt.zero_grad(set_to_none=True)
    with engine.autocast():
        logits = forward(x)
        loss = loss_fn(logits, y) if loss_fn is not None else F.cross_entropy(logits, y)
    # one host sync per step: the loss (for the NaN guard and the record) and the accuracy together
    loss_value, acc = torch.stack([loss.detach().float(), (logits.argmax(1) == y).float().mean()]).tolist()
    if not math.isfinite(loss_value):
        return StepResult(float("nan"), 0.0, len(y))
    engine.step(loss, opt, params, grad_clip)
    return StepResult(loss_value, acc, len(y))


def cosine_lr(t: float, lr: float, lr_min: float) -> float:
    """Cosine annealing: ``lr`` at progress ``t = 0`` to ``lr_min`` at ``t = 1`` (``t``: steps done / all steps)."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, forward: Callable[[Tensor], Any], batches: Iterable[tuple[Tensor, Tensor]],
                   engine: Engine | None = None, max_batches: int = 20) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on
    up to ``max_batches`` training batches; returns the number of batches used.

    Runs under a forked RNG, so sampling inside ``forward`` (a Gumbel draw, drop-path) leaves
    the caller's random stream untouched. The model is left in eval mode.
    """
    layers = _bn_layers(model)
    if not layers or max_batches <= 0:
        model.eval()
        return 0
    engine = engine or engine_for(model)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    was_training = model.training
    model.train()
    used = 0
    devices = [engine.device.index or 0] if engine.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for batch in batches:
            if used >= max_batches:
                break
            x, _ = engine.batch(batch)
            with engine.autocast():
                forward(x)
            used += 1
    for m, mom in zip(layers, saved):
        m.momentum = mom
    model.train(was_training)
    model.eval()
    return used


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], engine: Engine | None = None,
             forward: Callable[[Tensor], Tensor] | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over ``batches`` in eval mode; the model's mode is restored."""
    engine = engine or engine_for(model)
    forward = forward if forward is not None else model
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    total = torch.zeros((), dtype=torch.float64, device=engine.device)
    n = 0
    for batch in batches:
        xb, yb = engine.batch(batch)
        with engine.autocast():
            logits = forward(xb)
        correct += (logits.argmax(1) == yb).sum()
        total += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        n += len(yb)
    model.train(was_training)
    n = max(n, 1)
    return correct.item() / n, total.item() / n


# ---------------------------------------------------------------------------------------
# The fit loop
# ---------------------------------------------------------------------------------------
@dataclass
class FitConfig:
    """A plain SGD training recipe: what ``fit`` needs of a config."""

    epochs: int
    batch_size: int
    lr: float
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    nesterov: bool = False
    grad_clip: float = 5.0
    steps: int | None = None  # stop after this many steps (the schedule spans them)
    optimizer: str = "sgd"  # or "adam" (betas 0.9/0.999, eps 1e-8; momentum and nesterov unused)
    lr_schedule: str = "cosine"  # or "step": lr * lr_step_factor ** (epoch // lr_step_epochs)
    lr_step_epochs: int = 5
    lr_step_factor: float = 0.2


@dataclass
class FitState:
    """Where a fit is: passed to callbacks after each epoch."""

    epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


#: ``epoch_batches(epoch) -> iterable of (x, y)``: one epoch of training batches (seeded by epoch).
EpochBatches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


def fit(model: nn.Module, epoch_batches: EpochBatches, steps_per_epoch: int, cfg: FitConfig, *,
        engine: Engine | None = None, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        seed_epoch: Callable[[int], None] | None = None, on_epoch_start: Callable[[int], None] | None = None,
        end_of_epoch: Callable[[int], dict[str, Any]] | None = None,
        checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None,
        progress_bar: Any = None, nan_hint: str = "lower the learning rate",
        callbacks: Sequence[Callable[[FitState], None]] = (),
        forward: Callable[[Tensor], Tensor] | None = None,
        log_epoch: Callable[[int, dict[str, Any]], None] | None = None,
        ) -> tuple[torch.optim.Optimizer, list[dict[str, Any]]]:
    """Train ``model`` (already on ``engine.device``) with SGD and the per-step cosine schedule.

    ``resume``: a state saved by ``checkpoint`` (``{"epoch", "model", "opt", ...}``): training
    continues after that epoch. ``checkpoint(epoch, state)`` is called after every epoch.
    ``end_of_epoch(epoch)`` adds metrics (e.g. valid accuracy); ``log_epoch(epoch, metrics)``
    records them (called before ``checkpoint``, so a crash between the two replays that epoch).
    ``forward``: what runs a batch (e.g. ``engine.compile(model)``; default ``model``), while
    ``model`` holds the parameters and the saved state. The learning rate anneals per step over
    ``epochs * steps_per_epoch`` steps (or ``cfg.steps``), so a one-epoch run anneals fully.
    Returns (optimiser, history).
    """
    engine = engine or engine_for(model)
    forward = forward if forward is not None else model
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                                      weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              nesterov=cfg.nesterov and cfg.momentum > 0)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        engine.load_state_dict(resume.get("engine", {}))
        start = resume["epoch"] + 1
    history = list(history or [])
    total = cfg.epochs * steps_per_epoch
    if cfg.steps:
        total = min(total, cfg.steps)
    step = start * steps_per_epoch
    for epoch in range(start, cfg.epochs):
        if step >= total:
            break
        if seed_epoch is not None:
            seed_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct, seen, t0 = 0.0, 0, time.time()
        lr = cfg.lr
        for batch in epoch_batches(epoch):
            if step >= total:
                break
            lr = cosine_lr(step / total, cfg.lr, cfg.lr_min) if cfg.lr_schedule != "step" else \
                cfg.lr * cfg.lr_step_factor ** (epoch // max(cfg.lr_step_epochs, 1))
            set_lr(opt, lr)
            res = weight_step(engine, opt, params, forward, engine.batch(batch), cfg.grad_clip, loss_fn)
            if not res.finite:
                raise TrainingError(f"training loss became NaN/inf at epoch {epoch} step {step}; {nan_hint}"
                                    + ("; the last epoch checkpoint is kept" if checkpoint is not None else ""))
            loss_sum += res.loss * res.n
            correct += res.acc * res.n
            seen += res.n
            step += 1
            if progress_bar is not None:
                progress_bar.advance(1, epoch=epoch, loss=res.loss)
        metrics: dict[str, Any] = {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": correct / max(seen, 1),
                                   "lr": lr, "samples": seen, "seconds": time.time() - t0}
        if end_of_epoch is not None:
            metrics.update(end_of_epoch(epoch))
        history.append(metrics)
        if log_epoch is not None:
            log_epoch(epoch, metrics)
        if checkpoint is not None:
            checkpoint(epoch, {"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                               "engine": engine.state_dict()})
        for cb in callbacks:
            cb(FitState(epoch, history))
    return opt, history
