"""HAQ's environment: visit the layers in order, two decisions per layer (weight bits, then activation bits).

State per decision (HAQ ``linear_quantize_env.py``): layer index, input and output channels,
kernel size, stride, input feature-map area, number of weights, depthwise flag (static,
each min-max normalised over the layers to [0, 1]), then the weight(1)/activation(0)
flag and the previous action as ``bits / bmax`` (1 before the first). An action ``a`` in
[0, 1] becomes ``round(bmin - 0.5 + a * (bmax - bmin + 1))`` bits, clipped to the range.
At the end of an episode the first and last layers are pinned to ``first_last_bits`` (8,
as the HAQ code's ``_keep_first_last_layer``), the other layers are lowered until the
policy fits the budget (``enforce``), and the policy is scored: short fine-tune (the HAQ
code's per-episode fine-tune), validation accuracy, reward ``0.1 * (acc% - float acc%)``.
With ``fixed_abits`` every activation decision is that width (weight-only search, e.g.
under a size budget).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nasforge.data import iterate_batches
from nasforge.errors import ConfigError
from nasforge.hardware.accelerators import Accelerator, LayerInfo
from nasforge.quant.budget import Budget, format_value
from nasforge.quant.modules import quantized_size_bytes, set_policy
from nasforge.training import Engine, FitConfig, engine_for, evaluate, fit

__all__ = ["Policy", "PolicyCost", "QuantEnv", "action_to_bits", "state_features"]

Policy = list[tuple[int, int]]


def action_to_bits(action: float, bmin: int, bmax: int) -> int:
    """HAQ's mapping of a continuous action in [0, 1] to an integer bit width in [bmin, bmax]."""
    bits = int(np.round(bmin - 0.5 + float(action) * (bmax - bmin + 1)))
    return min(max(bits, bmin), bmax)


def state_features(infos: Sequence[LayerInfo]) -> np.ndarray:
    """The static per-layer embedding ``[L, 8]``, each column min-max normalised to [0, 1] over layers."""
    rows = [[i, f.in_channels, f.out_channels, f.kernel, f.stride, f.in_hw, f.weight_params, float(f.depthwise)]
            for i, f in enumerate(infos)]
    emb = np.asarray(rows, dtype=np.float64)
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    emb = np.where(hi > lo, (emb - lo) / span, 0.0)
    return emb.astype(np.float32)


@dataclass
class PolicyCost:
    """Modelled cost of a policy: weight bytes, latency (s) and energy (J) on the accelerator."""

    size_bytes: int
    latency: float
    energy: float

    def get(self, kind: str) -> float:
        return float(self.size_bytes) if kind == "size" else getattr(self, kind)


