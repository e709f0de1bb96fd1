"""Every registered preset resolves into a valid run config (its keys and values are the options'
own), applies under the config and --set, and a missing pair names the pairs that exist. Each
method's tests run one step of its presets."""

from __future__ import annotations

import pytest

from nasforge.errors import ConfigError
from nasforge.pipeline import resolve_config
from nasforge.presets import PRESETS, apply_preset, find_preset, flatten, preset_names

preset_names()  # loads every strategy's presets
# HAQ's presets configure `nasforge quantize`, not a search: tests/test_haq.py resolves and runs them
ALL = sorted(k for k in PRESETS if k[1] != "haq")


def test_there_are_paper_presets_for_the_methods() -> None:
    methods = {strategy for name, strategy, _ in ALL if name == "paper"}
    assert {"darts"} <= methods


@pytest.mark.parametrize("key", ALL, ids=["/".join(k) for k in ALL])
def test_a_preset_resolves_to_its_settings(key) -> None:
    name, strategy, dataset = key
    preset = PRESETS[key]
    raw = {"preset": name, "strategy": {"name": strategy}, "data": {"name": dataset}}
    if "space" in preset.settings and "name" not in preset.settings["space"]:
        raw["space"] = {"name": preset.settings["space"].get("name", "darts")}
    cfg = resolve_config(raw)
    assert cfg.preset == name
    resolved = {"strategy": cfg.strategy, "train": vars(cfg.train), "data": vars(cfg.data), "space": cfg.space,
                "evaluator": cfg.evaluator, "trials": vars(cfg.trials), "latency": vars(cfg.latency),
                "engine": vars(cfg.engine)}
    for path, value in flatten(preset.settings).items():
        section, *rest = path.split(".")
        if section not in resolved or len(rest) != 1:
            continue
        assert resolved[section].get(rest[0]) == value, path


def test_the_config_and_set_win_over_a_preset() -> None:
    preset = find_preset("paper", "darts", "cifar10")
    merged = apply_preset({"strategy": {"name": "darts", "epochs": 3}}, preset)
    assert merged["strategy"]["epochs"] == 3 and merged["strategy"]["order"] == 2
    cfg = resolve_config({"preset": "paper", "strategy": {"name": "darts"}, "data": {"name": "cifar10"}},
                         [(["strategy", "epochs"], 7)])
    assert cfg.strategy["epochs"] == 7 and cfg.train.epochs == 600


def test_a_missing_pair_names_the_pairs_that_exist() -> None:
    with pytest.raises(ConfigError, match="darts/cifar10"):
        find_preset("paper", "random", "digits")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        find_preset("fast", "darts", "cifar10")
