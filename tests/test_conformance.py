"""Every (strategy, space) pair that ``nasforge list`` marks as supported runs a few steps, and
every pair it leaves out is refused in one line naming the missing capability.

The matrix is computed from the strategies' ``supports`` (a capability check), so this test is
what keeps the table in ``nasforge list`` (and the README) true. Spaces: the five built-in ones
and the custom-space example (``examples/my_cnn.py``), with tiny sizes; data: the synthetic set;
sample-based strategies use the synthetic evaluator; ProxylessNAS and DenseNAS use tables made
from the spaces' own latency parts (made-up values: no timing).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nasforge.data import synthetic_dataset
from nasforge.errors import ConfigError
from nasforge.evaluators import make_evaluator
from nasforge.hardware.lut import LatencyTable, space_fingerprint
from nasforge.registry import check_supported, support_matrix
from nasforge.spaces import make_space
from nasforge.strategies import get_strategy_class, make_strategy, strategy_names
from test_densenas import TINY
from test_densenas import fake_table as dense_table

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "my_cnn.py") + ":MyCNN"
SPACES = {"darts": {"nodes": 2}, "nb201": {"C": 4, "N": 1}, "mbconv": {}, "dense": TINY, "layers": {},
          EXAMPLE: {}}
#: the pairs the README promises (issue acceptance): anything less is a regression
PROMISED = {(s, sp) for s in ("darts", "gdas", "proxyless") for sp in ("darts", "nb201", "mbconv", EXAMPLE)} | \
    {("densenas", "dense")} | {(s, sp) for s in ("random", "evolution") for sp in SPACES} | \
    {(s, sp) for s in ("reinforce", "metaqnn") for sp in SPACES}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(num_samples=96, seed=0)


def module_table(space, data, path) -> str:
    """A table over the space's own latency parts (candidates + rest) with made-up values."""
    entries = {key: 0.01 * (1 + i % 7) for i, key in enumerate(space.latency_parts(data.input_shape,
                                                                                   data.num_classes))}
    LatencyTable(space=space.name, space_version=space.version, fingerprint=space_fingerprint(space),
                 input_shape=tuple(data.input_shape), num_classes=data.num_classes, device="cpu",
                 device_name="test", batch_size=1, threads=1, overhead_ms=0.02, entries=entries,
                 created=time.time()).save(path)
    return str(path)


def _pairs():
    return [(s, sp) for s in strategy_names() if get_strategy_class(s).kind in ("oneshot", "sample")
            for sp in SPACES]


@pytest.mark.parametrize("strategy, space_name", _pairs())
def test_pair_runs_or_is_refused_in_one_line(strategy, space_name, data, tmp_path):
    space = make_space(space_name, **SPACES[space_name])
    cls = get_strategy_class(strategy)
    reason = cls.supports(space)
    if (strategy, space_name) in PROMISED:
        assert reason is None, reason
    if reason is not None:
        with pytest.raises(ConfigError) as err:
            check_supported(cls, space)
        assert "\n" not in str(err.value) and strategy in str(err.value)
        return
    if cls.kind == "sample":
        options = {"batch": 2} if strategy == "reinforce" else {}
        s = make_strategy(strategy, options, "synthetic")
        evaluator = make_evaluator("synthetic", {}, space, data)
        result = s.search(space, data, evaluator=evaluator, budget=4, seed=0)
    else:
        options, latency = {"epochs": 1, "batch_size": 32}, None
        if strategy in ("darts", "gdas"):
            options.update(layers=3, channels=4)
        if strategy == "proxyless":
            options.update(warmup_epochs=0)
            latency = {"table": module_table(space, data, tmp_path / "t.json"), "loss": "add"}
        if strategy == "densenas":
            options.update(warmup_fraction=0.0)
            latency = {"table": str(dense_table(space, tmp_path / "t.json"))}
        s = make_strategy(strategy, options, "synthetic", latency=latency)
        result = s.search(space, data, seed=0)
        assert result.history and result.history[-1]["arch_weights"]
    space.validate(result.arch)
    net = space.build(result.arch, data.input_shape, data.num_classes)
    assert net(data.x_train[:2]).shape == (2, data.num_classes)


def test_list_shows_the_same_matrix():
    from typer.testing import CliRunner

    from nasforge.cli import app

    out = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"}).output
    matrix = support_matrix()
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    for strategy, by_space in matrix.items():
        cells = [c.strip() for c in rows[strategy].split("│")[2:-1]]
        assert cells == ["✓" if by_space[sp] is None else "" for sp in sorted(by_space)], strategy
