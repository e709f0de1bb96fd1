"""The trial loop of sample-based search: ask -> record -> run -> record -> tell -> checkpoint.

A sample-based strategy (``SampleStrategy``: random search, regularized evolution,
REINFORCE, Q-learning...) proposes one architecture at a time and learns from its score.
``run_trials`` drives it until a budget is spent:

1. ``strategy.ask()`` an architecture (checked against the space) and record it in the
   experiment's store as trial ``i`` (status ``pending``);
2. answer it from the store if the same architecture was already evaluated (``dedupe``),
   else hand it to a runner (``running``): in-process, or a Ray task on a worker;
3. record the outcome (``done`` with its metrics, or ``failed`` with the error);
4. ``strategy.tell(arch, metrics)`` (``None`` for a failed trial) and checkpoint the
   strategy's state (RNG included) atomically with the index of the last told trial.

Up to ``min(strategy.batch, runner.workers)`` trials are outstanding at once, and tells
happen in ask order whatever order the workers finish in. The sequence of asks and tells
is therefore a function of the seed alone, and resuming is exact: the checkpoint says
which trials were told; trials asked after it are asked again (the restored RNG gives the
same architectures), a trial the store already has as ``done`` or ``failed`` is taken
from the store (never evaluated twice), and ``pending``/``running`` ones (cut short by a
kill) are evaluated again. Every trial is one row of the store's ``trials`` table.

Budgets (``Budget``): a number of trials, wall-clock seconds, and/or simulated seconds
(the sum of the evaluated trials' ``train_seconds``, as NAS-Bench-201 counts search
time); the first one spent stops the asking, and outstanding trials are finished.

Fidelities: a multi-fidelity strategy (``MultiFidelityStrategy``: Hyperband, BOHB) asks
for ``Request(arch, fidelity)``; the loop passes the fidelity to the evaluator (which must
offer ``fidelities``, see ``nasforge.fidelity``), records it with the trial and charges
that fidelity's ``train_seconds``. An architecture at another fidelity is a new trial, not
a repeat, and the search's result is the best trial at the highest fidelity evaluated.
How many trials may be outstanding is read from ``strategy.batch`` before each ask, so a
strategy that must see a rung's results before it can promote says ``batch = 0`` until then.

Repeats: an architecture the search has already evaluated is answered from the store.
With ``repeats="charge"`` (NAS-Bench-201's convention) it costs its training time again
in the simulated budget; with ``"free"`` (the default) it costs nothing. Either way a
search ends after ``max_repeats`` repeats in a row (a strategy that only proposes
architectures it has seen would otherwise never spend a simulated budget), with a
warning and ``search_info["stopped"]`` saying so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from nasforge.arch import Arch
from nasforge.config import option
from nasforge.errors import ConfigError, ExperimentError, TrainingError
from nasforge.experiment import Experiment
from nasforge.fidelity import Fidelities, Request, fidelities_of, fidelity_label, fidelity_order
from nasforge.progress import Progress
from nasforge.runners import Runner, RunnerConfig, make_runner
from nasforge.seeds import seed_for
from nasforge.strategies.base import EpochCallback, MultiFidelityStrategy, SampleStrategy, SearchResult

log = logging.getLogger(__name__)

CHECKPOINT = "search"


@dataclass
class TrialsConfig:
    """The ``trials`` config section: the budget of a sample-based search."""

    max_trials: int | None = option(None, help="trials to run (auto: dataset profile, unless another budget is set)")
    max_seconds: float | None = option(None, help="wall-clock budget of the search in seconds")
    max_sim_seconds: float | None = option(None, help="simulated-time budget: sum of the trials' train_seconds")
    dedupe: bool = option(True, help="answer an architecture evaluated before from the store, not again")
    repeats: str = option("free", choices=("free", "charge"),
                          help="simulated cost of a repeated architecture: free, or charge its train_seconds again")
    max_repeats: int = option(100, lo=1, hi=10**9, help="end the search after this many repeated archs in a row")
    overshoot: bool = option(False, help="let the last trial end past max_sim_seconds (default: a trial that "
                             "would end past it is recorded but not counted)")

    def __post_init__(self) -> None:
        Budget(self.max_trials, self.max_seconds, self.max_sim_seconds, _allow_empty=True)

    def fill_auto(self, dataset: str) -> "TrialsConfig":
        """With no budget set, take the dataset profile's number of trials (in place)."""
        if self.max_trials is None and self.max_seconds is None and self.max_sim_seconds is None:
            from nasforge.profiles import profile

            self.max_trials = int(profile(dataset, "trials")["max_trials"])
        return self

    def budget(self, dataset: str = "digits") -> "Budget":
        """The budget; with none set, the dataset profile's number of trials."""
        if self.max_trials is None and self.max_seconds is None and self.max_sim_seconds is None:
            from nasforge.profiles import profile

            return Budget(trials=int(profile(dataset, "trials")["max_trials"]), charge_repeats=self.repeats == "charge",
                          max_repeats=self.max_repeats, overshoot=self.overshoot)
        return Budget(self.max_trials, self.max_seconds, self.max_sim_seconds,
                      charge_repeats=self.repeats == "charge", max_repeats=self.max_repeats, overshoot=self.overshoot)


