"""The model zoo: every published network's parameter count against its paper, the spaces that
build them, and the ``nasforge zoo`` / ``nasforge train zoo:NAME`` commands."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from typer.testing import CliRunner

from nasforge import zoo
from nasforge.arch import Arch
from nasforge.cli import app, main
from nasforge.errors import ConfigError
from nasforge.hardware import count_flops, count_params
from nasforge.spaces import get_space_class
from nasforge.spaces.darts import DartsSpace

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ENV = {"COLUMNS": "200", "TERM": "dumb", "OMP_NUM_THREADS": "1"}
WITH_PAPER_PARAMS = [name for name, e in zoo.ENTRIES.items() if e.paper_params is not None]
WITH_PAPER_MACS = [name for name, e in zoo.ENTRIES.items() if e.paper_macs is not None]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env=ENV)
    return result.exit_code, ANSI.sub("", result.output), result


# --- fidelity: each network against its paper -------------------------------------------------
@pytest.mark.parametrize("name", WITH_PAPER_PARAMS)
def test_params_match_the_paper(name):
    entry = zoo.get_entry(name)
    params = count_params(entry.build())
    assert abs(params - entry.paper_params) <= entry.params_tolerance, (name, params, entry.paper_params)


def test_exact_counts():
    """The counts that are exact: DARTS V2 of the official network, ProxylessNAS of the official configs
    (their training logs print 7.12M, 4.36M and 4.08M)."""
    assert count_params(zoo.get_entry("darts-v2").build()) == 3_349_342
    got = {k: count_params(zoo.get_entry(f"proxylessnas-{k}").build()) for k in ("gpu", "cpu", "mobile")}
    assert got == {"gpu": 7_119_848, "cpu": 4_361_648, "mobile": 4_080_512}
    assert {k: round(v / 1e6, 2) for k, v in got.items()} == {"gpu": 7.12, "cpu": 4.36, "mobile": 4.08}


@pytest.mark.parametrize("name", WITH_PAPER_MACS)
def test_multiply_adds_match_the_paper(name):
    """DenseNAS gives FLOPs (multiply-adds) only: A 251M, B 314M, C 361M; ProxylessNAS's logs 465.3M/439.2M/320.4M."""
    entry = zoo.get_entry(name)
    macs = count_flops(entry.build(), entry.input_shape) // 2
    assert abs(macs - entry.paper_macs) <= entry.macs_tolerance, (name, macs, entry.paper_macs)


def test_every_entry_names_its_sources():
    for entry in zoo.ENTRIES.values():
        assert entry.paper and entry.source and entry.how and entry.note
        assert entry.paper_params is not None or entry.paper_macs is not None, entry.name
    assert set(zoo.LEFT_OUT) == {"darts-plus"}


@pytest.mark.parametrize("name,genotype", [("darts-v1", zoo.DARTS_V1), ("darts-v2", zoo.DARTS_V2),
                                           ("gdas", zoo.GDAS_V1)])
def test_cell_networks_are_darts_space_genotypes(name, genotype):
    arch = zoo.get_entry(name).arch()
    assert arch.space == "darts"
    Arch.from_json(arch.to_json())  # a valid darts arch
    back = DartsSpace().genotype(arch)
    for cell in ("normal", "reduce"):
        for node in range(4):
            pair = lambda gene: sorted(map(tuple, gene[2 * node: 2 * node + 2]))  # noqa: E731
            assert pair(getattr(back, cell)) == pair(genotype[cell]), (name, cell, node)


def test_spaces_of_the_entries():
    assert {zoo.get_entry(f"proxylessnas-{k}").space for k in ("gpu", "cpu", "mobile")} == {"mbconv"}
    assert zoo.get_entry("metaqnn-cifar10").space == "layers"
    for name in ("densenas-a", "densenas-b", "densenas-c"):
        arch = zoo.get_entry(name).arch()
        assert arch.space == zoo.ZOO_SPACE and get_space_class(arch.space) is zoo.ZooSpace
    mobile = zoo.get_entry("proxylessnas-mobile").arch()
    assert mobile["stage0.layer2"] == "zero" and mobile["mix.width"] == 1280
    # the DenseNAS paths exist in the dense space's ImageNet preset (only the head ops are not expressible)
    from nasforge.spaces.dense import PRESETS

    widths = PRESETS["imagenet"]["widths"]
    for blocks in zoo.DENSENAS.values():
        assert all(c_out in widths for (_, c_out), *_ in blocks)


def test_nasrl_network_has_the_figures_skip_connections():
    """Figure 7's 15 layers, each reading the concatenation of its inputs; the paper's 4.2M needs the global
    pooling before the softmax (a classifier on the flattened 48x32x32 map would add 491,040 params)."""
    from nasforge.spaces.layers import LayerSpace

    arch = zoo.get_entry("nasrl-cifar10").arch()
    assert arch.space == "layers" and arch["space.skips"] == 1
    layers = LayerSpace.for_arch(arch).layers_of(arch)
    assert [l.type for l in layers] == ["conv"] * 15 + ["gap"]
    assert [(l.kernel_h, l.kernel_w, l.filters) for l in layers[:15]] == zoo.NASRL_LAYERS
    assert layers[9].inputs == (0, 2, 3, 4, 5, 6, 7, 8)  # layer 10 reads layers 1, 3-9
    assert sum(len(l.inputs) for l in layers[:15]) == sum(len(r) for r in zoo.NASRL_INPUTS) - 1  # the image: ()
    net = zoo.get_entry("nasrl-cifar10").build()
    assert count_params(net) == 4_201_630 and net.classifier.in_features == 48


