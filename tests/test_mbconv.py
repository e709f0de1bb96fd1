"""The MBConv space: choices (zero only where shapes allow), builds for every op, MBConv
structure, arch JSON round trip and for_arch, option errors, the latency-table contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasforge.oneshot.relax import Relaxation
from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.spaces import get_space_class, make_space
from nasforge.spaces.mbconv import MB_OPS, ZERO, MBConv, MBConvSpace, MBLayer, op_spec


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _expand_convs(block: MBConv) -> list[nn.Conv2d]:
    return [m for m in block.body if isinstance(m, nn.Conv2d)]


def test_registered_and_ops_named_as_in_the_paper():
    assert get_space_class("mbconv") is MBConvSpace
    assert MB_OPS == ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6")
    assert op_spec("mb_k5_e6") == (5, 6)
    with pytest.raises(ArchError, match="not an MBConv op"):
        op_spec("sep_conv_3x3")


def test_zero_only_where_the_layer_keeps_its_shape():
    space = make_space("mbconv")  # small: first 16 -> stage0 16 (stride 1), stage1 32 (stride 2)
    ops = {label: c.candidates for label, c in space.choices().items() if ".layer" in label}
    assert list(ops) == [f"stage{i}.layer{j}" for i in range(2) for j in range(3)]
    assert ops["stage0.layer0"] == MB_OPS + (ZERO,)  # stride 1, 16 -> 16: skippable
    assert ops["stage1.layer0"] == MB_OPS  # stride 2 and 16 -> 32: not skippable
    assert all(ops[f"stage{i}.layer{j}"][-1] == ZERO for i in range(2) for j in (1, 2))

    cifar = make_space("mbconv", preset="cifar").layer_specs((3, 32, 32))
    assert [s.in_hw for s in cifar] == [(16, 16)] * 4 + [(8, 8)] * 2  # stride-2 stem, then one stride-2 stage

    mobile = make_space("mbconv", preset="imagenet")
    specs = mobile.layer_specs((3, 224, 224))
    assert len(specs) == 21
    no_zero = [s.label for s in specs if ZERO not in s.ops]
    # every stage's first layer changes the width (16->24->40->80->96->192->320)
    assert no_zero == [f"stage{i}.layer0" for i in range(6)]
    assert specs[-1].in_hw == (7, 7) and specs[0].in_hw == (112, 112)


@pytest.mark.parametrize("op", MB_OPS + (ZERO,))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_build_every_op_and_shapes(op, shape):
    space = make_space("mbconv")
    arch = space.uniform_arch(op)
    space.validate(arch)
    torch.manual_seed(0)
    model = space.build(arch, shape, 10, layers=20, channels=36, auxiliary=True)  # options ignored
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    layers = [m for m in model.modules() if isinstance(m, MBLayer)]
    if op == ZERO:
        assert len(layers) == 1  # only the layer that cannot be skipped remains
        assert arch["stage1.layer0"] == MB_OPS[0]
    else:
        assert len(layers) == 6
        kernel, expansion = op_spec(op)
        for layer in layers:
            convs = _expand_convs(layer.op)
            assert convs[0].out_channels == layer.op.body[0].in_channels * expansion
            assert convs[1].kernel_size == (kernel, kernel) and convs[1].groups == convs[1].in_channels


def test_mbconv_structure_and_residual():
    block = MBConv(16, 24, kernel=5, stride=2, expansion=6)
    convs = _expand_convs(block)
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.groups) for c in convs] == [
        (16, 96, 1, 1, 1), (96, 96, 5, 2, 96), (96, 24, 1, 1, 1)]
    assert isinstance(block.body[-1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.ReLU6) for m in block.body) == 2
    mb1 = MBConv(32, 16, 3, 1, 1)
    assert len(_expand_convs(mb1)) == 2  # expansion 1: no 1x1 expansion
    space = make_space("mbconv")
    specs = {s.label: s for s in space.layer_specs((1, 8, 8))}
    assert specs["stage0.layer0"].residual and not specs["stage1.layer0"].residual
    spec = specs["stage0.layer1"]
    layer = MBLayer(spec.make_op("mb_k3_e3"), spec.residual)
    with torch.no_grad():
        for bn in (m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.zero_()  # op outputs zero: a residual layer is then the identity
        x = torch.randn(2, 16, 8, 8)
        assert torch.allclose(layer.eval()(x), x)


def test_sample_validate_mutate():
    space = make_space("mbconv")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        arch = space.sample(rng)
        space.validate(arch)
        seen.add(arch["stage0.layer1"])
        child = space.mutate(arch, rng)
        diff = [k for k, v in arch.as_dict().items() if child[k] != v]
        assert len(diff) == 1 and ".layer" in diff[0]  # shape choices (size 1) never mutate
    assert ZERO in seen and len(seen) >= 5
    bad = space.uniform_arch("mb_k3_e3").with_choice("stage1.layer0", ZERO)
    with pytest.raises(ArchError, match="stage1.layer0"):
        space.validate(bad)


def test_arch_json_round_trip_and_for_arch():
    space = make_space("mbconv", widths=[8, 24, 24], depths=[1, 2, 2], strides=[1, 2, 1], first=0, mix=32)
    arch = space.sample(np.random.default_rng(3))
    assert arch["stage1.width"] == 24 and arch["mix.width"] == 32 and arch["first.width"] == 0
    again = Arch.from_json(arch.to_json())  # validated against the space rebuilt from the arch alone
    assert again == arch and again.hash == arch.hash
    rebuilt = MBConvSpace.for_arch(again)
    assert rebuilt.widths == [8, 24, 24] and rebuilt.depths == [1, 2, 2] and rebuilt.strides == [1, 2, 1]
    assert rebuilt.choices().keys() == space.choices().keys()
    torch.manual_seed(0)
    a = space.build(arch, (3, 16, 16), 5)
    torch.manual_seed(0)
    b = rebuilt.build(again, (3, 16, 16), 5)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(a.eval()(x), b.eval()(x))
    missing = arch.as_dict()
    del missing["stage2.stride"]
    with pytest.raises(ArchError, match="stage2.stride"):
        Arch.from_dict({"space": "mbconv", "version": 1, "choices": missing})
    wrong = dict(arch.as_dict(), **{"stage1.layer0": "mb_k9_e3"})
    with pytest.raises(ArchError, match="stage1.layer0"):
        Arch.from_dict({"space": "mbconv", "version": 1, "choices": wrong})


@pytest.mark.parametrize("options, match", [
    ({"preset": "huge"}, "preset"),
    ({"widths": [16, 32], "depths": [1]}, "one value per stage"),
    ({"strides": [1, 3]}, "1 or 2"),
    ({"widths": "wide"}, "widths"),
    ({"nodes": 4}, "no option 'nodes'"),
])
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        make_space("mbconv", **options)


@pytest.mark.parametrize("options, shape", [({}, (1, 8, 8)), ({"mix": 48, "first": 0}, (3, 12, 12))])
def test_latency_parts_cover_every_arch_and_run_on_their_shapes(options, shape):
    """The generic table of a space written with choice modules: every non-zero candidate at the
    input shape it sees in the network, plus ``rest`` (the reference network)."""
    space = make_space("mbconv", **options)
    parts = space.latency_parts(shape, 10)
    specs = space.layer_specs(shape)
    for i, spec in enumerate(specs):
        for op in spec.ops:
            assert (f"layers.{i}.op:{op}" in parts) == (op != ZERO)
            if op != ZERO:
                assert tuple(parts[f"layers.{i}.op:{op}"][1]) == (spec.c_in, *spec.in_hw)
    assert "rest" in parts
    for key, (factory, in_shape) in parts.items():
        module = factory().eval()
        with torch.no_grad():
            out = module(torch.randn(1, *in_shape))
        assert out.shape[0] == 1, key
    # an arch is made of rest plus its non-zero layers
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = space.sample(rng)
        keys = space.arch_latency_parts(arch, shape, 10)
        assert len(keys) == len(set(keys)) and keys[0] == "rest"
        n_layers = sum(1 for spec in specs if arch[spec.label] != ZERO)
        assert len(keys) == 1 + n_layers
        model = space.build(arch, shape, 10).eval()
        counted = sum(isinstance(m, MBLayer) for m in model.modules())
        assert counted == n_layers


def test_soft_relaxation_mixes_every_op():
    """DARTS's relaxation of the same network: every non-zero op of every layer runs once."""
    space = make_space("mbconv")
    net = space.supernet((1, 8, 8), 10)
    relax = Relaxation(net)
    relax.soft()
    calls = []
    for layer in net.layers:
        for op in layer.op.candidates:
            op.register_forward_hook(lambda *a: calls.append(1))
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert len(calls) == sum(len(names) - (ZERO in names) for names in relax.names.values())