@dataclass(frozen=True)
class Budget:
    """When a search stops asking: after ``trials`` trials, ``seconds`` of wall time or
    ``sim_seconds`` of simulated training time, whichever comes first, or after
    ``max_repeats`` repeated architectures in a row. ``charge_repeats``: a repeat costs its
    ``train_seconds`` again in the simulated time (NAS-Bench-201's convention).

    ``sim_seconds`` is a hard budget: a trial whose time would take the sum past it is
    recorded (``over_budget``) but neither counted nor chosen, as NAS-Bench-201's first
    REA code did; ``overshoot=True`` counts it (the last trial may end past the budget).
    Wall-clock ``seconds`` are checked before each ask (a running trial is not cut)."""

    trials: int | None = None
    seconds: float | None = None
    sim_seconds: float | None = None
    charge_repeats: bool = False
    max_repeats: int | None = 100
    overshoot: bool = False
    _allow_empty: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, key, value in (("trials", "max_trials", self.trials), ("seconds", "max_seconds", self.seconds),
                                 ("sim_seconds", "max_sim_seconds", self.sim_seconds)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"trials.{key}={value!r}: a search budget must be positive; "
                                  f"give trials.{key} a value above 0 (e.g. --trials 20)")
            if name == "trials" and int(value) != value:
                raise ConfigError(f"trials.max_trials={value!r} must be a whole number of trials")
        if self.max_repeats is not None and (isinstance(self.max_repeats, bool) or not isinstance(
                self.max_repeats, int) or self.max_repeats < 1):
            raise ConfigError(f"trials.max_repeats={self.max_repeats!r} must be a whole number above 0")
        if not self._allow_empty and self.trials is None and self.seconds is None and self.sim_seconds is None:
            raise ConfigError("a sample-based search needs a budget; set trials.max_trials (--trials N), "
                              "trials.max_seconds or trials.max_sim_seconds")

    def describe(self) -> str:
        parts = []
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s wall")
        if self.sim_seconds is not None:
            parts.append(f"{self.sim_seconds:g} s simulated")
        return " or ".join(parts)


def check_budget(budget: Budget, evaluator: Any) -> None:
    """A simulated-time budget needs an evaluator that reports ``train_seconds``; say so in one line."""
    if budget.sim_seconds is not None and getattr(evaluator, "has_time", True) is False:
        source = getattr(evaluator, "source", type(evaluator).__name__)
        raise ConfigError(f"{source} has no train_seconds column, so the simulated time budget "
                          f"trials.max_sim_seconds={budget.sim_seconds:g} cannot be used; set trials.max_trials "
                          "(--trials N) or trials.max_seconds instead, or add the column")


