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


def _sample_and_mutate(space, rng):
    """A sampled architecture, checked valid, whose mutation is valid and different from it."""
    arch = space.sample(rng)
    space.validate(arch)
    child = space.mutate(arch, rng)
    space.validate(child)
    assert child != arch
    return arch


@pytest.mark.parametrize("name", list(SPACES))
def test_every_sampled_and_mutated_arch_is_valid_and_builds(name):
    space = make_space("layers", **SPACES[name])
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, space.image_size, space.image_size)
    depths, kinds, skipped = set(), set(), 0
    for k in range(150):
        arch = _sample_and_mutate(space, rng)
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


# --- MetaQNN's grammar, dropout and BatchNorm options ---------------------------------------
def test_metaqnn_grammar_holds_the_papers_values_and_rules():
    space = make_space("layers", grammar="metaqnn", image_size=32)
    assert space.kernel_sizes == (1, 3, 5) and space.strides == (1,) and space.filters == (64, 128, 256, 512)
    assert space.pool_pairs == ((5, 3), (3, 2), (2, 2)) and space.fc_units == (512, 256, 128)
    assert (space.max_fc, space.fc_max_size, space.conv_fits, space.square, space.max_depth) == (2, 7, True, True, 12)
    with pytest.raises(ArchError, match="square kernels"):
        space.validate(space.arch_of([Layer("conv", 3, 1, 1, 1, 64)]))
    conv = Layer("conv", 3, 3, 1, 1, 64)
    # a pool pair outside the paper's three is refused, even though kernel 3 and stride 3 both exist
    with pytest.raises(ArchError, match="not one of the space's pools 5x3,3x2,2x2"):
        space.validate(space.arch_of(space.chain([conv, Layer("pool", pool_kernel=3, pool_stride=3)])))
    # a receptive field no larger than the representation: 32 -> 10 (5/3) -> 5 (3/2) takes a 5x5 conv,
    # -> 3 (2/2) does not
    layers = [conv, Layer("pool", pool_kernel=5, pool_stride=3), conv, Layer("pool", pool_kernel=3, pool_stride=2)]
    space.validate(space.arch_of(space.chain(layers + [Layer("conv", 5, 5, 1, 1, 64)])))
    smaller = layers + [conv, Layer("pool", pool_kernel=2, pool_stride=2)]
    with pytest.raises(ArchError, match="5x5 kernel on a 3x3 representation"):
        space.validate(space.arch_of(space.chain(smaller + [Layer("conv", 5, 5, 1, 1, 64)])))
    # fc only at 7 pixels or fewer: 32 -> 10 -> 5 allows fc; 10 does not
    space.validate(space.arch_of(space.chain(layers + [Layer("fc", units=512)])))
    with pytest.raises(ArchError, match="not allowed"):
        space.validate(space.arch_of(space.chain(layers[:2] + [Layer("fc", units=512)])))
    rng = np.random.default_rng(0)
    for _ in range(40):
        _sample_and_mutate(space, rng)
    with pytest.raises(ConfigError, match="grammar='x' is unknown"):
        make_space("layers", grammar="x")
    with pytest.raises(ConfigError, match="stride <= kernel"):
        make_space("layers", pools=[[2, 3]])


def test_new_options_keep_older_archs_and_round_trip():
    # the default space records exactly the options it always did (so older archs keep their hash)
    assert not {"space.pools", "space.conv_fits", "space.dropout", "space.batch_norm", "space.square"} & set(
        make_space("layers").options())
    space = make_space("layers", grammar="metaqnn", dropout=True, batch_norm=False)
    arch = space.sample(np.random.default_rng(3))
    rebuilt = get_space_class("layers").for_arch(arch)
    assert rebuilt.options() == space.options() and rebuilt.pool_pairs == space.pool_pairs
    assert (rebuilt.dropout, rebuilt.batch_norm, rebuilt.conv_fits, rebuilt.square) == (True, False, True, True)


def test_metaqnn_dropout_follows_the_official_placement_and_batch_norm_can_be_off():
    from nasforge.spaces.layers import dropout_rates

    conv, pool = Layer("conv", 3, 3, 1, 1, 64), Layer("pool", pool_kernel=2, pool_stride=2)
    # 6 layers + the termination, 2 fc: n = (7 - 2) // 2 + 2 = 4; after layers 2, 4 and each fc: i / 2n
    layers = [conv, conv, pool, conv, Layer("fc", units=256), Layer("fc", units=128)]
    assert dropout_rates(layers) == [0.0, 1 / 8, 0.0, 2 / 8, 3 / 8, 4 / 8]
    # none after gap: n = (5 - 1) // 2 = 2
    assert dropout_rates([conv, conv, conv, Layer("gap")]) == [0.0, 0.25, 0.0, 0.0]
    space = make_space("layers", grammar="metaqnn", dropout=True, batch_norm=False)
    arch = space.arch_of(space.chain(layers))
    net = space.build(arch, (1, 8, 8), 10)
    rates = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [1 / 8, 2 / 8, 3 / 8, 4 / 8]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    chained = space.chain(layers)
    plain = LayerNet(chained, space.shapes(chained), (1, 8, 8), 10)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
