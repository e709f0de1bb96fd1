"""MetaQNN (Q-learning): walks obey the transition rules, the hand-computed Q-update, the
epsilon schedule, replay, checkpoint round trip, and resume through the trial loop, on the
layer space and over any space's declared choices (the CLI on nb201 with a table), including
the dense space's path decisions (allowed actions only)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from nasforge.arch import Arch
from nasforge.errors import ConfigError
from nasforge.evaluators.synthetic import SyntheticTable
from nasforge.experiment import Experiment
from nasforge.runners.local import LocalRunner
from nasforge.spaces import make_space
from nasforge.spaces.layers import Layer
from nasforge.strategies import make_strategy
from nasforge.strategies.qlearning import END, PAPER_SCHEDULE, MetaQNNStrategy, epsilon_at, scaled_schedule
from nasforge.trials import Budget, run_trials
from test_reinforce import DENSE_TINY, RuledSpace, ToySpace, best_count, nb201_table


def _strategy(space, seed=0, **options) -> MetaQNNStrategy:
    strategy = make_strategy("metaqnn", options, "digits")
    strategy.setup(space, seed)
    return strategy


def _check_rules(space, arch) -> None:
    """MetaQNN's transition rules, checked directly on the layer list."""
    layers = space.layers_of(arch)
    assert 1 <= len(layers) <= space.max_depth
    kinds = [layer.type for layer in layers]
    assert kinds[0] != "pool"
    assert all(not (a == "pool" and b == "pool") for a, b in zip(kinds, kinds[1:]))
    assert "gap" not in kinds[:-1]  # gap terminates
    fcs = [layer.units for layer in layers if layer.type == "fc"]
    assert len(fcs) <= space.max_fc and fcs == sorted(fcs, reverse=True)
    if fcs:  # fc only at the end, on a small representation
        first = kinds.index("fc")
        assert set(kinds[first:]) == {"fc"}
        shapes = space.shapes(layers)
        before = shapes[first - 1][2:] if first else (space.image_size, space.image_size)
        assert max(before) <= space.fc_max_size
    assert all(tuple(layer.inputs) == ((i - 1,) if i else ()) for i, layer in enumerate(layers))


@pytest.mark.parametrize("options", [{}, {"skips": True, "strides": [1, 2]},
                                     {"image_size": 32, "strides": [1, 2]}, {"grammar": "metaqnn", "image_size": 32}])
def test_walks_never_break_a_transition_rule(options):
    space = make_space("layers", **options)
    strategy = _strategy(space, replay=5, trials=60)
    rng = np.random.default_rng(1)
    kinds = set()
    for k in range(250):
        arch = strategy.walk(epsilon=[1.0, 0.5, 0.0][k % 3])
        space.validate(arch)
        _check_rules(space, arch)
        kinds |= {layer.type for layer in space.layers_of(arch)}
        if k < 60:  # learn a little so greedy walks follow Q, not only ties
            strategy.tell(arch, {"objective": float(rng.random())})
    assert kinds >= {"conv", "pool", "gap"}


def test_q_update_on_a_hand_made_replay_matches_hand_computed_values():
    # one conv choice, at most two layers: start -conv-> s1 -(end | conv)-> ..., s2 -end->
    space = make_space("layers", types=["conv"], kernel_sizes=[3], filters=[24], max_depth=2)
    strategy = _strategy(space, lr=0.01, discount=1.0, q_init=0.5, replay=0)
    conv = ("conv", 3, 3, 1, 1, 24)
    one = space.arch_of(space.chain([Layer(*conv)]))
    two = space.arch_of(space.chain([Layer(*conv), Layer(*conv)]))
    s0, s1 = (0, ("start",), 8, 0), (1, conv, 8, 0)
    s2 = (2, conv, 8, 0)
    strategy.replay_update([(one, 0.8), (two, 0.6)])
    # one (R=0.8): Q(s1,end) = 0.5 + .01 (0.8 - 0.5) = 0.503; Q(s0,conv) = 0.5 + .01 (max(0.503, 0.5) - 0.5)
    # two (R=0.6): Q(s2,end) = 0.501; Q(s1,conv) = 0.5 + .01 (0.501 - 0.5) = 0.50001;
    #              Q(s0,conv) = 0.50003 + .01 (max(0.503, 0.50001) - 0.50003) = 0.5000597
    assert strategy.q[s1][END] == pytest.approx(0.503, abs=1e-12)
    assert strategy.q[s2][END] == pytest.approx(0.501, abs=1e-12)
    assert strategy.q[s1][conv] == pytest.approx(0.50001, abs=1e-12)
    assert strategy.q[s0][conv] == pytest.approx(0.5000597, abs=1e-12)
    assert strategy.walk(epsilon=0.0) == one  # greedy: Q(s1,end) 0.503 > Q(s1,conv) 0.50001