def test_metaqnn_network_fits_other_image_sizes():
    entry = zoo.get_entry("metaqnn-cifar10")
    arch = entry.arch((1, 8, 8))
    assert arch["space.image_size"] == 8
    net = get_space_class("layers").for_arch(arch).build(arch, (1, 8, 8), 10)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_name_lists_the_names():
    with pytest.raises(ConfigError, match=r"unknown zoo network 'resnet'; choose one of \['darts-v1'"):
        zoo.get_entry("resnet")


# --- the commands ------------------------------------------------------------------------------
def test_zoo_list():
    code, out, _ = invoke("zoo", "list")
    assert code == 0
    for name in zoo.names():
        assert name in out
    assert "left out" in out and "darts-plus" in out


def test_zoo_build_prints_the_summary():
    code, out, _ = invoke("zoo", "build", "darts-v2")
    assert code == 0
    assert "3,349,342" in out and "quark0/darts" in out and "darts space" in out


def test_zoo_build_out_writes_arch_json(tmp_path):
    code, out, _ = invoke("zoo", "build", "proxylessnas-mobile", "--out", str(tmp_path / "m"))
    assert code == 0, out
    arch = Arch.from_json(tmp_path / "m" / "arch.json")
    assert arch == zoo.get_entry("proxylessnas-mobile").arch()
    info = json.loads((tmp_path / "m" / "zoo.json").read_text())
    assert info["params"] == 4_080_512 and info["paper_macs"] == 320_400_000
    net = get_space_class(arch.space).for_arch(arch).build(arch, (3, 224, 224), 1000)
    assert count_params(net) == 4_080_512
    code, _, result = invoke("zoo", "build", "proxylessnas-mobile", "--out", str(tmp_path / "m"))
    assert code != 0 and "exists" in str(result.exception)  # kept without --force


def _main(capsys, *args):
    argv = sys.argv
    sys.argv = ["nasforge", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, ANSI.sub("", out), ANSI.sub("", err)


@pytest.mark.parametrize("args", [("zoo", "build", "resnet"), ("train", "zoo:resnet", "--data", "synthetic")])
def test_unknown_name_is_one_error_line(capsys, args):
    code, _, err = _main(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown zoo network 'resnet'; choose one of")
    assert all(name in lines[0] for name in zoo.names())


def test_train_zoo_cell_network(tmp_path):
    """``train zoo:darts-v2`` trains the DARTS V2 cells; --set shrinks the paper's 20 cells of 36 channels."""
    out = tmp_path / "run"
    code, text, result = invoke("train", "zoo:darts-v2", "--data", "synthetic", "--epochs", "1", "-q",
                                "--set", "train.layers=3", "--set", "train.channels=4", "--out", str(out))
    assert code == 0, (text, result.exception)
    arch = Arch.from_json(out / "arch.json")
    assert arch == zoo.get_entry("darts-v2").arch()
    res = json.loads((out / "result.json").read_text())
    expected = DartsSpace().build(arch, (1, 8, 8), 10, layers=3, channels=4)
    assert res["params"] == count_params(expected) and 0.0 <= res["test_acc"] <= 1.0
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["train"]["layers"], config["train"]["channels"]) == (3, 4)  # --set wins over the paper's 20/36


def test_train_overrides_carry_the_paper_network():
    entry = zoo.get_entry("darts-v2")
    assert zoo.train_overrides(entry, entry.arch()) == [(["train", "layers"], 20), (["train", "channels"], 36)]
    entry = zoo.get_entry("proxylessnas-gpu")
    overrides = dict((tuple(k), v) for k, v in zoo.train_overrides(entry, entry.arch()))
    assert overrides[("space", "widths")] == [32, 56, 112, 128, 256, 432] and overrides[("space", "mix")] == 1728
    from nasforge.spaces import make_space

    space = make_space("mbconv", **{k[1]: v for k, v in overrides.items()})
    space.validate(entry.arch())  # the options rebuild the arch's space


def test_train_zoo_direct_network(tmp_path):
    """A network built in zoo.py (DenseNAS-C) trains and reloads through its ZooSpace arch."""
    from nasforge.train import load_model

    out = tmp_path / "run"
    code, text, result = invoke("train", "zoo:densenas-c", "--data", "synthetic", "--epochs", "1", "-q",
                                "--set", "train.batch_size=120", "--out", str(out))
    assert code == 0, (text, result.exception)
    model, arch, shape = load_model(out / "model.pt")
    assert arch.space == zoo.ZOO_SPACE and arch["network"] == "densenas-c" and shape == (1, 8, 8)
    assert count_params(model) == count_params(zoo.densenas_network("c", (1, 8, 8), 10))
