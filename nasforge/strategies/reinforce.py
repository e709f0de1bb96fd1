"""NAS-RL: an LSTM controller trained with REINFORCE (Zoph & Le, "Neural Architecture
Search with Reinforcement Learning", ICLR 2017), on the sequential layer space and on any
space's declared choices.

**Any space** (darts, nb201, mbconv, dense, users' spaces): the controller emits one
token per decision of the space's decision order (``SearchSpace.next_decision``; by
default every declared choice with more than one value, in ``choices()`` order), each
from its choice's own softmax head (NNI's policy-based RL; the NAS-Bench-201 paper's
REINFORCE baseline); an ``InputChoice`` token indexes the sorted list of its
combinations (``ChoiceSequence``), single-valued choices are filled in without a token.
A space with cross-choice rules gives the values allowed at each step (dense: its path,
decided from the tail back): the head's softmax is masked to them, for sampling and for
the log-probability and entropy of the update alike, and a decision with a single
allowed value takes no token. A space with cross-choice rules (``check_consistency``)
but no decision order is refused. Training (below) is the same on every space.

On the layer space the controller emits a network layer by layer: per conv layer the
filter height, filter width, stride height, stride width and number of filters, each
from its own softmax over the space's values; the sampled token is embedded and fed as
the next input (tokens whose value set has one element are not emitted). With
``space.skips`` each layer ends with an *anchor point*: the controller takes one more
step, and at layer ``N`` every earlier layer ``j`` feeds ``N`` with probability
``sigmoid(v^T tanh(W_prev h_j + W_curr h_N))``, ``h`` being the anchor hidden states;
the next input is the mean of the chosen anchors' states (ENAS's convention; the paper
does not say). The network depth grows over the search: ``start_layers``, plus
``layers_step`` every ``layers_every`` children (the paper: 6 layers, +2 every 1,600), up
to ``max_layers`` (default the space's ``max_depth``).

Reward: the paper's is "the maximum validation accuracy of the last 5 epochs cubed". With
the ``train`` evaluator, ``reinforce`` runs it with ``valid_epochs=5, objective=best``
(``section_defaults``; a config or ``--set evaluator.objective=final`` overrides), so the
objective is the best valid accuracy of the child's last 5 epochs and the reward its cube.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ArchError, ConfigError
from nasforge.registry import check_supported
from nasforge.spaces.base import SearchSpace, choice_values, undecidable
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
    start_layers: int | None = option(None, lo=1, hi=64,
                                      help="layer space: layers of the first children (auto; paper 6)")
    layers_step: int = option(2, lo=0, hi=64, help="layer space: layers added at each growth step (paper 2)")
    layers_every: int | None = option(None, lo=1, hi=10**7,
                                      help="layer space: children between growth steps (auto; paper 1600)")
    max_layers: int | None = option(None, lo=1, hi=64, help="layer space: the depth the growth stops at (auto: "
                                                            "space.max_depth; paper: 6 + 2 x 7 = 20 by child 12,800)")


# ---------------------------------------------------------------------------
# A space's declared choices as a sequence of decisions (shared with MetaQNN)
# ---------------------------------------------------------------------------
def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _value(arch: Arch, label: str) -> Any:
    try:
        return arch[label]
    except KeyError:
        raise ArchError(f"choice '{label}' is missing from the architecture; add it") from None


@dataclass(frozen=True)
class Step:
    """One decision along a walk: the choice (its position ``pos`` among ``ChoiceSequence.labels``),
    the indices of its values allowed there (ascending), the index taken, and the value of the
    decision before (``None`` at the start; a decision with a single allowed value counts)."""

    pos: int
    allowed: tuple[int, ...]
    index: int
    prev: Any


class ChoiceSequence:
    """A space's choices as the decisions of a sequential policy, in the order of the space's
    ``next_decision`` (by default every choice with two or more values in ``choices()`` order,
    each with all its values; the dense space decides its path from the tail back).

    ``labels[i]`` is the ``i``-th declared choice with more than one value and ``values[i]``
    its values (``choice_values``): a policy has one head over them per label and restricts
    it to the values allowed at each step. Single-valued choices are ``fixed``; a decision
    with a single allowed value is taken without a step. An architecture is the list of
    value indices of its steps (``arch``/``indices``).
    """

    def __init__(self, space: Any):
        self.space = space
        self.order: list[str] = []
        self.labels: list[str] = []
        self.values: list[tuple[Any, ...]] = []
        self.fixed: dict[str, Any] = {}
        for label, choice in space.choices().items():
            values = choice_values(choice)
            if not values:
                raise ConfigError(f"choice '{label}' of space '{space.name}' has no values; give it at least one")
            self.order.append(label)
            if len(values) > 1:
                self.labels.append(label)
                self.values.append(values)
            else:
                self.fixed[label] = values[0]
        self.position = {label: i for i, label in enumerate(self.labels)}
        self._lookup = [{_frozen(v): k for k, v in enumerate(values)} for values in self.values]
        self._every = [tuple(range(len(v))) for v in self.values]

    @property
    def sizes(self) -> list[int]:
        """Number of values of each labelled choice (the size of its head)."""
        return [len(v) for v in self.values]

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, pos: int, value: Any) -> int | None:
        """The index of ``value`` among choice ``pos``'s values (``None``: not one of them)."""
        return self._lookup[pos].get(_frozen(value))

    def next(self, values: dict[str, Any]) -> tuple[int, tuple[int, ...]] | None:
        """The next decision after ``values`` (label -> value): ``(pos, allowed indices)``, or
        ``None`` when the sequence is finished. A decision with a single allowed value is
        recorded in ``values`` and skipped."""
        space = self.space
        for _ in range(len(self.order) + 1):
            step = space.next_decision(values)
            if step is None:
                return None
            label, allowed = step
            if label in values:
                raise ConfigError(f"space '{space.name}' asks for choice '{label}' twice (next_decision); "
                                  "ask for each choice once")
            if len(allowed) == 1:
                values[label] = allowed[0]
                continue
            pos = self.position.get(label)
            if pos is None:
                raise ConfigError(f"space '{space.name}' asks for choice '{label}' (next_decision) but does not "
                                  "declare it with two or more values in choices(); declare it")
            if len(allowed) == len(self.values[pos]) and allowed == self.values[pos]:
                return pos, self._every[pos]
            indices = [self.index(pos, v) for v in allowed]
            if not allowed or None in indices:
                raise ConfigError(f"space '{space.name}' allows {list(allowed)} for choice '{label}' "
                                  f"(next_decision); allow a non-empty subset of its values {list(self.values[pos])}")
            return pos, tuple(sorted(set(indices)))
        raise ConfigError(f"space '{space.name}' never finishes its decisions (next_decision); return None once "
                          "every choice is decided")

    def walk(self, choose: Callable[[int, tuple[int, ...], Any], int], forced: Arch | None = None
             ) -> tuple[dict[str, Any], list[Step]]:
        """Run the decisions to the end: ``choose(pos, allowed, prev)`` gives the value index of
        each step. Returns every decided value (label -> value, single-allowed ones included;
        ``complete`` makes the architecture) and the steps. With ``forced``, a decision whose
        only allowed value differs from ``forced``'s is an ``ArchError``."""
        values: dict[str, Any] = {}
        out: list[Step] = []
        prev: Any = None
        while True:
            before = len(values)
            nxt = self.next(values)
            if len(values) > before:  # decisions with a single allowed value were taken
                taken = list(values)[before:]
                if forced is not None:
                    for label in taken:
                        if _frozen(_value(forced, label)) != _frozen(values[label]):
                            raise ArchError(f"choice '{label}': {_value(forced, label)!r} is not allowed after the "
                                            f"earlier decisions (only {values[label]!r} is); score archs of this "
                                            "space only")
                prev = _frozen(values[taken[-1]])
            if nxt is None:
                return values, out
            pos, allowed = nxt
            k = choose(pos, allowed, prev)
            out.append(Step(pos, allowed, k, prev))
            values[self.labels[pos]] = self.values[pos][k]
            prev = _frozen(values[self.labels[pos]])

    def steps(self, arch: Arch) -> list[Step]:
        """The decisions that emit ``arch``; ``ArchError`` naming the first choice that is
        missing, not a value of the space, or not allowed after the decisions before it."""
        if arch.space != self.space.name:
            raise ArchError(f"architecture belongs to space '{arch.space}', not '{self.space.name}'; "
                            "score archs of this space only")

        def given(pos: int, allowed: tuple[int, ...], prev: Any) -> int:
            label = self.labels[pos]
            value = _value(arch, label)
            k = self.index(pos, value)
            if k is None:
                raise ArchError(f"choice '{label}': {value!r} is not a value of the space; "
                                "score archs of this space only")
            if k not in allowed:
                raise ArchError(f"choice '{label}': {value!r} is not allowed after the earlier decisions (allowed: "
                                f"{[self.values[pos][i] for i in allowed]}); score archs of this space only")
            return k

        return self.walk(given, forced=arch)[1]

    def indices(self, arch: Arch) -> list[int]:
        """The value index of every decision of ``arch``; ``ArchError`` naming the first bad choice."""
        return [step.index for step in self.steps(arch)]

    def arch(self, indices: Sequence[int]) -> Arch:
        """The architecture taking value ``indices[i]`` at decision ``i`` (the rest filled in by
        the space's ``complete``); ``ArchError`` if an index is not allowed where it is used."""
        todo = list(indices)

        def given(pos: int, allowed: tuple[int, ...], prev: Any) -> int:
            if not todo:
                raise ArchError(f"{len(indices)} decisions given but the space takes more; give them all")
            k = int(todo.pop(0))
            if k not in allowed:
                raise ArchError(f"decision {len(indices) - len(todo) - 1} ('{self.labels[pos]}'): index {k} is not "
                                f"allowed there (allowed: {list(allowed)})")
            return k

        values, steps = self.walk(given)
        if todo:
            raise ArchError(f"{len(indices)} decisions given but the space takes {len(steps)}; give {len(steps)}")
        return self.complete(values)

    def complete(self, values: dict[str, Any]) -> Arch:
        """The architecture of a finished sequence of decisions (``values``: label -> value)."""
        return self.space.complete(values)


