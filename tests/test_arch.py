"""Arch values (immutability, hashing, JSON), their validation, and the darts space's
sample / mutate / size / genotype / derivation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge.arch import Arch
from nasforge.errors import ArchError
from nasforge.spaces import make_space
from nasforge.spaces.darts import (
    PRIMITIVES,
    DartsSpace,
    Genotype,
    derive_genotype,
    edge_index,
    num_edges,
)

OPS = {name: k for k, name in enumerate(PRIMITIVES)}

# The DARTS paper's final cell (DARTS_V2), pairs of each node ordered by input index.
DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("skip_connect", 2),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("max_pool_3x3", 1), ("skip_connect", 2)),
)


def v2_choices() -> dict:
    """The DARTS_V2 genotype written by hand as arch choices."""
    out = {}
    for cell in ("normal", "reduce"):
        gene = getattr(DARTS_V2, cell)
        for node in range(4):
            (op0, a), (op1, b) = gene[2 * node], gene[2 * node + 1]
            out[f"{cell}.{node}.inputs"] = [a, b]
            out[f"{cell}.{node}.op0"] = op0
            out[f"{cell}.{node}.op1"] = op1
    return out


def v2_dict() -> dict:
    return {"space": "darts", "version": 1, "choices": v2_choices()}


def reject(data, *needles: str) -> str:
    """``Arch.from_json`` on ``data`` (a dict is dumped to JSON) must raise ArchError naming the needles."""
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ArchError) as info:
        Arch.from_json(text)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error message {msg!r}"
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- value semantics
def test_arch_is_immutable():
    arch = Arch("darts", v2_choices())
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.space = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.choices = ()  # type: ignore[misc]
    assert isinstance(arch.choices, tuple)
    assert arch["normal.0.inputs"] == (0, 1)  # lists are frozen to tuples


def test_arch_does_not_alias_caller_data():
    choices = v2_choices()
    arch = Arch("darts", choices)
    choices["normal.0.op0"] = "max_pool_3x3"
    choices["normal.0.inputs"].append(7)
    assert arch["normal.0.op0"] == "sep_conv_3x3"
    assert arch["normal.0.inputs"] == (0, 1)
    d = arch.as_dict()
    d["normal.0.inputs"].append(9)
    d["normal.0.op1"] = "avg_pool_3x3"
    assert arch.as_dict() == v2_choices()


def test_equality_and_hash_ignore_dict_order():
    forward = v2_choices()
    backward = dict(reversed(list(forward.items())))
    assert list(forward) != list(backward)
    a, b = Arch("darts", forward), Arch("darts", backward)
    assert a == b
    assert hash(a) == hash(b)
    assert a.hash == b.hash
    assert a.to_json() == b.to_json()
    assert len({a, b}) == 1
    # lists and tuples are the same choice value
    assert Arch("darts", {"x": [1, 2]}) == Arch("darts", {"x": (1, 2)})


def test_different_archs_differ():
    a = Arch("darts", v2_choices())
    b = a.with_choice("normal.0.op0", "dil_conv_5x5")
    assert a != b
    assert a.hash != b.hash
    assert Arch("darts", v2_choices(), version=2) != a


def test_hash_is_stable_across_runs():
    arch = Arch.from_dict(v2_dict())
    canonical = json.dumps(arch.to_dict(), sort_keys=True)
    assert arch.hash == hashlib.sha1(canonical.encode()).hexdigest()[:16]
    # A fixed value: a change here breaks the identity of every stored arch (trials, caches).
    assert arch.hash == "e969f6c70ed89425"
    assert len(arch.hash) == 16 and int(arch.hash, 16) >= 0


def test_json_round_trip_text():
    arch = Arch.from_dict(v2_dict())
    again = Arch.from_json(arch.to_json())
    assert again == arch
    assert again.hash == arch.hash
    assert json.loads(arch.to_json()) == v2_dict()
    assert Arch.from_json("  \n" + arch.to_json(indent=None)) == arch  # leading whitespace is still text


def test_json_round_trip_file(tmp_path: Path):
    arch = Arch.from_dict(v2_dict())
    path = arch.save(tmp_path / "sub" / "arch.json")
    assert path == tmp_path / "sub" / "arch.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["arch.json"]  # no temp files left
    assert Arch.from_json(path) == arch  # a Path
    assert Arch.from_json(str(path)) == arch  # a path given as str


def test_missing_file_is_an_arch_error(tmp_path: Path):
    reject(str(tmp_path / "nope.json"), "does not exist")


def test_with_choice():
    arch = Arch.from_dict(v2_dict())
    changed = arch.with_choice("reduce.3.op1", "sep_conv_5x5")
    assert changed["reduce.3.op1"] == "sep_conv_5x5"
    assert arch["reduce.3.op1"] == "skip_connect"  # the original is untouched
    assert {k for k, v in changed.as_dict().items() if arch.as_dict()[k] != v} == {"reduce.3.op1"}
    DartsSpace().validate(changed)
    assert changed.with_choice("normal.1.inputs", [0, 2])["normal.1.inputs"] == (0, 2)


# --------------------------------------------------------------------------- validation
def test_malformed_json_names_the_problem():
    msg = reject('{"space": "darts", "choices": {', "malformed")
    assert "line 1" in msg and "column" in msg
    reject('{"space": darts}', "malformed", "Expecting value")


def test_malformed_json_file(tmp_path: Path):
    path = tmp_path / "arch.json"
    path.write_text('{"space": "darts",,}')
    with pytest.raises(ArchError, match="malformed"):
        Arch.from_json(path)


def test_json_must_be_an_object():
    with pytest.raises(ArchError, match="must be an object"):
        Arch.from_dict(["darts"])


def test_missing_space():
    d = v2_dict()
    del d["space"]
    reject(d, "'space'")


def test_missing_choices():
    d = v2_dict()
    del d["choices"]
    reject(d, "'choices'")


def test_unknown_top_level_field():
    d = v2_dict()
    d["comment"] = "hi"
    reject(d, "unknown field", "comment")


def test_unknown_space_name_is_an_arch_error():
    d = v2_dict()
    d["space"] = "no_such_space"
    reject(d, "no_such_space", "darts")


def test_unknown_op_names_the_choice():
    d = v2_dict()
    d["choices"]["normal.2.op1"] = "conv_9x9"
    reject(d, "normal.2.op1", "conv_9x9")


def test_none_is_not_a_valid_op():
    d = v2_dict()
    d["choices"]["reduce.0.op0"] = "none"
    reject(d, "reduce.0.op0")


def test_input_index_out_of_range():
    d = v2_dict()
    d["choices"]["normal.1.inputs"] = [0, 3]  # node 1 sees states 0..2
    reject(d, "normal.1.inputs", "outside 0..2")


def test_negative_input_index():
    d = v2_dict()
    d["choices"]["normal.2.inputs"] = [-1, 2]
    reject(d, "normal.2.inputs")


@pytest.mark.parametrize("inputs", [[2, 0], [3, 1, 2], [1], "01", [0.0, 1.0], [1, 5]])
def test_bad_input_lists(inputs):
    d = v2_dict()
    d["choices"]["normal.3.inputs"] = inputs
    reject(d, "normal.3.inputs")


def test_duplicated_and_unsorted_inputs_messages():
    d = v2_dict()
    # one input twice is an arch of the space: two ops on state 1 (GDAS's official derivation can keep it)
    d["choices"]["normal.2.inputs"] = [1, 1]
    assert list(Arch.from_dict(d)["normal.2.inputs"]) == [1, 1]
    d["choices"]["normal.2.inputs"] = [3, 1]
    reject(d, "normal.2.inputs", "increasing")


def test_missing_choice():
    d = v2_dict()
    del d["choices"]["reduce.3.op1"]
    reject(d, "reduce.3.op1", "missing")


@pytest.mark.parametrize("label", ["bogus", "normal.0.op2"])
def test_extra_unknown_choice(label):
    d = v2_dict()
    d["choices"][label] = "skip_connect"
    reject(d, label, "does not exist")


def test_wrong_version():
    d = v2_dict()
    d["version"] = 2
    reject(d, "version 2")
    d["version"] = "1"
    reject(d, "version")


def test_from_dict_without_validation_accepts_anything():
    arch = Arch.from_dict({"space": "whatever", "choices": {"a": 1}}, validate=False)
    assert arch.space == "whatever" and arch["a"] == 1


# --------------------------------------------------------------------------- space operations
def test_sample_is_always_valid():
    for nodes in (1, 2, 4):
        space = DartsSpace(nodes=nodes)
        for seed in range(150):
            arch = space.sample(np.random.default_rng(seed))
            space.validate(arch)
            Arch.from_json(arch.to_json())  # also valid through the registry
            assert len(arch.choices) == 6 * nodes


def test_sample_is_seeded_and_varied():
    space = DartsSpace()
    assert space.sample(np.random.default_rng(3)) == space.sample(np.random.default_rng(3))
    assert len({space.sample(np.random.default_rng(s)) for s in range(50)}) == 50


def test_mutate_changes_exactly_one_choice_and_stays_valid():
    space = DartsSpace()
    rng = np.random.default_rng(0)
    changed_labels = set()
    for seed in range(200):
        arch = space.sample(np.random.default_rng(seed))
        child = space.mutate(arch, rng)
        space.validate(child)
        diff = [k for k, v in child.as_dict().items() if arch.as_dict()[k] != v]
        assert len(diff) == 1, diff
        assert child.as_dict().keys() == arch.as_dict().keys()
        changed_labels.update(diff)
    # over many mutations every mutable kind of choice gets changed, including inputs
    assert any(label.endswith(".inputs") for label in changed_labels)
    assert any(label.endswith(".op0") for label in changed_labels)
    assert "normal.0.inputs" not in changed_labels  # node 0 has a single input pair


def test_darts_space_size():
    per_cell = 1
    for node in range(4):
        per_cell *= comb(node + 2, 2) * 7 * 7
    assert DartsSpace().size() == per_cell ** 2 == (180 * 49 ** 4) ** 2
    assert DartsSpace(nodes=1).size() == (7 * 7) ** 2
    assert make_space("darts", nodes=2).size() == (49 * 3 * 49) ** 2


def test_genotype_arch_round_trip():
    space = DartsSpace()
    arch = space.arch_from_genotype(DARTS_V2)
    space.validate(arch)
    assert arch == Arch("darts", v2_choices())
    assert space.genotype(arch) == DARTS_V2
    for seed in range(30):
        a = space.sample(np.random.default_rng(seed))
        assert space.arch_from_genotype(space.genotype(a)) == a


def test_arch_from_genotype_orders_pairs_by_input():
    space = DartsSpace(nodes=1)
    g = Genotype(normal=(("skip_connect", 1), ("sep_conv_3x3", 0)), reduce=(("max_pool_3x3", 0), ("avg_pool_3x3", 1)))
    arch = space.arch_from_genotype(g)
    assert arch["normal.0.inputs"] == (0, 1)
    assert arch["normal.0.op0"] == "sep_conv_3x3" and arch["normal.0.op1"] == "skip_connect"


def test_arch_from_genotype_rejects_wrong_node_count():
    with pytest.raises(ArchError):
        DartsSpace(nodes=2).arch_from_genotype(DARTS_V2)


def test_genotype_count():
    assert DARTS_V2.count("skip_connect") == 2
    assert DARTS_V2.count("skip_connect", "reduce") == 3
    assert DARTS_V2.count("sep_conv_3x3") == 5
    assert DARTS_V2.count("max_pool_3x3", "reduce") == 5
    assert DARTS_V2.count("none") == 0
    assert DARTS_V2.nodes == 4 and DARTS_V2.concat() == [2, 3, 4, 5]


# --------------------------------------------------------------------------- derivation
def _hand_made_normal() -> np.ndarray:
    """[14, 8] weights whose winners are known; ``none`` is the largest weight on several edges."""
    w = np.full((num_edges(4), len(PRIMITIVES)), 0.01)
    # node 0 (inputs 0, 1): both edges kept; edge 1 -> none dominates, skip_connect must be chosen
    w[edge_index(0, 0), OPS["sep_conv_3x3"]] = 0.5
    w[edge_index(0, 1), OPS["none"]] = 0.9
    w[edge_index(0, 1), OPS["skip_connect"]] = 0.3
    # node 1 (inputs 0..2): edge 0 has the row's largest weight on none only -> must lose
    w[edge_index(1, 0), OPS["none"]] = 0.95
    w[edge_index(1, 1), OPS["dil_conv_3x3"]] = 0.4
    w[edge_index(1, 2), OPS["max_pool_3x3"]] = 0.2
    # node 2 (inputs 0..3): 3 and 0 win; 1 is pure none
    w[edge_index(2, 3), OPS["avg_pool_3x3"]] = 0.6
    w[edge_index(2, 0), OPS["sep_conv_5x5"]] = 0.55
    w[edge_index(2, 1), OPS["none"]] = 0.99
    w[edge_index(2, 2), OPS["skip_connect"]] = 0.5
    # node 3 (inputs 0..4): 4 and 2 win; on edge 0 none is huge but the best live op is just below 2's
    w[edge_index(3, 4), OPS["skip_connect"]] = 0.7
    w[edge_index(3, 2), OPS["dil_conv_5x5"]] = 0.65
    w[edge_index(3, 0), OPS["none"]] = 1.0
    w[edge_index(3, 0), OPS["sep_conv_3x3"]] = 0.64
    w[edge_index(3, 1), OPS["max_pool_3x3"]] = 0.3
    return w


def _hand_made_reduce() -> torch.Tensor:
    """Every edge dominated by none; avg_pool grows with the input index, so the last two inputs win."""
    w = torch.zeros(num_edges(4), len(PRIMITIVES))
    for node in range(4):
        for j in range(node + 2):
            w[edge_index(node, j), OPS["none"]] = 5.0
            w[edge_index(node, j), OPS["avg_pool_3x3"]] = 0.1 * (j + 1)
            w[edge_index(node, j), OPS["sep_conv_3x3"]] = 0.05 * (j + 1)
    return w


def test_derive_genotype_on_hand_made_weights():
    g = derive_genotype(_hand_made_normal(), _hand_made_reduce())
    assert g.normal == (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("dil_conv_3x3", 1), ("max_pool_3x3", 2),
        ("sep_conv_5x5", 0), ("avg_pool_3x3", 3),
        ("dil_conv_5x5", 2), ("skip_connect", 4),
    )
    assert g.reduce == tuple(("avg_pool_3x3", j) for node in range(4) for j in (node, node + 1))
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert g.count("skip_connect") == 2
    assert g.count("skip_connect", "reduce") == 0
    assert g.count("avg_pool_3x3", "reduce") == 8


def test_derive_gives_a_valid_arch():
    space = DartsSpace()
    arch = space.derive(_hand_made_normal(), _hand_made_reduce())
    space.validate(arch)
    assert arch["normal.1.inputs"] == (1, 2)
    assert arch["normal.0.op1"] == "skip_connect"
    assert arch["reduce.3.inputs"] == (3, 4)


def test_derive_rejects_wrong_shape():
    with pytest.raises(ValueError):
        derive_genotype(np.zeros((14, 7)), np.zeros((14, 8)))
