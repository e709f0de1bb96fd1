"""One registry for spaces, strategies, evaluators, runners and datasets; strategy/space and
evaluator/space capabilities, checked before a run directory exists; the support matrix of
``nasforge list``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nasforge.data import dataset_names, load_dataset
from nasforge.data.datasets import DATASETS
from nasforge.errors import ConfigError, DataError
from nasforge.evaluators import EVALUATORS, evaluator_names, make_evaluator
from nasforge.pipeline import resolve_config
from nasforge.registry import Registry, check_supported, support_matrix
from nasforge.runners import RUNNERS, RunnerConfig, make_runner
from nasforge.spaces import SPACES, get_space_class, make_space, space_names
from nasforge.strategies import STRATEGIES, SampleStrategy, Strategy, get_strategy_class, make_strategy, strategy_names

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: a user's space with a rule across its choices and no decision order that keeps it
RULED_SOURCE = '''
from nasforge.errors import ArchError
from nasforge.spaces.base import OpChoice, SearchSpace


class Ruled(SearchSpace):
    """Two ops that must differ."""

    name = "ruled"

    def choices(self):
        return {"a": OpChoice("a", ("x", "y")), "b": OpChoice("b", ("x", "y"))}

    def check_consistency(self, arch):
        if arch["a"] == arch["b"]:
            raise ArchError("a and b must differ")
'''


@pytest.fixture(scope="module")
def ruled(tmp_path_factory) -> str:
    """A space reference (file.py:Ruled) to ``RULED_SOURCE``, outside every test's tmp_path."""
    path = tmp_path_factory.mktemp("user") / "ruled.py"
    path.write_text(RULED_SOURCE)
    return f"{path}:Ruled"


# --------------------------------------------------------------------------- the Registry class
def test_registry_register_forms_names_and_descriptions():
    reg: Registry = Registry("widget")

    @reg.register
    class Named:
        name = "b"
        description = "from the class"

    @reg.register("a", description="given")
    def make_a():
        return "a"

    reg.register("c", len)
    assert reg.names() == ["a", "b", "c"] == list(reg)
    assert reg.get("a") is make_a and reg.get("b") is Named and reg.get("c") is len
    assert reg.description("a") == "given" and reg.description("b") == "from the class" and reg.description("c") == ""
    assert "a" in reg and "z" not in reg and 3 not in reg and len(reg) == 3
    reg.register("a", max)  # a name registered again replaces the earlier entry
    assert reg.get("a") is max and len(reg) == 3
    with pytest.raises(ValueError, match="needs a name"):
        reg.register(object())


def test_registry_unknown_name_is_one_line_listing_the_names():
    reg: Registry = Registry("widget")
    reg.register("x", 1)
    reg.register("y", 2)
    with pytest.raises(ConfigError) as info:
        reg.get("nope")
    assert str(info.value) == "unknown widget 'nope'; choose one of ['x', 'y']"
    with pytest.raises(ConfigError):
        reg.description("nope")
    with pytest.raises(ConfigError):
        reg.get(["unhashable"])  # type: ignore[arg-type]
    with pytest.raises(DataError, match="unknown thing 'q'"):
        Registry("thing", error=DataError).get("q")


def _unknown_runner():
    cfg = RunnerConfig()
    cfg.name = "nope"  # past the config's own choices check: the registry is the last line
    return make_runner(cfg, print)


@pytest.mark.parametrize("lookup, kind, needle", [
    (lambda: get_space_class("nope"), "search space", "darts"),
    (lambda: make_space("nope"), "search space", "layers"),
    (lambda: get_strategy_class("nope"), "strategy", "reinforce"),
    (lambda: make_strategy("nope"), "strategy", "gdas"),
    (lambda: make_evaluator("nope", {}, None), "evaluator", "synthetic"),
    (_unknown_runner, "runner", "local"),
])
def test_every_kind_reports_unknown_names_the_same_way(lookup, kind, needle):
    with pytest.raises(ConfigError) as info:
        lookup()
    msg = str(info.value)
    assert msg.startswith(f"unknown {kind} 'nope'; choose one of [") and needle in msg and "\n" not in msg


