"""Choice modules (nasforge.nn), the relaxation, users' own spaces and docs/custom-spaces.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.nn import Choose, InputChoice, NodeChoice, OpChoice, Paths, ValueChoice, choice_modules, declarations, \
    fixed_arch
from nasforge.oneshot.relax import Relaxation
from nasforge.spaces import make_space
from nasforge.spaces.darts import PRIMITIVES, derive_cell, num_edges
from test_cli import run_main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "custom-spaces.md"


class Net(nn.Module):
    """Two layers sharing one op label, an input choice and a value choice."""

    def __init__(self):
        super().__init__()
        ops = lambda: {"lin": nn.Linear(4, 4), "tanh": nn.Tanh(), "zero": nn.Identity()}  # noqa: E731
        self.a = OpChoice("op", ops())
        self.b = OpChoice("op", ops())  # the same decision as self.a
        self.pick = InputChoice("pick", 3, 1)
        self.c = Choose(lambda width: nn.Sequential(nn.Linear(4, width), nn.Linear(width, 4)),
                        width=ValueChoice("width", [2, 8]))

    def forward(self, x):
        h = self.b(self.a(x))
        return self.c(self.pick([x, h, x * 2]))


# --------------------------------------------------------------------------- declarations and builds
def test_declarations_come_from_the_module_tree():
    decl = declarations(Net())
    assert list(decl) == ["op", "pick", "width"]
    assert decl["op"].values == ("lin", "tanh", "zero") and decl["width"].values == (2, 8)
    assert (decl["pick"].n_inputs, decl["pick"].k) == (3, 1)


def test_fixed_arch_builds_a_plain_network():
    with fixed_arch({"op": "tanh", "pick": [1], "width": 8}):
        net = Net()
    assert not choice_modules(net)
    assert isinstance(net.a, nn.Tanh) and net.c[0].out_features == 8
    x = torch.randn(3, 4)
    assert torch.allclose(net(x), net.c(torch.tanh(torch.tanh(x))))
    with pytest.raises(ArchError, match="'width'"):
        with fixed_arch({"op": "tanh", "pick": [1], "width": 5}):
            Net()
    with pytest.raises(ArchError, match="'extra' of the architecture does not exist"):
        with fixed_arch({"op": "tanh", "pick": [1], "width": 8, "extra": 1}):
            Net()


def test_one_label_is_one_alpha_and_one_decision():
    net = Net()
    relax = Relaxation(net)
    assert relax.labels == ["op", "pick", "width"]
    assert relax.alphas["op"].shape == (1, 3) and len(relax.modules["op"]) == 2
    relax.soft()
    out = net(torch.randn(5, 4))
    out.sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in relax.parameters())
    relax.hard(1.0)
    net(torch.randn(5, 4))  # both op modules read the one sample of "op"
    assert len(relax.current["op"].index) == 1


def test_choose_mixes_the_product_of_its_labels():
    c = Choose(lambda k, s: nn.Sequential(nn.Conv2d(2, 3, k, padding=k // 2), nn.Conv2d(3, 3, 1) if s else nn.Identity()),
               k=ValueChoice("k", [1, 3]), s=ValueChoice("s", [0, 1]))
    relax = Relaxation(c)
    relax.soft()
    x = torch.randn(2, 2, 5, 5)
    w = {label: F.softmax(a.detach(), -1)[0] for label, a in relax.alphas.items()}
    expected = sum(w["k"][i] * w["s"][j] * c.candidates[c.combos.index((i, j))](x) for i in range(2) for j in range(2))
    assert torch.allclose(c(x), expected, atol=1e-6)
    gates = {label: torch.tensor([[1.0, 0.0]], requires_grad=True) for label in ("k", "s")}
    relax.set({"k": Paths([1], [0], gates["k"]), "s": Paths([0], [1], gates["s"])})
    out = c(x)
    assert torch.allclose(out, c.candidates[c.combos.index((1, 0))](x), atol=1e-6)
    out.sum().backward()
    assert all(g.grad is not None for g in gates.values())


def test_node_choice_derives_by_the_darts_rule():
    rng = np.random.default_rng(0)
    node = NodeChoice("n", 3, PRIMITIVES, lambda name, j: nn.Identity(), 2)
    rows = rng.random((3, len(PRIMITIVES)))
    values = node.derive({"n": rows})
    weights = np.zeros((num_edges(2), len(PRIMITIVES)))
    weights[2:] = rows  # node 1 of a 2-node cell has 3 inputs
    gene = derive_cell(weights, 2)[2:]
    assert values["n.inputs"] == sorted(j for _, j in gene)
    assert [values["n.op0"], values["n.op1"]] == [op for op, _ in sorted(gene, key=lambda p: p[1])]


def test_darts_space_declarations_match_its_network():
    space = make_space("darts")
    assert declarations(space.supernet((3, 8, 8), 10)) == space.choices()


# --------------------------------------------------------------------------- bad input
def test_bad_choices_fail_in_one_line():
    with pytest.raises(ConfigError, match="choice 'x' has 1 candidate"):
        OpChoice("x", {"a": nn.Identity()})
    with pytest.raises(ConfigError, match="choice 'x' has 0 candidate"):
        OpChoice("x", {})
    with pytest.raises(ConfigError, match="lists a value twice"):
        ValueChoice("v", [3, 3])
    with pytest.raises(ConfigError, match="at least 2"):
        ValueChoice("v", [3])

    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = OpChoice("op", {"x": nn.Identity(), "y": nn.Tanh()})
            self.b = OpChoice("op", {"x": nn.Identity(), "z": nn.ReLU()})

    with pytest.raises(ConfigError, match="choice 'op' is used at 'b' with other candidates"):
        declarations(Clash())
    with pytest.raises(ConfigError, match="ran outside a search"):
        OpChoice("x", {"a": nn.Identity(), "b": nn.Tanh()})(torch.zeros(1))


def test_user_space_errors(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(ConfigError, match=r"broken.py failed to import \(ModuleNotFoundError"):
        make_space(f"{bad}:Net")
    with pytest.raises(ConfigError, match="does not exist"):
        make_space(f"{tmp_path / 'missing.py'}:Net")
    good = tmp_path / "plain.py"
    good.write_text("from torch import nn\n\ndef plain(num_classes=10):\n    return nn.Linear(4, num_classes)\n")
    with pytest.raises(ConfigError, match="has no 'other'"):
        make_space(f"{good}:other")
    with pytest.raises(ConfigError, match="has no choices"):
        make_space(f"{good}:plain").choices()
    with pytest.raises(ConfigError, match="no option 'depth'"):
        make_space(f"{good}:plain", depth=3)
    with pytest.raises(ConfigError, match="failed to import"):
        make_space("nasforge_no_such_package.spaces:net")


def test_arch_of_another_space_is_refused():
    space = make_space(str(ROOT / "examples" / "my_cnn.py") + ":MyCNN")
    darts_arch = make_space("darts").sample(np.random.default_rng(0))
    with pytest.raises(ArchError, match="belongs to space 'darts'"):
        space.validate(darts_arch)
    arch = space.sample(np.random.default_rng(0))
    with pytest.raises(ArchError, match="'layer9.kernel' does not exist"):
        space.validate(arch.with_choice("layer9.kernel", 3))
    assert Arch.from_dict(arch.to_dict()) == arch  # a user space's arch.json loads by its reference


def test_user_space_options_are_recorded_in_the_arch():
    ref = str(ROOT / "examples" / "my_cnn.py") + ":MyCNN"
    space = make_space(ref, layers=2)
    arch = space.sample(np.random.default_rng(1))
    assert arch["option.layers"] == 2 and "layer2.kernel" not in arch.as_dict()
    rebuilt = type(space).for_arch(Arch.from_dict(arch.to_dict()))  # what train/export do with an arch.json
    net = rebuilt.build(arch, (1, 8, 8), 10)
    assert len(net.features) == 2 and net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


# --------------------------------------------------------------------------- the documented example
def _doc_code() -> str:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]


def test_doc_code_is_the_example_file():
    assert _doc_code() == (ROOT / "examples" / "my_cnn.py").read_text()


@pytest.mark.slow
def test_doc_example_runs_with_every_method(tmp_path, capsys):
    """The doc's code, as written, searched by DARTS, GDAS, ProxylessNAS (with a measured table)
    and evolution from the CLI; then train, export, resume and report on such a run."""
    src = tmp_path / "my_space.py"
    src.write_text(_doc_code())
    ref = f"{src}:MyCNN"
    table = tmp_path / "table.json"
    assert run_main("latency", "--space", ref, "--data", "synthetic", "--out", table, "--warmup", "2",
                    "--repeats", "5", "--check", "3", "-q") == 0
    common = ["--data", "synthetic", "--set", "train.epochs=1", "-q"]
    runs = {
        "darts": ["--strategy", "darts", "--set", "strategy.epochs=1"],
        "gdas": ["--strategy", "gdas", "--set", "strategy.epochs=1"],
        "proxyless": ["--strategy", "proxyless", "--set", "strategy.epochs=2", "--set", f"latency.table={table}"],
        "evolution": ["--strategy", "evolution", "--trials", "4", "--evaluator", "synthetic"],
    }
    for name, args in runs.items():
        out = tmp_path / name
        assert run_main("search", "--space", ref, *args, *common, "--out", out) == 0, capsys.readouterr()
        result = json.loads((out / "result.json").read_text())
        assert result["space"] == ref and result["arch"]["space"] == ref
        assert set(result["arch"]["choices"]) == {f"layer{i}.{k}" for i in range(3) for k in ("kernel", "width")}
    run = tmp_path / "proxyless"
    assert run_main("train", run / "arch.json", "--data", "synthetic", "--set", "train.epochs=1", "--out",
                    tmp_path / "trained", "-q") == 0
    assert run_main("export", run, "--format", "onnx") == 0 and (run / "model.onnx").is_file()
    assert run_main("resume", run, "-q") == 0
    assert run_main("report", run) == 0 and (run / "report.html").is_file()
