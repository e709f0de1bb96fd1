"""Latency lookup tables on a toy space: build, save/load, predict, check, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ConfigError
from nasforge.hardware.lut import LatencyTable, build_table, check_table, space_fingerprint
from nasforge.spaces import OpChoice, SearchSpace, ValueChoice

WIDTHS = {"narrow": 4, "wide": 64}


class ToySpace(SearchSpace):
    """Two layers, each a 3x3 conv of a chosen width (or skipped); a fixed linear head."""

    name = "toy-lut"

    def __init__(self, depth: int = 2):
        self.depth = depth

    def choices(self):
        out = {"depth": ValueChoice("depth", (self.depth,))}
        for i in range(self.depth):
            out[f"layer{i}"] = OpChoice(f"layer{i}", ("zero", "narrow", "wide"))
        return out

    def _layer(self, op: str, cin: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, WIDTHS[op], 3, padding=1), nn.ReLU())

    def build(self, arch, input_shape, num_classes, **_):
        c, h, w = input_shape
        layers, cin = [], c
        for i in range(self.depth):
            op = arch[f"layer{i}"]
            if op != "zero":
                layers.append(self._layer(op, cin))
                cin = WIDTHS[op]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * h * w, num_classes))

    # The toy's width after a skipped layer depends on earlier choices, so its pieces are
    # keyed by (layer, input width, op).
    def latency_parts(self, input_shape, num_classes):
        c, h, w = input_shape
        parts = {}
        for i in range(self.depth):
            for cin in {c, *WIDTHS.values()}:
                for op in WIDTHS:
                    parts[f"l{i}:{cin}:{op}"] = (lambda op=op, cin=cin: self._layer(op, cin), (cin, h, w))
        for cin in {c, *WIDTHS.values()}:
            parts[f"head:{cin}"] = (lambda cin=cin: nn.Sequential(nn.Flatten(), nn.Linear(cin * h * w, num_classes)),
                                    (cin, h, w))
        return parts

    def arch_latency_parts(self, arch, input_shape, num_classes):
        cin, keys = input_shape[0], []
        for i in range(self.depth):
            op = arch[f"layer{i}"]
            if op != "zero":
                keys.append(f"l{i}:{cin}:{op}")
                cin = WIDTHS[op]
        return keys + [f"head:{cin}"]


SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def table():
    torch.manual_seed(0)
    return build_table(ToySpace(), SHAPE, 10, device="cpu", warmup=3, repeats=15, threads=1)


def test_table_has_every_part_and_records_the_device(table):
    space = ToySpace()
    assert set(table.entries) == set(space.latency_parts(SHAPE, 10))
    assert all(v >= 0 for v in table.entries.values())
    assert table.device == "cpu" and table.threads == 1 and table.device_name
    assert table.fingerprint == space_fingerprint(space)
    assert table.overhead_ms > 0


def test_prediction_is_overhead_plus_the_arch_parts(table):
    space = ToySpace()
    arch = Arch("toy-lut", {"depth": 2, "layer0": "wide", "layer1": "zero"})
    expected = table.overhead_ms + table.entries["l0:3:wide"] + table.entries["head:64"]
    assert table.predict(space, arch) == pytest.approx(expected)


def test_wide_layers_cost_more_than_narrow(table):
    # 64-channel 3x3 conv on 16x16 is ~16x the MACs of a 4-channel one: the table must see it.
    assert table.entries["l1:64:wide"] > table.entries["l1:64:narrow"]


def test_save_load_round_trip(table, tmp_path):
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again == table


def test_check_against_measured_latency(table):
    report = check_table(ToySpace(), table, n=6, seed=1, warmup=3, repeats=15)
    assert report["n"] == 6 and len(report["rows"]) == 6
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in report["rows"])
    assert 0 <= report["mape"] < 10 and -1 <= report["spearman"] <= 1


def test_foreign_tables_are_refused(table):
    table.check(ToySpace(), SHAPE, "cpu")
    with pytest.raises(ConfigError, match="another configuration"):
        table.check(ToySpace(depth=3), SHAPE, "cpu")
    with pytest.raises(ConfigError, match="input shape"):
        table.check(ToySpace(), (3, 8, 8), "cpu")
    with pytest.raises(ConfigError, match="measured on 'cpu', not 'onnxruntime'"):
        table.check(ToySpace(), SHAPE, "onnxruntime")
    other = ToySpace()
    other.name = "other"
    with pytest.raises(ConfigError, match="not 'other'"):
        table.check(other, SHAPE, "cpu")


def test_missing_entry_names_the_key(table):
    partial = LatencyTable(**{**table.to_dict(), "input_shape": SHAPE,
                              "entries": {k: v for k, v in table.entries.items() if k != "head:4"}})
    arch = Arch("toy-lut", {"depth": 2, "layer0": "zero", "layer1": "narrow"})
    with pytest.raises(ConfigError, match="no entry 'head:4'.*nasforge latency"):
        partial.predict(ToySpace(), arch)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ConfigError, match="not a nasforge latency table"):
        LatencyTable.load(tmp_path / "other.json")


def test_space_without_table_support():
    from nasforge.spaces import make_space

    with pytest.raises(ConfigError, match="no latency lookup table support"):
        build_table(make_space("layers"), (1, 8, 8), 10)  # a grammar, not a network with choice modules


def test_onnxruntime_table():
    pytest.importorskip("onnxruntime")
    t = build_table(ToySpace(depth=1), (3, 8, 8), 10, device="onnxruntime", warmup=2, repeats=5, threads=1)
    assert t.device == "onnxruntime" and "onnxruntime" in t.device_name
    assert set(t.entries) == set(ToySpace(depth=1).latency_parts((3, 8, 8), 10))
    rng = np.random.default_rng(0)
    assert t.predict(ToySpace(depth=1), ToySpace(depth=1).sample(rng)) > 0