class QuantEnv:
    """Episodes over the layers of a wrapped model; costs, budget enforcement and accuracy reward."""

    def __init__(self, qmodel: nn.Module, infos: Sequence[LayerInfo], accelerator: Accelerator, budget: Budget,
                 train: tuple[Tensor, Tensor], valid: tuple[Tensor, Tensor], *, bmin: int = 2, bmax: int = 8,
                 finetune_steps: int = 0, finetune_lr: float = 1e-3, batch_size: int = 64,
                 fixed_abits: int | None = None, engine: Engine | None = None, first_last_bits: int | None = 8):
        if bmin > bmax:
            raise ConfigError(f"bmin={bmin} is above bmax={bmax}; swap them")
        #: indices of the layers pinned to ``first_last_bits`` (none when it is None/0 or there is one layer)
        self.first_last_bits = first_last_bits or None
        self.pinned = {0, len(infos) - 1} if self.first_last_bits and len(infos) > 1 else set()
        self.engine = engine or engine_for(qmodel)
        self.fixed_abits = fixed_abits
        self.model, self.infos, self.acc_model, self.budget = qmodel, list(infos), accelerator, budget
        self.train, self.valid = train, valid
        self.bmin, self.bmax = bmin, bmax
        self.finetune_steps, self.finetune_lr, self.batch_size = finetune_steps, finetune_lr, batch_size
        self.n_layers = len(self.infos)
        self.static = state_features(self.infos)
        self.float_state = copy.deepcopy(qmodel.state_dict())
        self.reference = self.cost([(8, 8)] * self.n_layers)
        self.minimum = self.cost(self.pin([(bmin, fixed_abits or bmin)] * self.n_layers))
        self.target = budget.target(self.reference.get(budget.kind))
        smallest = self.minimum.get(budget.kind)
        if self.target < smallest * (1 - 1e-9):
            raise ConfigError(
                f"{budget.kind} budget {format_value(budget.kind, self.target)} is below the smallest achievable "
                f"{format_value(budget.kind, smallest)} (all layers at {bmin} bits"
                f"{f', first and last at {self.first_last_bits}' if self.pinned else ''}); raise --budget")
        self.org_acc = self.accuracy(*valid)
        self.reset()

    # --- costs ----------------------------------------------------------------------
    def cost(self, policy: Policy) -> PolicyCost:
        """Exact weight bytes and the accelerator's summed latency and energy of ``policy``."""
        size = quantized_size_bytes([f.weight_params for f in self.infos], [w for w, _ in policy])
        lat, en = self.acc_model.model_cost(self.infos, policy)
        return PolicyCost(size, lat, en)

    def fits(self, policy: Policy) -> bool:
        return self.cost(policy).get(self.budget.kind) <= self.target * (1 + 1e-9)

    def pin(self, policy: Policy) -> Policy:
        """``policy`` with the first and last layers at ``first_last_bits`` (activations too, unless fixed)."""
        out = [tuple(p) for p in policy]
        for i in self.pinned:
            b = self.first_last_bits
            out[i] = (b, self.fixed_abits if self.fixed_abits is not None else b)
        return out

    def enforce(self, policy: Policy) -> Policy:
        """Pin the first and last layers, then lower bits until the budget holds: round-robin from the last
        layer, activation then weight bits (HAQ's ``_final_action_wall``; a size budget only lowers weight
        bits, activations do not count). Pinned layers are never lowered."""
        policy = [list(p) for p in self.pin(policy)]
        lower_acts = self.budget.kind != "size" and self.fixed_abits is None
        while not self.fits([tuple(p) for p in policy]):
            changed = False
            for i, p in reversed(list(enumerate(policy))):
                if i in self.pinned:
                    continue
                for slot in ((1, 0) if lower_acts else (0,)):
                    if p[slot] > self.bmin:
                        p[slot] -= 1
                        changed = True
                        if self.fits([tuple(q) for q in policy]):
                            return [tuple(q) for q in policy]
            if not changed:  # all at bmin: the smallest policy, which the constructor checked fits
                break
        return [tuple(p) for p in policy]

    # --- episode --------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        layer = min(self.t // 2, self.n_layers - 1)
        is_weight = 1.0 if self.t % 2 == 0 else 0.0
        return np.concatenate([self.static[layer], [is_weight, self.prev]]).astype(np.float32)

    @property
    def n_states(self) -> int:
        return self.static.shape[1] + 2

    @property
    def n_steps(self) -> int:
        return 2 * self.n_layers

    def reset(self) -> np.ndarray:
        """Start an episode at the first layer's weight decision."""
        self.t, self.prev, self.bits = 0, 1.0, []
        return self._obs()

    def step(self, action: float) -> tuple[np.ndarray, bool]:
        """Take one bit-width decision; returns (next state, done)."""
        bits = action_to_bits(action, self.bmin, self.bmax)
        if self.t % 2 == 1 and self.fixed_abits is not None:
            bits = self.fixed_abits
        self.bits.append(bits)
        self.prev = min(bits / self.bmax, 1.0)  # the HAQ code: float(action) / float(self.max_bit)
        self.t += 1
        done = self.t >= self.n_steps
        return self._obs(), done

    def raw_policy(self) -> Policy:
        """The episode's (wbits, abits) per layer as chosen, before budget enforcement."""
        return [(self.bits[2 * i], self.bits[2 * i + 1]) for i in range(self.n_layers)]

    # --- scoring ------------------------------------------------------------------
    def accuracy(self, x: Tensor, y: Tensor, batch: int = 512) -> float:
        """Top-1 accuracy of the wrapped model (eval mode) on ``x, y``."""
        acc = evaluate(self.model, iterate_batches(x, y, batch), self.engine)[0]
        self.model.eval()
        return acc

    def evaluate(self, policy: Policy, seed: int) -> float:
        """Float weights restored, ``policy`` applied, ``finetune_steps`` SGD steps, validation accuracy."""
        self.model.load_state_dict(self.float_state)
        set_policy(self.model, policy)
        if self.finetune_steps > 0:
            finetune_steps(self.model, *self.train, steps=self.finetune_steps, lr=self.finetune_lr,
                           batch_size=self.batch_size, seed=seed, engine=self.engine)
        return self.accuracy(*self.valid)

    def reward(self, acc: float) -> float:
        """HAQ's reward: ``(acc - org_acc) * 0.1`` with accuracies in percent (the HAQ code's ``reward``, whose
        accuracies are top-1 percentages): ``10 * (acc - org_acc)`` for the fractions used here."""
        return (100.0 * acc - 100.0 * self.org_acc) * 0.1


def finetune_steps(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, lr: float, batch_size: int, seed: int,
                   momentum: float = 0.9, weight_decay: float = 4e-5, cosine: bool = False,
                   engine: Engine | None = None) -> None:
    """``steps`` SGD steps on seeded random batches (straight-through gradients through the fake quantizers).

    ``nasforge.training.fit`` over one pass of ``steps`` batches: a constant ``lr``, or with
    ``cosine`` annealed per step to 0; no gradient clip. A NaN/inf loss raises ``TrainingError``.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = len(y)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        perm, pos = torch.randperm(n, generator=gen), 0
        for _ in range(steps):
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            yield x[idx], y[idx]

    cfg = FitConfig(epochs=1, batch_size=batch_size, lr=lr, lr_min=0.0 if cosine else lr, momentum=momentum,
                    weight_decay=weight_decay, grad_clip=0.0, steps=steps)
    if steps > 0:
        fit(model, batches, steps, cfg, engine=engine or engine_for(model),
            nan_hint="lower the fine-tune learning rate (haq.finetune_lr or haq.final_lr)")
    model.eval()
