"""The dense (DenseNAS) space: connectivity, Viterbi, expected latency, valid paths, the
sequential decision order (next_decision/complete), building, head layers, the supernet,
lookup-table parts and arch round trips."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.oneshot.dense import all_paths, expected_latency, viterbi
from nasforge.spaces import get_space_class, make_space
from nasforge.spaces.dense import OPS, PRESETS, DenseSpace, MBConv

TINY = dict(widths=[4, 6, 8, 10], scales=[0, 0, 1, 1], stages=[0, 1, 2, 2], layers=[0, 1, 1, 1], connections=2,
            last=8, search_head=False)  # the head fixed (MBConv k3 e3): exact counts; searched heads: TINY_HEADS
TINY_HEADS = {**TINY, "search_head": True}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# --------------------------------------------------------------------------- connectivity
def test_connections_follow_the_official_rule():
    space = DenseSpace()
    assert space.successors[0] == [1, 2]           # block 3 is two stages later: no edge
    assert space.successors[2] == [3, 4, 5]        # three successors, next stage at half resolution
    assert space.predecessors[space.tail] == [6, 7, 8]
    for i, succ in enumerate(space.successors):
        assert succ and succ[0] == i + 1 and len(succ) <= space.connections
    big = DenseSpace("imagenet")
    assert big.connections == 4 and big.widths[1] == 24 and big.widths[-1] == 384 and big.last == 1984
    assert big.successors[0] == [1] and big.successors[1] == [2, 3, 4]  # 56 -> 28 (stage 1 -> 2)
    assert make_space("dense", connections=4).successors[2] == [3, 4, 5]  # stage 3 is two stages away


@pytest.mark.parametrize("bad, match", [
    ({"widths": [16]}, "at least one block"),
    ({"scales": [0, 0, 2, 2, 2, 2, 2, 2, 2]}, "grow by 0 or 1"),
    ({"layers": [1, 2, 2, 2, 2, 2, 2, 2, 2]}, "0 for node 0"),
    ({"connections": 0}, "out of range"),
    ({"preset": "huge"}, "unknown preset"),
    ({"widths": [16, "a"]}, "list of integers"),
])
def test_bad_options_are_one_line_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as err:
        make_space("dense", **bad)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- Viterbi
def _brute_force(successors, probs):
    best, best_p = None, -1.0
    for path in all_paths(successors):
        p = math.prod(float(probs[a][successors[a].index(b)]) for a, b in zip(path, path[1:]))
        if p > best_p:
            best, best_p = path, p
    return best, best_p


def test_viterbi_on_a_hand_made_matrix():
    # 0 -> {1, 2}, 1 -> {2, 3}, 2 -> {3}; tail 3. Paths: 0-1-2-3 (.6*.3*1=.18), 0-1-3 (.6*.7=.42), 0-2-3 (.4)
    successors = [[1, 2], [2, 3], [3]]
    assert viterbi(successors, [[0.6, 0.4], [0.3, 0.7], [1.0]]) == [0, 1, 3]
    assert viterbi(successors, [[0.55, 0.45], [0.3, 0.7], [1.0]]) == [0, 2, 3]  # .45 > .55 * .7 = .385
    assert viterbi(successors, [[0.9, 0.1], [0.9, 0.1], [1.0]]) == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(25))
def test_viterbi_matches_brute_force_on_random_spaces(seed):
    rng = np.random.default_rng(seed)
    space = DenseSpace(**TINY) if seed % 2 else DenseSpace()
    probs = [rng.dirichlet(np.full(len(s), 0.5)) for s in space.successors]
    path = viterbi(space.successors, probs)
    _, best_p = _brute_force(space.successors, probs)
    p = math.prod(probs[a][space.successors[a].index(b)] for a, b in zip(path, path[1:]))
    assert p == pytest.approx(best_p, rel=1e-12)
    assert path[0] == 0 and path[-1] == space.tail
    assert all(b in space.successors[a] for a, b in zip(path, path[1:]))


# --------------------------------------------------------------------------- expected latency
def test_expected_latency_by_hand():
    # 0 -> {1, 2}, 1 -> {2, 3}, 2 -> {3}; tail 3
    successors = [[1, 2], [2, 3], [3]]
    probs = [torch.tensor([0.25, 0.75]), torch.tensor([0.4, 0.6]), torch.tensor([1.0])]
    head = {(0, 1): 1.0, (0, 2): 2.0, (1, 2): 3.0, (1, 3): 0.5, (2, 3): 0.25}
    stack = [0.0, 10.0, 20.0]
    # E2 = 20 + 1*(0.25 + 0) = 20.25 ; E1 = 10 + .4*(3 + 20.25) + .6*(0.5 + 0) = 19.6
    # E0 = 0 + .25*(1 + 19.6) + .75*(2 + 20.25) = 5.15 + 16.6875 = 21.8375 ; plus fixed 1.5
    value = expected_latency(successors, probs, head, stack, fixed=1.5)
    assert value.item() == pytest.approx(23.3375)
    # and it is the probability-weighted mean latency over all paths
    total = 0.0
    for path in all_paths(successors):
        p = math.prod(probs[a][successors[a].index(b)].item() for a, b in zip(path, path[1:]))
        lat = 1.5 + sum(stack[n] for n in path[:-1]) + sum(head[(a, b)] for a, b in zip(path, path[1:]))
        total += p * lat
    assert value.item() == pytest.approx(total)


def test_expected_latency_is_differentiable():
    successors = [[1, 2], [2], ]
    beta = [torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)]
    probs = [torch.softmax(b, -1) for b in beta]
    value = expected_latency(successors, probs, {(0, 1): 1.0, (0, 2): 5.0, (1, 2): 1.0}, [0.0, 1.0])
    value.backward()
    assert beta[0].grad[0] < 0 < beta[0].grad[1]  # the cheaper way out gains probability


# --------------------------------------------------------------------------- archs
def test_sampled_and_mutated_archs_are_valid_paths():
    space = DenseSpace()
    rng = np.random.default_rng(0)
    seen = set()
    arch = space.sample(rng)
    for _ in range(60):
        space.validate(arch)
        path = space.path(arch)
        assert path[0] == 0 and path[-1] == space.tail
        nxt = space.mutate(arch, rng)
        assert nxt != arch
        arch = nxt
        seen.add(tuple(path))
    assert len(seen) > 5  # mutations reroute the path, not only ops
    assert space.size() > 10**9


def test_arch_json_round_trip_rebuilds_the_space():
    space = make_space("dense", **TINY)
    arch = space.sample(np.random.default_rng(3))
    back = Arch.from_json(arch.to_json())
    assert back == arch
    rebuilt = get_space_class("dense").for_arch(back)
    assert rebuilt.widths == tuple(TINY["widths"]) and rebuilt.connections == 2 and rebuilt.last == 8
    for label, choice in space.choices().items():
        if label.endswith((".width", ".scale", ".stage", ".layers")) or label.startswith("space."):
            assert choice.size == 1 and isinstance(choice.values[0], int)


def test_inconsistent_archs_are_rejected():
    space = DenseSpace(**TINY)
    arch = space.arch_from_path([0, 1, 3, 4], {(1, 0): "mb_k3_e3", (3, 0): "skip"})
    space.validate(arch)
    with pytest.raises(ArchError, match="dropped"):
        space.validate(arch.with_choice("block2.layer0", "mb_k5_e6"))  # block 2 is not on the path
    with pytest.raises(ArchError, match="is not one of"):
        space.validate(arch.with_choice("block3.input", 0).with_choice("block1.input", -1))  # 0 -> 3 skips a stage
    with pytest.raises(ArchError, match="nothing on the path"):
        space.validate(arch.with_choice("block2.input", 1))


# --------------------------------------------------------------------------- sequential decisions
def decision_sequences(space) -> list[dict]:
    """Every finished decision sequence of ``space.next_decision`` (depth-first)."""
    out, todo = [], [{}]
    while todo:
        values = todo.pop()
        step = space.next_decision(values)
        if step is None:
            out.append(values)
            continue
        label, allowed = step
        todo += [{**values, label: v} for v in allowed]
    return out


def test_decisions_run_from_the_tail_back_and_reach_every_arch_once():
    space = DenseSpace(**TINY)  # 441 archs; blocks 1 and 2 have a single predecessor
    assert space.next_decision({}) == ("tail.input", (2, 3))
    assert space.next_decision({"tail.input": 3}) == ("block3.layer0", OPS)
    assert space.next_decision({"tail.input": 3, "block3.layer0": "skip"}) == ("block3.input", (1, 2))
    assert space.next_decision({"tail.input": 3, "block3.layer0": "skip", "block3.input": 1}) == \
        ("block1.layer0", OPS)
    done = {"tail.input": 3, "block3.layer0": "skip", "block3.input": 1, "block1.layer0": "mb_k3_e3",
            "block1.input": 0}
    assert space.next_decision(done) is None
    assert space.complete(done) == space.arch_from_path([0, 1, 3, 4], {(1, 0): "mb_k3_e3", (3, 0): "skip"})
    archs = [space.complete(values) for values in decision_sequences(space)]
    for arch in archs:
        space.validate(arch)
    assert len(archs) == len(set(archs)) == space.size() == 441
    rng = np.random.default_rng(0)
    assert {space.sample(rng) for _ in range(200)} <= set(archs)


def test_complete_takes_single_allowed_decisions_and_refuses_open_or_wrong_ones():
    space = DenseSpace(**TINY)
    # block 2's only input is block 1, block 1's only input is node 0: complete takes them
    arch = space.complete({"tail.input": 2, "block2.layer0": "mb_k5_e6", "block1.layer0": "skip"})
    assert space.path(arch) == [0, 1, 2, 4] and arch["block3.input"] == -1 and arch["block3.layer0"] == "skip"
    space.validate(arch)
    with pytest.raises(ArchError, match="'block3.layer0' is still to be decided"):
        space.complete({"tail.input": 3})
    with pytest.raises(ArchError, match="tail.input=1 is not a predecessor of the tail"):
        space.next_decision({"tail.input": 1})
    with pytest.raises(ArchError, match="block3.input=-1 is not a predecessor of block 3"):
        space.complete({"tail.input": 3, "block3.layer0": "skip", "block3.input": -1})
    with pytest.raises(ArchError, match="'conv' is not one of"):
        space.complete({"tail.input": 2, "block2.layer0": "conv", "block1.layer0": "skip"})


def test_the_default_decision_order_is_every_choice_of_two_or_more_values():
    space = make_space("nb201", C=4, N=1)
    values, labels = {}, []
    while (step := space.next_decision(values)) is not None:
        label, allowed = step
        assert allowed == space.choices()[label].values
        labels.append(label)
        values[label] = allowed[-1]
    assert labels == [label for label, c in space.choices().items() if c.size > 1]
    arch = space.complete(values)
    space.validate(arch)
    assert (arch["C"], arch["N"]) == (4, 1)
    with pytest.raises(ArchError, match="is still to be decided"):
        space.complete({})
    with pytest.raises(ArchError, match="'nope' does not exist"):
        space.complete({**values, "nope": 1})


# --------------------------------------------------------------------------- networks
def _random_derived(space, rng):
    probs = [rng.dirichlet(np.ones(len(s))) for s in space.successors]
    path = viterbi(space.successors, probs)
    ops = {key: OPS[int(rng.integers(len(OPS)))] for key in space.layer_index}
    return space.arch_from_path(path, ops)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 7, 9)])
def test_derived_networks_build_and_run_for_random_parameters(shape):
    space = DenseSpace()
    rng = np.random.default_rng(sum(shape))
    for _ in range(12):
        arch = _random_derived(space, rng)
        space.validate(arch)
        net = space.build(arch, shape, 10, layers=6, channels=16, auxiliary=False)  # train options ignored
        assert net(torch.randn(2, *shape)).shape == (2, 10)
        kept = [b for b in space.path(arch)[1:-1]]
        assert len(net.blocks) == len(kept)


def test_head_layers_bring_every_allowed_input_to_the_block():
    space = DenseSpace()
    shape = (1, 8, 8)
    res = space.resolutions(shape)
    for j in range(1, space.tail):
        for i in space.predecessors[j]:
            head = space._head(i, j)
            out = head(torch.randn(2, space.widths[i], *res[i]))
            assert out.shape == (2, space.widths[j], *res[j]), (i, j)
    big = DenseSpace("imagenet")
    res = big.resolutions((3, 224, 224))
    assert res[0] == (112, 112) and res[1] == (56, 56) and res[-1] == (7, 7)
    for j in (2, 5, 11):
        for i in big.predecessors[j]:
            x = torch.randn(1, big.widths[i], *[max(1, r // 8) for r in res[i]])
            assert big._head(i, j).eval()(x).shape[1] == big.widths[j]


def test_supernet_runs_exactly_one_path_like_the_built_network():
    torch.manual_seed(0)
    space = DenseSpace(**TINY)
    sup = space.supernet((1, 8, 8), 5).eval()
    arch = space.arch_from_path([0, 1, 2, 4], {(1, 0): "mb_k3_e6", (2, 0): "skip"})
    path = space.path(arch)
    prev = {b: a for a, b in zip(path, path[1:])}
    one = torch.ones(1)
    incoming = [([prev.get(j, space.predecessors[j][0])], one) for j in range(1, space.tail + 1)]
    layer_ops = [([OPS.index(arch[f"block{b}.layer{l}"])], one) for b, l in space.layer_index]
    calls = []
    for name, m in sup.named_modules():
        if isinstance(m, MBConv):
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
    x = torch.randn(3, 1, 8, 8)
    out = sup(x, incoming, layer_ops)
    assert out.shape == (3, 5)
    assert sorted(calls) == sorted(["stem.3", "heads.0_1", "layers.0.mb_k3_e6", "heads.1_2"])
    # the derived network with the supernet's weights computes the same function
    net = space.build(arch, (1, 8, 8), 5).eval()
    net.stem.load_state_dict(sup.stem.state_dict())
    net.blocks[0][0].load_state_dict(sup.heads["0_1"].state_dict())
    net.blocks[0][1].load_state_dict(sup.layers[0]["mb_k3_e6"].state_dict())
    net.blocks[1][0].load_state_dict(sup.heads["1_2"].state_dict())
    net.tail.load_state_dict(sup.tails["2"].state_dict())
    net.classifier.load_state_dict(sup.classifier.state_dict())
    assert torch.allclose(net(x), out, atol=1e-6)


def test_supernet_mixes_sampled_heads_by_their_weights():
    torch.manual_seed(0)
    space = DenseSpace(**TINY)
    sup = space.supernet((1, 8, 8), 5).eval()
    one = torch.ones(1)
    layer_ops = [([OPS.index("skip")], one) for _ in space.layer_index]
    base = [([0], one), ([1], one), ([2], one), ([3], one)]     # block 3 fed by block 2
    other = [([0], one), ([1], one), ([1], one), ([3], one)]    # block 3 fed by block 1
    both = [([0], one), ([1], one), ([1, 2], torch.tensor([0.3, 0.7])), ([3], one)]
    feats = {}

    def keep(module, inputs, output):
        feats[len(feats)] = inputs[0]  # block 3's output (its stacking layer is skip)

    sup.tails["3"].register_forward_hook(keep)
    x = torch.randn(2, 1, 8, 8)
    for incoming in (base, other, both):
        sup(x, incoming, layer_ops)
    assert torch.allclose(feats[2], 0.3 * feats[1] + 0.7 * feats[0], atol=1e-5)


# --------------------------------------------------------------------------- lookup-table parts
def test_latency_parts_cover_every_arch_and_match_shapes():
    space = DenseSpace(**TINY)
    shape = (1, 8, 8)
    parts = space.latency_parts(shape, 10)
    keys = space.latency_keys()
    assert set(keys.fixed) <= set(parts) and set(keys.heads.values()) <= set(parts)
    assert all(k is None or k in parts for layer in keys.layers for k in layer.values())
    for key, (factory, in_shape) in parts.items():
        factory().eval()(torch.randn(1, *in_shape))  # each piece runs at the shape it is timed at
    rng = np.random.default_rng(0)
    for _ in range(10):
        arch = space.sample(rng)
        used = space.arch_latency_parts(arch, shape, 10)
        assert set(used) <= set(parts)
        net = space.build(arch, shape, 10)
        n_mb = sum(isinstance(m, MBConv) for m in net.modules()) - 1  # minus the stem's
        assert sum(k.startswith(("head:", "block")) for k in used) == n_mb


def test_small_preset_defaults():
    space = make_space("dense")
    assert space.preset == "small" and space.connections == 3 and space.stem_stride == 1
    assert list(space.widths) == list(PRESETS["small"]["widths"])
    assert space.describe(space.sample(np.random.default_rng(0))).startswith("stem 16")
    # each op row of the lookup: the 6 MBConvs have keys, skip none
    assert sum(v is None for v in space.latency_keys().layers[0].values()) == 1
    assert list(itertools.islice(space.layer_index, 3)) == [(1, 0), (1, 1), (2, 0)]


# --------------------------------------------------------------------------- searched head ops
def test_searched_heads_are_arch_choices_built_counted_and_timed():
    from nasforge.oneshot.dense import all_paths
    from nasforge.spaces.dense import DEFAULT_HEAD, HEAD_OPS

    space = DenseSpace(**TINY_HEADS)
    assert space.choices()["block2.head"].values == HEAD_OPS and space.choices()["space.search_head"].values == (True,)
    # every path's blocks each pick a head op: the count multiplies by 6 per kept block
    expected = sum(math.prod(len(OPS) ** space.layers[b] * len(HEAD_OPS) for b in p[1:-1])
                   for p in all_paths(space.successors))
    assert space.size() == expected
    assert space.next_decision({"tail.input": 3}) == ("block3.head", HEAD_OPS)
    arch = space.complete({"tail.input": 2, "block2.head": "mb_k7_e6", "block2.layer0": "skip",
                           "block1.head": "mb_k5_e3", "block1.layer0": "mb_k3_e3"})
    assert arch["block3.head"] == DEFAULT_HEAD and arch["block2.head"] == "mb_k7_e6"
    space.validate(arch)
    with pytest.raises(ArchError, match="block3.head must be 'mb_k3_e3'"):
        space.validate(Arch(arch.space, {**arch.as_dict(), "block3.head": "mb_k5_e6"}, arch.version))
    net = space.build(arch, (1, 8, 8), 5)
    heads = [block[0] for block in net.blocks]
    kernels = [next(m for m in h.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1).kernel_size[0]
               for h in heads]
    assert kernels == [5, 7]
    assert space.describe(arch) == "stem 4 > 6<k5e3>[k3e3] > 8/2<k7e6>[] > tail 8"
    assert space.summary(arch)["heads"] == ["mb_k5_e3", "mb_k7_e6"]
    parts = space.latency_parts((1, 8, 8), 10)
    assert space.arch_latency_parts(arch, (1, 8, 8), 10)[1] == "head:0>1:mb_k5_e3"
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        a = space.sample(rng)
        space.validate(a)
        assert set(space.arch_latency_parts(a, (1, 8, 8), 10)) <= set(parts)
        m = space.mutate(a, rng)
        space.validate(m)
        seen |= {b for b in range(1, space.tail) if m[f"block{b}.head"] != a[f"block{b}.head"]}
    assert seen  # mutation changes head ops too
    # an arch of a fixed-head space (written before the option) rebuilds that space
    old = DenseSpace(**TINY).arch_from_path([0, 1, 3, 4])
    assert "space.search_head" not in old.as_dict() and DenseSpace.for_arch(old).search_head is False
    with pytest.raises(ConfigError, match="search_head"):
        DenseSpace(search_head="yes")


def test_supernet_mixes_head_ops_by_their_weights():
    torch.manual_seed(0)
    space = DenseSpace(**TINY_HEADS)
    sup = space.supernet((1, 8, 8), 5).eval()
    x = torch.randn(2, 4, 8, 8)
    w = torch.tensor([0.25, 0.75])
    mixed = sup.head(0, 1, x, ([1, 4], w))
    heads = sup.heads["0_1"]
    assert torch.allclose(mixed, 0.25 * heads["mb_k3_e6"](x) + 0.75 * heads["mb_k7_e3"](x), atol=1e-6)
    assert torch.allclose(sup.head(0, 1, x, None), heads["mb_k3_e3"](x))
