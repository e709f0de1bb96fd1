"""HAQ: Hardware-Aware Automated Quantization with Mixed Precision (Wang et al., CVPR 2019).

A DDPG agent visits the conv/linear layers of a trained network in order and picks, per
layer, a weight and then an activation bit width in ``[bmin, bmax]``. After the last
decision the first and last layers are pinned to 8 bits and the policy is lowered until it
fits the budget (model size, or latency/energy from an accelerator model or measured on
ONNX Runtime's int8 kernels), the network is quantized with it (linear quantization with
MSE or KL clipping, or k-means weight sharing), fine-tuned for one short epoch (the HAQ
code's per-episode fine-tune) and scored on the validation split; the reward is the HAQ
code's ``0.1 * (acc% - float acc%)`` and every decision of the episode is stored with it in
the replay buffer. After ``episodes`` episodes (the first ``warmup`` with uniform random
actions) the best policy is fine-tuned for ``finetune_epochs`` epochs and scored on the
test split.

Each episode is logged to the store (``phase="haq"``: policy, reward, accuracy, costs) and
the agent, its replay buffer and the best policy so far are checkpointed, so an
interrupted search resumes where it stopped and ends where an uninterrupted seeded one
ends. The final fine-tune is replayed from the float weights on resume (it is seeded).
HAQ searches quantization policies, not architectures, so it is not a registered
``Strategy``; its entry points are ``quantize`` and ``nasforge quantize``.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasforge.config import load_section, option, to_dict
from nasforge.data import Dataset
from nasforge.errors import ConfigError
from nasforge.experiment import Experiment
from nasforge.hardware.accelerators import Accelerator, accelerator_names, make_accelerator
from nasforge.progress import Progress
from nasforge.quant.budget import Budget, format_value, parse_budget
from nasforge.quant.ddpg import DDPGAgent, DDPGConfig
from nasforge.quant.env import Policy, QuantEnv, finetune_steps
from nasforge.quant.linear import check_bits
from nasforge.quant.modules import calibrate, layer_infos, set_clip, set_policy, set_quantizer, wrap_model
from nasforge.quant.ort import OrtInt8Accelerator, measure_ort_table
from nasforge.seeds import seed_for
from nasforge.training import Engine, EngineConfig
from nasforge.utils import atomic_torch_save

log = logging.getLogger(__name__)

__all__ = ["HaqConfig", "HaqSearch", "QuantResult", "make_haq_config", "quantize"]

PHASE = "haq"
CHECKPOINT = "haq"


@dataclass
class HaqConfig:
    episodes: int = option(100, lo=1, hi=1_000_000, help="search episodes (HAQ code: 600)")
    warmup: int = option(20, lo=0, hi=1_000_000, help="first episodes with uniform random actions (HAQ: 20)")
    bmin: int = option(2, lo=1, hi=32, help="smallest bit width")
    bmax: int = option(8, lo=1, hi=32, help="largest bit width")
    abits: int | None = option(None, lo=1, hi=32, help="fixed activation bits (weight-only search); empty: searched")
    finetune_steps: int | None = option(None, lo=0, hi=1_000_000,
                                        help="SGD steps of the short fine-tune before each reward; empty: one epoch "
                                             "of finetune_images images (HAQ code); 0: none")
    finetune_images: int = option(20000, lo=1, hi=100_000_000,
                                  help="images of the per-episode fine-tune epoch (HAQ code: train_size 20000)")
    finetune_lr: float = option(1e-3, lo=0.0, hi=10.0, help="learning rate of the per-episode fine-tune (HAQ: 1e-3)")
    finetune_epochs: int = option(3, lo=0, hi=100_000, help="epochs of the final fine-tune of the best policy")
    final_lr: float = option(5e-3, lo=0.0, hi=10.0, help="learning rate of the final fine-tune (cosine-annealed)")
    batch_size: int = option(64, lo=1, hi=65536, help="batch size of the per-episode fine-tune (and the final one)")
    final_batch_size: int | None = option(None, lo=1, hi=65536, help="batch size of the final fine-tune; "
                                          "empty: batch_size")
    first_last_bits: int = option(8, lo=0, hi=32, help="bits of the first and last layers, weights and inputs "
                                  "(HAQ code: 8); 0: searched like the others")
    clip: str = option("mse", choices=("mse", "kl"), help="clipping threshold: mse, or kl (the HAQ code's KL rule)")
    quantizer: str = option("linear", choices=("linear", "kmeans"),
                            help="weight quantizer: linear, or kmeans (HAQ's for size budgets; float activations)")
    kmeans_iters: int = option(3, lo=0, hi=1000, help="k-means iterations per layer (HAQ search: max_iter=3)")
    ort_batch: int = option(1, lo=1, hi=65536, help="batch of the ONNX Runtime latency measurement")
    ort_threads: int = option(1, lo=1, hi=1024, help="ONNX Runtime threads of the latency measurement")
    ort_repeats: int = option(30, lo=1, hi=100_000, help="timed runs per layer and kernel (median)")
    calib_samples: int = option(512, lo=1, hi=1_000_000, help="training images that calibrate activation ranges")
    hidden: int = option(300, lo=1, hi=100_000, help="hidden units of the actor and critic (HAQ: 300)")
    lr_actor: float = option(1e-4, lo=0.0, hi=10.0, help="actor Adam learning rate (HAQ: 1e-4)")
    lr_critic: float = option(1e-3, lo=0.0, hi=10.0, help="critic Adam learning rate (HAQ: 1e-3)")
    tau: float = option(0.01, lo=0.0, hi=1.0, help="soft target update rate (HAQ: 0.01)")
    discount: float = option(1.0, lo=0.0, hi=1.0, help="discount (HAQ: 1)")
    init_delta: float = option(0.5, lo=0.0, hi=10.0, help="initial std of the truncated-normal noise (HAQ: 0.5)")
    delta_decay: float = option(0.99, lo=0.0, hi=1.0, help="noise decay per episode after warm-up (HAQ: 0.99)")
    replay: int | None = option(None, lo=1, hi=10_000_000,
                                help="replay buffer capacity in decisions; empty: 128 per layer (HAQ: rmsize)")
    update_batch: int = option(64, lo=1, hi=65536, help="replay batch of each agent update (HAQ: 64)")

    def __post_init__(self) -> None:
        check_bits(self.bmin, "haq.bmin")
        check_bits(self.bmax, "haq.bmax")
        if self.abits is not None:
            check_bits(self.abits, "haq.abits")
        if self.bmin > self.bmax:
            raise ConfigError(f"haq.bmin={self.bmin} is above haq.bmax={self.bmax}; swap them")
        if self.quantizer == "kmeans":
            if self.bmax > 8:
                raise ConfigError(f"haq.bmax={self.bmax} is too wide for k-means (2**bits clusters); use at most 8")
            if self.abits not in (None, 32):
                raise ConfigError(f"haq.abits={self.abits} with haq.quantizer=kmeans: k-means quantizes weights "
                                  "only (activations stay float); drop haq.abits or use haq.quantizer=linear")


def make_haq_config(options: Mapping[str, Any] | HaqConfig | None = None) -> HaqConfig:
    """A checked ``HaqConfig`` from a mapping (unknown keys and out-of-range values raise ConfigError)."""
    if isinstance(options, HaqConfig):
        return options
    return load_section(HaqConfig, dict(options or {}), "haq")


@dataclass
class QuantResult:
    """The fine-tuned fake-quantized model, its policy (``[(wbits, abits), ...]``) and all metrics."""

    model: nn.Module
    policy: Policy
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


class HaqSearch:
    """One HAQ search: checks inputs on construction (before any file is written), ``run`` searches."""

    def __init__(self, model: nn.Module, data: Dataset, budget: str | Budget, *,
                 accelerator: str | Accelerator = "bitserial", config: HaqConfig | Mapping[str, Any] | None = None,
                 seed: int = 0, input_shape: tuple[int, ...] | None = None,
                 engine: Engine | EngineConfig | None = None):
        self.engine = engine if isinstance(engine, Engine) else Engine(engine)
        self.cfg = make_haq_config(config)
        self.budget = parse_budget(budget)
        measured = isinstance(accelerator, str) and accelerator == OrtInt8Accelerator.name
        if isinstance(accelerator, str) and not measured and accelerator not in accelerator_names():
            raise ConfigError(f"unknown accelerator '{accelerator}'; choose one of "
                              f"{[*accelerator_names(), OrtInt8Accelerator.name]}")
        if measured and self.budget.kind == "energy":
            raise ConfigError("the onnxruntime target measures latency, not energy (no power counter is read); "
                              "use --budget latency=... or size=..., or --accelerator bitserial|bitfusion")
        if self.cfg.quantizer == "kmeans" and self.budget.kind != "size":
            raise ConfigError(f"haq.quantizer=kmeans has no integer kernels to time or model ({self.budget.kind} "
                              "budget); use --budget size=... or haq.quantizer=linear")
        self.accelerator = None if measured else make_accelerator(accelerator)
        self.data, self.seed = data, seed
        self.input_shape = tuple(input_shape or data.input_shape)
        torch.manual_seed(seed)
        self.qmodel = wrap_model(model).cpu().eval()
        for p in self.qmodel.parameters():  # a model loaded for inference may have grads switched off
            p.requires_grad_(True)
        self.infos = layer_infos(self.qmodel, self.input_shape)
        if self.accelerator is None:  # measured on this CPU's ONNX Runtime int8 kernels, layer by layer
            self.accelerator = measure_ort_table(self.qmodel, self.input_shape, batch_size=self.cfg.ort_batch,
                                                 threads=self.cfg.ort_threads, repeats=self.cfg.ort_repeats,
                                                 seed=seed)
        set_clip(self.qmodel, self.cfg.clip)
        if self.cfg.quantizer != "linear":
            set_quantizer(self.qmodel, self.cfg.quantizer, self.cfg.kmeans_iters, seed)
        calibrate(self.qmodel, data.x_train[: self.cfg.calib_samples])
        self.qmodel = self.engine.module(self.qmodel)  # calibrated on the CPU, searched and fine-tuned on the device
        fixed_abits = 32 if self.cfg.quantizer == "kmeans" else self.cfg.abits
        self.env = QuantEnv(self.qmodel, self.infos, self.accelerator, self.budget,
                            (data.x_train, data.y_train), (data.x_valid, data.y_valid),
                            bmin=self.cfg.bmin, bmax=self.cfg.bmax, finetune_steps=self.episode_steps(),
                            finetune_lr=self.cfg.finetune_lr, batch_size=self.cfg.batch_size,
                            fixed_abits=fixed_abits, engine=self.engine,
                            first_last_bits=self.cfg.first_last_bits or None)

    def episode_steps(self) -> int:
        """SGD steps of the per-episode fine-tune: ``finetune_steps``, or one epoch of ``finetune_images``
        training images (at most the training split) at ``batch_size``, as the HAQ code."""
        if self.cfg.finetune_steps is not None:
            return self.cfg.finetune_steps
        images = min(self.cfg.finetune_images, len(self.data.y_train))
        return math.ceil(images / self.cfg.batch_size)

    def agent_capacity(self) -> int:
        """Replay capacity in decisions: ``replay``, or 128 per layer as the HAQ code (``rmsize``)."""
        return self.cfg.replay or 128 * len(self.infos)

    def _agent(self) -> DDPGAgent:
        c = self.cfg
        return DDPGAgent(self.env.n_states, DDPGConfig(
            hidden=c.hidden, lr_actor=c.lr_actor, lr_critic=c.lr_critic, tau=c.tau, discount=c.discount,
            batch_size=c.update_batch, capacity=self.agent_capacity(), init_delta=c.init_delta,
            delta_decay=c.delta_decay,
            warmup=c.warmup), seed=self.seed)

    def describe(self) -> dict[str, Any]:
        """What the search is about: layers, reference costs, the budget target (stored as meta)."""
        env = self.env
        return {
            "budget": str(self.budget), "budget_kind": self.budget.kind, "target": env.target,
            "accelerator": self.accelerator.name or type(self.accelerator).__name__,
            "accelerator_table": getattr(self.accelerator, "table", None)
            if isinstance(self.accelerator, OrtInt8Accelerator) else None,
            "episode_finetune_steps": env.finetune_steps,
            "layers": [{"name": f.name, "kind": f.kind, "depthwise": f.depthwise, "params": f.weight_params,
                        "macs": f.macs} for f in self.infos],
            "reference_8bit": vars(env.reference), "minimum": vars(env.minimum), "float_valid_acc": env.org_acc,
        }

    # --- the search --------------------------------------------------------------------
    def run(self, experiment: Experiment | None = None, progress: Progress | None = None) -> QuantResult:
        """Search ``episodes`` episodes (resuming from the experiment's checkpoint), then fine-tune the best policy."""
        progress = progress or Progress()
        cfg, env = self.cfg, self.env
        agent = self._agent()
        start, best = 0, {"reward": -math.inf, "policy": None, "episode": -1, "acc": None}
        history: list[dict[str, Any]] = []
        if experiment is not None:
            experiment.store.set_meta("haq", self.describe())
            state = experiment.load_checkpoint(CHECKPOINT)
            if state is not None:
                agent.load_state_dict(state["agent"])
                start, best = state["episode"] + 1, state["best"]
            experiment.store.truncate_epochs(PHASE, start - 1)
            history = [r["metrics"] for r in experiment.store.epochs(PHASE)]
        tic = time.time()
        with progress.task("haq search", total=cfg.episodes, completed=min(start, cfg.episodes)) as bar:
            for episode in range(start, cfg.episodes):
                t0 = time.time()
                record = self._episode(agent, episode)
                if record["reward"] > best["reward"]:
                    best = {"reward": record["reward"], "policy": [list(p) for p in record["policy"]],
                            "episode": episode, "acc": record["valid_acc"]}
                record["best_reward"] = best["reward"]
                record["seconds"] = time.time() - t0
                history.append(record)
                if experiment is not None:
                    experiment.store.log_epoch(PHASE, episode, record)
                    experiment.save_checkpoint(CHECKPOINT, {"episode": episode, "agent": agent.state_dict(),
                                                            "best": best})
                log.info("haq episode %d: reward %.4f acc %.4f %s %.4g (target %.4g)", episode, record["reward"],
                         record["valid_acc"], self.budget.kind, record["cost"], env.target)
                bar.advance(1, reward=record["reward"], acc=record["valid_acc"], best=best["acc"])
        search_seconds = sum(r.get("seconds", 0.0) for r in history) if history else time.time() - tic
        policy = [tuple(p) for p in best["policy"]]
        return self._finish(policy, best, history, search_seconds, experiment)

    def _episode(self, agent: DDPGAgent, episode: int) -> dict[str, Any]:
        """Play one episode, score its (budget-enforced) policy, store its decisions, update the agent."""
        env, cfg = self.env, self.cfg
        state = env.reset()
        transitions = []
        done = False
        while not done:
            action = agent.random_action() if episode < cfg.warmup else agent.act(state, episode)
            nxt, done = env.step(action)
            transitions.append((state, action, nxt, done))
            state = nxt
        raw = env.raw_policy()
        policy = env.enforce(raw)
        cost = env.cost(policy)
        acc = env.evaluate(policy, seed=seed_for(self.seed, "haq.episode", episode))
        reward = env.reward(acc)
        losses = []
        for s, a, s2, d in transitions:
            agent.buffer.add(s, a, reward, s2, d)
            if episode >= cfg.warmup:
                losses.append(agent.update()[0])
        return {
            "reward": reward, "valid_acc": acc, "policy": [list(p) for p in policy],
            "raw_policy": [list(p) for p in raw], "cost": cost.get(self.budget.kind), "target": env.target,
            "size_bytes": cost.size_bytes, "latency": cost.latency, "energy": cost.energy,
            "delta": agent.delta if episode >= cfg.warmup else None,
            "value_loss": sum(losses) / len(losses) if losses else None,
        }

    def evaluate_policy(self, policy: Policy) -> dict[str, Any]:
        """Fine-tune ``policy`` from the float weights (``finetune_epochs``, cosine lr) and score it on the test split.

        The same recipe scores the searched policy and any other (e.g. uniform) policy, so they compare fairly.
        """
        env, cfg, data = self.env, self.cfg, self.data
        policy = [tuple(int(b) for b in p) for p in policy]
        qmodel = self.qmodel
        qmodel.load_state_dict(env.float_state)
        set_policy(qmodel, [(32, 32)] * len(policy))
        float_test = env.accuracy(data.x_test, data.y_test)
        set_policy(qmodel, policy)
        before = env.accuracy(data.x_test, data.y_test)
        t0 = time.time()
        batch = cfg.final_batch_size or cfg.batch_size
        steps = cfg.finetune_epochs * math.ceil(len(data.y_train) / batch)
        if steps:
            finetune_steps(qmodel, data.x_train, data.y_train, steps=steps, lr=cfg.final_lr,
                           batch_size=batch, seed=seed_for(self.seed, "haq.finetune"), cosine=True,
                           engine=self.engine)
        test_acc = env.accuracy(data.x_test, data.y_test)
        cost = env.cost(policy)
        layers = []
        for info, (w, a) in zip(self.infos, policy):
            lat, en = self.accelerator.layer_cost(info, w, a)
            layers.append({"name": info.name, "kind": info.kind, "depthwise": info.depthwise, "wbits": w, "abits": a,
                           "params": info.weight_params, "macs": info.macs, "latency": lat, "energy": en,
                           "bound": self.accelerator.bound(info, w, a)})
        return {
            "float_test_acc": float_test, "quant_test_acc_before_finetune": before, "test_acc": test_acc,
            "finetune_epochs": cfg.finetune_epochs, "finetune_seconds": time.time() - t0,
            "size_bytes": cost.size_bytes, "latency": cost.latency,
            "energy": cost.energy if getattr(self.accelerator, "has_energy", True) else None,
            "within_budget": cost.get(self.budget.kind) <= env.target * (1 + 1e-9),
            "policy": [list(p) for p in policy], "layers": layers,
        }

    def _finish(self, policy: Policy, best: dict[str, Any], history: list[dict[str, Any]], search_seconds: float,
                experiment: Experiment | None) -> QuantResult:
        """Fine-tune the best policy, score it, and write result.json and quantized.pt."""
        env, cfg = self.env, self.cfg
        scored = self.evaluate_policy(policy)
        ref = env.reference
        metrics = {
            "kind": "haq", "dataset": self.data.describe(), "budget": str(self.budget),
            "budget_kind": self.budget.kind, "target": env.target,
            "target_text": format_value(self.budget.kind, env.target),
            "accelerator": self.accelerator.name or type(self.accelerator).__name__,
            "episodes": cfg.episodes, "best_episode": best["episode"], "best_reward": best["reward"],
            "best_valid_acc": best["acc"], "float_valid_acc": env.org_acc,
            **scored,
            "size_8bit_bytes": ref.size_bytes, "size_float_bytes": sum(4 * f.weight_params for f in self.infos),
            "latency_8bit": ref.latency,
            "energy_8bit": ref.energy if getattr(self.accelerator, "has_energy", True) else None,
            "quantizer": cfg.quantizer, "clip": cfg.clip, "first_last_bits": cfg.first_last_bits,
            "episode_finetune_steps": env.finetune_steps,
            "search_seconds": search_seconds,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # ISO 8601, as search runs
        }
        if experiment is not None:
            experiment.write_json("result.json", metrics)
            atomic_torch_save({"policy": metrics["policy"], "layers": [f.name for f in self.infos],
                               "quantizer": cfg.quantizer, "clip": cfg.clip,
                               "state_dict": {k: v.detach().cpu() for k, v in self.qmodel.state_dict().items()}},
                              experiment.path / "quantized.pt")
        return QuantResult(self.qmodel, [tuple(p) for p in policy], metrics, history)


def quantize(model: nn.Module, data: Dataset, budget: str | Budget, *, accelerator: str | Accelerator = "bitserial",
             config: HaqConfig | Mapping[str, Any] | None = None, experiment: Experiment | None = None,
             progress: Progress | None = None, seed: int = 0, input_shape: tuple[int, ...] | None = None,
             engine: Engine | EngineConfig | None = None) -> QuantResult:
    """Search a mixed-precision policy for ``model`` under ``budget`` with HAQ and fine-tune it.

    ``budget``: ``"size=0.25"`` (fraction of the 8-bit model), ``"size=12kB"``, ``"latency=0.5"``,
    ``"latency=2ms"``, ``"energy=1uJ"``; ``config``: ``HaqConfig`` fields (e.g. ``{"episodes": 50}``);
    ``engine``: device and precision of the fine-tunes and evaluations (default: the GPU when there is one).
    """
    search = HaqSearch(model, data, budget, accelerator=accelerator, config=config, seed=seed,
                       input_shape=input_shape, engine=engine)
    return search.run(experiment, progress)


def haq_config_dict(cfg: HaqConfig) -> dict[str, Any]:
    """The config as plain values (for config.yaml)."""
    return to_dict(cfg)


__all__ += ["haq_config_dict"]


# --- the paper's settings (``nasforge quantize --preset paper``) ------------------------------------
from nasforge.presets import register_preset  # noqa: E402

_HAQ_SOURCE = ("HAQ paper (Wang et al., CVPR 2019) sec. 3-4; mit-han-lab/haq rl_quantize.py (arguments), "
               "lib/env/linear_quantize_env.py, lib/rl/ddpg.py, run/run_linear_quantize_search.sh, "
               "run/run_linear_quantize_finetune.sh")
_HAQ_KMEANS_SOURCE = ("mit-han-lab/haq rl_quantize.py, lib/env/quantize_env.py, lib/utils/quantize_utils.py, "
                      "run/run_kmeans_quantize_search.sh")
_HAQ_AGENT = {"episodes": 600, "warmup": 20, "hidden": 300, "lr_actor": 1e-4, "lr_critic": 1e-3, "tau": 0.01,
              "discount": 1.0, "init_delta": 0.5, "delta_decay": 0.99, "update_batch": 64, "replay": None,
              "finetune_steps": None, "finetune_images": 20000, "finetune_lr": 1e-3}
register_preset("paper", "haq", "imagenet", {"haq": {
    **_HAQ_AGENT, "bmin": 2, "bmax": 8, "batch_size": 128, "calib_samples": 128, "first_last_bits": 8, "clip": "kl",
    "quantizer": "linear",
    "finetune_epochs": 30, "final_lr": 0.01, "final_batch_size": 256}}, sources={"haq.*": _HAQ_SOURCE},
    note="the latency/energy search (linear quantization); size budgets as the paper: --preset paper-kmeans")
register_preset("paper-kmeans", "haq", "imagenet", {"haq": {
    **_HAQ_AGENT, "bmin": 1, "bmax": 8, "batch_size": 256, "first_last_bits": 0, "quantizer": "kmeans",
    "kmeans_iters": 3, "finetune_epochs": 30, "final_lr": 0.01, "final_batch_size": 256}},
    sources={"haq.*": _HAQ_KMEANS_SOURCE},
    note="the model-size search: k-means weight sharing, float activations, first/last layers searched too")
