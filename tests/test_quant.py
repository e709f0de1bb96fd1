"""Linear quantization, fake-quant wrappers, exact sizes, budgets and the two accelerator models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from nasforge.errors import ConfigError
from nasforge.hardware.accelerators import (
    BitFusion,
    BitSerial,
    LayerInfo,
    LookupTableAccelerator,
    make_accelerator,
)
from nasforge.quant import (
    Budget,
    QuantLayer,
    best_threshold,
    calibrate,
    check_bits,
    fake_quantize,
    layer_infos,
    parse_budget,
    quant_layers,
    quantize_tensor,
    quantized_size_bytes,
    set_policy,
    wrap_model,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Odd(nn.Module):
    """An arbitrary user model: nested containers, a depthwise conv, a shared linear, non-quantizable modules."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.ModuleDict({"dw": nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
                                     "pw": nn.Conv2d(4, 6, 1, bias=False)})
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.blocks["pw"](self.blocks["dw"](x)))
        x = self.pool(x).flatten(1)
        return self.head(torch.relu(self.fc(torch.relu(self.fc(x)))))  # fc used twice


# --- quantizer ---------------------------------------------------------------------------
def test_error_decreases_with_bits_and_32_bits_is_exact():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    errors = []
    for bits in range(2, 9):
        t = best_threshold(x, bits)
        errors.append(float(((quantize_tensor(x, bits, t) - x) ** 2).mean()))
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-3 < errors[0]
    assert torch.equal(quantize_tensor(x, 32, 1.0), x)
    assert torch.equal(fake_quantize(x, 32, 1.0), x)


def test_quantized_values_lie_on_the_grid():
    x = torch.linspace(-2, 2, 1001)
    q = quantize_tensor(x, 3, 1.0, signed=True)  # 3 bits signed: steps of 1/3 in [-1, 1]
    assert set(torch.round(q * 3).tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    assert torch.allclose(q * 3, torch.round(q * 3), atol=1e-5)
    u = quantize_tensor(x, 2, 1.5, signed=False)  # 2 bits unsigned: 0, .5, 1, 1.5
    assert sorted(set(u.tolist())) == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_mse_threshold_clips_a_heavy_tail_at_low_bits():
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(5000, generator=gen), torch.tensor([25.0])])
    t = best_threshold(x, 2)
    assert t < 5.0  # the outlier is clipped
    mse = lambda th: float(((quantize_tensor(x, 2, th) - x) ** 2).mean())
    assert mse(t) < mse(float(x.abs().max()))


def test_straight_through_estimator_passes_gradients_inside_the_range():
    x = torch.tensor([-3.0, -0.4, 0.1, 0.77, 3.0], requires_grad=True)
    y = fake_quantize(x, 2, 1.0, signed=True)
    assert torch.equal(y.detach(), quantize_tensor(x.detach(), 2, 1.0))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("bits", [0, 33, -1, 2.5, "8", True])
def test_bits_out_of_range_are_config_errors(bits):
    with pytest.raises(ConfigError, match="1..32"):
        check_bits(bits)


# --- wrapping ---------------------------------------------------------------------------
def test_wrapping_replaces_exactly_the_conv_and_linear_layers():
    torch.manual_seed(0)
    model = Odd().eval()
    wrapped = wrap_model(model)
    names = [n for n, _ in quant_layers(wrapped)]
    assert names == ["stem.0", "blocks.dw", "blocks.pw", "fc", "head"]  # module order; shared fc once
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(p, QuantLayer)
                   for p in wrapped.modules() for m in p.children())
    assert isinstance(wrapped.stem[1], nn.BatchNorm2d) and isinstance(wrapped.pool, nn.AdaptiveAvgPool2d)
    assert wrapped.fc is not model.fc and isinstance(model.fc, nn.Linear)  # the original model is untouched
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(wrapped(x), model(x), atol=1e-6)  # 32 bits everywhere: the same function
    calibrate(wrapped, x)
    set_policy(wrapped, [(2, 2)] * 5)
    assert not torch.allclose(wrapped(x), model(x), atol=1e-3)


def test_a_model_without_conv_or_linear_is_rejected():
    with pytest.raises(ConfigError, match="no nn.Conv2d or nn.Linear"):
        wrap_model(nn.Sequential(nn.ReLU(), nn.Flatten()))


def test_policy_length_must_match():
    wrapped = wrap_model(Odd())
    with pytest.raises(ConfigError, match="5 quantizable layers"):
        set_policy(wrapped, [(8, 8)] * 3)


