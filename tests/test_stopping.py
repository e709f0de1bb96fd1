"""DARTS+ early stopping: both criteria on crafted histories, then wired into a real DARTS search."""

from __future__ import annotations

import numpy as np
import pytest

from nasforge.arch import Arch
from nasforge.data import synthetic_dataset
from nasforge.experiment import Experiment
from nasforge.spaces import make_space
from nasforge.spaces.darts import PRIMITIVES, DartsSpace, Genotype, num_edges
from nasforge.strategies import make_strategy
from nasforge.strategies.stopping import PARAMETER_FREE, DartsPlusStopper, learnable_ranking

OPS = {name: k for k, name in enumerate(PRIMITIVES)}
LEARNABLE = [k for k, name in enumerate(PRIMITIVES) if name not in PARAMETER_FREE]
EDGES = num_edges(4)
CONV_GENE = (("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_3x3", 0), ("dil_conv_5x5", 2),
             ("sep_conv_3x3", 1), ("sep_conv_5x5", 3), ("dil_conv_3x3", 2), ("dil_conv_5x5", 4))


def arch_with_skips(skips: int, reduce_skips: int = 0) -> dict:
    """An arch dict (``Arch.to_dict`` form) whose normal cell has ``skips`` skip-connects."""
    def cell(n: int) -> tuple:
        return tuple(("skip_connect", j) if i < n else (op, j) for i, (op, j) in enumerate(CONV_GENE))

    return DartsSpace().arch_from_genotype(Genotype(cell(skips), cell(reduce_skips))).to_dict()


def weights(epoch: int, swap: tuple[str, int, int, int] | None = None, seed: int = 0) -> dict:
    """Arch weights whose learnable ranking is fixed (sep3 > sep5 > dil3 > dil5 on every edge) while the
    parameter-free ops get new, reshuffled values every epoch. ``swap=(cell, edge, k1, k2)`` swaps two ops."""
    rng = np.random.default_rng([seed, epoch])
    out = {}
    for cell in ("normal", "reduce"):
        w = np.zeros((EDGES, len(PRIMITIVES)))
        w[:, LEARNABLE] = [0.20, 0.15, 0.10, 0.05]
        free = [k for k in range(len(PRIMITIVES)) if k not in LEARNABLE]
        # parameter-free ops: large and reordered each epoch (they straddle the learnable ones)
        w[:, free] = rng.permutation([0.01, 0.12, 0.17, 0.30])[None, :] + rng.uniform(0, 0.005, (EDGES, 1))
        if swap is not None and swap[0] == cell:
            _, e, a, b = swap
            w[e, [a, b]] = w[e, [b, a]]
        out[cell] = (w / w.sum(1, keepdims=True)).tolist()
    return out


def record(epoch: int, skips: int = 0, **kw) -> dict:
    return {"epoch": epoch, "metrics": {}, "arch_weights": weights(epoch, **kw), "arch": arch_with_skips(skips)}


def first_fire(stopper: DartsPlusStopper, history: list[dict]):
    """(index, decision) of the first prefix of ``history`` at which the stopper fires, or (None, None)."""
    for i in range(len(history)):
        decision = stopper.check(history[: i + 1])
        if decision is not None:
            return i, decision
    return None, None


