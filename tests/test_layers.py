"""The sequential layer space: valid samples and mutations, the transition rules, building
(skip connections with padding, unconsumed outputs to the classifier), arch.json round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasforge.arch import Arch
from nasforge.data import synthetic_dataset
from nasforge.errors import ArchError, ConfigError
from nasforge.spaces import get_space_class, make_space
from nasforge.spaces.layers import Layer, LayerNet, LayerSpace
from nasforge.train import TrainConfig, load_model, save_model, train_arch


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


SPACES = {
    "digits": {},
    "skips": {"skips": True, "strides": [1, 2]},
    "cifar-sized": {"image_size": 16, "skips": True, "strides": [1, 2, 3], "max_depth": 8},
}


@pytest.mark.parametrize("name", list(SPACES))
def test_every_sampled_and_mutated_arch_is_valid_and_builds(name):
    space = make_space("layers", **SPACES[name])
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, space.image_size, space.image_size)
    depths, kinds, skipped = set(), set(), 0
    for k in range(150):
        arch = space.sample(rng)
        space.validate(arch)
        child = space.mutate(arch, rng)
        space.validate(child)
        assert child != arch
        layers = space.layers_of(arch)
        depths.add(len(layers))
        kinds |= {layer.type for layer in layers}
        skipped += any(tuple(l.inputs) != ((i - 1,) if i else ()) for i, l in enumerate(layers))
        if k < 25:
            net = space.build(arch, (3, space.image_size, space.image_size), 7)
            assert net(x).shape == (2, 7)
    assert kinds == {"conv", "pool", "fc", "gap"} and len(depths) >= 4
    assert (skipped > 0) == space.skips


def test_skip_connections_pad_concatenate_and_unconsumed_outputs_reach_the_classifier():
    space = make_space("layers", skips=True, strides=[1, 2])
    layers = [Layer("conv", 3, 3, 2, 2, 24),              # 0: 8x8 -> 4x4
              Layer("conv", 3, 3, 1, 1, 36, inputs=()),    # 1: reads the image (no input), 8x8
              Layer("conv", 1, 1, 1, 1, 48, inputs=(0, 1)),  # 2: 4x4 padded to 8x8, cat 24+36
              Layer("pool", pool_kernel=2, pool_stride=2, inputs=(0,))]  # 3: 4x4 -> 2x2
    arch = space.arch_of(layers)
    space.validate(arch)
    net = space.build(arch, (1, 8, 8), 10)
    assert net.ops[1][0].in_channels == 1            # no input: the image
    assert net.ops[2][0].in_channels == 24 + 36      # concatenated along channels
    assert net.sinks == [2, 3]                        # outputs nobody consumes
    assert net.classifier.in_features == (48 + 24) * 8 * 8  # padded to the largest (8x8), flattened
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert "conv3x3-36<-image" in space.describe(arch)


def test_fc_and_gap_networks_build_with_the_right_widths():
    space = make_space("layers")
    arch = space.arch_of(space.chain([Layer("conv", 3, 3, 1, 1, 24), Layer("pool", pool_kernel=2, pool_stride=2),
                                      Layer("fc", units=128), Layer("fc", units=64)]))
    net = space.build(arch, (1, 8, 8), 10)
    assert net.ops[2][1].in_features == 24 * 4 * 4 and net.classifier.in_features == 64
    gap = space.arch_of(space.chain([Layer("conv", 3, 3, 1, 1, 36), Layer("gap")]))
    assert space.build(gap, (1, 8, 8), 10).classifier.in_features == 36


def _chain(space: LayerSpace, *layers: Layer) -> Arch:
    return space.arch_of(space.chain(layers))


CONV = Layer("conv", 3, 3, 1, 1, 24)
POOL = Layer("pool", pool_kernel=2, pool_stride=2)


@pytest.mark.parametrize("layers,match", [
    ((POOL,), "layer0.type 'pool' is not allowed after start"),
    ((CONV, POOL, POOL), "layer2.type 'pool' is not allowed after pool"),
    ((CONV, Layer("fc", units=64)), "layer1.type 'fc' is not allowed after conv .representation 8x8"),
    ((CONV, POOL, Layer("fc", units=64), Layer("fc", units=128)), "layer3.units=128 exceeds the previous fc"),
    ((CONV, POOL, Layer("fc", units=128), Layer("fc", units=64), Layer("fc", units=64)),
     "layer4.type 'fc' is not allowed after fc"),
    ((CONV, Layer("gap"), CONV), "layer2.type 'conv' is not allowed after gap"),
    ((CONV, POOL, CONV, POOL, CONV, Layer("pool", pool_kernel=3, pool_stride=2)),
     "layer5.pool_kernel=3 is larger than its 2x2 input"),
    ((CONV, POOL, CONV, POOL, CONV, POOL, CONV), "7 layers exceed the space's max_depth=6"),
])
def test_rule_breaking_archs_are_rejected_with_a_clear_arch_error(layers, match):
    space = make_space("layers", max_depth=6, pool_kernels=[2, 3])
    with pytest.raises(ArchError, match=match):
        space.validate(_chain(space, *layers))


def test_inconsistent_choices_are_rejected():
    space = make_space("layers")
    good = _chain(space, CONV, CONV)
    with pytest.raises(ArchError, match="after a 'none' layer"):
        space.validate(good.with_choice("layer2.type", "none").with_choice("layer3.type", "conv"))
    with pytest.raises(ArchError, match="layer1.inputs=.* skips are off; set it to \\[0\\]"):
        space.validate(good.with_choice("layer1.inputs", []))
    with pytest.raises(ArchError, match="'layer0.pool_kernel'=3 is unused by a conv layer; set it to 2"):
        space.validate(good.with_choice("layer0.pool_kernel", 3))
    with pytest.raises(ArchError, match="no layer"):
        space.validate(good.with_choice("layer0.type", "none").with_choice("layer1.type", "none")
                       .with_choice("layer1.inputs", []))
    with pytest.raises(ArchError, match="layer2.inputs.*increasing"):
        skip = make_space("layers", skips=True)
        skip.validate(skip.arch_of([CONV, Layer("conv", 3, 3, 1, 1, 24, inputs=(0,)),
                                    Layer("conv", 3, 3, 1, 1, 24, inputs=(0, 1))]).with_choice("layer2.inputs", [1, 0]))


def test_arch_json_records_the_space_and_rebuilds_it():
    space = make_space("layers", skips=True, image_size=16, strides=[1, 2], filters=[8, 16])
    arch = space.sample(np.random.default_rng(3))
    again = Arch.from_json(arch.to_json())
    assert again == arch and again["space.strides"] == "1,2" and again["space.image_size"] == 16
    rebuilt = get_space_class("layers").for_arch(again)
    assert rebuilt.choices().keys() == space.choices().keys() and rebuilt.filters == (8, 16) and rebuilt.skips
    with pytest.raises(ArchError, match="for 16x16 images, the data is 8x8; search with space.image_size=8"):
        rebuilt.build(arch, (1, 8, 8), 10)


def test_bad_space_options_are_config_errors():
    for bad in ({"max_depth": 0}, {"types": ["conv", "lstm"]}, {"filters": []}, {"kernel_sizes": [3, 3]},
                {"skips": "maybe"}, {"image_size": 2.5}):
        with pytest.raises(ConfigError):
            make_space("layers", **bad)
    assert make_space("layers", image_size=32).max_depth == 12  # CIFAR-sized defaults
    assert make_space("layers").pool_kernels == (2, 3)


def test_train_arch_trains_a_layer_network_and_load_model_rebuilds_it(tmp_path):
    data = synthetic_dataset(num_samples=160, seed=0)
    space = make_space("layers", skips=True)
    arch = space.arch_of([Layer("conv", 3, 3, 1, 1, 24), Layer("conv", 3, 3, 1, 1, 24, inputs=(0,)),
                          Layer("pool", pool_kernel=2, pool_stride=2, inputs=(0, 1))])
    cfg = TrainConfig(epochs=3, batch_size=32, layers=3, channels=4, cutout=0, drop_path=0.0, auxiliary=False)
    result = train_arch(space, arch, data, cfg, seed=0)
    history = result.metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    path = save_model(result.model, arch, data.input_shape, data.num_classes,
                      {"layers": 3, "channels": 4, "auxiliary": False}, tmp_path / "model.pt")
    model, loaded, _ = load_model(path)
    x = data.x_test[:4]
    result.model.eval()
    assert loaded == arch and isinstance(model, LayerNet)
    assert torch.allclose(model(x), result.model(x))


def test_a_skip_network_exports_to_onnx_with_the_same_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from nasforge.export import check_onnx, to_onnx

    space = make_space("layers", skips=True, strides=[1, 2])
    arch = space.arch_of([Layer("conv", 3, 3, 2, 2, 24), Layer("conv", 3, 3, 1, 1, 36, inputs=()),
                          Layer("conv", 1, 1, 1, 1, 48, inputs=(0, 1)),
                          Layer("pool", pool_kernel=2, pool_stride=2, inputs=(0,))])
    net = space.build(arch, (1, 8, 8), 10).eval()
    path = to_onnx(net, (1, 8, 8), tmp_path / "m.onnx")
    assert check_onnx(net, path, (1, 8, 8)) < 1e-4