def test_layer_infos_and_size_match_a_hand_count():
    infos = layer_infos(wrap_model(Odd()), (1, 8, 8))
    stem, dw, pw, fc, head = infos
    assert (stem.macs, stem.weight_params, stem.in_hw) == (4 * 64 * 9, 36, 64)
    assert dw.depthwise and not pw.depthwise and not stem.depthwise
    assert (dw.macs, dw.weight_params, dw.in_elems, dw.out_elems) == (4 * 16 * 9, 36, 256, 64)
    assert (pw.macs, pw.weight_params) == (6 * 16 * 4, 24)
    assert (fc.kind, fc.macs, head.macs) == ("linear", 36, 18)
    # ceil(36*3/8) + ceil(36*5/8) + ceil(24*2/8) + ceil(36*7/8) + ceil(18*1/8) = 14 + 23 + 6 + 32 + 3
    assert quantized_size_bytes([f.weight_params for f in infos], [3, 5, 2, 7, 1]) == 78


# --- accelerators -----------------------------------------------------------------------
def _info(**kw) -> LayerInfo:
    base = {"name": "l", "kind": "conv", "in_channels": 8, "out_channels": 8, "kernel": 1, "stride": 1, "groups": 1,
            "in_hw": 16, "weight_params": 64, "macs": 1024, "in_elems": 128, "out_elems": 128}
    base.update(kw)
    return LayerInfo(**base)


def test_bitserial_formula_on_a_hand_case():
    acc = BitSerial(freq_hz=1e6, bit_ops_per_cycle=64.0, bytes_per_cycle=4.0, e_bitop=1e-12, e_byte=1e-10, out_bits=8)
    info = _info()
    lat, en = acc.layer_cost(info, 4, 2)
    compute = 1024 * 4 * 2 / 64  # 128 cycles
    traffic = (64 * 4 + 128 * 2 + 128 * 8) / 8  # 192 bytes -> 48 cycles
    assert lat == pytest.approx(max(compute, traffic / 4) / 1e6)
    assert en == pytest.approx(1024 * 8 * 1e-12 + traffic * 1e-10)
    assert acc.bound(info, 4, 2) == "compute"
    assert acc.bound(info, 1, 1) == "memory"  # 16 compute cycles < 42 memory cycles


def test_bitfusion_formula_rounds_up_to_2_bit_bricks():
    acc = BitFusion(freq_hz=1e6, bricks=16.0, bytes_per_cycle=1e9, e_brick=1e-12, e_byte=0.0)
    info = _info()
    lat, en = acc.layer_cost(info, 3, 5)
    assert lat == pytest.approx(1024 * 2 * 3 / 16 / 1e6)
    assert en == pytest.approx(1024 * 6 * 1e-12)
    assert acc.layer_cost(info, 3, 3) == acc.layer_cost(info, 4, 4)  # odd bits cost the next even width
    assert acc.layer_cost(info, 2, 2)[0] < acc.layer_cost(info, 3, 3)[0]


def test_default_designs_limit_depthwise_and_pointwise_differently():
    dw = _info(in_channels=32, out_channels=32, kernel=3, groups=32, weight_params=288, macs=32 * 64 * 9,
               in_elems=32 * 64, out_elems=32 * 64)
    pw = _info(in_channels=32, out_channels=32, weight_params=1024, macs=32 * 32 * 64, in_elems=32 * 64,
               out_elems=32 * 64)
    serial, fusion = make_accelerator("bitserial"), make_accelerator("bitfusion")
    assert serial.bound(dw, 8, 8) == "memory" and serial.bound(pw, 8, 8) == "compute"
    assert fusion.bound(dw, 8, 8) == "compute" and fusion.bound(pw, 8, 8) == "compute"
    # memory-bound depthwise on the bit-serial design: weight bits hardly matter, activation bits do
    assert serial.layer_cost(dw, 2, 8)[0] / serial.layer_cost(dw, 8, 8)[0] > 0.9
    assert serial.layer_cost(dw, 8, 2)[0] / serial.layer_cost(dw, 8, 8)[0] < 0.7


def test_lookup_table_and_unknown_names():
    table = LookupTableAccelerator({"l": {(4, 4): (1e-3, 2e-6)}})
    assert table.layer_cost(_info(), 4, 4) == (1e-3, 2e-6)
    with pytest.raises(ConfigError, match="no entry"):
        table.layer_cost(_info(), 3, 4)
    with pytest.raises(ConfigError, match="unknown accelerator"):
        make_accelerator("tpu")