def check_fidelities(strategy: type, evaluator: Any) -> Fidelities | None:
    """The evaluator's fidelities; a multi-fidelity strategy with an evaluator that has none is one line."""
    fidelities = fidelities_of(evaluator)
    if issubclass(strategy, MultiFidelityStrategy) and fidelities is None:
        source = getattr(evaluator, "source", type(evaluator).__name__)
        raise ConfigError(f"strategy '{strategy.name}' chooses each trial's fidelity, but {source} scores at one "
                          "fidelity only; use an evaluator that offers fidelities (train, synthetic, a benchmark "
                          "file, or a table with valid_acc@E columns), or a single-fidelity strategy")
    return fidelities


def trial_seed(seed: int, index: int) -> int:
    """The seed of trial ``index`` of a search seeded with ``seed``."""
    return seed_for(seed, "trial", index)


@dataclass
class _Slot:
    """An asked trial that has not been told yet."""

    index: int
    arch: Arch
    fidelity: int | None = None
    resolved: bool = False
    metrics: dict[str, Any] | None = None
    error: str | None = None
    worker: str | None = None
    started: float | None = None
    finished: float | None = None
    duplicate_of: int | None = None
    waits_for: int | None = None

    def record(self, seed: int) -> dict[str, Any]:
        return {"index": self.index, "arch": self.arch.to_dict(), "arch_hash": self.arch.hash,
                "status": "done" if self.metrics is not None else "failed", "metrics": self.metrics,
                "error": self.error, "seed": seed, "worker": self.worker, "started": self.started,
                "finished": self.finished, "duplicate_of": self.duplicate_of, "fidelity": self.fidelity}

    @property
    def key(self) -> tuple[str, int | None]:
        return self.arch.hash, self.fidelity


