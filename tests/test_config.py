"""Typed run configuration: unknown names, wrong types, ranges, --set parsing and profile defaults."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from nasforge.config import apply_override, parse_override, read_yaml
from nasforge.errors import ConfigError
from nasforge.pipeline import RunConfig, config_dict, resolve_config
from nasforge.profiles import PROFILES


def bad(raw=None, overrides=(), *needles: str) -> str:
    """``resolve_config`` must raise a one-line ConfigError that contains every needle."""
    with pytest.raises(ConfigError) as info:
        resolve_config(raw, list(overrides))
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert "\n" not in msg
    return msg


def sets(*texts: str) -> list:
    return [parse_override(t) for t in texts]


# --------------------------------------------------------------------------- defaults
def test_defaults_resolve():
    cfg = resolve_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.seed == 0
    assert cfg.data.name == "digits"
    assert cfg.space == {"name": "darts"}
    assert cfg.strategy["name"] == "gdas"
    assert cfg.strategy["order"] == 1
    assert cfg.latency.device == "cpu"


def test_resolved_config_round_trips():
    """config.yaml holds config_dict(cfg); resume resolves it again and must get the same run."""
    cfg = resolve_config({"data": {"name": "synthetic"}, "space": {"nodes": 2}}, sets("train.lr=0.1", "seed=7"))
    d = config_dict(cfg)
    assert config_dict(resolve_config(copy.deepcopy(d))) == d


def test_raw_config_is_not_mutated():
    raw = {"train": {"lr": 0.1}, "strategy": {"epochs": 3}}
    before = copy.deepcopy(raw)
    resolve_config(raw, sets("train.lr=0.2", "strategy.epochs=4", "data.name=synthetic"))
    assert raw == before


# --------------------------------------------------------------------------- unknown names
def test_unknown_section():
    bad({"trian": {"lr": 0.1}}, (), "trian", "train", "strategy")


def test_section_must_be_a_mapping():
    bad({"train": 5}, (), "train", "mapping")


@pytest.mark.parametrize(
    "section, valid_key",
    [("data", "valid_fraction"), ("train", "batch_size"), ("latency", "repeats"), ("strategy", "epochs")],
)
def test_unknown_key_in_section_names_it_and_lists_valid_keys(section, valid_key):
    bad({section: {"bogus_key": 1}}, (), f"{section}.bogus_key", valid_key)


def test_unknown_space_option_names_it_and_lists_valid_ones():
    bad({"space": {"name": "darts", "bogus_key": 1}}, (), "bogus_key", "nodes")


def test_unknown_strategy():
    bad({"strategy": {"name": "no_such_strategy"}}, (), "no_such_strategy", "darts")


def test_unknown_space():
    bad({"space": {"name": "no_such_space"}}, (), "no_such_space", "darts")


def test_unknown_dataset():
    bad({"data": {"name": "imagenet22k"}}, (), "imagenet22k", "cifar10", "digits", "synthetic", "imagefolder")


# --------------------------------------------------------------------------- types
@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.lr=fast", "train.lr"),
        ("train.epochs=ten", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.auxiliary=maybe", "train.auxiliary"),
        ("latency.batch_size=[1, 2]", "latency.batch_size"),
        ("data.valid_fraction=[0.1]", "data.valid_fraction"),
        ("strategy.w_lr=abc", "strategy.w_lr"),
        ("seed=abc", "seed"),
        ("latency.batch_size=true", "latency.batch_size"),
    ],
)
def test_wrong_type(override, needle):
    bad(None, sets(override), needle)


def test_null_is_rejected_for_non_auto_fields():
    bad(None, sets("train.lr="), "train.lr", "must not be empty")


def test_values_are_coerced():
    cfg = resolve_config(None, sets("train.epochs=3.0", "train.lr=1", "train.auxiliary=yes", "seed=5",
                                    "data.name=synthetic"))
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.auxiliary is True
    assert cfg.seed == 5


# --------------------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    "override, needle",
    [
        ("strategy.order=3", "strategy.order=3"),
        ("train.lr=-1", "train.lr"),
        ("strategy.layers=1", "strategy.layers"),
        ("strategy.epochs=-3", "strategy.epochs"),
        ("strategy.epochs=0", "strategy.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("train.drop_path=0.95", "train.drop_path"),
        ("data.valid_fraction=1.0", "data.valid_fraction"),
        ("latency.device=tpu", "latency.device"),
        ("train.train_on=test", "train.train_on"),
        ("seed=-1", "seed"),
        ("space.nodes=0", "nodes"),
        ("space.nodes=9", "nodes"),
        ("train.grad_clip=.inf", "train.grad_clip"),
    ],
)
def test_out_of_range(override, needle):
    msg = bad(None, sets(override), needle)
    assert "range" in msg or "allowed" in msg or "use" in msg


def test_order_lists_the_allowed_values():
    bad(None, sets("strategy.name=darts", "strategy.order=3"), "[1, 2]")


def test_range_message_gives_the_bounds():
    bad(None, sets("train.lr=-1"), "[0.0, 10.0]")


@pytest.mark.parametrize("override", ["train.lr=.nan", "train.lr=nan", "strategy.a_lr=.nan", "latency.batch_size=.nan"])
def test_nan_is_out_of_range(override):
    """NaN compares False with both bounds, so a plain lo/hi check lets it through."""
    bad(None, sets(override))


def test_boundaries_are_inclusive():
    cfg = resolve_config(None, sets("strategy.name=darts", "strategy.layers=3", "train.lr=0", "train.momentum=1", "strategy.order=2"))
    assert cfg.strategy["layers"] == 3 and cfg.strategy["order"] == 2
    assert cfg.train.lr == 0.0 and cfg.train.momentum == 1.0


# --------------------------------------------------------------------------- --set parsing
def test_parse_override_types():
    assert parse_override("strategy.epochs=10") == (["strategy", "epochs"], 10)
    assert parse_override("train.lr=0.05") == (["train", "lr"], 0.05)
    assert parse_override("train.auxiliary=true") == (["train", "auxiliary"], True)
    assert parse_override("data.name=synthetic") == (["data", "name"], "synthetic")
    assert parse_override("seed=3") == (["seed"], 3)
    assert parse_override(" train.layers = 4") == (["train", "layers"], 4)
    assert parse_override("train.cutout=") == (["train", "cutout"], None)
    assert parse_override("train.cutout=null") == (["train", "cutout"], None)


def test_parse_override_splits_on_the_first_equals_sign():
    assert parse_override("data.dir=/a/b=c") == (["data", "dir"], "/a/b=c")


def test_parse_override_keeps_invalid_yaml_as_text():
    assert parse_override("data.dir=[oops") == (["data", "dir"], "[oops")


@pytest.mark.parametrize("text", ["strategy.epochs", "=3", ".=3", ""])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_apply_override_creates_sections_and_refuses_to_descend_into_values():
    data = {"seed": 1}
    apply_override(data, ["train", "lr"], 0.1)
    assert data == {"seed": 1, "train": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="seed"):
        apply_override(data, ["seed", "x"], 2)


def test_overrides_win_over_the_file():
    raw = {"train": {"lr": 0.1, "epochs": 3}}
    cfg = resolve_config(raw, sets("train.lr=0.2"))
    assert cfg.train.lr == 0.2 and cfg.train.epochs == 3


def test_set_unknown_section_is_rejected():
    bad(None, sets("trainn.lr=0.1"), "trainn")


# --------------------------------------------------------------------------- profiles ("auto")
def test_auto_fields_follow_the_dataset_profile():
    digits = resolve_config({"data": {"name": "digits"}})
    cifar = resolve_config({"data": {"name": "cifar10"}})
    synthetic = resolve_config({"data": {"name": "synthetic"}})
    assert digits.train.layers == PROFILES["digits"]["train"]["layers"] == 6
    assert cifar.train.layers == PROFILES["cifar10"]["train"]["layers"] == 20
    assert synthetic.train.layers == PROFILES["synthetic"]["train"]["layers"]
    assert digits.train.layers != cifar.train.layers
    assert cifar.train.channels == 36 and cifar.train.auxiliary is True and cifar.train.cutout == 16
    assert digits.train.auxiliary is False and digits.train.cutout == 0
    assert digits.strategy["epochs"] == PROFILES["digits"]["search"]["epochs"] and cifar.strategy["epochs"] == 50
    assert cifar.strategy["layers"] == 8 and synthetic.strategy["channels"] == PROFILES["synthetic"]["search"]["channels"]
    for cfg in (digits, cifar, synthetic):  # nothing is left "auto"
        assert None not in (cfg.train.epochs, cfg.train.batch_size, cfg.train.layers, cfg.train.channels,
                            cfg.train.cutout, cfg.train.drop_path, cfg.train.auxiliary)
        assert None not in (cfg.strategy["epochs"], cfg.strategy["batch_size"],
                            cfg.strategy["layers"], cfg.strategy["channels"])


def test_explicit_values_win_over_the_profile():
    cfg = resolve_config({"data": {"name": "cifar10"}},
                         sets("train.layers=4", "train.auxiliary=false", "train.cutout=0", "train.drop_path=0",
                              "strategy.epochs=2", "strategy.layers=5"))
    assert cfg.train.layers == 4
    assert cfg.train.auxiliary is False  # a falsy explicit value is not "auto"
    assert cfg.train.cutout == 0
    assert cfg.train.drop_path == 0.0
    assert cfg.strategy["epochs"] == 2 and cfg.strategy["layers"] == 5
    assert cfg.train.channels == 36  # untouched auto fields still come from the profile


def test_explicit_null_means_auto():
    cfg = resolve_config({"data": {"name": "cifar10"}, "train": {"layers": None}})
    assert cfg.train.layers == 20


# --------------------------------------------------------------------------- YAML files
def test_read_yaml(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("seed: 3\ntrain:\n  lr: 0.1\n")
    assert read_yaml(good) == {"seed": 3, "train": {"lr": 0.1}}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml(empty) == {}


def test_read_yaml_malformed(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML at line") as info:
        read_yaml(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_yaml_missing_and_not_a_mapping(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(path)