def test_unknown_dataset_keeps_its_data_error():
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet22k'; choose one of \['cifar10', 'cifar100', "
                       r"'digits', 'imagefolder', 'imagenet', 'imagenet16', 'npz', 'synthetic', 'tiny-imagenet'\]"):
        load_dataset("imagenet22k")


def test_public_wrappers_read_the_registries():
    assert space_names() == SPACES.names() and {"darts", "layers", "nb201"} <= set(space_names())
    assert strategy_names() == STRATEGIES.names() and {"random", "reinforce", "metaqnn"} <= set(strategy_names())
    assert evaluator_names() == EVALUATORS.names() == ["synthetic", "table", "train"]
    assert dataset_names() == DATASETS.names() == ["cifar10", "cifar100", "digits", "imagefolder", "imagenet",
                                                   "imagenet16", "npz", "synthetic", "tiny-imagenet"]
    assert RUNNERS.names() == ["local", "ray"]
    assert SPACES.description("layers") == get_space_class("layers").description
    assert STRATEGIES.description("reinforce") == get_strategy_class("reinforce").description
    assert all(DATASETS.description(n) for n in dataset_names())
    assert load_dataset(" Synthetic ").name == "synthetic"  # names are case- and space-insensitive, as before


# --------------------------------------------------------------------------- capabilities
def test_base_strategy_supports_every_space():
    class Plain(Strategy):
        name = "plain"

    assert Plain.supports(make_space("darts")) is None and Strategy.supports(object()) is None
    check_supported(Plain, make_space("layers"))  # no error
    check_supported(object(), make_space("layers"))  # no supports method: supports everything


@pytest.mark.parametrize("name", ["reinforce", "metaqnn"])
def test_rl_strategies_search_every_space_but_cross_choice_rules_without_a_decision_order(name, ruled):
    cls = get_strategy_class(name)
    for space in ("layers", "darts", "nb201", "mbconv", "dense"):
        assert cls.supports(make_space(space)) is None
    reason = cls.supports(make_space(ruled))
    assert reason and "\n" not in reason
    assert f"strategy '{name}'" in reason and "'ruled'" in reason and "cross-choice rules" in reason
    assert "no decision order" in reason
    with pytest.raises(ConfigError) as info:
        check_supported(cls, make_space(ruled))
    assert str(info.value) == reason


def test_reinforce_needs_conv_layers():
    reason = get_strategy_class("reinforce").supports(make_space("layers", types=["fc", "gap"], image_size=4))
    assert reason and "no 'conv'" in reason
    assert get_strategy_class("metaqnn").supports(make_space("layers", types=["fc", "gap"], image_size=4)) is None


@pytest.mark.parametrize("name", ["random", "evolution"])
def test_generic_sample_strategies_search_any_space(name):
    assert all(get_strategy_class(name).supports(make_space(s)) is None for s in space_names())


def test_table_evaluator_needs_an_arch_string_form():
    table = EVALUATORS.get("table")
    assert table.supports(make_space("nb201")) is None
    reason = table.supports(make_space("darts"))
    assert reason and "arch string form" in reason and "'darts'" in reason and "--space nb201" in reason
    assert EVALUATORS.get("train").supports(make_space("darts")) is None
    assert EVALUATORS.get("synthetic").supports(make_space("layers")) is None


def test_sample_search_checks_the_space_before_anything_runs(ruled):
    with pytest.raises(ConfigError, match="cross-choice rules"):
        make_strategy("reinforce").search(make_space(ruled), None, evaluator=lambda arch: {"objective": 0.0})


# --------------------------------------------------------------------------- resolve_config
def test_resolve_rejects_an_incompatible_strategy_and_space(ruled):
    with pytest.raises(ConfigError) as info:
        resolve_config({"space": {"name": ruled}, "strategy": {"name": "reinforce"}})
    assert "cross-choice rules" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="metaqnn"):
        resolve_config({"space": {"name": ruled}, "strategy": {"name": "metaqnn"}})
    with pytest.raises(ConfigError, match="densenas"):
        resolve_config({"space": {"name": "nb201"}, "strategy": {"name": "densenas"}})
    assert resolve_config({"space": {"name": "dense"}, "strategy": {"name": "metaqnn"}}).space["name"] == "dense"
    cfg = resolve_config({"space": {"name": "layers"}, "strategy": {"name": "reinforce"}})
    assert cfg.strategy["name"] == "reinforce"
    assert resolve_config({"space": {"name": "nb201"}, "strategy": {"name": "metaqnn"}}).space["name"] == "nb201"