def incumbents(history: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The search's answer after each told trial record (``incumbent`` of every prefix, in one pass)."""
    best, out = None, []
    for rec in history:
        if rec["status"] == "done" and rec["metrics"] is not None and not rec.get("over_budget"):
            if best is None:
                best = rec
            else:
                mine, theirs = fidelity_order(rec.get("fidelity")), fidelity_order(best.get("fidelity"))
                if mine > theirs or (mine == theirs and rec["metrics"]["objective"] > best["metrics"]["objective"]):
                    best = rec
        out.append(best)
    return out


def incumbent(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The search's answer among told trial records: the done trial with the highest objective
    (the earliest among equals) at the highest fidelity any counted trial was evaluated at (a
    trial without a fidelity is at the evaluator's full fidelity)."""
    found = incumbents(history)
    return found[-1] if found else None


def run_trials(strategy: SampleStrategy, space: Any, evaluator: Callable[..., dict[str, Any]], budget: Budget, *,
               experiment: Experiment | None = None, runner: Runner | RunnerConfig | None = None,
               progress: Progress | None = None, seed: int = 0, dedupe: bool = True,
               callbacks: Sequence[EpochCallback] = ()) -> SearchResult:
    """Search with ``strategy`` until ``budget`` is spent; the best trial's arch is the result.

    ``runner``: a ``Runner`` (used, not closed), a ``RunnerConfig`` (made and closed here)
    or None (in-process). With an ``experiment``, every trial is a row of its store and
    the loop resumes from its checkpoint. ``callbacks`` run after each tell as
    ``cb(strategy, trial_index, record)``.
    """
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a Budget, got {budget!r}")
    check_budget(budget, evaluator)
    if (dedupe and budget.trials is None and budget.seconds is None and not budget.charge_repeats
            and budget.max_repeats is None):
        raise ConfigError("this budget could never end: repeated architectures are free (repeats=free) and nothing "
                          "caps them (max_repeats=None) under a simulated-time budget alone; set max_repeats, "
                          "charge repeats (trials.repeats=charge) or add a trial or wall-clock budget")
    fidelities = check_fidelities(type(strategy), evaluator)
    if isinstance(strategy, MultiFidelityStrategy):
        strategy.fidelities = fidelities
    progress = progress or Progress()
    own_runner = not isinstance(runner, Runner)
    if runner is None:
        runner = RunnerConfig()
    if isinstance(runner, RunnerConfig):
        runner = make_runner(runner, evaluator)
    try:
        return _Loop(strategy, space, budget, experiment, runner, seed, dedupe, callbacks, fidelities).run(progress)
    finally:
        if own_runner:
            runner.close()


class _Loop:
    """State of one run of the trial loop (see ``run_trials``)."""

    def __init__(self, strategy: SampleStrategy, space: Any, budget: Budget, experiment: Experiment | None,
                 runner: Runner, seed: int, dedupe: bool, callbacks: Sequence[EpochCallback],
                 fidelities: Fidelities | None = None):
        self.strategy, self.space, self.budget = strategy, space, budget
        self.experiment, self.runner, self.seed, self.dedupe = experiment, runner, seed, dedupe
        self.callbacks, self.fidelities = callbacks, fidelities
        self.store = experiment.store if experiment is not None else None
        self.slots: OrderedDict[int, _Slot] = OrderedDict()
        self.history: list[dict[str, Any]] = []
        self.told_done: dict[tuple[str, int | None], int] = {}  # (arch hash, fidelity) -> first told done trial
        self.told = self.asked = 0
        self.repeats = 0  # repeated architectures told in a row
        self.stopped: str | None = None
        self.spent = False  # a trial did not fit in the simulated budget
        self.over_budget = 0
        self.sim = self.wall0 = 0.0
        self.t0 = time.time()
        self.stored: dict[int, dict[str, Any]] = {}

    # --- bookkeeping -------------------------------------------------------------
    def window(self) -> int:
        """How many trials may be outstanding now (the strategy's ``batch``, read before each ask,
        at most the runner's workers; at least one when none is)."""
        wanted = min(int(getattr(self.strategy, "batch", 1)), self.runner.workers)
        return max(wanted, 0 if self.slots else 1)

    def elapsed(self) -> float:
        return self.wall0 + time.time() - self.t0

    def can_ask(self) -> bool:
        b = self.budget
        if self.asked == 0:
            return True  # a search always evaluates at least one trial
        if b.trials is not None and self.asked >= b.trials:
            return False
        if b.sim_seconds is not None and (self.sim >= b.sim_seconds or self.spent):
            return False
        if b.seconds is not None and self.elapsed() >= b.seconds:
            return False
        if b.max_repeats is not None and self.repeats >= b.max_repeats:
            if self.stopped is None:
                self.stopped = (f"the strategy proposed {self.repeats} already evaluated architectures in a row; "
                                "the search ended before its budget (trials.max_repeats)")
                log.warning(self.stopped)
            return False
        return True

    def _restore(self) -> None:
        """Load the checkpoint and the store's trials (resume)."""
        self.strategy.setup(self.space, self.seed)
        if self.experiment is None:
            return
        self.stored = {r["index"]: r for r in self.store.trials()}
        state = self.experiment.load_checkpoint(CHECKPOINT)
        if state is None:
            return
        if not isinstance(state, dict) or state.get("kind") != "trials":
            raise ExperimentError(f"checkpoint {self.experiment.checkpoint_path(CHECKPOINT)} is not from a "
                                  "sample-based search; resume it with the strategy that wrote it")
        self.strategy.load_state_dict(state["strategy"])
        self.told, self.asked = int(state["told"]), int(state["asked"])
        self.sim, self.wall0 = float(state["sim_seconds"]), float(state["wall_seconds"])
        self.sim = 0.0  # recounted from the trials (the same sum, and it marks the trials past the budget)
        for i in range(self.told):
            row = self.stored.get(i)
            if row is None or row["status"] not in ("done", "failed"):
                raise ExperimentError(f"the store lacks finished trial {i} that the checkpoint counts; the "
                                      "experiment is damaged: delete checkpoints/search.pt to search again")
            row = dict(row)
            self._charge(row, row["duplicate_of"] is not None)
            self.history.append(row)
            self.repeats = self.repeats + 1 if row["duplicate_of"] is not None else 0
            if row["status"] == "done":
                self.told_done.setdefault((row["arch_hash"], row.get("fidelity")), i)
        log.info("resuming the search after trial %d (%d asked)", self.told - 1, self.asked)

    def _charge(self, record: dict[str, Any], duplicate: bool) -> float:
        """Add a told trial's simulated time to the sum (marking it ``over_budget`` when it does not
        fit a hard simulated budget); the seconds counted."""
        metrics = record["metrics"]
        if metrics is None or (duplicate and not self.budget.charge_repeats):
            return 0.0
        b = self.budget
        if b.sim_seconds is not None and metrics.get("train_seconds") is None:
            raise ConfigError("the evaluator's results have no train_seconds, so the simulated time budget "
                              f"trials.max_sim_seconds={b.sim_seconds:g} cannot be used; set trials.max_trials "
                              "(--trials N) or trials.max_seconds instead")
        seconds = float(metrics.get("train_seconds", 0.0) or 0.0)
        if b.sim_seconds is not None and not b.overshoot and (
                self.spent or self.sim + seconds > b.sim_seconds * (1 + 1e-12)):
            record["over_budget"] = True
            self.spent = True
            self.over_budget += 1
            return 0.0
        self.sim += seconds
        return seconds

    def _arch_of(self, row: dict[str, Any]) -> Arch:
        arch = Arch.from_dict(row["arch"], validate=False)
        self.space.validate(arch)
        return arch

    # --- one trial ---------------------------------------------------------------
    def _resolve(self, slot: _Slot, metrics: dict[str, Any] | None, error: str | None, worker: str | None,
                 started: float | None, finished: float | None, duplicate_of: int | None = None) -> None:
        slot.resolved, slot.metrics, slot.error = True, metrics, error
        slot.worker, slot.started, slot.finished, slot.duplicate_of = worker, started, finished, duplicate_of
        if self.store is not None:
            self.store.update_trial(slot.index, status="done" if metrics is not None else "failed",
                                    metrics=metrics, error=error, worker=worker, started=started,
                                    finished=finished, duplicate_of=duplicate_of)
        for other in self.slots.values():  # duplicates waiting on this trial
            if other.waits_for == slot.index and not other.resolved:
                now = time.time()
                self._resolve(other, metrics, None if metrics is not None else
                              f"duplicate of failed trial {slot.index}", "store", now, now, slot.index)

    def _dispatch(self, index: int, arch: Arch, fidelity: int | None = None) -> None:
        """Answer trial ``index`` from the store, or hand it to the runner."""
        slot = self.slots[index] = _Slot(index, arch, fidelity)
        row = self.stored.get(index)
        if row is not None and row["arch_hash"] == arch.hash and row.get("fidelity") == fidelity and \
                row["status"] in ("done", "failed"):
            slot.resolved, slot.metrics, slot.error = True, row["metrics"], row["error"]
            slot.worker, slot.started, slot.finished = row["worker"], row["started"], row["finished"]
            slot.duplicate_of = row["duplicate_of"]
            return  # finished before the interruption: never evaluated again
        if self.store is not None:
            self.store.put_trial(index, arch.to_dict(), arch.hash, "pending", trial_seed(self.seed, index), fidelity)
        if self.dedupe:
            first = self.told_done.get(slot.key)
            if first is not None:
                now = time.time()
                done = next(r for r in self.history if r["index"] == first)
                self._resolve(slot, dict(done["metrics"]), None, "store", now, now, first)
                return
            for other in self.slots.values():
                if other.index < index and other.key == slot.key:
                    if other.resolved:
                        now = time.time()
                        error = None if other.metrics is not None else f"duplicate of failed trial {other.index}"
                        self._resolve(slot, other.metrics, error, "store", now, now, other.index)
                    else:
                        slot.waits_for = other.index
                    return
        if self.store is not None:
            self.store.update_trial(index, status="running", started=time.time())
        self.runner.submit(index, arch, trial_seed(self.seed, index), fidelity)

    def _collect(self) -> None:
        """Wait for the runner until the oldest outstanding trial is resolved."""
        oldest = next(iter(self.slots.values()))
        while not oldest.resolved:
            for out in self.runner.wait():
                if out.fatal is not None:
                    raise out.fatal
                slot = self.slots.get(out.index)
                if slot is None or slot.resolved:
                    continue
                if out.error:
                    log.warning("trial %d failed: %s", out.index, out.error)
                self._resolve(slot, out.metrics, out.error, out.worker, out.started, out.finished)

    def _tell_oldest(self, bar: Any) -> None:
        """Tell the strategy the oldest trial (resolved). One tell per refill of the window, so the
        asks and tells interleave the same way whichever trials a runner happens to finish first."""
        if self.slots and next(iter(self.slots.values())).resolved:
            _, slot = self.slots.popitem(last=False)
            self.strategy.tell(slot.arch, slot.metrics)
            record = slot.record(trial_seed(self.seed, slot.index))
            self.history.append(record)  # (charged below: over_budget is set on this record)
            self.told = slot.index + 1
            advance = 1.0
            self.repeats = self.repeats + 1 if slot.duplicate_of is not None else 0
            if slot.metrics is not None:
                self.told_done.setdefault(slot.key, slot.index)
                seconds = self._charge(record, slot.duplicate_of is not None)
                if self.budget.trials is None and self.budget.sim_seconds is not None:
                    advance = seconds
            if self.experiment is not None:
                self.experiment.save_checkpoint(CHECKPOINT, {
                    "kind": "trials", "strategy": self.strategy.state_dict(), "told": self.told,
                    "asked": self.asked, "sim_seconds": self.sim, "wall_seconds": self.elapsed()})
            best = incumbent(self.history)
            fields = {"trial": slot.index}
            if best is not None:
                fields["best"] = best["metrics"]["objective"]
            if self.budget.trials is None and self.budget.sim_seconds is None:
                advance = 0.0
                bar.update(**fields)
            else:
                bar.advance(advance, **fields)
            log.info("trial %d: %s", slot.index, f"objective {slot.metrics['objective']:.4g}"
                     if slot.metrics is not None else f"failed ({slot.error})")
            for cb in self.callbacks:
                cb(self.strategy, slot.index, record)

    def _ask(self) -> tuple[Arch, int | None]:
        """The strategy's next architecture and its fidelity (checked against the space and evaluator)."""
        asked = self.strategy.ask()
        arch, fidelity = (asked.arch, asked.fidelity) if isinstance(asked, Request) else (asked, None)
        self.space.validate(arch)
        if fidelity is not None:
            if self.fidelities is None:
                raise ConfigError(f"strategy '{self.strategy.name}' asked for fidelity {fidelity!r}, but the evaluator "
                                  "scores at one fidelity only; use an evaluator that offers fidelities")
            fidelity = self.fidelities.check(fidelity)
        return arch, fidelity

    # --- the loop -----------------------------------------------------------------
    def run(self, progress: Progress) -> SearchResult:
        self._restore()
        for i in range(self.told, self.asked):  # asked before the checkpoint, not told yet
            row = self.stored.get(i)
            if row is None:
                raise ExperimentError(f"the store lacks trial {i} that the checkpoint counts as asked; delete "
                                      "checkpoints/search.pt to search again")
            self._dispatch(i, self._arch_of(row), row.get("fidelity"))
        b = self.budget
        if b.trials is not None:
            total, done = float(b.trials), float(self.told)
        elif b.sim_seconds is not None:
            total, done = float(b.sim_seconds), min(self.sim, float(b.sim_seconds))
        else:
            total, done = None, 0.0
        with progress.task("search", total=total, completed=done) as bar:
            while True:
                while len(self.slots) < self.window() and self.can_ask():
                    arch, fidelity = self._ask()
                    index = self.asked
                    self.asked += 1
                    self._dispatch(index, arch, fidelity)
                if not self.slots:
                    break
                self._collect()
                self._tell_oldest(bar)
        if self.store is not None:
            self.store.delete_trials_from(self.asked)
        best = incumbent(self.history)
        failed = sum(1 for r in self.history if r["status"] == "failed")
        if best is None and self.over_budget:
            first = next(r for r in self.history if r.get("over_budget"))
            raise ConfigError(f"the simulated budget trials.max_sim_seconds={self.budget.sim_seconds:g} is shorter "
                              f"than the first trial ({first['metrics'].get('train_seconds', 0.0):g} s); raise it, or "
                              "set trials.overshoot=true")
        if best is None:
            first = next((r["error"] for r in self.history if r["error"]), "no trial ran")
            raise TrainingError(f"all {len(self.history)} trials failed (first error: {first}); fix the evaluator "
                                "settings and search again")
        info = {
            "kind": "trials", "trials": len(self.history), "failed": failed,
            "duplicates": sum(1 for r in self.history if r["duplicate_of"] is not None),
            "best_trial": best["index"], "best_objective": best["metrics"]["objective"],
            "best_metrics": best["metrics"], "sim_seconds": self.sim, "wall_seconds": self.elapsed(),
            "budget": self.budget.describe(), "runner": self.runner.name, "workers": self.runner.workers,
        }
        if any(r.get("fidelity") is not None for r in self.history):
            counts = Counter(r.get("fidelity") for r in self.history)
            info["fidelity"] = best.get("fidelity")
            info["trials_per_fidelity"] = {fidelity_label(f): counts[f] for f in sorted(counts, key=fidelity_order)}
        if self.stopped is not None:
            info["stopped"] = self.stopped
        summary = getattr(self.strategy, "search_info", None)
        if callable(summary):  # e.g. a multi-objective strategy's Pareto front
            info.update(summary(self.history))
        if self.over_budget:
            info["over_budget"] = (f"{self.over_budget} trial(s) would have ended past the simulated budget of "
                                   f"{self.budget.sim_seconds:g} s; recorded, not counted (trials.overshoot=true "
                                   "counts them)")
        return SearchResult(Arch.from_dict(best["arch"], validate=False), self.history, info)


def sample_search(strategy: SampleStrategy, space: Any, data: Any = None, *, experiment: Experiment | None = None,
                  progress: Progress | None = None, seed: int = 0, callbacks: Sequence[EpochCallback] = (),
                  evaluator: Callable[..., dict[str, Any]] | None = None, budget: Budget | int | None = None,
                  runner: Runner | RunnerConfig | None = None, dedupe: bool = True) -> SearchResult:
    """``SampleStrategy.search``: the trial loop with defaults (train evaluator, profile's trial budget)."""
    dataset = getattr(data, "name", "digits")
    if evaluator is None:
        from nasforge.evaluators import make_evaluator

        evaluator = make_evaluator("train", {}, space, data)
    if budget is None:
        budget = TrialsConfig().budget(dataset)
    elif isinstance(budget, int) and not isinstance(budget, bool):
        budget = Budget(trials=budget)
    return run_trials(strategy, space, evaluator, budget, experiment=experiment, runner=runner, progress=progress,
                      seed=seed, dedupe=dedupe, callbacks=callbacks)


def search_options(config: Any, space: Any, data: Any, engine: Any = None) -> dict[str, Any]:
    """Keyword arguments of ``SampleStrategy.search`` from a ``RunConfig`` (evaluator, budget, runner).

    ``engine``: the run's ``Engine``; an evaluator that trains (``engine_config``) gets its
    config (a plain dataclass, so the evaluator still pickles for Ray workers).
    """
    from nasforge.evaluators import make_evaluator

    options = {k: v for k, v in config.evaluator.items() if k != "name"}
    evaluator = make_evaluator(config.evaluator["name"], options, space, data)
    if engine is not None and hasattr(evaluator, "engine_config"):
        evaluator.engine_config = engine.config
    return {"evaluator": evaluator,
            "budget": config.trials.budget(data.name), "runner": config.runner, "dedupe": config.trials.dedupe}


__all__ = ["Budget", "CHECKPOINT", "TrialsConfig", "check_budget", "check_fidelities", "incumbent", "incumbents", "run_trials", "sample_search",
           "search_options", "trial_seed"]