# ---------------------------------------------------------------------------
# learnable_ranking
# ---------------------------------------------------------------------------
def test_learnable_ranking_orders_only_learnable_ops_by_weight():
    w = weights(0)
    ranking = learnable_ranking(w)
    assert len(ranking) == 2 * EDGES  # every edge of both cells
    expected = tuple(OPS[n] for n in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"))
    assert all(r == expected for r in ranking)
    assert not {OPS[n] for n in PARAMETER_FREE} & {k for r in ranking for k in r}


def test_learnable_ranking_ignores_parameter_free_ops():
    a, b = weights(0), weights(1)
    assert a["normal"] != b["normal"]  # parameter-free weights differ and are ordered differently ...
    assert np.argsort(np.asarray(a["normal"])[0]).tolist() != np.argsort(np.asarray(b["normal"])[0]).tolist()
    assert learnable_ranking(a) == learnable_ranking(b)  # ... which the ranking does not see
    swapped = weights(0, swap=("reduce", 5, OPS["sep_conv_5x5"], OPS["dil_conv_5x5"]))
    assert learnable_ranking(swapped) != learnable_ranking(a)


# ---------------------------------------------------------------------------
# criterion 1: skip-connects in the derived normal cell
# ---------------------------------------------------------------------------
def test_skip_criterion_fires_at_first_epoch_with_two_skips_not_before():
    history = [record(e, skips=s) for e, s in enumerate([0, 1, 1, 0, 1, 2, 3])]
    i, decision = first_fire(DartsPlusStopper(patience=100), history)
    assert i == 5
    assert decision["criterion"] == "skip_connect" and decision["epoch"] == 5
    assert "2 skip-connects" in decision["detail"]


def test_skip_criterion_counts_only_the_normal_cell():
    history = [{"epoch": e, "metrics": {}, "arch_weights": weights(e), "arch": arch_with_skips(1, reduce_skips=8)}
               for e in range(4)]
    assert first_fire(DartsPlusStopper(patience=100), history) == (None, None)


def test_skip_criterion_with_custom_max_skips():
    history = [record(e, skips=s) for e, s in enumerate([0, 2, 2, 3, 4])]
    i, decision = first_fire(DartsPlusStopper(max_skips=3, patience=100), history)
    assert (i, decision["criterion"], decision["epoch"]) == (3, "skip_connect", 3)
    i, decision = first_fire(DartsPlusStopper(max_skips=1, patience=100), history)
    assert (i, decision["epoch"]) == (1, 1)


def test_arch_helper_really_has_the_skips():
    arch = Arch.from_dict(arch_with_skips(3, reduce_skips=1))
    genotype = DartsSpace().genotype(arch)
    assert genotype.count("skip_connect") == 3 and genotype.count("skip_connect", "reduce") == 1


# ---------------------------------------------------------------------------
# criterion 2: the learnable ops' ranking stays unchanged for `patience` epochs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("patience", [1, 3, 5])
def test_ranking_criterion_fires_after_exactly_patience_unchanged_epochs(patience):
    # parameter-free ops reorder every epoch; the learnable ranking never changes
    history = [record(e) for e in range(patience + 4)]
    i, decision = first_fire(DartsPlusStopper(patience=patience), history)
    assert i == patience  # patience + 1 records = patience epochs without a change
    assert decision["criterion"] == "ranking_stable" and decision["epoch"] == patience
    assert f"{patience} epochs" in decision["detail"]


def test_ranking_criterion_restarts_its_window_after_a_learnable_swap():
    patience = 3
    swap = ("normal", 0, OPS["sep_conv_3x3"], OPS["dil_conv_5x5"])
    # epochs 0-1 one ranking, epoch 2 a learnable pair swapped (inside what would be the window),
    # epochs 3.. back: the window must restart at epoch 3 and fire at 3 + patience = 6
    history = [record(e, swap=swap if e == 2 else None) for e in range(10)]
    i, decision = first_fire(DartsPlusStopper(patience=patience), history)
    assert (i, decision["epoch"], decision["criterion"]) == (6, 6, "ranking_stable")


def test_ranking_criterion_sees_a_swap_in_the_reduce_cell():
    patience = 2
    swap = ("reduce", EDGES - 1, OPS["sep_conv_5x5"], OPS["dil_conv_3x3"])
    history = [record(e, swap=swap if e % 2 else None) for e in range(8)]  # alternates every epoch
    assert first_fire(DartsPlusStopper(patience=patience), history) == (None, None)


def test_skip_criterion_takes_precedence_and_is_checked_on_the_last_record():
    history = [record(0), record(1), record(2, skips=2)]
    decision = DartsPlusStopper(patience=2).check(history)
    assert decision["criterion"] == "skip_connect" and decision["epoch"] == 2
    assert DartsPlusStopper().check([]) is None


# ---------------------------------------------------------------------------
# in a real DARTS search
# ---------------------------------------------------------------------------
# On this data DARTS+'s ranking criterion with patience 1 does not fire within 6 epochs (the ranking of
# some near-uniform edge changes every epoch), so the skip limit is lowered to 1: the first epoch whose
# derived normal cell has a skip-connect stops the search, deterministically for the seed.
STOP = {"epochs": 6, "batch_size": 32, "early_stop": "dartsplus", "early_stop_patience": 1, "early_stop_skips": 1}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(num_samples=240)


@pytest.fixture(scope="module")
def stopped_run(data, tmp_path_factory):
    exp = Experiment.create(tmp_path_factory.mktemp("stop") / "exp", {"strategy": STOP})
    seen = []
    result = make_strategy("darts", STOP, "synthetic").search(
        make_space("darts"), data, experiment=exp, seed=0, callbacks=[lambda s, e, r: seen.append(e)])
    yield exp, result, seen
    exp.close()


def test_search_stops_early_at_the_first_firing_epoch(stopped_run):
    exp, result, seen = stopped_run
    history, stop = result.history, result.info["early_stop"]
    assert stop is not None and stop["criterion"] in ("skip_connect", "ranking_stable")
    assert len(history) < STOP["epochs"]
    assert stop["epoch"] == history[-1]["epoch"] == len(history) - 1 == seen[-1]
    assert result.info["epochs"] == len(history)
    # the same policy would not have stopped on any earlier epoch
    stopper = DartsPlusStopper(STOP["early_stop_skips"], STOP["early_stop_patience"])
    assert all(stopper.check(history[:k]) is None for k in range(1, len(history)))
    assert stopper.check(history) == stop
    # the architecture returned is the one derived at the stopping epoch, and it is recorded
    assert result.arch.to_dict() == history[-1]["arch"]
    assert exp.store.get_meta("early_stop") == stop
    assert [r["epoch"] for r in exp.store.epochs("search")] == [r["epoch"] for r in history]


def test_resuming_a_stopped_search_runs_no_more_epochs(stopped_run, data):
    exp, first, _ = stopped_run
    ran = []
    again = make_strategy("darts", STOP, "synthetic").search(
        make_space("darts"), data, experiment=exp, seed=0, callbacks=[lambda s, e, r: ran.append(e)])
    assert ran == []
    assert again.arch == first.arch
    assert again.info["early_stop"] == first.info["early_stop"]
    assert len(again.history) == len(first.history)
    assert len(exp.store.epochs("search")) == len(first.history)


def test_search_without_early_stop_runs_every_epoch(data):
    epochs = 3
    opts = dict(STOP, epochs=epochs, early_stop="none")
    result = make_strategy("darts", opts, "synthetic").search(make_space("darts"), data, seed=0)
    assert [r["epoch"] for r in result.history] == list(range(epochs))
    assert result.info["early_stop"] is None
    # DARTS+ with the same limits would have stopped on this very history
    stopper = DartsPlusStopper(opts["early_stop_skips"], opts["early_stop_patience"])
    assert any(stopper.check(result.history[:k]) is not None for k in range(1, epochs + 1))


# ---------------------------------------------------------------------------
# on NAS-Bench-201 (its own op names), with DARTS and GDAS
# ---------------------------------------------------------------------------
def test_learnable_ranking_reads_the_spaces_op_names():
    """On nb201 the learnable ops are the two convs (none, skip_connect, avg_pool_3x3 have no weights)."""
    from nasforge.spaces.nb201 import PRIMITIVES as NB201_OPS

    row = [0.05, 0.40, 0.10, 0.30, 0.15]  # none, skip, conv1x1, conv3x3, avg_pool
    ranking = learnable_ranking({"normal": [row] * 6}, {"normal": NB201_OPS})
    assert ranking == ((3, 2),) * 6  # conv3x3 before conv1x1; parameter-free ops left out
    # per-row names (rows of different candidate sets in one group)
    mixed = learnable_ranking({"g": [[0.2, 0.8], [0.7, 0.3]]}, {"g": [("zero", "mb3"), ("mb5", "mb3")]})
    assert mixed == ((1,), (0, 1))


def test_dartsplus_stopper_of_a_relaxed_nb201_space():
    from nasforge.oneshot.relax import Relaxation
    from nasforge.spaces.nb201 import EDGE_LABELS, PRIMITIVES as NB201_OPS
    from nasforge.strategies.stopping import dartsplus_stopper

    space = make_space("nb201", C=4, N=1)
    relax = Relaxation(space.supernet((1, 8, 8), 3))
    stopper = dartsplus_stopper(relax, max_skips=2, patience=3)
    assert list(stopper.cell_labels) == list(EDGE_LABELS)
    assert stopper.op_names == {"normal": [tuple(NB201_OPS)] * 6}
    ops = ["skip_connect", "nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1"]
    arch = space.arch_from_ops(ops).to_dict()
    assert stopper.skips(arch) == 2
    rec = {"epoch": 0, "metrics": {}, "arch_weights": {"normal": [[0.2] * 5] * 6}, "arch": arch}
    assert stopper.check([rec])["criterion"] == "skip_connect"
    one = space.arch_from_ops(["skip_connect"] + ops[1:2] + ["none"] * 4).to_dict()
    assert stopper.check([dict(rec, arch=one)]) is None


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_dartsplus_runs_on_nb201(name, data):
    """DARTS+ is no longer refused off the darts space: each epoch is checked by the space's own stopper."""
    from nasforge.oneshot.relax import Relaxation
    from nasforge.strategies.stopping import dartsplus_stopper

    space = make_space("nb201", C=4, N=1)
    opts = dict(STOP, epochs=3, early_stop_skips=2)
    result = make_strategy(name, opts, "synthetic").search(space, data, seed=0)
    history, stop = result.history, result.info["early_stop"]
    stopper = dartsplus_stopper(Relaxation(space.supernet((1, 8, 8), 3)), 2, 1)
    assert all(stopper.check(history[:k]) is None for k in range(1, len(history)))
    assert stopper.check(history) == stop
    assert len(history) == (opts["epochs"] if stop is None else stop["epoch"] + 1)


def test_dartsplus_with_proxylessnas_on_a_cell_space():
    """DARTS+ works with any relaxation on a cell space: ProxylessNAS records per-choice probabilities."""
    from nasforge.data import synthetic_dataset
    from nasforge.spaces import make_space
    from nasforge.strategies import make_strategy

    strategy = make_strategy("proxyless", {"epochs": 1, "batch_size": 16, "warmup_epochs": 0,
                                           "early_stop": "dartsplus", "early_stop_patience": 1},
                             "synthetic", latency={"loss": "none"})
    space = make_space("darts")
    result = strategy.search(space, synthetic_dataset(num_samples=120, seed=0), seed=0)
    stopper = strategy.stopper()
    record = result.history[-1]
    # the same weights two epochs in a row: the learnable ops' ranking is stable for 1 epoch
    stable = [dict(record, epoch=0), dict(record, epoch=1)]
    skips = stopper.skips(record["arch"])
    verdict = stopper.check(stable)
    if skips >= 2:
        assert verdict["criterion"] == "skip_connect"
    else:
        assert verdict["criterion"] == "ranking_stable"
    # a normal cell with two skip-connects stops by criterion 1
    arch = dict(record["arch"])
    arch["choices"] = dict(arch["choices"], **{"normal.0.op0": "skip_connect", "normal.1.op0": "skip_connect"})
    assert stopper.check([dict(record, arch=arch)])["criterion"] == "skip_connect"
