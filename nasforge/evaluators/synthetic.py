"""``SyntheticTable``: a deterministic, seeded tabular benchmark over any search space.

Comparing search strategies needs many repeated searches with a known best answer;
training networks for that is far too slow on a CPU. A synthetic table gives every
architecture of a space an accuracy built from the space's choice declarations alone:

    raw       = sum_i effect_i[v_i] + sum_(a,b) pair_ab[v_a, v_b] + noise(arch)
    valid_acc = sigmoid(logit(base) + raw / (base * (1 - base)))

(the squashing is the identity to first order around ``base``, so effects are in
accuracy units there, and keeps every value strictly inside (0, 1) without ties):

* one main effect per value of each choice, ``effect_i ~ N(0, s_i^2)``, where the scale
  ``s_i = main_scale * Exp(1)`` makes a few choices matter much and others little;
* ``pairs`` randomly chosen pairs of choices interact, ``pair_ab ~ N(0, pair_scale^2)``
  per pair of values, so the landscape is not separable (a greedy per-choice search
  does not solve it; local search and recombination of good parts pays);
* ``noise(arch) ~ N(0, noise^2)`` drawn from a hash of the architecture, so the same
  architecture always gets the same value (it is a table, not a noisy oracle);
* ``test_acc`` = the same without noise plus an independent noise draw;
* a simulated ``train_seconds``: ``seconds * exp(0.3 * z)``, ``z`` a sum of per-value
  costs that correlate (0.5) with the main effects, so better archs tend to cost more
  (budgets in simulated time then differ from budgets in trials, as on NAS-Bench-201).

Fidelities (``nasforge.fidelity``; multi-fidelity strategies): the table is "trained" for
``epochs`` epochs (its full fidelity, default 12), and ``table(arch, fidelity=e)`` reads a
deterministic learning curve after epoch ``e`` of ``1..epochs``:

    raw_e       = raw - g(e) * drop(arch) + h(e) * jitter(arch, e)
    valid_acc@e = squash(raw_e)                  (the same squashing as above)
    g(e)        = (exp(-3 e / epochs) - exp(-3)) / (exp(-3 / epochs) - exp(-3))   (1 at e=1, 0 at e=epochs)
    h(e)        = (epochs - e) / (epochs - 1)                                    (1 at e=1, 0 at e=epochs)
    drop(arch)  = max(CURVE_DROP + CURVE_SPREAD * spread * N(0, 1), 0)
    jitter      = CURVE_NOISE * spread * N(0, 1), a fresh draw per (arch, e)

where ``spread`` is the standard deviation of ``raw`` over the table (main effects, pairs
and noise), the normal draws come from hashes of the architecture (and of ``e``),
``CURVE_DROP`` = 0.2 is the mean drop at epoch 1 in accuracy units around ``base``,
``CURVE_SPREAD`` = 0.6 and ``CURVE_NOISE`` = 0.8. So the curve rises on average, ends exactly at
``valid_acc`` (``fidelity=epochs`` answers bit for bit as no fidelity), and ranks the
architectures imperfectly early on: some learn faster than others (the per-architecture
drop) and early epochs are noisy (the jitter). Measured on NAS-Bench-201's 15,625 cells
(default options, ``epochs`` 12), Spearman's rank correlation of ``valid_acc@e`` with the
final ``valid_acc``, seeds 0/1/2: e=1 0.68/0.72/0.70, e=2 0.74/0.76/0.75, e=3 0.79/0.81/0.80,
e=6 0.90/0.91/0.90, e=9 0.97/0.98/0.97, e=11 0.997 (the DARTS cell space, 1,500 sampled
architectures: e=1 0.70, e=6 0.91; the spread unit keeps this about the same across spaces);
the mean valid accuracy rises from about 0.52 at e=1 to 0.78 at e=12.
``train_seconds`` at ``e``: the full ``train_seconds * e / epochs``.

Everything is drawn from ``seed`` in sorted-label order, so a table is reproducible from
(space, seed, options). ``optimum()`` finds the best architecture exhaustively (over the
product of all choice values, vectorised with numpy): possible up to ``MAX_EXHAUSTIVE``
= 1e6 architectures (NAS-Bench-201's 15,625 takes milliseconds); a larger space (the
DARTS cell space has about 1e18) can still be evaluated but has no known optimum and
``optimum()`` raises ``ConfigError``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ArchError, ConfigError
from nasforge.fidelity import Fidelities
from nasforge.spaces.base import InputChoice

#: Largest space whose optimum ``SyntheticTable.optimum`` computes exhaustively.
MAX_EXHAUSTIVE = 10**6
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: learning curve (see the module docstring): mean drop of the raw accuracy at epoch 1, in accuracy units
CURVE_DROP = 0.2
#: per-architecture spread of that drop, in units of the table's spread of ``raw``
CURVE_SPREAD = 0.6
#: standard deviation of the per-(architecture, epoch) jitter at epoch 1, in units of that spread
CURVE_NOISE = 0.8
#: rate of the exponential approach of the curve to its final value (over the ``epochs`` schedule)
CURVE_RATE = 3.0


@dataclass
class SyntheticConfig:
    """Options of the ``synthetic`` evaluator."""

    seed: int = option(0, lo=0, hi=2**31 - 1, help="seed of the table (not of the search)")
    base: float = option(0.8, lo=0.0, hi=1.0, help="accuracy of an average architecture")
    main_scale: float = option(0.02, lo=0.0, hi=1.0, help="typical size of a choice value's effect")
    pairs: int | None = option(None, lo=0, hi=100000, help="interacting pairs of choices (auto: one per choice)")
    pair_scale: float = option(0.015, lo=0.0, hi=1.0, help="typical size of a pairwise interaction")
    noise: float = option(0.005, lo=0.0, hi=1.0, help="per-architecture noise (fixed per arch)")
    seconds: float = option(60.0, lo=1e-6, hi=1e9, help="typical simulated training time of one arch")
    epochs: int = option(12, lo=1, hi=100000, help="full fidelity: epochs of the simulated learning curve "
                                                   "(fidelity=e scores after e of them)")


def choice_values(choice: Any) -> list[Any]:
    """Every value a choice can take, in a fixed order (an ``InputChoice``: sorted index tuples)."""
    if isinstance(choice, InputChoice):
        return [tuple(c) for c in itertools.combinations(range(choice.n_inputs), choice.k)]
    return list(choice.values)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a stable integer hash."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _normal_from_hash(h: np.ndarray) -> np.ndarray:
    """Standard normal values from uint64 hashes (inverse CDF of a uniform in (0, 1))."""
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53 + 2.0**-54
    return ndtri(u)


class SyntheticTable:
    """A seeded synthetic benchmark over ``space``: ``table(arch)`` -> metrics (objective = valid_acc)."""

    def __init__(self, space: Any, config: SyntheticConfig | None = None):
        self.space = space
        self.config = cfg = config or SyntheticConfig()
        declared = space.choices()
        self.labels = sorted(declared)
        self.values = [choice_values(declared[label]) for label in self.labels]
        self.index = [{v: k for k, v in enumerate(vals)} for vals in self.values]
        self.sizes = [len(v) for v in self.values]
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        self.effects: list[np.ndarray] = []
        self.costs: list[np.ndarray] = []
        n_choices = max(len(self.labels), 1)
        for n in self.sizes:
            scale = cfg.main_scale * rng.exponential(1.0)
            effect = rng.normal(0.0, scale, n) if n > 1 else np.zeros(1)
            z = effect / scale if n > 1 and scale > 0 else np.zeros(n)
            cost = (0.5 * z + math.sqrt(0.75) * rng.normal(0.0, 1.0, n)) / math.sqrt(n_choices) if n > 1 \
                else np.zeros(1)
            self.effects.append(effect)
            self.costs.append(cost)
        mutable = [i for i, n in enumerate(self.sizes) if n > 1]
        candidates = list(itertools.combinations(mutable, 2))
        wanted = len(mutable) if cfg.pairs is None else cfg.pairs
        picked = rng.permutation(len(candidates))[:min(wanted, len(candidates))] if candidates else []
        self.pairs: list[tuple[int, int, np.ndarray]] = [
            (a, b, rng.normal(0.0, cfg.pair_scale, (self.sizes[a], self.sizes[b])))
            for a, b in (candidates[int(k)] for k in sorted(picked))
        ]
        self.salt = _mix(np.asarray([cfg.seed], dtype=np.uint64))[0]
        self._grid: np.ndarray | None = None
        #: standard deviation of the raw accuracy over the table (the learning curve's unit of spread)
        self.spread = math.sqrt(sum(float(np.var(e)) for e in self.effects) +
                                sum(float(np.var(t)) for _, _, t in self.pairs) + cfg.noise ** 2)
        #: every epoch of the simulated learning curve (``fidelity=e``)
        self.fidelities = Fidelities(1, int(cfg.epochs), "epochs")

    # --- one architecture --------------------------------------------------
    def indices(self, arch: Arch) -> tuple[int, ...]:
        """Value index of each choice (sorted labels) of ``arch``; ``ArchError`` if it is not of this space."""
        self.space.validate(arch)
        try:
            return tuple(self.index[i][arch[label]] for i, label in enumerate(self.labels))
        except KeyError as exc:
            raise ArchError(f"choice {exc} of the architecture is not in the synthetic table; "
                            "evaluate architectures of the table's own space") from None

    def _clean(self, idx: list[Any]) -> np.ndarray:
        """Raw effect (accuracy units around ``base``) for broadcastable index arrays ``idx``."""
        total = 0.0
        for i, e in enumerate(self.effects):
            total = total + e[idx[i]]
        for a, b, table in self.pairs:
            total = total + table[idx[a], idx[b]]
        return np.asarray(total, dtype=np.float64)

    def _hash(self, idx: list[Any], salt: int) -> np.ndarray:
        h = np.asarray(self.salt + np.uint64(salt), dtype=np.uint64)
        for i in idx:
            h = _mix(h ^ np.asarray(i, dtype=np.uint64))
        return h

    def _cost(self, idx: list[Any]) -> np.ndarray:
        z = 0.0
        for i, c in enumerate(self.costs):
            z = z + c[idx[i]]
        return self.config.seconds * np.exp(0.3 * np.asarray(z, dtype=np.float64))

    def _squash(self, raw: np.ndarray) -> np.ndarray:
        base = self.config.base
        if base <= 0.0 or base >= 1.0:
            return np.clip(base + raw, 0.0, 1.0)
        logit = math.log(base / (1.0 - base)) + raw / (base * (1.0 - base))
        return 1.0 / (1.0 + np.exp(-logit))

    def _raw(self, idx: list[Any]) -> np.ndarray:
        """The raw (unsquashed) valid accuracy: clean effects plus the architecture's fixed noise."""
        return self._clean(idx) + self.config.noise * _normal_from_hash(self._hash(idx, 1))

    def _valid(self, idx: list[Any]) -> np.ndarray:
        return self._squash(self._raw(idx))

    def _at(self, idx: list[Any], epoch: np.ndarray) -> np.ndarray:
        """``valid_acc`` after ``epoch`` epochs (an integer array broadcast against ``idx``): the
        learning curve of the module docstring, exactly ``_valid`` at ``epoch == epochs``."""
        cfg = self.config
        full = int(cfg.epochs)
        epoch = np.asarray(epoch, dtype=np.int64)
        raw = self._raw(idx)
        if full == 1:
            return np.broadcast_to(self._squash(raw), np.broadcast_shapes(np.shape(raw), epoch.shape)).copy()
        e = epoch.astype(np.float64)
        low = math.exp(-CURVE_RATE)
        g = (np.exp(-CURVE_RATE * e / full) - low) / (math.exp(-CURVE_RATE / full) - low)
        h = (full - e) / (full - 1)
        drop = np.maximum(CURVE_DROP + CURVE_SPREAD * self.spread * _normal_from_hash(self._hash(idx, 3)), 0.0)
        jitter = CURVE_NOISE * self.spread * _normal_from_hash(_mix(self._hash(idx, 4) ^ epoch.astype(np.uint64)))
        return np.where(epoch == full, self._squash(raw), self._squash(raw - g * drop + h * jitter))

    def __call__(self, arch: Arch, seed: int | None = None, fidelity: int | None = None) -> dict[str, Any]:
        """The table's metrics of ``arch`` (the trial seed is ignored: a table is fixed); ``fidelity``:
        an epoch ``1..epochs`` of the learning curve (``valid_acc``/``objective`` after it and
        ``train_seconds`` of that many epochs), None: the full fidelity."""
        idx = [np.asarray([k]) for k in self.indices(arch)]
        test = float(self._squash(self._clean(idx) + self.config.noise * _normal_from_hash(self._hash(idx, 2)))[0])
        seconds = float(self._cost(idx)[0])
        if fidelity is None:
            valid = float(self._valid(idx)[0])
        else:
            epoch = self.fidelities.check(fidelity, f"the synthetic table ({self.fidelities.describe()})")
            valid = float(self._at(idx, np.asarray([epoch]))[0])
            seconds = seconds * (epoch / self.config.epochs)
        return {"objective": valid, "valid_acc": valid, "test_acc": test, "train_seconds": seconds}

    def learning_curve(self, arch: Arch) -> dict[str, np.ndarray]:
        """``valid_acc`` and ``train_seconds`` of ``arch`` after each epoch ``1..epochs`` (arrays;
        entry ``e - 1`` is what ``fidelity=e`` answers), in one vectorised evaluation."""
        idx = [np.asarray([k]) for k in self.indices(arch)]
        full = int(self.config.epochs)
        epochs = np.arange(1, full + 1)
        seconds = float(self._cost(idx)[0])
        return {"valid_acc": self._at(idx, epochs), "train_seconds": np.asarray([seconds * (e / full) for e in epochs])}

    def learning_curves(self) -> dict[str, np.ndarray]:
        """``learning_curve`` of every architecture at once: arrays shaped ``sizes + (epochs,)``
        (exhaustive, as ``grid``; up to ``MAX_EXHAUSTIVE`` architectures)."""
        self.grid()  # the size check
        ndim = len(self.sizes)
        full = int(self.config.epochs)
        idx = [np.arange(n).reshape([n if d == i else 1 for d in range(ndim + 1)]) for i, n in enumerate(self.sizes)]
        epochs = np.arange(1, full + 1).reshape([1] * ndim + [full])
        shape = (*self.sizes, full)
        seconds = np.broadcast_to(self._cost(idx), shape) * (epochs / full)
        return {"valid_acc": np.broadcast_to(self._at(idx, epochs), shape).copy(), "train_seconds": seconds}

    # --- the whole table ------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of architectures in the table."""
        return math.prod(self.sizes)

    def grid(self) -> np.ndarray:
        """The objective of every architecture, shaped ``sizes`` (exhaustive; up to ``MAX_EXHAUSTIVE``)."""
        if self._grid is None:
            if self.size > MAX_EXHAUSTIVE:
                raise ConfigError(f"space '{self.space.name}' has {self.size:.3g} architectures; the synthetic "
                                  f"table knows its optimum only up to {MAX_EXHAUSTIVE:.0e}; use a smaller space "
                                  "(e.g. nb201) when you need the optimum or regret")
            ndim = len(self.sizes)
            idx = [np.arange(n).reshape([n if d == i else 1 for d in range(ndim)]) for i, n in enumerate(self.sizes)]
            self._grid = np.broadcast_to(self._valid(idx), self.sizes).copy()
        return self._grid

    def arch_at(self, indices: tuple[int, ...]) -> Arch:
        """The architecture with the given value index per choice (sorted labels)."""
        choices = {label: self.values[i][k] for i, (label, k) in enumerate(zip(self.labels, indices))}
        return Arch(self.space.name, choices, self.space.version)

    def optimum(self) -> tuple[Arch, float]:
        """The best architecture of the table and its objective (exhaustive search)."""
        grid = self.grid()
        flat = int(np.argmax(grid))
        where = tuple(int(i) for i in np.unravel_index(flat, grid.shape))
        return self.arch_at(where), float(grid.flat[flat])

    def regret(self, objective: float) -> float:
        """How far ``objective`` is below the table's optimum (0 = found the best)."""
        return self.optimum()[1] - objective