def sequence_support(strategy: str, space: Any) -> str | None:
    """Why ``strategy`` cannot decide ``space``'s choices one after the other (``None``: it can)."""
    reason = undecidable(strategy, space)
    if reason is not None:
        return reason
    name = getattr(space, "name", space)
    cls = type(space)
    rules = getattr(cls, "check_consistency", None)
    ordered = getattr(cls, "next_decision", None)
    if (rules is not None and rules is not SearchSpace.check_consistency
            and (ordered is None or ordered is SearchSpace.next_decision)):
        return (f"strategy '{strategy}' decides the choices one after the other, but space '{name}' has "
                "cross-choice rules (check_consistency) and no decision order that follows them (next_decision, "
                "complete): use random or evolution (the space's own sample and mutate)")
    return None


class Controller(nn.Module):
    """The NAS-RL LSTM controller: per-token softmax heads and embeddings, and (``anchors``)
    the anchor-point attention of the layer space's skip connections."""

    def __init__(self, sizes: dict[str, int], hidden: int, layers: int, anchors: bool = True):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.lstm = nn.LSTM(hidden, hidden, layers)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in sizes.items()})
        self.embed = nn.ModuleDict({k: nn.Embedding(n, hidden) for k, n in sizes.items()})
        if anchors:
            self.w_prev = nn.Linear(hidden, hidden, bias=False)
            self.w_curr = nn.Linear(hidden, hidden, bias=False)
            self.v = nn.Linear(hidden, 1, bias=False)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(x.view(1, 1, -1), state)
        return out.view(1, -1), state