# --- budgets ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("size=0.25", Budget("size", 0.25, True)),
    ("size=12kB", Budget("size", 12000.0, False)),
    ("size = 2KiB", Budget("size", 2048.0, False)),
    ("latency=0.5", Budget("latency", 0.5, True)),
    ("latency=0.5ms", Budget("latency", 0.0005, False)),
    ("energy=2uJ", Budget("energy", 2e-6, False)),
])
def test_parse_budget(text, expected):
    got = parse_budget(text)
    assert (got.kind, got.relative) == (expected.kind, expected.relative)
    assert got.value == pytest.approx(expected.value)


@pytest.mark.parametrize("text, match", [
    ("0.25", "KIND=VALUE"), ("speed=1", "KIND=VALUE"), ("size=", "no number"), ("size=abc", "no number"),
    ("size=0", "positive"), ("latency=3kB", "unknown unit"),
])
def test_malformed_budgets(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_budget(text)


def test_relative_budget_targets():
    assert parse_budget("size=0.5").target(1000.0) == 500.0
    assert parse_budget("size=300B").target(1000.0) == 300.0
    assert math.isclose(parse_budget("energy=1mJ").target(5.0), 1e-3)


# --- KL clipping (the HAQ code's rule) ------------------------------------------------------
def _official_compute_threshold(data, bitwidth):
    """``QModule._compute_threshold`` of mit-han-lab/haq lib/utils/quantize_utils.py, transcribed."""
    import numpy as np

    mn, mx = 0, np.abs(data).max()
    if np.isclose(mx, 0.0):
        return 0.0
    hist, bin_edges = np.histogram(np.abs(data), bins="sqrt", range=(mn, mx), density=True)
    hist = hist / np.sum(hist)
    cumsum = np.cumsum(hist)
    n = pow(2, int(bitwidth) - 1)
    threshold, d = [], []
    if n + 1 > len(bin_edges) - 1:
        return float(bin_edges[-1])
    for i in range(n + 1, len(bin_edges), 1):
        threshold = np.concatenate((threshold, [(i + 0.5) * (bin_edges[1] - bin_edges[0])]))
        p = np.copy(cumsum)
        p[(i - 1):] = 1
        x, xp, fp = np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, i), p[:i]
        p_interp = np.interp(x, xp, fp)
        x, xp, fp = np.linspace(0.0, 1.0, i), np.linspace(0.0, 1.0, n), p_interp
        q_interp = np.interp(x, xp, fp)
        q = np.copy(p)
        q[:i] = q_interp
        d = np.concatenate((d, [np.sum((cumsum - q) * np.log2(cumsum / q))]))
    return float(threshold[np.argmin(d)])


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("case", ["normal", "heavy", "relu"])
def test_kl_threshold_is_the_official_rule(bits, case):
    from nasforge.quant import kl_threshold

    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(5000, generator=gen, dtype=torch.float64)
    if case == "heavy":
        x = x ** 3  # long tails: KL clips well inside max|x|
    elif case == "relu":
        x = x.clamp_min(0)
    expected = _official_compute_threshold(x.numpy(), bits)
    assert kl_threshold(x, bits) == pytest.approx(expected, rel=1e-12)
    assert 0 < kl_threshold(x, bits) <= float(x.abs().max()) + 1e-9
    if case == "heavy":
        assert kl_threshold(x, bits) < 0.5 * float(x.abs().max())


def test_kl_threshold_hand_cases_and_wide_widths():
    from nasforge.quant import kl_threshold, threshold

    x = torch.tensor([0.5, -1.0, 2.0, -4.0])
    assert kl_threshold(x, 5) == kl_threshold(x, 8) == 4.0  # 5 bits and more: max|x| (the code's `else` branch)
    # numpy's 'sqrt' rule gives 3 bins of width 4/3; at 2 bits the only cut is i = 3: t = 3.5 * 4/3 (the code's
    # threshold may lie beyond max|x|)
    assert kl_threshold(x, 2) == pytest.approx(3.5 * 4 / 3)
    assert kl_threshold(torch.tensor([-4.0]), 2) == 4.0  # 1 bin < 2**(2-1) + 1: the whole range
    assert kl_threshold(torch.zeros(10), 2) == pytest.approx(1e-8)
    with pytest.raises(ConfigError, match="unknown clipping method"):
        threshold(x, 4, method="entropy")


