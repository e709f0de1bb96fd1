"""Regularized evolution and random search: the algorithm's rules, state, and evolution beating random."""

from __future__ import annotations

import numpy as np
import pytest

from nasforge.arch import Arch
from nasforge.errors import ConfigError
from nasforge.evaluators.synthetic import SyntheticConfig, SyntheticTable
from nasforge.spaces import InputChoice, OpChoice, SearchSpace, ValueChoice, make_space
from nasforge.strategies import make_strategy
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.trials import Budget, run_trials


class CellLike(SearchSpace):
    """Six op choices of five values (NAS-Bench-201's shape, 15,625 archs), an input choice and a fixed width."""

    name = "celllike"

    def choices(self):
        out = {f"e{i}": OpChoice(f"e{i}", ("none", "skip", "c1", "c3", "pool")) for i in range(6)}
        out["inputs"] = InputChoice("inputs", 3, 2)
        out["width"] = ValueChoice("width", (16,))
        return out


def _diff(a: Arch, b: Arch) -> list[str]:
    return [k for k, v in a.as_dict().items() if b.as_dict()[k] != v]


def test_defaults_are_nas_bench_201_rea():
    cfg = make_strategy("evolution").config
    assert (cfg.population, cfg.sample_size) == (10, 3)
    with pytest.raises(ConfigError, match="population"):
        make_strategy("evolution", {"population": 0})


def test_initial_population_is_random_then_children_differ_by_exactly_one_choice():
    space = CellLike()
    evo = make_strategy("evolution", {"population": 4, "sample_size": 2})
    evo.setup(space, seed=0)
    table = SyntheticTable(space)
    for step in range(40):
        before = list(evo.population)
        arch = evo.ask()
        if step >= 4:  # a child: one choice of some member changed, the fixed width never
            assert any(len(_diff(arch, member)) == 1 for member, _ in before)
            assert arch["width"] == 16
        evo.tell(arch, table(arch))
    assert len(evo.population) == 4


def test_the_oldest_dies_not_the_worst_and_failures_never_join():
    space = CellLike()
    evo = make_strategy("evolution", {"population": 3, "sample_size": 1})
    evo.setup(space, seed=1)
    archs = [evo.ask() for _ in range(5)]
    for k, arch in enumerate(archs):
        evo.tell(arch, {"objective": 1.0 - 0.1 * k})  # the oldest is the best
    assert [a for a, _ in evo.population] == archs[2:]
    evo.tell(space.sample(np.random.default_rng(9)), None)
    assert [a for a, _ in evo.population] == archs[2:]


def test_the_parent_is_the_best_of_the_tournament():
    space = CellLike()
    evo = make_strategy("evolution", {"population": 5, "sample_size": 200})  # the sample covers the population
    evo.setup(space, seed=2)
    archs = [evo.ask() for _ in range(5)]
    for k, arch in enumerate(archs):
        evo.tell(arch, {"objective": [0.1, 0.9, 0.3, 0.2, 0.4][k]})
    for _ in range(10):
        child = evo.ask()
        assert len(_diff(child, archs[1])) == 1


def test_state_round_trip_continues_identically():
    space = CellLike()
    table = SyntheticTable(space)

    def run(evo, n):
        out = []
        for _ in range(n):
            arch = evo.ask()
            evo.tell(arch, table(arch))
            out.append(arch)
        return out

    a = make_strategy("evolution", {"population": 4})
    a.setup(space, seed=3)
    run(a, 7)
    b = make_strategy("evolution", {"population": 4})
    b.setup(space, seed=99)
    b.load_state_dict(a.state_dict())
    assert run(a, 12) == run(b, 12)
    r1, r2 = make_strategy("random"), make_strategy("random")
    r1.setup(space, 0)
    [r1.ask() for _ in range(3)]
    r2.setup(space, 5)
    r2.load_state_dict(r1.state_dict())
    assert [r1.ask() for _ in range(5)] == [r2.ask() for _ in range(5)]


def test_random_search_samples_uniformly_and_ignores_results():
    space = CellLike()
    rnd = make_strategy("random")
    rnd.setup(space, seed=0)
    archs = [rnd.ask() for _ in range(3000)]
    counts = np.unique([a["e0"] for a in archs], return_counts=True)[1]
    assert counts.min() > 500 and counts.max() < 700  # 600 expected per op
    assert len({a["inputs"] for a in archs}) == 3
    other = make_strategy("random")
    other.setup(space, seed=0)
    first = other.ask()
    other.tell(first, {"objective": 1.0})
    assert [first] + [other.ask() for _ in range(4)] == archs[:5]


def test_evolution_beats_random_search_on_a_synthetic_table():
    """Same budget (100 trials) and tables, 10 seeds: regularized evolution's mean regret is lower."""
    space = CellLike()
    regrets = {"random": [], "evolution": []}
    for seed in range(10):
        table = SyntheticTable(space, SyntheticConfig(seed=seed))
        for name in regrets:
            result = run_trials(make_strategy(name), space, table, Budget(trials=100), seed=seed)
            regrets[name].append(table.regret(result.info["best_objective"]))
    assert np.mean(regrets["evolution"]) < np.mean(regrets["random"])
    assert min(min(r) for r in regrets.values()) >= 0.0


def test_evolution_works_on_the_darts_space():
    space = make_space("darts")
    table = SyntheticTable(space)
    result = run_trials(RegularizedEvolution(RegularizedEvolution.Config(population=5, sample_size=2)), space, table,
                        Budget(trials=25), seed=0)
    assert len(result.history) == 25
    space.validate(result.arch)