@dataclass
class Rollout:
    """One controller pass: what it emitted (the layers, or one value index per decision of
    a ``ChoiceSequence``), the summed log-probability and entropy, the probability of every
    decision taken (for checking), and (a sampled ``ChoiceSequence`` pass) the architecture."""

    decisions: list[Any]
    log_prob: Tensor
    entropy: Tensor
    probs: list[float]
    arch: Arch | None = None


@register_strategy
class ReinforceStrategy(SampleStrategy):
    """NAS-RL: LSTM controller, REINFORCE with a moving-average baseline; on the layer space a
    layer grammar with growing depth, on any other space one token per decision of the space's
    decision order (masked to the values allowed there)."""

    name = "reinforce"
    description = ("NAS-RL: LSTM controller trained by REINFORCE, one token per choice or the layer grammar "
                   "(Zoph & Le 2017)")
    Config = ReinforceConfig
    #: defaults under the run's config: the paper's reward, the best valid accuracy of the last 5 epochs
    section_defaults = {"evaluator": {"train": {"valid_epochs": 5, "objective": "best"}}}

    def __init__(self, config: ReinforceConfig | None = None):
        super().__init__(config)
        self.batch = self.config.batch
        self.space: Any = None
        self.sequence: ChoiceSequence | None = None

    # --- setup -----------------------------------------------------------------
    @classmethod
    def supports(cls, space: Any) -> str | None:
        """A layer space whose types include conv (the layer grammar), or any space with a choice
        of two or more values whose cross-choice rules, if any, come with a decision order
        (``next_decision``; one token per decision)."""
        if isinstance(space, LayerSpace):
            if "conv" not in space.types:
                return "strategy 'reinforce' emits conv layers but space.types has no 'conv'; add it"
            if space.conv_fits or space.square:
                return ("strategy 'reinforce' emits each conv token on its own (NAS-RL's controller), but the layer "
                        "space ties kernels to the representation or to square shapes (conv_fits/square, MetaQNN's "
                        "grammar); use space.grammar=nasrl")
            return None
        return sequence_support(cls.name, space)

    def setup(self, space: Any, seed: int) -> None:
        """Build the controller for ``space``, seeded."""
        check_supported(type(self), space)
        cfg = self.config
        self.space = space
        if isinstance(space, LayerSpace):
            self.sequence = None
            self.tokens = [t for t in TOKENS if len(space.param_values(t)) > 1]
            sizes = {t: len(space.param_values(t)) for t in self.tokens}
        else:
            self.sequence = ChoiceSequence(space)
            self.tokens = [str(i) for i in range(len(self.sequence))]  # head keys: labels may hold dots
            sizes = dict(zip(self.tokens, self.sequence.sizes))
        self.controller = Controller(sizes, cfg.hidden, cfg.lstm_layers, anchors=self.sequence is None)
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
        if self.sequence is None and cfg.max_layers is not None and cfg.max_layers > space.max_depth:
            raise ConfigError(f"reinforce: strategy.max_layers={cfg.max_layers} exceeds the layer space's max_depth="
                              f"{space.max_depth}; raise space.max_depth (e.g. --set space.max_depth="
                              f"{cfg.max_layers}) or lower max_layers")
        start = cfg.start_layers or DEFAULT_START_LAYERS
        if self.sequence is None and start > space.max_depth:
            log.info("reinforce: start_layers=%d exceeds space.max_depth=%d; using %d", start, space.max_depth,
                     space.max_depth)

    def depth(self, child: int) -> int:
        """Layers of child number ``child`` under the growth schedule (at most the space's depth)."""
        cfg = self.config
        every = cfg.layers_every or DEFAULT_LAYERS_EVERY
        grown = (cfg.start_layers or DEFAULT_START_LAYERS) + cfg.layers_step * (child // every)
        return max(1, min(cfg.max_layers or self.space.max_depth, self.space.max_depth, grown))

    # --- the controller pass ----------------------------------------------------
    def decide(self, key: str, x: Tensor, state: tuple[Tensor, Tensor] | None, forced: int | None,
               allowed: Sequence[int] | None = None) -> tuple[int, Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
        """One token from head ``key``: sampled, or ``forced`` (teacher forcing). ``allowed``
        (ascending value indices; default all) masks the head: the softmax runs over those
        values only. Returns the index, its log-probability, the (masked) distribution's
        entropy, the next input (the token's embedding) and the LSTM state."""
        ctl = self.controller
        h, state = ctl.step(x, state)
        logits = ctl.heads[key](h)
        if allowed is None or len(allowed) == logits.shape[-1]:
            logp = F.log_softmax(logits, dim=-1).view(-1)
            k = forced if forced is not None else int(torch.multinomial(logp.detach().exp(), 1, generator=self.gen))
            return k, logp[k], -(logp.exp() * logp).sum(), ctl.embed[key](torch.tensor([k])), state
        logp = F.log_softmax(logits.view(-1)[torch.tensor(allowed)], dim=-1)
        j = allowed.index(forced) if forced is not None else \
            int(torch.multinomial(logp.detach().exp(), 1, generator=self.gen))
        k = int(allowed[j])
        return k, logp[j], -(logp.exp() * logp).sum(), ctl.embed[key](torch.tensor([k])), state

    def choice_rollout(self, indices: Sequence[int] | None = None, steps: Sequence[Step] | None = None) -> Rollout:
        """Sample a decision sequence of the space (``ChoiceSequence``), or score given value
        ``indices`` or ``steps`` (teacher forcing): same pass. At each step the head of the
        choice decided is masked to the values allowed there."""
        x, state = self.controller.start, None
        log_prob = torch.zeros(())
        entropy = torch.zeros(())
        probs: list[float] = []
        seq = self.sequence
        if indices is not None and steps is None:
            steps = seq.steps(seq.arch(indices))
        out: list[int] = []

        def token(pos: int, allowed: tuple[int, ...], given: int | None) -> int:
            nonlocal x, state, log_prob, entropy
            k, lp, ent, x, state = self.decide(self.tokens[pos], x, state, given, allowed)
            log_prob = log_prob + lp
            entropy = entropy + ent
            probs.append(float(lp.detach().exp()))
            out.append(k)
            return k

        if steps is not None:
            for step in steps:
                token(step.pos, step.allowed, step.index)
            return Rollout(out, log_prob, entropy, probs)
        values, _ = seq.walk(lambda pos, allowed, prev: token(pos, allowed, None))
        return Rollout(out, log_prob, entropy, probs, seq.complete(values))

    def rollout(self, depth: int | None = None, layers: list[Layer] | None = None) -> Rollout:
        """Layer space: sample ``depth`` layers, or score the given ``layers`` (teacher forcing): same pass."""
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
                choices = space.param_values(t)
                given = None
                if forced:
                    try:
                        given = choices.index(getattr(layers[i], t))
                    except ValueError:
                        raise ArchError(f"layer{i}.{t}={getattr(layers[i], t)} is not a value of the space; "
                                        "score archs of this space only") from None
                k, lp, ent, x, state = self.decide(t, x, state, given)
                log_prob = log_prob + lp
                entropy = entropy + ent
                probs.append(float(lp.detach().exp()))
                values[t] = choices[k]
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

    def score(self, arch: Arch) -> Rollout:
        """The teacher-forced pass over ``arch`` (differentiable log-probability and entropy)."""
        if self.sequence is not None:
            return self.choice_rollout(steps=self.sequence.steps(arch))
        return self.rollout(layers=self.space.layers_of(arch))

    def sample(self, depth: int | None = None) -> tuple[Arch, Rollout]:
        """A child from the current policy (on the layer space, of ``depth`` conv layers), and its rollout."""
        with torch.no_grad():
            if self.sequence is not None:
                roll = self.choice_rollout()
                return roll.arch, roll
            roll = self.rollout(depth=depth)
        return self.space.arch_of(roll.decisions), roll

    def log_prob(self, arch: Arch) -> Tensor:
        """Log-probability of ``arch`` under the current controller (differentiable)."""
        if self.sequence is None and any(layer.type != "conv" for layer in self.space.layers_of(arch)):
            raise ArchError("NAS-RL's controller only emits conv layers; this arch has others")
        return self.score(arch).log_prob

    def probabilities(self, arch: Arch | None = None) -> dict[str, list[float]]:
        """Per decision (any space but the layer space), the controller's probability of each
        value of the choice decided (0 for values not allowed there), along the pass that emits
        ``arch`` (default: each decision's most likely value), in decision order."""
        if self.sequence is None:
            raise ConfigError("reinforce: per-choice probabilities need a space of declared choices, not the "
                              "layer grammar; use log_prob(arch)")
        seq = self.sequence
        given = None if arch is None else iter(seq.steps(arch))
        ctl, out = self.controller, {}
        x, state = ctl.start, None

        def pick(pos: int, allowed: tuple[int, ...], prev: Any) -> int:
            nonlocal x, state
            key = self.tokens[pos]
            h, state = ctl.step(x, state)
            logits = ctl.heads[key](h)
            if len(allowed) == logits.shape[-1]:
                p = F.softmax(logits, dim=-1).view(-1)
            else:
                p = torch.zeros(logits.shape[-1])
                p[torch.tensor(allowed)] = F.softmax(logits.view(-1)[torch.tensor(allowed)], dim=-1)
            k = int(p.argmax()) if given is None else next(given).index
            out[seq.labels[pos]] = [float(v) for v in p]
            x = ctl.embed[key](torch.tensor([k]))
            return k

        with torch.no_grad():
            seq.walk(pick)
        return out

    # --- ask / tell ---------------------------------------------------------------
    def ask(self) -> Arch:
        arch, _ = self.sample(self.depth(self.asked) if self.sequence is None else None)
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
        record = {"objective": None if metrics is None else metrics.get("objective"), "reward": reward,
                  "baseline": self.baseline}
        if self.sequence is None:
            record["depth"] = len(self.space.layers_of(arch))
        self.history.append(record)
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
            roll = self.score(arch)
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



# ---------------------------------------------------------------------------
# Presets: the paper's CIFAR-10 experiment
# ---------------------------------------------------------------------------
from nasforge.presets import register_preset  # noqa: E402

_NASRL_SOURCE = ("NAS-RL paper (Zoph & Le, ICLR 2017) sec. 3.1-3.3 and 4.1 (learning details); the child recipe is "
                 "the one of Huang et al. 2016 (DenseNet) the paper names")
_NASRL_CIFAR = {
    # 5,000 of the 50,000 training images held out for validation
    "data": {"valid_fraction": 0.1},
    # filter heights/widths 1-7, 24-64 filters, stride 1 (the first experiment), skip connections (anchor points)
    "space": {"name": "layers", "image_size": 32, "max_depth": 20, "kernel_sizes": [1, 3, 5, 7], "strides": [1],
              "filters": [24, 36, 48, 64], "skips": True},
    # 2-layer LSTM of 35 units, Adam 0.0006, init +-0.08, m = 8; 6 layers, +2 every 1,600 children
    "strategy": {"batch": 8, "lr": 6e-4, "hidden": 35, "lstm_layers": 2, "init_range": 0.08, "reward_power": 3.0,
                 "start_layers": 6, "layers_step": 2, "layers_every": 1600, "max_layers": 20},
    "trials": {"max_trials": 12800},
    # 50 epochs, momentum 0.9 (Nesterov), lr 0.1, weight decay 1e-4; reward: the best valid accuracy of the
    # last 5 epochs, cubed
    "evaluator": {"name": "train", "epochs": 50, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                  "weight_decay": 1e-4, "grad_clip": 0.0, "valid_epochs": 5, "objective": "best"},
    "train": {"epochs": 300, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 0.0,
              "cutout": 0, "auxiliary": False, "drop_path": 0.0},
}
register_preset("paper", "reinforce", "cifar10", _NASRL_CIFAR, sources={"*": _NASRL_SOURCE},
                note="12,800 children; the controller's depth reaches 20 by the last 1,600")
