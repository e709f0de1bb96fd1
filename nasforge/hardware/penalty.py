"""Latency as a pluggable penalty of an architecture loss, for every hardware-aware one-shot method.

- ``load_or_build_table``: the one place a search gets its lookup table: a given file
  (checked against the space, input shape and device), the table this run saved before an
  interruption, or one measured now and saved in the run (``TABLE_FILE``).
- ``ModuleLatency``: expected latency of any space written with choice modules from the
  per-label candidate probabilities: ``overhead + rest + sum_l sum_j p_lj * table(candidate j of l)``,
  differentiable in the probabilities, with the smallest and largest network.
- ``LatencyPenalty``: the paper forms of the loss from the cross-entropy and the expected latency:
  ``add`` (ProxylessNAS ``add#linear``: ``CE + w * E / T``), ``mul`` (ProxylessNAS ``mul#log``:
  ``a * CE * (log E / log T) ^ w``; ``scale`` sets the unit inside the logs: ms as the official
  code (``latency.log_unit: ms``), or microseconds so the logs stay positive for sub-millisecond
  networks) and ``log`` (DenseNAS: ``CE + w * log(E) / log(base)``); ``none``
  returns the cross-entropy. Also the REINFORCE rewards of ProxylessNAS (``reward``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from nasforge.config import option
from nasforge.errors import ConfigError

log = logging.getLogger(__name__)

#: File name of a lookup table a search built and kept inside its run directory.
TABLE_FILE = "latency_table.json"
FORMS = ("none", "add", "mul", "log")


@dataclass
class LatencyConfig:
    """The ``latency`` section of a run: the target hardware and the latency objective.

    One device for everything latency: the lookup table of a hardware-aware search is
    measured there and the final network is timed there. ``loss``/``weight`` left at
    ``auto`` take the method's paper default (ProxylessNAS: ``mul``, 0.3 for the two-path
    gradient, 0.1 for REINFORCE; DenseNAS: ``log``, 0.15); ``none`` or weight 0 searches for
    accuracy alone.
    """

    device: str = option("cpu", choices=("cpu", "cuda", "onnxruntime"),
                         help="target device: the lookup table is measured there and the final model timed there")
    table: str | None = option(None, help="a lookup table from 'nasforge latency' (auto: measured at search start "
                                          "and kept in the run)")
    loss: str = option("auto", choices=("auto",) + FORMS,
                       help="latency term of the architecture loss: add (CE + w*E/T), mul (a*CE*(log E/log T)^w), "
                            "log (CE + w*log E/log base), none (auto: the method's)")
    weight: float | None = option(None, lo=0.0, hi=1e6, help="weight of the latency term (auto: the method's)")
    target_ms: float | None = option(None, lo=1e-6, hi=1e7,
                                     help="target latency T in ms (auto: geometric mean of the smallest and largest "
                                          "network)")
    alpha: float = option(0.2, lo=1e-6, hi=1e6, help="mul: factor a of the loss (ProxylessNAS 0.2)")
    log_unit: str = option("auto", choices=("auto", "ms", "us"),
                           help="mul: unit of the latencies inside the logs: ms (ProxylessNAS's code), us; auto: ms "
                                "when every network of the space takes over 1 ms (the logs stay positive), else us")
    base: float = option(15.0, lo=1.0001, hi=1e6, help="log: base of the logarithm (DenseNAS 15)")
    batch_size: int = option(1, lo=1, hi=65536, help="batch size of every latency measurement")
    warmup: int = option(10, lo=0, hi=100000, help="untimed warm-up runs per measurement")
    warmup_seconds: float = option(0.5, lo=0.0, hi=3600.0,
                                   help="warm-up of the final network on each runtime: at least this long besides "
                                        "the warm-up runs (first calls allocate memory and pick kernels)")
    runtimes: list[str] = option(["cpu", "onnxruntime"],
                                 help="the final network is also timed on these (cpu: eager PyTorch; onnxruntime: the "
                                      "deployment runtime, when installed), besides the target device")
    repeats: int = option(50, lo=1, hi=100000, help="timed runs per measurement (median kept)")
    threads: int | None = option(None, lo=1, hi=1024, help="CPU threads while timing (default: PyTorch's)")

    def __post_init__(self) -> None:
        bad = [r for r in self.runtimes if r not in ("cpu", "cuda", "onnxruntime")]
        if bad:
            raise ConfigError(f"latency.runtimes has unknown runtime {bad[0]!r}; use cpu, cuda or onnxruntime")

    def form(self, default: str) -> str:
        return default if self.loss == "auto" else self.loss

    def active(self, default_form: str) -> bool:
        """Whether the search has a latency term (and so needs a table)."""
        return self.form(default_form) != "none" and self.weight != 0.0


#: strategy options of earlier versions that are now ``latency.*`` keys
MOVED_OPTIONS = {"latency_weight": "weight", "lat_weight": "weight", "latency_loss": "loss",
                 "target_latency_ms": "target_ms", "latency_table": "table", "latency_device": "device",
                 "latency_threads": "threads", "latency_alpha": "alpha", "lat_base": "base",
                 "table_warmup": "warmup", "table_repeats": "repeats", "table_threads": "threads"}


def load_or_build_table(space: Any, data: Any, latency: LatencyConfig, *, experiment: Any = None,
                        progress: Any = None) -> Any:
    """The lookup table of a search: ``latency.table`` if given, else this run's saved one, else measured now on
    ``latency.device`` (and saved in the run)."""
    from nasforge.hardware.lut import LatencyTable, build_table

    device = latency.device
    saved = experiment.path / TABLE_FILE if experiment is not None else None
    path = Path(latency.table) if latency.table else (saved if saved is not None and saved.is_file() else None)
    if path is None:
        log.info("building the latency table of %s on %s", space.name, device)
        built = build_table(space, data.input_shape, data.num_classes, device=device, threads=latency.threads,
                            batch_size=latency.batch_size, warmup=latency.warmup, repeats=latency.repeats,
                            progress=progress)
        if saved is not None:
            built.save(saved)
        return built
    loaded = LatencyTable.load(path)
    loaded.check(space, data.input_shape, device)
    if saved is not None and not saved.is_file():
        loaded.save(saved)
    return loaded


class ModuleLatency:
    """Expected latency of a space network with choice modules, from a table of its candidates.

    ``base`` is the table's call overhead plus ``rest`` (everything but the candidates); each
    choice module adds the latency of its candidates weighted by their probabilities: a label
    ``l`` used in several modules gets one matrix ``M_l [rows, n]`` (summed over its modules;
    ``zero`` costs nothing), and ``E[lat] = base + sum_l sum(p_l * M_l)`` is differentiable in the
    probabilities. A ``Choose`` over several labels adds ``sum_c prod_l p_l[c_l] * lat(c)``.
    """

    def __init__(self, space: Any, model: Any, table: Any, device: torch.device | str = "cpu"):
        from nasforge.nn.choices import Choose, InputChoice, NodeChoice, OpChoice, choice_modules, is_zero

        self.table = table
        self.base = table.overhead_ms + table.get("rest")
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.matrices: dict[str, Tensor] = {}
        self.products: list[tuple[list[str], list[tuple[int, ...]], Tensor]] = []

        def add(label: str, matrix: list[list[float]]) -> None:
            m = torch.tensor(matrix, dtype=dtype, device=device)
            self.matrices[label] = self.matrices[label] + m if label in self.matrices else m

        for path, m in choice_modules(model):
            if isinstance(m, OpChoice):
                add(m.label, [[0.0 if is_zero(n, op) else table.get(f"{path}:{n}") for n, op in zip(m.names, m.candidates)]])
            elif isinstance(m, NodeChoice):
                add(m.label, [[0.0 if is_zero(n) else table.get(f"{path}:{j}:{n}") for n in m.names]
                              for j in range(m.n_inputs)])
            elif isinstance(m, Choose):
                lat = [table.get(f"{path}:{','.join(map(repr, values))}") for values in m.combo_values()]
                if len(m.labels) == 1:
                    add(m.labels[0], [lat])
                else:
                    self.products.append((list(m.labels), list(m.combos), torch.tensor(lat, dtype=dtype, device=device)))
            elif not isinstance(m, InputChoice):
                raise ConfigError(f"choice module at '{path}' ({type(m).__name__}) has no latency model")

    def expected(self, probs: dict[str, Tensor]) -> Tensor:
        """``E[lat]`` (ms) for per-label probabilities ``[rows, n]``, differentiable in them."""
        total = torch.tensor(self.base, dtype=torch.float64, device=next(iter(probs.values())).device)
        for label, m in self.matrices.items():
            total = total + (probs[label].to(m.dtype) * m).sum()
        for labels, combos, lat in self.products:
            for combo, value in zip(combos, lat):
                w = value
                for label, i in zip(labels, combo):
                    w = w * probs[label][0, i].to(lat.dtype)
                total = total + w
        return total

    def of_choice(self, indices: dict[str, Sequence[int]]) -> float:
        """Latency (ms) of the supernet's network with candidate ``indices[label][row]`` everywhere."""
        total = self.base + sum(float(m[r, i]) for label, m in self.matrices.items()
                                for r, i in enumerate(indices[label]))
        for labels, combos, lat in self.products:
            total += float(lat[combos.index(tuple(indices[label][0] for label in labels))])
        return float(total)

    def _bound(self, pick: Any) -> float:
        total = self.base + sum(float(pick(row)) for m in self.matrices.values() for row in m)
        return float(total + sum(float(pick(lat)) for _, _, lat in self.products))

    @property
    def smallest(self) -> float:
        """The smallest network (every label at its cheapest candidate)."""
        return self._bound(torch.min)

    @property
    def largest(self) -> float:
        return self._bound(torch.max)


