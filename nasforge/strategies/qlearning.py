"""MetaQNN: Q-learning over layer sequences (Baker, Gupta, Naik & Raskar, "Designing Neural
Network Architectures using Reinforcement Learning", ICLR 2017), on the layer space and
on any space's declared choices.

**Any space** (darts, nb201, mbconv, dense, users' spaces): the walk follows the space's
decision order (``SearchSpace.next_decision``, through ``ChoiceSequence``, shared with
NAS-RL; by default the choices with more than one value in ``choices()`` order; dense:
its path from the tail back). An ``InputChoice``'s actions are its sorted combinations;
single-valued choices, and decisions with a single allowed value, are filled in without
a step. A state is ``(label of the choice to decide, value of the decision before)``
(``None`` at the start), an action an index into the choice's values, among those the
space allows there; the walk ends after the last decision, whose Q-value takes the
reward, and the Q-update's ``max`` runs over the next state's allowed actions. A space
with cross-choice rules (``check_consistency``) but no decision order is refused.
Epsilon schedule, replay and the Q-update below are the same on every space;
``size_bins`` and ``square`` only concern the layer space.

**The layer space**: the agent walks a state space from a start state to a termination:
a state is the layer just added (type and parameters), its depth, the bin of its
representation size (MetaQNN's bins: above 7, 4 to 7, at most 3 pixels -> 8, 4, 1;
``size_bins``) and the number of fc layers so far. An action is the next layer, or the
end (the softmax classifier); which actions are allowed is the space's transition rules
at the actual (unbinned) size: no pooling first or after pooling, fc only on a small
representation, at most ``max_fc`` fc layers with non-increasing widths, ``gap``
followed only by the end, at most ``max_depth`` layers. Each walk is epsilon-greedy on Q (ties broken at
random); Q starts at 0.5 for every pair.

Learning is the paper's: after each model's result, the model joins the replay memory
and ``replay`` models (paper 100; with replacement, uniformly over distinct
architectures) are drawn from it; each drawn sequence is updated backwards,
``Q(s_T, end) += lr * (R - Q(s_T, end))`` and
``Q(s_i, a_i) += lr * (discount * max_a Q(s_{i+1}, a) - Q(s_i, a_i))``, lr 0.01, discount 1,
R the objective (validation accuracy). A failed model is not replayed.

Conv actions are square (kernel and stride equal in height and width) as in the paper,
whose conv layers have one receptive-field size; ``square=false`` lets the agent pick
every height x width the space allows (a 4x larger action set with the default sizes).

Epsilon schedule: the paper's table (1.0 for 1,500 models, then 0.9, 0.8, 0.7 for 100 each
and 0.6 ... 0.1 for 150 each; 2,700 in all) scaled to ``trials`` models with the same
proportions (largest remainders), epsilon 0.1 after that. As in the paper (Table 2: "the
number of unique models trained" at each epsilon) and its code (``q_server.py``
``number_trained_unique``), the schedule counts unique models: a model sampled again is
answered from the replay memory (the trial loop's store) and leaves epsilon where it is
(``count=models`` counts every model asked).

On the layer space ``metaqnn`` runs, by default, on MetaQNN's own state-action space: a
run that names the layer space without a ``grammar`` gets ``grammar=metaqnn``
(``section_defaults``; ``nasforge/spaces/layers.py``: Table 1's values). ``paper`` preset
(cifar10): the paper's CIFAR-10 experiment, child training included (below).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ConfigError
from nasforge.registry import check_supported
from nasforge.spaces.layers import NONE, Layer, LayerSpace, conv_out, pool_out
from nasforge.strategies.base import SampleStrategy, register_strategy
from nasforge.strategies.reinforce import ChoiceSequence, Step, sequence_support

log = logging.getLogger(__name__)

#: MetaQNN's epsilon schedule: (epsilon, models), Table 2 of the paper / its code
PAPER_SCHEDULE: tuple[tuple[float, int], ...] = (
    (1.0, 1500), (0.9, 100), (0.8, 100), (0.7, 100), (0.6, 150),
    (0.5, 150), (0.4, 150), (0.3, 150), (0.2, 150), (0.1, 150),
)
END = ("end",)
#: walk state on the layer space: (depth, layer key, size bin, fc layers so far), the start is
#: depth 0; on other spaces: (label to decide, previous decision's value), the start's is None
State = tuple
#: an action: a layer key or ``END`` on the layer space, a value index on other spaces
Action = Any


@dataclass
class MetaQNNConfig:
    trials: int | None = option(None, lo=1, hi=10**7, help="models the epsilon schedule is scaled to (auto; paper 2700)")
    lr: float = option(0.01, lo=0.0, hi=1.0, help="Q-learning rate (paper 0.01)")
    discount: float = option(1.0, lo=0.0, hi=1.0, help="discount factor (paper 1)")
    q_init: float = option(0.5, lo=-1e6, hi=1e6, help="initial Q value (paper 0.5)")
    replay: int = option(100, lo=0, hi=100000, help="replayed models per result (paper 100)")
    size_bins: list = option([8, 4, 1], help="layer space: representation-size bins, lower bounds, descending "
                                             "(paper 8,4,1)")
    schedule: list = option([list(p) for p in PAPER_SCHEDULE],
                            help="epsilon schedule [[epsilon, models], ...] scaled to `trials` (paper's table)")
    square: bool = option(True, help="layer space: conv kernels and strides square, as in the paper "
                                     "(false: every h x w)")
    batch: int = option(1, lo=1, hi=10000, help="models that may be asked before their results are told")
    count: str = option("unique", choices=("unique", "models"),
                        help="what the epsilon schedule counts: unique models (paper) or every model asked")

    def __post_init__(self) -> None:
        bins = self.size_bins
        if not bins or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins) \
                or list(bins) != sorted(set(bins), reverse=True) or bins[-1] != 1:
            raise ConfigError(f"strategy.size_bins={bins!r} must be distinct integers in descending order ending "
                              "with 1, e.g. [8, 4, 1]")
        try:
            pairs = [(float(e), int(n)) for e, n in self.schedule]
        except (TypeError, ValueError):
            raise ConfigError(f"strategy.schedule={self.schedule!r} must be a list of [epsilon, models] pairs, "
                              "e.g. [[1.0, 1500], [0.1, 150]]") from None
        if not pairs or any(not 0.0 <= e <= 1.0 or n < 0 for e, n in pairs) or sum(n for _, n in pairs) == 0:
            raise ConfigError("strategy.schedule needs epsilons in [0, 1] and non-negative model counts "
                              "(not all zero)")


def scaled_schedule(schedule: list, trials: int) -> list[tuple[float, int]]:
    """The schedule's model counts scaled to ``trials`` in the same proportions (largest remainders)."""
    pairs = [(float(e), int(n)) for e, n in schedule]
    total = sum(n for _, n in pairs)
    counts = [n * trials // total for _, n in pairs]  # integer arithmetic: ties are exact
    order = sorted(range(len(pairs)), key=lambda i: (-(pairs[i][1] * trials % total), i))
    for i in order[:trials - sum(counts)]:
        counts[i] += 1
    return [(e, c) for (e, _), c in zip(pairs, counts)]


def epsilon_at(schedule: list[tuple[float, int]], model: int) -> float:
    """Epsilon for the ``model``-th model (0-based); the last epsilon once the schedule is used up."""
    seen = 0
    for eps, count in schedule:
        seen += count
        if model < seen:
            return eps
    return schedule[-1][0]


@register_strategy
class MetaQNNStrategy(SampleStrategy):
    """MetaQNN: epsilon-greedy Q-learning over layer sequences (the layer space) or over a
    space's decisions (its decision order, allowed values only), with experience replay."""

    name = "metaqnn"
    description = ("MetaQNN: Q-learning with epsilon-greedy walks and replay over choices or the layer grammar "
                   "(Baker et al. 2017)")
    Config = MetaQNNConfig
    #: defaults under the run's config: on the layer space, MetaQNN's own state-action space
    section_defaults = {"space": {"layers": {"grammar": "metaqnn"}}}

    def __init__(self, config: MetaQNNConfig | None = None):
        super().__init__(config)
        self.batch = self.config.batch
        self.space: Any = None
        self.sequence: ChoiceSequence | None = None

    @classmethod
    def supports(cls, space: Any) -> str | None:
        """The layer space (its grammar's transition rules), or any space with a choice of two or
        more values whose cross-choice rules, if any, come with a decision order
        (``next_decision``; one step per decision)."""
        if isinstance(space, LayerSpace):
            return None
        return sequence_support(cls.name, space)

    def setup(self, space: Any, seed: int) -> None:
        """Empty Q-table and replay memory for ``space``, seeded."""
        check_supported(type(self), space)
        self.space = space
        self.sequence = None if isinstance(space, LayerSpace) else ChoiceSequence(space)
        self._steps: dict[Arch, list[Step]] = {}
        self._actions: dict[tuple, list[Action]] = {}
        self.rng = np.random.default_rng(seed)
        self.q: dict[State, dict[Action, float]] = {}
        self.memory: dict[Arch, float] = {}
        self.asked = 0
        self.unique: set[str] = set()  # hashes of the distinct models asked so far
        self.history: list[dict[str, Any]] = []
        self.schedule = scaled_schedule(self.config.schedule, self.config.trials or DEFAULT_TRIALS)

    @property
    def epsilon(self) -> float:
        """Epsilon of the next walk: the schedule counts unique models (the paper's Table 2: "the
        number of unique models trained" at each epsilon; a model sampled again is answered from
        the replay memory and does not move the schedule), or every model with
        ``count=models``."""
        return epsilon_at(self.schedule, len(self.unique) if self.config.count == "unique" else self.asked)

    # --- the state space -------------------------------------------------------
    def size_bin(self, size: int) -> int:
        return next(b for b in self.config.size_bins if size >= b)

    def start(self) -> tuple[State, dict[str, Any]]:
        """The start state and its actual (unbinned) context."""
        n = self.space.image_size
        ctx = {"prev": "start", "size": (n, n), "depth": 0, "fc": 0, "units": max(self.space.fc_units)}
        return (0, ("start",), self.size_bin(n), 0), ctx

    def actions(self, ctx: dict[str, Any]) -> list[Action]:
        """Every action the transition rules allow in an actual state (layer keys or the end)."""
        key = (ctx["prev"], ctx["size"], ctx["depth"], ctx["fc"], ctx["units"])
        cached = self._actions.get(key)
        if cached is None:
            cached = self._actions[key] = self._enumerate(ctx)
        return cached

    def _enumerate(self, ctx: dict[str, Any]) -> list[Action]:
        sp = self.space
        out: list[Action] = []
        for kind in sp.allowed_types(ctx["prev"], ctx["size"], ctx["depth"], ctx["fc"], ctx["units"]):
            if kind == NONE:
                out.append(END)
            elif kind == "conv":
                kernels = sp.conv_kernels(ctx["size"])
                out += [("conv", kh, kw, sh, sw, f) for kh in kernels for kw in kernels
                        for sh in sp.strides for sw in sp.strides for f in sp.filters
                        if not (self.config.square or sp.square) or (kh == kw and sh == sw)]
            elif kind == "pool":
                out += [("pool", k, s) for k, s in sp.pool_pairs if k <= min(ctx["size"])]
            elif kind == "fc":
                out += [("fc", u) for u in sp.fc_units if ctx["prev"] != "fc" or u <= ctx["units"]]
            else:
                out.append(("gap",))
        return out

    def transition(self, ctx: dict[str, Any], action: Action) -> tuple[State, dict[str, Any]]:
        """The state reached from the actual state ``ctx`` by adding layer ``action``."""
        kind = action[0]
        h, w = ctx["size"]
        fc, units = ctx["fc"], ctx["units"]
        if kind == "conv":
            _, kh, kw, sh, sw, _ = action
            size = (conv_out(h, kh, sh), conv_out(w, kw, sw))
        elif kind == "pool":
            size = (pool_out(h, action[1], action[2]), pool_out(w, action[1], action[2]))
        else:
            size = (1, 1)
            if kind == "fc":
                fc, units = fc + 1, action[1]
        new = {"prev": kind, "size": size, "depth": ctx["depth"] + 1, "fc": fc, "units": units}
        return (new["depth"], action, self.size_bin(max(size)), fc), new

    def q_value(self, state: State, action: Action) -> float:
        return self.q.get(state, {}).get(action, self.config.q_init)

    @staticmethod
    def layer_of(action: Action, index: int) -> Layer:
        kind = action[0]
        inputs = (index - 1,) if index else ()
        if kind == "conv":
            return Layer("conv", *action[1:], inputs=inputs)
        if kind == "pool":
            return Layer("pool", pool_kernel=action[1], pool_stride=action[2], inputs=inputs)
        if kind == "fc":
            return Layer("fc", units=action[1], inputs=inputs)
        return Layer(kind, inputs=inputs)

    def path(self, arch: Arch) -> list[tuple[State, Action, dict[str, Any]]]:
        """The walk of ``arch``: ``(state, action, actual context)`` per step, the end included."""
        state, ctx = self.start()
        steps = []
        for layer in self.space.layers_of(arch):
            action = layer.key()
            steps.append((state, action, ctx))
            state, ctx = self.transition(ctx, action)
        steps.append((state, END, ctx))
        return steps

    # --- the choice sequence of other spaces -----------------------------------------
    def choice_state(self, pos: int, prev: Any) -> State:
        """The state of deciding choice ``pos`` of the sequence after a decision of value ``prev``."""
        return (self.sequence.labels[pos], prev)

    def choice_steps(self, arch: Arch) -> list[Step]:
        """The decisions of ``arch`` (``ChoiceSequence.steps``, cached per architecture)."""
        steps = self._steps.get(arch)
        if steps is None:
            steps = self._steps[arch] = self.sequence.steps(arch)
        return steps

    def choice_path(self, arch: Arch) -> list[tuple[State, int]]:
        """The walk of ``arch`` over the space's decisions: ``(state, action)`` per decision."""
        return [(self.choice_state(step.pos, step.prev), step.index) for step in self.choice_steps(arch)]

    # --- ask / tell ----------------------------------------------------------------
    def choose(self, state: State, actions: list[Any], epsilon: float) -> Any:
        """Epsilon-greedy on Q among ``actions`` (ties broken at random)."""
        if self.rng.random() < epsilon:
            return actions[int(self.rng.integers(len(actions)))]
        values = np.array([self.q_value(state, a) for a in actions])
        best = np.flatnonzero(values == values.max())
        return actions[int(best[int(self.rng.integers(len(best)))])]

    def walk(self, epsilon: float) -> Arch:
        """One epsilon-greedy walk from the start to the end: a valid architecture."""
        if self.sequence is not None:
            seq = self.sequence
            values, _ = seq.walk(lambda pos, allowed, prev: self.choose(self.choice_state(pos, prev), list(allowed),
                                                                        epsilon))
            return seq.complete(values)
        state, ctx = self.start()
        layers: list[Layer] = []
        while True:
            action = self.choose(state, self.actions(ctx), epsilon)
            if action == END:
                return self.space.arch_of(layers)
            layers.append(self.layer_of(action, len(layers)))
            state, ctx = self.transition(ctx, action)

    def ask(self) -> Arch:
        epsilon = self.epsilon
        arch = self.walk(epsilon)
        self.history.append({"epsilon": epsilon})
        self.asked += 1
        self.unique.add(arch.hash)
        return arch

    def tell(self, arch: Arch, metrics: dict[str, Any] | None) -> None:
        value = None if metrics is None else metrics.get("objective")
        if value is None or not np.isfinite(value):
            return
        self.memory.setdefault(arch, float(value))
        archs = list(self.memory)
        picks = self.rng.integers(len(archs), size=self.config.replay)
        self.replay_update([(archs[int(i)], self.memory[archs[int(i)]]) for i in picks])

    def replay_update(self, replayed: list[tuple[Arch, float]]) -> None:
        """Q-update each ``(arch, reward)`` sequence, in the given order."""
        for arch, reward in replayed:
            self.update_sequence(arch, reward)

    def transitions(self, arch: Arch) -> list[tuple[State, Action, State | None, list[Action]]]:
        """``(state, action, next state, its actions)`` along the walk of ``arch``; the last step's
        next state is ``None`` (its action ends the walk)."""
        if self.sequence is not None:
            steps = self.choice_steps(arch)
            out = []
            for i, step in enumerate(steps):
                state = self.choice_state(step.pos, step.prev)
                if i + 1 < len(steps):
                    nxt = steps[i + 1]
                    out.append((state, step.index, self.choice_state(nxt.pos, nxt.prev), list(nxt.allowed)))
                else:
                    out.append((state, step.index, None, []))
            return out
        out = []
        for state, action, ctx in self.path(arch):
            if action == END:
                out.append((state, action, None, []))
            else:
                nstate, nctx = self.transition(ctx, action)
                out.append((state, action, nstate, self.actions(nctx)))
        return out

    def update_sequence(self, arch: Arch, reward: float) -> None:
        """The paper's backward Q-update along one architecture's walk (reward at the end)."""
        cfg = self.config
        for state, action, nstate, nactions in reversed(self.transitions(arch)):
            if nstate is None:
                target = reward
            else:
                target = cfg.discount * max(self.q_value(nstate, a) for a in nactions)
            old = self.q_value(state, action)
            self.q.setdefault(state, {})[action] = old + cfg.lr * (target - old)

    # --- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "q": [(s, a, v) for s, row in self.q.items() for a, v in row.items()],
            "memory": [(a.to_dict(), r) for a, r in self.memory.items()],
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "asked": self.asked,
            "unique": sorted(self.unique),
            "history": copy.deepcopy(self.history),
            "schedule": list(self.schedule),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = {}
        for s, a, v in state["q"]:
            self.q.setdefault(_freeze(s), {})[_freeze(a)] = float(v)
        self.memory = {Arch.from_dict(a, validate=False): float(r) for a, r in state["memory"]}
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.asked = int(state["asked"])
        self.unique = set(state.get("unique", ()))
        self.history = copy.deepcopy(state["history"])
        self.schedule = [(float(e), int(n)) for e, n in state["schedule"]]


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


#: the schedule's length when the config is built without a dataset profile (digits' value)
DEFAULT_TRIALS = 100



# ---------------------------------------------------------------------------
# Presets: the paper's CIFAR-10 experiment
# ---------------------------------------------------------------------------
from nasforge.presets import register_preset  # noqa: E402

_METAQNN_SOURCE = ("MetaQNN paper (Baker et al., ICLR 2017) sec. 4-5, Tables 1-2; bowenbaker/metaqnn "
                   "models/cifar10/state_space_parameters.py, models/cifar10/hyper_parameters.py, "
                   "libs/grammar/state_string_utils.py, q_server.py")
_METAQNN_CIFAR = {
    # 5,000 of the 50,000 training images held out for validation
    "data": {"valid_fraction": 0.1},
    # Table 1 with the CIFAR-10 experiment's maximum depth of 18; Caffe networks without BatchNorm,
    # dropout after every two layers
    "space": {"name": "layers", "grammar": "metaqnn", "image_size": 32, "max_depth": 18, "dropout": True,
              "batch_norm": False},
    "strategy": {"trials": 2700, "lr": 0.01, "discount": 1.0, "q_init": 0.5, "replay": 100,
                 "schedule": [list(p) for p in PAPER_SCHEDULE], "count": "unique", "square": True},
    "trials": {"max_trials": 2700},
    # 20 epochs of Adam (0.9, 0.999, 1e-8), batch 128, lr 0.001 x0.2 every 5 epochs, up to 5 restarts at
    # lr x0.4 when the first epoch is no better than chance; reward: the best valid accuracy (accuracy_best_val)
    "evaluator": {"name": "train", "epochs": 20, "batch_size": 128, "optimizer": "adam", "lr": 0.001,
                  "weight_decay": 5e-4, "grad_clip": 0.0, "lr_schedule": "step", "lr_step_epochs": 5,
                  "lr_step_factor": 0.2, "restarts": 5, "restart_factor": 0.4, "valid_epochs": 20,
                  "objective": "best"},
    # the paper's final training: 300 epochs (40 + 40 + 160 + 60) on the whole training set
    "train": {"epochs": 300, "batch_size": 128, "grad_clip": 0.0, "cutout": 0, "auxiliary": False,
              "drop_path": 0.0, "train_on": "train+valid"},
}
register_preset("paper", "metaqnn", "cifar10", _METAQNN_CIFAR, sources={"*": _METAQNN_SOURCE},
                note="2,700 unique models; repeats count towards trials.max_trials, raise it to finish the schedule")
