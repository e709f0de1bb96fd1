"""DDPG agent of HAQ: actor/critic MLPs, replay buffer, truncated-normal exploration.

Follows the HAQ code (``lib/rl/ddpg.py``, ``rl_quantize.py``): actor ``state -> 300 ->
300 -> 1`` with a sigmoid (actions in [0, 1]); critic ``relu(W1 s + W2 a) -> 300 -> 1``;
Adam with lr 1e-4 (actor) and 1e-3 (critic); soft target updates with tau 0.01;
discount 1; rewards minus a moving average of the batch mean (alpha 0.5); exploration
by sampling from a normal around the actor's action truncated to [0, 1], with a standard
deviation ``init_delta * delta_decay ** (episode - warmup)`` (0.5, 0.99). All randomness
(noise, replay sampling) comes from one seeded numpy ``Generator`` whose state is part of
``state_dict``, so a resumed search continues exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Actor", "Critic", "DDPGAgent", "DDPGConfig", "ReplayBuffer"]


@dataclass
class DDPGConfig:
    hidden: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    discount: float = 1.0
    batch_size: int = 64
    capacity: int = 2000
    init_delta: float = 0.5
    delta_decay: float = 0.99
    warmup: int = 20
    moving_alpha: float = 0.5


class Actor(nn.Module):
    """Deterministic policy: state -> action in [0, 1]."""

    def __init__(self, n_states: int, hidden: int = 300):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_states, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, s: Tensor) -> Tensor:
        return self.net(s)


class Critic(nn.Module):
    """Q(s, a): the state and action enter through separate first layers that are summed."""

    def __init__(self, n_states: int, hidden: int = 300):
        super().__init__()
        self.fs, self.fa = nn.Linear(n_states, hidden), nn.Linear(1, hidden)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return self.head(self.fs(s) + self.fa(a))


class ReplayBuffer:
    """A ring buffer of (state, action, reward, next state, done) transitions in numpy arrays."""

    def __init__(self, n_states: int, capacity: int):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.s = np.zeros((capacity, n_states), np.float32)
        self.a = np.zeros((capacity, 1), np.float32)
        self.r = np.zeros((capacity, 1), np.float32)
        self.s2 = np.zeros((capacity, n_states), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)

    def add(self, s: np.ndarray, a: float, r: float, s2: np.ndarray, done: bool) -> None:
        i = self.pos
        self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = s, a, r, s2, float(done)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        idx = rng.integers(0, self.size, size=n)
        return self.s[idx], self.a[idx], self.r[idx].copy(), self.s2[idx], self.done[idx]

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("capacity", "size", "pos", "s", "a", "r", "s2", "done")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)


class DDPGAgent:
    """Actor-critic agent with target networks; ``act`` explores, ``update`` learns from the buffer."""

    def __init__(self, n_states: int, config: DDPGConfig | None = None, seed: int = 0):
        self.cfg = config or DDPGConfig()
        self.rng = np.random.default_rng(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor, self.critic = Actor(n_states, self.cfg.hidden), Critic(n_states, self.cfg.hidden)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.lr_critic)
        self.buffer = ReplayBuffer(n_states, self.cfg.capacity)
        self.moving_average: float | None = None
        self.value_loss = self.policy_loss = float("nan")
        self.delta = self.cfg.init_delta

    # --- acting -------------------------------------------------------------
    def random_action(self) -> float:
        """A uniform action in [0, 1] (warm-up episodes)."""
        return float(self.rng.uniform(0.0, 1.0))

    @torch.no_grad()
    def act(self, state: np.ndarray, episode: int) -> float:
        """The actor's action plus truncated-normal noise whose scale decays per episode after warm-up."""
        mu = float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])
        self.delta = self.cfg.init_delta * self.cfg.delta_decay ** max(episode - self.cfg.warmup, 0)
        if self.delta <= 0:
            return mu
        from scipy.stats import (
            truncnorm,  # imported here: scipy.stats is slow to import
        )

        lo, hi = (0.0 - mu) / self.delta, (1.0 - mu) / self.delta
        a = truncnorm.rvs(lo, hi, loc=mu, scale=self.delta, random_state=self.rng)
        return float(np.clip(a, 0.0, 1.0))

    # --- learning -------------------------------------------------------------
    def update(self) -> tuple[float, float]:
        """One critic and one actor step on a replay batch, then soft target updates; returns the losses."""
        s, a, r, s2, done = (torch.as_tensor(v) for v in self.buffer.sample(self.cfg.batch_size, self.rng))
        batch_mean = float(r.mean())
        if self.moving_average is None:
            self.moving_average = batch_mean
        else:
            self.moving_average += self.cfg.moving_alpha * (batch_mean - self.moving_average)
        r = r - self.moving_average
        with torch.no_grad():
            target = r + self.cfg.discount * (1.0 - done) * self.critic_target(s2, self.actor_target(s2))
        value_loss = nn.functional.mse_loss(self.critic(s, a), target)
        self.critic_opt.zero_grad()
        value_loss.backward()
        self.critic_opt.step()
        policy_loss = -self.critic(s, self.actor(s)).mean()
        self.actor_opt.zero_grad()
        policy_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for target_net, net in ((self.actor_target, self.actor), (self.critic_target, self.critic)):
                for tp, p in zip(target_net.parameters(), net.parameters()):
                    tp.mul_(1.0 - self.cfg.tau).add_(p, alpha=self.cfg.tau)
        self.value_loss, self.policy_loss = value_loss.item(), policy_loss.item()
        return self.value_loss, self.policy_loss

    # --- checkpointing ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(), "rng": self.rng.bit_generator.state,
            "moving_average": self.moving_average, "delta": self.delta,
            "losses": (self.value_loss, self.policy_loss),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)  # optimiser states would otherwise alias the caller's tensors
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.bit_generator.state = state["rng"]
        self.moving_average, self.delta = state["moving_average"], state["delta"]
        self.value_loss, self.policy_loss = state["losses"]