@dataclass
class LatencyPenalty:
    """An architecture loss with a latency term (see the module docstring for the forms)."""

    form: str = "none"
    weight: float = 0.0
    target_ms: float = 1.0
    alpha: float = 0.2
    base: float = 15.0
    #: mul: the values enter the logs multiplied by this (1000: ms -> us; 1: ms as the official code)
    scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ConfigError(f"latency loss {self.form!r} is not allowed; use one of {list(FORMS)}")

    @property
    def active(self) -> bool:
        return self.form != "none"

    def __call__(self, ce: Tensor, expected_ms: Tensor) -> Tensor:
        if self.form == "none" or self.weight == 0.0 and self.form in ("add", "log"):
            return ce
        e = expected_ms.to(ce.dtype)
        if self.form == "add":
            return ce + self.weight * e / self.target_ms
        if self.form == "mul":
            ratio = torch.log(e * self.scale) / math.log(self.target_ms * self.scale)
            return self.alpha * ce * ratio.clamp_min(1e-6) ** self.weight
        return ce + self.weight * torch.log(e) / math.log(self.base)

    def reward(self, acc: float, latency_ms: float) -> float:
        """ProxylessNAS's REINFORCE reward: ``acc * (T / lat) ^ w`` (mul), ``acc - w * lat / T`` (add), else acc."""
        if self.form == "mul":
            return acc * (self.target_ms / latency_ms) ** self.weight
        if self.form == "add":
            return acc - self.weight * latency_ms / self.target_ms
        return acc