def test_resolve_without_a_search_does_not_check_the_strategy(ruled):
    """`nasforge train` and resuming a run whose search is done give the architecture: no search."""
    cfg = resolve_config({"space": {"name": ruled}, "strategy": {"name": "reinforce"}}, search=False)
    assert cfg.space["name"] == ruled


def test_resolve_rejects_the_table_evaluator_on_a_space_without_arch_strings(tmp_path):
    table = str(tmp_path / "table.csv")  # not read while resolving
    raw = {"space": {"name": "darts"}, "strategy": {"name": "random"}, "evaluator": {"name": "table", "path": table}}
    with pytest.raises(ConfigError, match="arch string form"):
        resolve_config(raw)
    resolve_config({**raw, "space": {"name": "nb201"}})
    resolve_config({**raw, "strategy": {"name": "gdas"}})  # one-shot strategies do not use the evaluator


def test_a_strategy_override_of_supports_reaches_resolve_and_the_matrix(monkeypatch):
    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))

    @dataclass
    class NoOptions:
        pass

    @STRATEGIES.register
    class OnlyNb201(SampleStrategy):
        name = "only-nb201"
        Config = NoOptions

        @classmethod
        def supports(cls, space):
            return None if space.name == "nb201" else f"strategy 'only-nb201' needs nb201, not '{space.name}'"

    matrix = support_matrix()
    assert [s for s, reason in matrix["only-nb201"].items() if reason is None] == ["nb201"]
    with pytest.raises(ConfigError, match="needs nb201, not 'darts'"):
        resolve_config({"space": {"name": "darts"}, "strategy": {"name": "only-nb201"}})


def test_support_matrix_covers_every_strategy_and_space():
    matrix = support_matrix()
    assert list(matrix) == strategy_names()
    for strategy, row in matrix.items():
        assert list(row) == space_names()
        for space, reason in row.items():
            assert reason == get_strategy_class(strategy).supports(make_space(space))
    assert matrix["reinforce"]["layers"] is None and matrix["reinforce"]["darts"] is None
    assert matrix["reinforce"]["dense"] is None and matrix["metaqnn"]["dense"] is None
    assert matrix["densenas"]["nb201"] and matrix["darts"]["dense"]
    assert matrix["random"] == {s: None for s in space_names()}


# --------------------------------------------------------------------------- the CLI
def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    return env


def _nasforge(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nasforge.cli", *[str(a) for a in args]], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=120)


def test_cli_incompatible_pair_fails_before_creating_the_run_directory(tmp_path: Path, ruled):
    target = tmp_path / "x"
    proc = _nasforge("search", "--space", ruled, "--strategy", "reinforce", "--data", "synthetic",
                     "--out", target, "-q", cwd=tmp_path)
    err = ANSI.sub("", proc.stderr)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "reinforce" in lines[0] and "cross-choice rules" in lines[0]
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no default runs/ folder either


def _parse_matrix(out: str) -> dict[str, dict[str, bool]]:
    """The strategy x space grid of `nasforge list` as strategy -> space -> checked."""
    rows = [line for line in out.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(rows) if line.startswith("strategy x space"))
    cells = [[c.strip() for c in re.split(r"[│┃|]", line)[1:-1]] for line in rows[start + 1:]
             if re.match(r"^\s*[│┃|]", line)]
    header, body = cells[0], cells[1:]
    assert header[0] == "strategy"
    return {row[0]: {space: bool(mark) for space, mark in zip(header[1:], row[1:])} for row in body}


def test_list_prints_the_support_matrix(capsys, monkeypatch):
    from nasforge.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["nasforge", "list"])
    capsys.readouterr()
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    out = ANSI.sub("", capsys.readouterr().out)
    printed = _parse_matrix(out)
    expected = {s: {space: reason is None for space, reason in row.items()} for s, row in support_matrix().items()}
    assert printed == expected
    for name in ("local", "ray"):
        assert re.search(rf"runner\W+{name}", out)