def test_tell_replays_the_memory_and_skips_failed_models():
    space = make_space("layers")
    strategy = _strategy(space, replay=7)
    arch = strategy.ask()
    strategy.tell(arch, None)
    assert strategy.memory == {} and strategy.q == {}
    strategy.tell(arch, {"objective": 0.9})
    steps = strategy.path(arch)
    state, action, _ = steps[-1]
    # seven replays of the only model: Q(s_T, end) = 0.9 - 0.4 * 0.99^7
    assert strategy.q[state][action] == pytest.approx(0.9 - 0.4 * 0.99 ** 7)
    strategy.tell(arch, {"objective": 0.1})  # a repeated model keeps its first result in the memory
    assert strategy.memory[arch] == 0.9


def test_epsilon_schedule_is_the_papers_scaled_to_the_budget():
    assert scaled_schedule([list(p) for p in PAPER_SCHEDULE], 2700) == list(PAPER_SCHEDULE)
    small = scaled_schedule([list(p) for p in PAPER_SCHEDULE], 100)
    assert sum(n for _, n in small) == 100 and small[0] == (1.0, 56)  # 1500/2700 of 100 = 55.6
    assert [e for e, _ in small] == [e for e, _ in PAPER_SCHEDULE]
    assert epsilon_at(small, 0) == 1.0 and epsilon_at(small, 55) == 1.0 and epsilon_at(small, 56) == 0.9
    assert epsilon_at(small, 99) == 0.1 and epsilon_at(small, 10_000) == 0.1
    strategy = _strategy(make_space("layers"), trials=10, replay=1)
    eps = []
    for _ in range(12):
        eps.append(strategy.epsilon)
        strategy.tell(strategy.ask(), {"objective": 0.5})
    # 10 models: 1500/2700 -> 5.56 and 150/2700 -> 0.56 each; largest remainders (ties in order) round up
    assert eps == [1.0] * 6 + [0.6, 0.5, 0.4, 0.3, 0.1, 0.1]
    assert [h["epsilon"] for h in strategy.history] == eps


@pytest.mark.parametrize("space_name", ["layers", "nb201"])
def test_state_dict_round_trip_restores_q_epsilon_replay_and_the_next_asks(space_name):
    space = make_space(space_name, **({"strides": [1, 2]} if space_name == "layers" else {}))
    a = _strategy(space, seed=2, trials=20, replay=10)
    rng = np.random.default_rng(0)
    for _ in range(12):
        a.tell(a.ask(), {"objective": float(rng.random())})
    state = copy.deepcopy(a.state_dict())
    b = _strategy(space, seed=77, trials=20, replay=10)
    b.load_state_dict(state)
    assert b.q == a.q and b.memory == a.memory and b.epsilon == a.epsilon < 1.0
    for _ in range(8):
        x, y = a.ask(), b.ask()
        assert x == y
        r = float(rng.random())
        a.tell(x, {"objective": r})
        b.tell(y, {"objective": r})
    assert a.q == b.q


def test_bad_options_and_spaces_are_config_errors():
    for bad in ({"size_bins": [4, 8, 1]}, {"size_bins": [8, 4]}, {"schedule": [[1.5, 10]]},
                {"schedule": "fast"}, {"lr": -1}):
        with pytest.raises(ConfigError):
            make_strategy("metaqnn", bad)
    assert MetaQNNStrategy.supports(make_space("dense")) is None  # rules, and a decision order that keeps them
    with pytest.raises(ConfigError, match="'ruled' has cross-choice rules.*no decision order.*use random or evolution"):
        make_strategy("metaqnn").setup(RuledSpace(), 0)
    assert make_strategy("metaqnn", {}, "digits").config.trials == 20  # the digits trial budget


