"""NAS-RL: an LSTM controller trained with REINFORCE (Zoph & Le, "Neural Architecture
Search with Reinforcement Learning", ICLR 2017), on the sequential layer space.

The controller emits a network layer by layer: per conv layer the filter height, filter
width, stride height, stride width and number of filters, each from its own softmax
over the space's values; the sampled token is embedded and fed as the next input
(tokens whose value set has one element are not emitted). With ``space.skips`` each
layer ends with an *anchor point*: the controller takes one more step, and at layer
``N`` every earlier layer ``j`` feeds ``N`` with probability
``sigmoid(v^T tanh(W_prev h_j + W_curr h_N))``, ``h`` being the anchor hidden states; the
next input is the mean of the chosen anchors' states (ENAS's convention; the paper
does not say). The network depth grows over the search: ``start_layers``, plus
``layers_step`` every ``layers_every`` children (the paper: 6 layers, +2 every 1,600).

Training: ``batch`` children (the paper's ``m = 8``) are asked before their results come
back, so a parallel runner trains them together; then one Adam step (lr 0.0006) on
``-(1/m) sum_k (R_k - b) log p(a_k)`` (minus an optional entropy bonus), where
``R = accuracy ** reward_power`` (the paper cubes the best validation accuracy) and
``b`` is an exponential moving average of the rewards (the paper's baseline; its decay
is not given there: 0.95 here), started at the first batch's mean. ``log p(a_k)`` is
recomputed by teacher forcing at update time, so a resumed search needs no graph. A
failed child (``tell(arch, None)``) counts towards the batch but adds no gradient.

Controller (paper's small setting): two LSTM layers of 35 units, weights uniform in
[-0.08, 0.08].
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ArchError
from nasforge.registry import check_supported
from nasforge.spaces.layers import Layer, LayerSpace
from nasforge.strategies.base import SampleStrategy, register_strategy

log = logging.getLogger(__name__)

#: the conv tokens of one layer, in the paper's order
TOKENS = ("kernel_h", "kernel_w", "stride_h", "stride_w", "filters")
#: growth schedule when the config is built without a dataset profile (the digits profile's values)
DEFAULT_START_LAYERS, DEFAULT_LAYERS_EVERY = 2, 50


@dataclass
class ReinforceConfig:
    batch: int = option(8, lo=1, hi=10000, help="children per controller update, asked before told (paper m=8)")
    lr: float = option(6e-4, lo=0.0, hi=1.0, help="controller Adam learning rate (paper 0.0006)")
    hidden: int = option(35, lo=1, hi=4096, help="LSTM units per layer (paper 35)")
    lstm_layers: int = option(2, lo=1, hi=8, help="LSTM layers of the controller (paper 2)")
    init_range: float = option(0.08, lo=0.0, hi=10.0, help="controller weights uniform in [-r, r] (paper 0.08)")
    baseline_decay: float = option(0.95, lo=0.0, hi=1.0, help="decay of the moving-average reward baseline")
    reward_power: float = option(3.0, lo=0.1, hi=10.0, help="reward = objective ** power (paper cubes accuracy)")
    entropy_weight: float = option(0.0, lo=0.0, hi=10.0, help="weight of the entropy bonus (0: off)")
    start_layers: int | None = option(None, lo=1, hi=64, help="layers of the first children (auto; paper 6)")
    layers_step: int = option(1, lo=0, hi=64, help="layers added at each growth step (paper 2)")
    layers_every: int | None = option(None, lo=1, hi=10**7, help="children between growth steps (auto; paper 1600)")


class Controller(nn.Module):
    """The NAS-RL LSTM controller: per-token softmax heads and embeddings, anchor attention."""

    def __init__(self, sizes: dict[str, int], hidden: int, layers: int):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.lstm = nn.LSTM(hidden, hidden, layers)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in sizes.items()})
        self.embed = nn.ModuleDict({k: nn.Embedding(n, hidden) for k, n in sizes.items()})
        self.w_prev = nn.Linear(hidden, hidden, bias=False)
        self.w_curr = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, 1, bias=False)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(x.view(1, 1, -1), state)
        return out.view(1, -1), state


@dataclass
class Rollout:
    """One controller pass: the tokens, the summed log-probability and entropy, and the
    probability of every decision taken (for checking)."""

    layers: list[Layer]
    log_prob: Tensor
    entropy: Tensor
    probs: list[float]


@register_strategy
class ReinforceStrategy(SampleStrategy):
    """NAS-RL: LSTM controller, REINFORCE with a moving-average baseline, growing depth."""

    name = "reinforce"
    description = "NAS-RL: LSTM controller trained by REINFORCE on the layer space (Zoph & Le 2017)"
    Config = ReinforceConfig

    def __init__(self, config: ReinforceConfig | None = None):
        super().__init__(config)
        self.batch = self.config.batch
        self.space: LayerSpace | None = None

    # --- setup -----------------------------------------------------------------
    @classmethod
    def supports(cls, space: Any) -> str | None:
        """The controller emits a layer grammar with conv tokens: a layer space whose types include conv."""
        if not isinstance(space, LayerSpace):
            return (f"strategy 'reinforce' needs the layer space (a layer grammar); "
                    f"'{getattr(space, 'name', space)}' has none: pass --space layers")
        if "conv" not in space.types:
            return "strategy 'reinforce' emits conv layers but space.types has no 'conv'; add it"
        return None

    def setup(self, space: Any, seed: int) -> None:
        """Build the controller for ``space`` (a layer space with conv layers), seeded."""
        check_supported(type(self), space)
        cfg = self.config
        self.space = space
        self.tokens = [t for t in TOKENS if len(space.param_values(t)) > 1]
        self.controller = Controller({t: len(space.param_values(t)) for t in self.tokens}, cfg.hidden, cfg.lstm_layers)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.controller.parameters():
                p.copy_(torch.rand(p.shape, generator=gen) * 2 * cfg.init_range - cfg.init_range)
        self.opt = torch.optim.Adam(self.controller.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.baseline: float | None = None
        self.asked = 0
        self.told: list[tuple[Arch, float | None]] = []
        self.pending: list[Arch] = []
        self.history: list[dict[str, Any]] = []
        self.updates = 0
        start = cfg.start_layers or DEFAULT_START_LAYERS
        if start > space.max_depth:
            log.info("reinforce: start_layers=%d exceeds space.max_depth=%d; using %d", start, space.max_depth,
                     space.max_depth)

    def depth(self, child: int) -> int:
        """Layers of child number ``child`` under the growth schedule (at most the space's depth)."""
        cfg = self.config
        every = cfg.layers_every or DEFAULT_LAYERS_EVERY
        grown = (cfg.start_layers or DEFAULT_START_LAYERS) + cfg.layers_step * (child // every)
        return max(1, min(self.space.max_depth, grown))

    # --- the controller pass ----------------------------------------------------
    def rollout(self, depth: int | None = None, layers: list[Layer] | None = None) -> Rollout:
        """Sample ``depth`` layers, or score the given ``layers`` (teacher forcing): same pass."""
        space, ctl = self.space, self.controller
        forced = layers is not None
        n = len(layers) if forced else int(depth)
        x, state = ctl.start, None
        log_prob = torch.zeros(())
        entropy = torch.zeros(())
        probs: list[float] = []
        out_layers: list[Layer] = []
        anchors: list[Tensor] = []
        prev_proj: list[Tensor] = []
        for i in range(n):
            values: dict[str, int] = {t: space.param_values(t)[0] for t in TOKENS}
            for t in self.tokens:
                h, state = ctl.step(x, state)
                logp = F.log_softmax(ctl.heads[t](h), dim=-1).view(-1)
                choices = space.param_values(t)
                if forced:
                    try:
                        k = choices.index(getattr(layers[i], t))
                    except ValueError:
                        raise ArchError(f"layer{i}.{t}={getattr(layers[i], t)} is not a value of the space; "
                                        "score archs of this space only") from None
                else:
                    k = int(torch.multinomial(logp.detach().exp(), 1, generator=self.gen))
                log_prob = log_prob + logp[k]
                entropy = entropy - (logp.exp() * logp).sum()
                probs.append(float(logp[k].detach().exp()))
                values[t] = choices[k]
                x = ctl.embed[t](torch.tensor([k]))
            inputs: tuple[int, ...] = (i - 1,) if i else ()
            if space.skips:
                h, state = ctl.step(x, state)
                if i > 0:
                    logits = ctl.v(torch.tanh(torch.cat(prev_proj, 0) + ctl.w_curr(h))).view(-1)
                    if forced:
                        chosen = torch.zeros(i)
                        chosen[list(layers[i].inputs)] = 1.0
                    else:
                        chosen = (torch.rand(i, generator=self.gen) < torch.sigmoid(logits.detach())).float()
                    lp = chosen * F.logsigmoid(logits) + (1 - chosen) * F.logsigmoid(-logits)
                    log_prob = log_prob + lp.sum()
                    p = torch.sigmoid(logits)
                    entropy = entropy - (p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).sum()
                    probs += [float(v) for v in lp.detach().exp()]
                    inputs = tuple(int(j) for j in torch.nonzero(chosen).view(-1))
                    sel = chosen.view(-1, 1)
                    x = (sel * torch.cat(anchors, 0)).sum(0, keepdim=True) / (1.0 + sel.sum())
                else:
                    inputs = ()
                    x = ctl.start
                anchors.append(h)
                prev_proj.append(ctl.w_prev(h))
            out_layers.append(Layer("conv", values["kernel_h"], values["kernel_w"], values["stride_h"],
                                    values["stride_w"], values["filters"], inputs=inputs))
        return Rollout(out_layers, log_prob, entropy, probs)

    def sample(self, depth: int) -> tuple[Arch, Rollout]:
        """A child of ``depth`` conv layers from the current policy, and its rollout."""
        with torch.no_grad():
            roll = self.rollout(depth=depth)
        return self.space.arch_of(roll.layers), roll

    def log_prob(self, arch: Arch) -> Tensor:
        """Log-probability of ``arch`` under the current controller (differentiable)."""
        layers = self.space.layers_of(arch)
        if any(layer.type != "conv" for layer in layers):
            raise ArchError("NAS-RL's controller only emits conv layers; this arch has others")
        return self.rollout(layers=layers).log_prob

    # --- ask / tell ---------------------------------------------------------------
    def ask(self) -> Arch:
        arch, _ = self.sample(self.depth(self.asked))
        self.asked += 1
        self.pending.append(arch)
        return arch

    def reward(self, metrics: dict[str, Any] | None) -> float | None:
        """``objective ** reward_power`` (sign kept), None for a failed child."""
        if metrics is None or metrics.get("objective") is None:
            return None
        value = float(metrics["objective"])
        if not math.isfinite(value):
            return None
        return math.copysign(abs(value) ** self.config.reward_power, value)

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        if arch in self.pending:
            self.pending.remove(arch)
        reward = self.reward(metrics)
        self.told.append((arch, reward))
        self.history.append({"objective": None if metrics is None else metrics.get("objective"),
                             "reward": reward, "baseline": self.baseline, "depth": len(self.space.layers_of(arch))})
        if len(self.told) >= self.batch:
            self.update(self.told)
            self.told = []

    def update(self, children: list[tuple[Arch, float | None]]) -> float:
        """One REINFORCE step on a batch of ``(arch, reward)``; returns the loss (0 if all failed)."""
        scored = [(a, r) for a, r in children if r is not None]
        if not scored:
            return 0.0
        if self.baseline is None:
            self.baseline = float(np.mean([r for _, r in scored]))
        baseline = self.baseline
        loss = torch.zeros(())
        for arch, r in scored:
            roll = self.rollout(layers=self.space.layers_of(arch))
            loss = loss - (r - baseline) * roll.log_prob - self.config.entropy_weight * roll.entropy
        loss = loss / len(children)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        decay = self.config.baseline_decay
        for _, r in scored:
            self.baseline = decay * self.baseline + (1 - decay) * r
        self.updates += 1
        return float(loss.detach())

    # --- checkpoints --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": copy.deepcopy(self.controller.state_dict()),
            "opt": copy.deepcopy(self.opt.state_dict()),
            "gen": self.gen.get_state(),
            "baseline": self.baseline,
            "asked": self.asked,
            "updates": self.updates,
            "told": [(a.to_dict(), r) for a, r in self.told],
            "pending": [a.to_dict() for a in self.pending],
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.baseline = state["baseline"]
        self.asked = state["asked"]
        self.updates = state["updates"]
        self.told = [(Arch.from_dict(a, validate=False), r) for a, r in state["told"]]
        self.pending = [Arch.from_dict(a, validate=False) for a in state["pending"]]
        self.history = copy.deepcopy(state["history"])


# ---------------------------------------------------------------------------
# Report section: reward per child with the moving baseline
# ---------------------------------------------------------------------------
def moving_baseline(rewards: list[float | None], batch: int, decay: float) -> list[float | None]:
    """The baseline each child was judged against, replayed from the rewards in tell order."""
    out: list[float | None] = []
    baseline: float | None = None
    for start in range(0, len(rewards), batch):
        chunk = rewards[start:start + batch]
        scored = [r for r in chunk if r is not None]
        if len(chunk) == batch and scored and baseline is None:
            baseline = float(np.mean(scored))
        out += [baseline] * len(chunk)
        if len(chunk) == batch:
            for r in scored:
                baseline = decay * baseline + (1 - decay) * r
    return out

