"""Tests for nasforge.hardware: static costs and measured latency."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.hardware import (
    LatencyResult,
    count_flops,
    count_macs,
    count_params,
    describe_device,
    measure_latency,
    model_size_bytes,
)


def _conv() -> nn.Module:
    return nn.Conv2d(3, 8, 3, padding=1, bias=False)


def test_count_params_conv_and_linear() -> None:
    assert count_params(_conv()) == 216
    assert count_params(nn.Linear(10, 5)) == 55
    assert count_params(nn.Linear(10, 5, bias=False)) == 50


def test_count_params_trainable_only_and_shared() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_params(model) == 20 + 10
    assert count_params(model, trainable_only=True) == 10
    shared = nn.Linear(3, 3)
    assert count_params(nn.Sequential(shared, shared)) == 12


def test_count_flops_and_macs_conv() -> None:
    macs = 8 * 8 * 8 * 27
    assert count_macs(_conv(), (3, 8, 8)) == macs
    assert count_flops(_conv(), (3, 8, 8)) == 2 * macs
    assert count_macs(_conv(), (3, 8, 8), batch_size=4) == 4 * macs


def test_count_flops_linear_and_mode_restored() -> None:
    model = nn.Sequential(nn.Linear(10, 5), nn.Dropout(0.5))
    model.train()
    assert count_macs(model, (10,), batch_size=3) == 3 * 10 * 5
    assert model.training and model[1].training
    model.eval()
    count_flops(model, (10,))
    assert not model.training
    # Per-module flags are restored, not flattened to the root's flag.
    model.train()
    model[1].eval()
    count_flops(model, (10,))
    assert model.training and not model[1].training


def test_count_flops_bad_shape() -> None:
    with pytest.raises(NasforgeError, match="input_shape"):
        count_flops(_conv(), (3, 0, 8))
    with pytest.raises(NasforgeError, match="batch_size"):
        count_flops(_conv(), (3, 8, 8), batch_size=0)


def test_model_size_bytes() -> None:
    model = nn.Linear(10, 5)  # weight 50, bias 5
    assert model_size_bytes(model) == 55 * 4
    assert model_size_bytes(model, bits=32) == 220
    assert model_size_bytes(model, bits=8) == 55
    # ceil per tensor: 50*4/8 = 25, 5*4/8 = 2.5 -> 3
    assert model_size_bytes(model, bits=4) == 28
    with pytest.raises(NasforgeError, match="bits"):
        model_size_bytes(model, bits=0)


def _check_result(res: LatencyResult, device: str) -> None:
    assert res.device == device
    assert res.median_ms > 0 and res.p10_ms > 0 and res.mean_ms > 0
    assert res.p10_ms <= res.median_ms <= res.p90_ms
    assert res.std_ms >= 0
    assert res.device_name
    data = res.to_dict()
    json.dumps(data)
    assert data["median_ms"] == res.median_ms and data["input_shape"] == list(res.input_shape)


def test_measure_latency_cpu_stats_and_model_untouched() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    res = measure_latency(model, (3, 8, 8), warmup=1, repeats=5, threads=1, batch_size=2)
    _check_result(res, "cpu")
    assert (res.repeats, res.warmup, res.threads, res.batch_size, res.input_shape) == (5, 1, 1, 2, (3, 8, 8))
    assert torch.get_num_threads() == threads
    assert model.training
    for k, v in model.state_dict().items():  # eval mode: BN running stats untouched
        assert torch.equal(v, before[k])
    assert measure_latency(model, (3, 8, 8), warmup=0, repeats=1).threads == threads


def test_measure_latency_bigger_model_is_slower() -> None:
    tiny = nn.Conv2d(3, 4, 1)
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), *[nn.Conv2d(64, 64, 3, padding=1) for _ in range(20)])
    kwargs = dict(warmup=1, repeats=3, threads=1)
    t_tiny = measure_latency(tiny, (3, 32, 32), **kwargs).median_ms
    t_big = measure_latency(big, (3, 32, 32), **kwargs).median_ms
    assert t_big > 5 * t_tiny


def test_measure_latency_errors() -> None:
    model = nn.Linear(4, 2)
    with pytest.raises(NasforgeError, match="cpu\\|cuda\\|onnxruntime"):
        measure_latency(model, (4,), device="tpu")
    with pytest.raises(NasforgeError, match="repeats"):
        measure_latency(model, (4,), repeats=0)
    with pytest.raises(NasforgeError, match="threads"):
        measure_latency(model, (4,), threads=0)
    with pytest.raises(NasforgeError, match="cpu\\|cuda\\|onnxruntime"):
        describe_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_measure_latency_cuda_unavailable() -> None:
    with pytest.raises(NasforgeError, match="CUDA.*--device cpu"):
        measure_latency(nn.Linear(4, 2), (4,), device="cuda", warmup=0, repeats=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_latency_cuda() -> None:
    model = nn.Linear(4, 2)
    res = measure_latency(model, (4,), device="cuda", warmup=1, repeats=3)
    _check_result(res, "cuda")
    assert model.weight.device.type == "cpu"


def test_describe_device_cpu() -> None:
    assert isinstance(describe_device("cpu"), str) and describe_device("cpu")


def test_measure_latency_onnxruntime() -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    res = measure_latency(model, (3, 8, 8), device="onnxruntime", warmup=1, repeats=3, threads=1, batch_size=2)
    _check_result(res, "onnxruntime")
    assert res.threads == 1 and "onnxruntime" in res.device_name


def test_warm_up_lasts_at_least_warmup_seconds() -> None:
    import time

    model = nn.Conv2d(3, 4, 1)
    start = time.perf_counter()
    res = measure_latency(model, (3, 8, 8), warmup=1, repeats=2, threads=1, warmup_seconds=0.3)
    assert time.perf_counter() - start >= 0.3 and res.warmup_seconds == 0.3
    with pytest.raises(NasforgeError, match="warmup_seconds"):
        measure_latency(model, (3, 8, 8), warmup_seconds=-1)


def test_the_final_network_is_timed_on_pytorch_and_onnx_runtime(one_thread) -> None:
    pytest.importorskip("onnxruntime")
    from nasforge.hardware.penalty import LatencyConfig
    from nasforge.pipeline import measure_model

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    measured = measure_model(model, (3, 8, 8), LatencyConfig(repeats=5, warmup_seconds=0.05))
    assert measured["latency"]["device"] == "cpu"
    assert set(measured["latencies"]) == {"cpu", "onnxruntime"}
    assert measured["latencies"]["cpu"] == measured["latency"]
    onnx = measured["latencies"]["onnxruntime"]
    assert onnx["median_ms"] > 0 and onnx["warmup_seconds"] == 0.05 and "onnxruntime" in onnx["device_name"]
    only = measure_model(model, (3, 8, 8), LatencyConfig(device="onnxruntime", runtimes=[], repeats=3))
    assert set(only["latencies"]) == {"onnxruntime"}


def test_unknown_runtime_is_refused() -> None:
    from nasforge.config import load_section
    from nasforge.errors import ConfigError
    from nasforge.hardware.penalty import LatencyConfig

    with pytest.raises(ConfigError, match="latency.runtimes has unknown runtime 'tpu'"):
        load_section(LatencyConfig, {"runtimes": ["cpu", "tpu"]}, "latency")


def test_a_table_that_ranks_badly_is_flagged(one_thread) -> None:
    import numpy as np

    from nasforge.hardware.lut import MIN_SPEARMAN, build_table, check_table
    from nasforge.spaces import make_space

    space = make_space("nb201", C=4, N=1)
    table = build_table(space, (1, 8, 8), 10, warmup=2, repeats=3, threads=1)
    good = check_table(space, table, n=4, seed=0, warmup=2, repeats=5)
    assert (good["warning"] is None) == (good["spearman"] >= MIN_SPEARMAN)
    table.entries = {k: 0.0 for k in table.entries}  # a table that cannot tell architectures apart
    bad = check_table(space, table, n=4, seed=0, warmup=2, repeats=5)
    assert bad["spearman"] < MIN_SPEARMAN and "ranks architectures poorly" in bad["warning"]
    assert np.isfinite(bad["mape"])