@pytest.mark.parametrize("space_name", ["layers", "darts", "dense"])
def test_a_killed_metaqnn_search_resumes_to_the_uninterrupted_result(tmp_path, space_name):
    space = make_space(space_name)
    table = SyntheticTable(space)

    class Cut:
        def __init__(self, at=None):
            self.at, self.calls = at, 0

        def __call__(self, arch):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return table(arch)

    def search(path, evaluator):
        exp = Experiment.open(path) if path.exists() else Experiment.create(path, {})
        try:
            strategy = make_strategy("metaqnn", {"trials": 12, "replay": 20}, "digits")
            return run_trials(strategy, space, evaluator, Budget(trials=12), experiment=exp,
                              runner=LocalRunner(evaluator, workers=1), seed=5)
        finally:
            exp.close()

    full = search(tmp_path / "full", Cut())
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "cut", Cut(at=8))
    resumed = search(tmp_path / "cut", Cut())

    def rows(path):
        exp = Experiment.open(path)
        try:
            return [(r["arch_hash"], json.dumps(r["metrics"], sort_keys=True)) for r in exp.store.trials()]
        finally:
            exp.close()

    assert rows(tmp_path / "cut") == rows(tmp_path / "full") and len(rows(tmp_path / "full")) == 12
    assert resumed.arch == full.arch