def test_kl_clipping_is_an_option_of_the_wrapped_model():
    from nasforge.quant import kl_threshold, set_clip

    torch.manual_seed(0)
    q = wrap_model(Odd())
    calibrate(q, torch.randn(32, 1, 8, 8))
    set_policy(q, [(3, 3)] * 5)
    layer = quant_layers(q)[2][1]
    mse_w = float(layer.w_threshold)
    set_clip(q, "kl")
    assert float(layer.w_threshold) == pytest.approx(kl_threshold(layer.layer.weight, 3)) != mse_w
    assert bool(layer.a_signed)  # the depthwise conv's output: no ReLU before the pointwise layer
    assert float(layer.a_threshold) == pytest.approx(kl_threshold(layer._act_sample, 3))
    fc = quant_layers(q)[3][1]  # after a ReLU: unsigned, KL over the non-negative sample
    assert not bool(fc.a_signed) and float(fc.a_threshold) == pytest.approx(kl_threshold(fc._act_sample, 3))
    with pytest.raises(ConfigError, match="unknown clipping method"):
        set_clip(q, "max")


# --- k-means weight sharing ----------------------------------------------------------------
def test_kmeans_finds_the_clusters_of_a_hand_made_weight_matrix():
    from nasforge.quant import kmeans_1d

    w = torch.tensor([[0.10, 0.12, -0.50, -0.52], [0.98, 1.02, 0.08, -0.48], [3.0, 3.1, 2.9, 1.00]])
    centroids, labels = kmeans_1d(w, 2, iters=10, seed=0)  # 2 bits: 4 shared values
    groups = {}
    for value, label in zip(w.flatten().tolist(), labels.flatten().tolist()):
        groups.setdefault(label, []).append(value)
    found = sorted(sorted(g) for g in groups.values())
    assert found == [pytest.approx(g) for g in ([-0.52, -0.5, -0.48], [0.08, 0.1, 0.12], [0.98, 1.0, 1.02],
                                                [2.9, 3.0, 3.1])]
    assert sorted(centroids.tolist()) == pytest.approx([-0.5, 0.1, 1.0, 3.0])  # each cluster's mean
    c, lab = kmeans_1d(torch.tensor([1.0, 1.0, 2.0]), 3)  # fewer values than clusters: exact
    assert sorted(c.tolist()) == [1.0, 2.0] and c[lab].tolist() == [1.0, 1.0, 2.0]


def test_kmeans_layer_shares_values_and_fine_tunes_as_the_official_reprojection():
    from nasforge.quant import set_quantizer

    torch.manual_seed(0)
    q = wrap_model(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)))
    set_quantizer(q, "kmeans")
    set_policy(q, [(2, 32), (3, 32)])
    layer = quant_layers(q)[0][1]
    shared = layer.quantized_weight().detach()
    assert shared.unique().numel() <= 4
    labels = layer.w_labels.long()
    # one plain SGD step: ours (straight-through on the raw weights, cluster means in the forward) against the
    # HAQ code (weights set to the centroids, SGD on them, then each cluster re-set to its mean)
    x, y = torch.randn(32, 16), torch.randint(0, 3, (32,))
    loss = nn.functional.cross_entropy(q(x), y)
    loss.backward()
    grad = layer.layer.weight.grad.clone()
    with torch.no_grad():
        layer.layer.weight -= 0.1 * grad
    official = shared - 0.1 * grad  # SGD on the centroid-valued weights
    for k in labels.unique():
        mask = labels == k
        official[mask] = official[mask].mean()
    torch.testing.assert_close(layer.quantized_weight().detach(), official, rtol=0, atol=1e-6)
    assert layer.quantized_weight().unique().numel() <= 4


# --- QDQ export ---------------------------------------------------------------------------
def test_the_quantized_network_exports_as_qdq_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from nasforge.export import _frozen_quantized, to_onnx

    torch.manual_seed(0)
    q = wrap_model(Odd()).eval()
    calibrate(q, torch.randn(64, 1, 8, 8))
    set_policy(q, [(8, 8), (3, 4), (5, 2), (4, 32), (32, 32)])
    frozen = _frozen_quantized(q)
    path = to_onnx(frozen, (1, 8, 8), tmp_path / "q.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") >= 7 and ops.count("DequantizeLinear") >= 7  # 3 inputs + 4 weights
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        expected = q(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4
    layer = quant_layers(q)[1][1]  # 3-bit weights: int codes in [-3, 3]
    codes = layer.quantized_weight().detach() / (float(layer.w_threshold) / 3)
    assert set(torch.round(codes).unique().tolist()) <= {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