@pytest.mark.slow
def test_cli_metaqnn_on_digits_with_the_train_evaluator_and_report(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasforge.cli", "search", "--space", "layers", "--strategy", "metaqnn",
           "--trials", "4", "--out", str(out), "--set", "train.epochs=1", "--set", "evaluator.epochs=1",
           "--set", "strategy.replay=10", "--set", "latency.repeats=1", "--set", "latency.warmup=0", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "layers" and 0.0 <= result["test_acc"] <= 1.0
    done = subprocess.run([sys.executable, "-m", "nasforge.cli", "report", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "report" / "metaqnn_reward.png").is_file()
    assert "MetaQNN (Q-learning)" in (out / "report.html").read_text()


# --------------------------------------------------------------------------- any space's declared choices
def test_choice_walk_q_update_matches_hand_computed_values():
    # decisions op (3 values), in (3 combinations), act (2); width is fixed and takes no step
    strategy = _strategy(ToySpace(), lr=0.01, discount=1.0, q_init=0.5, replay=0)
    arch = strategy.sequence.arch([2, 1, 0])  # op c, inputs (0, 2), act relu
    # a state is (label to decide, value of the decision before); an action a value index
    s0, s1, s2 = ("op", None), ("in", "c"), ("act", (0, 2))
    assert strategy.transitions(arch) == [(s0, 2, s1, [0, 1, 2]), (s1, 1, s2, [0, 1]), (s2, 0, None, [])]
    strategy.replay_update([(arch, 0.8), (arch, 0.8)])
    # first: Q(s2,0) = 0.503; Q(s1,1) = 0.5 + .01 (0.503 - 0.5) = 0.50003; Q(s0,2) = 0.5000003
    # second: Q(s2,0) = 0.503 + .01 (0.8 - 0.503) = 0.50597; Q(s1,1) = 0.50003 + .01 (0.50597 - 0.50003)
    #         = 0.5000894; Q(s0,2) = 0.5000003 + .01 (0.5000894 - 0.5000003) = 0.500001191
    assert strategy.q[s2][0] == pytest.approx(0.50597, abs=1e-12)
    assert strategy.q[s1][1] == pytest.approx(0.5000894, abs=1e-12)
    assert strategy.q[s0][2] == pytest.approx(0.500001191, abs=1e-12)
    assert strategy.walk(epsilon=0.0) == arch  # greedy follows the only values above q_init


@pytest.mark.parametrize("name", ["nb201", "darts", "mbconv"])
def test_choice_walks_are_valid_archs_of_every_space(name):
    space = make_space(name)
    strategy = _strategy(space, replay=5, trials=30)
    tokens = [label for label, c in space.choices().items() if c.size > 1]
    assert strategy.sequence.labels == tokens
    rng = np.random.default_rng(0)
    for k in range(30):
        arch = strategy.walk(epsilon=[1.0, 0.0][k % 2])
        space.validate(arch)
        strategy.tell(arch, {"objective": float(rng.random())})
    assert all(len(state) == 2 and state[0] in tokens for state in strategy.q)


def test_metaqnn_on_nb201_learns_the_best_op():
    # objective: the share of edges holding nor_conv_3x3; chance is 6/5 = 1.2 such edges per cell
    strategy = _strategy(make_space("nb201"), seed=0, trials=200, replay=50)
    counts = []
    for _ in range(200):
        arch = strategy.ask()
        counts.append(best_count(arch))
        strategy.tell(arch, {"objective": counts[-1] / 6})
    explore, exploit = np.mean(counts[:60]), np.mean(counts[-30:])  # epsilon 1.0; then 0.3 down to 0.1
    assert explore < 1.5 and exploit > 2.5 and best_count(strategy.walk(epsilon=0.0)) >= 3


def test_cli_metaqnn_on_nb201_with_the_table_evaluator(tmp_path):
    from test_cli import run_main

    table = nb201_table(tmp_path / "nb201.csv")
    out = tmp_path / "run"
    code = run_main("search", "--space", "nb201", "--strategy", "metaqnn", "--evaluator", "table", "--table", table,
                    "--trials", "12", "--out", out, "--data", "synthetic", "--set", "space.C=4", "--set", "space.N=1",
                    "--set", "train.epochs=1", "--set", "strategy.replay=10", "--set", "latency.repeats=1",
                    "--set", "latency.warmup=0", "-q")
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "nb201" and result["strategy"] == "metaqnn"
    exp = Experiment.open(out)
    try:
        assert len(exp.store.trials()) == 12
    finally:
        exp.close()


# --------------------------------------------------------------------------- the dense space's path decisions
def test_dense_q_update_takes_the_max_over_allowed_actions_only():
    space = make_space("dense", **DENSE_TINY)
    strategy = _strategy(space, lr=0.01, discount=1.0, q_init=0.5, replay=0)
    arch = space.arch_from_path([0, 1, 3, 4], {(1, 0): "mb_k3_e3", (3, 0): "skip"})
    # tail.input in (2, 3); block 3's input in (-1, 1, 2) but only 1 or 2 on the path; block 1's only
    # input (node 0) is taken without a step but is the value before block1.layer0's decision
    s0, s1, s2, s3 = ("tail.input", None), ("block3.layer0", 3), ("block3.input", "skip"), ("block1.layer0", 1)
    ops = list(range(7))
    assert strategy.transitions(arch) == [(s0, 1, s1, ops), (s1, 6, s2, [1, 2]), (s2, 1, s3, ops), (s3, 0, None, [])]
    strategy.q[s2] = {0: 0.9, 2: 0.7}  # action 0 (input -1) is never allowed there: its value must not count
    strategy.replay_update([(arch, 0.8)])
    # Q(s3,0) = 0.503; Q(s2,1) = 0.5 + .01 (0.503 - 0.5) = 0.50003; Q(s1,6) = 0.5 + .01 (max(0.50003, 0.7) - 0.5)
    # = 0.502; Q(s0,1) = 0.5 + .01 (0.502 - 0.5) = 0.50002
    assert strategy.q[s3][0] == pytest.approx(0.503, abs=1e-12)
    assert strategy.q[s2][1] == pytest.approx(0.50003, abs=1e-12)
    assert strategy.q[s1][6] == pytest.approx(0.502, abs=1e-12)
    assert strategy.q[s0][1] == pytest.approx(0.50002, abs=1e-12)


def test_dense_walks_are_valid_archs_with_allowed_actions_only():
    space = make_space("dense")
    strategy = _strategy(space, replay=5, trials=60)
    seq = strategy.sequence
    rng = np.random.default_rng(0)
    paths = set()
    for k in range(60):
        arch = strategy.walk(epsilon=[1.0, 0.0][k % 2])
        space.validate(arch)
        paths.add(tuple(space.path(arch)))
        strategy.tell(arch, {"objective": float(rng.random())})
    assert len(paths) > 10
    for (label, _), row in strategy.q.items():
        values = seq.values[seq.labels.index(label)]
        assert all(values[a] != -1 for a in row)  # a block on the path is never dropped


def test_metaqnn_on_dense_learns_the_ops_of_the_first_block():
    # a state holds the previous decision only, so the reward's credit reaches the last decisions of
    # the walk most: on dense, the path is decided from the tail back and the first block comes last
    space = make_space("dense")

    def objective(arch: Arch) -> float:
        first = space.path(arch)[1]
        return float(np.mean([arch[f"block{first}.layer{l}"] == "mb_k3_e6" for l in range(space.layers[first])]))

    strategy = _strategy(space, seed=0, trials=100, replay=20)
    scores = []
    for _ in range(100):
        arch = strategy.ask()
        space.validate(arch)
        scores.append(objective(arch))
        strategy.tell(arch, {"objective": scores[-1]})
    explore, exploit = np.mean(scores[:50]), np.mean(scores[-20:])  # epsilon 1.0; then 0.3 down to 0.1
    assert explore < 0.25 and exploit > 0.6 and objective(strategy.walk(epsilon=0.0)) == 1.0


def test_cli_metaqnn_on_dense_with_the_synthetic_evaluator(tmp_path):
    from test_cli import run_main

    out = tmp_path / "run"
    code = run_main("search", "--space", "dense", "--strategy", "metaqnn", "--evaluator", "synthetic", "--trials", "8",
                    "--out", out, "--data", "synthetic", "--set", "train.epochs=1", "--set", "latency.repeats=1",
                    "--set", "latency.warmup=0", "-q")
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["space"] == "dense" and result["strategy"] == "metaqnn"
    make_space("dense").validate(Arch.from_json(out / "arch.json"))


# --------------------------------------------------------------------------- the paper's state-action space
def _layer_actions(strategy, layers):
    """The actions the agent may take after ``layers`` (a chain), from the strategy's own walk."""
    state, ctx = strategy.start()
    for layer in layers:
        state, ctx = strategy.transition(ctx, layer.key())
    return set(strategy.actions(ctx))


def test_metaqnn_action_set_is_the_papers_table_1():
    """Baker et al. 2017, Table 1 and sec. 4.2 (CIFAR-10 depth 18): square convs f in {1, 3, 5}, stride 1,
    d in {64, 128, 256, 512}, f no larger than the representation; pools (5,3), (3,2), (2,2), not first nor
    after a pool; at most two fc of {512, 256, 128} (non-increasing), only from the (8,4] and (4,1] bins,
    i.e. at most 7 pixels; termination (softmax, or gap then softmax) from any state."""
    space = make_space("layers", grammar="metaqnn", image_size=32, max_depth=18)
    strategy = _strategy(space)
    convs = lambda sizes: {("conv", f, f, 1, 1, d) for f in sizes for d in (64, 128, 256, 512)}  # noqa: E731
    conv = Layer("conv", 3, 3, 1, 1, 128)
    # start, 32 px: conv or gap, no pool first, no fc at 32 px, no end before a layer
    assert _layer_actions(strategy, []) == convs((1, 3, 5)) | {("gap",)}
    # after a conv at 32 px: the three pools join, and the end
    assert _layer_actions(strategy, [conv]) == convs((1, 3, 5)) | {("gap",), END} | {
        ("pool", 5, 3), ("pool", 3, 2), ("pool", 2, 2)}
    # after a pool: no pool; 32 -> 10 px (5/3): still no fc (bin (inf, 8])
    pooled = [conv, Layer("pool", pool_kernel=5, pool_stride=3)]
    assert _layer_actions(strategy, pooled) == convs((1, 3, 5)) | {("gap",), END}
    # 10 -> 5 px (3/2): fc of every width; after a conv at 5 px a 5/3 pool still fits
    small = pooled + [conv, Layer("pool", pool_kernel=3, pool_stride=2)]
    fcs = {("fc", 512), ("fc", 256), ("fc", 128)}
    assert _layer_actions(strategy, small) == convs((1, 3, 5)) | {("gap",), END} | fcs
    assert {("pool", 5, 3), ("pool", 3, 2), ("pool", 2, 2)} <= _layer_actions(strategy, small + [conv])
    # 5 -> 3 px (2/2): receptive fields of at most 3, pools of at most 3
    tiny = small + [conv, Layer("pool", pool_kernel=2, pool_stride=2)]
    assert _layer_actions(strategy, tiny) == convs((1, 3)) | {("gap",), END} | fcs
    assert _layer_actions(strategy, tiny + [conv]) & {("pool", 5, 3), ("pool", 3, 2), ("pool", 2, 2)} == {
        ("pool", 3, 2), ("pool", 2, 2)}
    # fc: non-increasing widths, at most two, then the end; gap: only the end
    assert _layer_actions(strategy, small + [Layer("fc", units=256)]) == {("fc", 256), ("fc", 128), END}
    assert _layer_actions(strategy, small + [Layer("fc", units=256), Layer("fc", units=256)]) == {END}
    assert _layer_actions(strategy, [conv, Layer("gap")]) == {END}
    # the maximum depth (18 in the CIFAR-10 experiment) allows only the end
    assert _layer_actions(strategy, [conv] * 18) == {END}
    assert len(_layer_actions(strategy, [conv] * 17)) > 1


def test_metaqnn_is_the_default_grammar_of_metaqnn_runs_on_the_layer_space():
    from nasforge.pipeline import resolve_config

    cfg = resolve_config({"space": {"name": "layers"}, "strategy": {"name": "metaqnn"}})
    assert cfg.space["grammar"] == "metaqnn"
    cfg = resolve_config({"space": {"name": "layers", "grammar": "nasrl"}, "strategy": {"name": "metaqnn"}})
    assert cfg.space["grammar"] == "nasrl"  # the config wins
    assert "grammar" not in resolve_config({"space": {"name": "layers"}, "strategy": {"name": "random"}}).space


def test_epsilon_schedule_counts_unique_models():
    # a space of exactly one network: every walk repeats it, so with unique counting epsilon never moves
    space = make_space("layers", types=["conv"], kernel_sizes=[1], filters=[4], max_depth=1)
    schedule = [[1.0, 2], [0.0, 5]]
    unique = _strategy(space, schedule=schedule, trials=7, replay=1)
    models = _strategy(space, schedule=schedule, trials=7, replay=1, count="models")
    for _ in range(5):
        for strategy in (unique, models):
            strategy.tell(strategy.ask(), {"objective": 0.5})
    assert [h["epsilon"] for h in unique.history] == [1.0] * 5
    assert [h["epsilon"] for h in models.history] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert len(unique.unique) == 1
    # two distinct networks: the second unique model moves epsilon on
    space = make_space("layers", types=["conv"], kernel_sizes=[1, 3], filters=[4], max_depth=1)
    strategy = _strategy(space, schedule=schedule, trials=7, replay=1)
    seen = []
    while len(strategy.unique) < 2:
        seen.append((len(strategy.unique), strategy.epsilon))
        strategy.tell(strategy.ask(), {"objective": 0.5})
    assert all(eps == 1.0 for n, eps in seen) and strategy.epsilon == 0.0
    restored = _strategy(space, schedule=schedule, trials=7, replay=1)
    restored.load_state_dict(copy.deepcopy(strategy.state_dict()))
    assert restored.unique == strategy.unique and restored.epsilon == 0.0


@pytest.mark.slow
def test_metaqnn_paper_preset_resolves_and_runs_one_trial():
    """The preset on random data of CIFAR-10's shape, one trial of one step (the paper's 20 epochs cut short)."""
    from nasforge.data import synthetic_dataset
    from nasforge.pipeline import build_space, build_strategy, resolve_config
    from nasforge.trials import search_options

    cfg = resolve_config({"preset": "paper", "data": {"name": "cifar10"}, "strategy": {"name": "metaqnn"}},
                         [(["evaluator", "steps"], 1), (["evaluator", "batch_size"], 8),
                          (["trials", "max_trials"], 1)])
    assert cfg.space["grammar"] == "metaqnn" and cfg.evaluator["optimizer"] == "adam"
    assert cfg.strategy["trials"] == 2700 and cfg.evaluator["epochs"] == 20
    data = synthetic_dataset(num_samples=100, num_classes=10, input_shape=(3, 32, 32))
    space = build_space(cfg)
    result = build_strategy(cfg).search(space, data, seed=0, **search_options(cfg, space, data))
    space.validate(result.arch)
    assert space.dropout and not space.batch_norm and space.max_depth == 18
