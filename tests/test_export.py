"""Tests for nasforge.export: ONNX (current exporter, legacy fallback) and torch.export programs, checked
against PyTorch; quantized runs; no exporter noise."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.export import check_format, check_onnx, export_model, onnx_export, to_onnx, to_pt2

SHAPE = (3, 8, 8)
pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    # Non-trivial BN statistics so eval vs train mode would differ.
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model.train()
    return model


def test_pt2_roundtrip(tmp_path) -> None:
    model = _model()
    path = to_pt2(model, SHAPE, tmp_path / "m.pt2")
    assert path.is_file() and model.training
    loaded = torch.export.load(str(path)).module()
    x = torch.randn(3, *SHAPE)  # another batch size than the one exported with
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]  # no temp files left


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_onnx_matches_pytorch(tmp_path, exporter) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    model = _model()
    path, used = onnx_export(model, SHAPE, tmp_path / "m.onnx", exporter=exporter)
    assert used == exporter and path.is_file() and model.training
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    diff = check_onnx(model, path, SHAPE, batch_size=3)
    assert 0 <= diff < 1e-4
    # Batch axis is dynamic and the graph uses eval-mode BN.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *SHAPE)
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)


def test_export_prints_no_exporter_noise(tmp_path, capfd, recwarn) -> None:
    pytest.importorskip("onnxruntime")
    capfd.readouterr()
    export_model(_model(), SHAPE, tmp_path, "onnx")
    to_onnx(_model(), SHAPE, tmp_path / "legacy.onnx", exporter="legacy")
    to_pt2(_model(), SHAPE, tmp_path / "m.pt2")
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out + err)[:500]
    assert not [w for w in recwarn if "torch" in str(w.filename) or "onnx" in str(w.filename)]


def test_without_onnxscript_the_legacy_exporter_writes_the_file(tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    import nasforge.export

    monkeypatch.setattr(nasforge.export, "_onnxscript_available", lambda: False)
    info = export_model(_model(), SHAPE, tmp_path, "onnx")
    assert info["exporter"] == "legacy" and info["max_abs_diff"] < 1e-4


def test_an_opset_below_18_uses_the_legacy_exporter_and_a_bad_one_is_refused(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    info = export_model(_model(), SHAPE, tmp_path, "onnx", opset=13)
    assert info["exporter"] == "legacy" and info["opset"] == 13
    assert onnx.load(info["path"]).opset_import[0].version == 13
    with pytest.raises(NasforgeError, match="invalid --opset 99"):
        export_model(_model(), SHAPE, tmp_path / "x", "onnx", opset=99)


def test_check_onnx_detects_mismatch(tmp_path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = _model()
    path = to_onnx(model, SHAPE, tmp_path / "m.onnx")
    with torch.no_grad():
        model[-1].bias.add_(1.0)
    assert check_onnx(model, path, SHAPE) == pytest.approx(1.0, abs=1e-4)


def test_export_model_formats(tmp_path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = _model()
    out = tmp_path / "sub"
    info = export_model(model, SHAPE, out, "onnx", name="net")
    assert info["format"] == "onnx" and info["path"] == str(out / "net.onnx")
    assert (out / "net.onnx").is_file() and info["max_abs_diff"] < 1e-4
    info = export_model(model, SHAPE, out, "pt2")
    assert info["path"] == str(out / "model.pt2") and info["format"] == "pt2" and info["max_abs_diff"] < 1e-5
    info = export_model(model, SHAPE, out, "onnx", path=tmp_path / "file.onnx")
    assert info["path"] == str(tmp_path / "file.onnx") and (tmp_path / "file.onnx").is_file()


def test_export_model_unknown_format_and_torchscript(tmp_path) -> None:
    with pytest.raises(NasforgeError, match="onnx\\|pt2"):
        export_model(_model(), SHAPE, tmp_path, "tflite")
    with pytest.raises(NasforgeError, match="TorchScript .* deprecated .* --format pt2"):
        check_format("torchscript", with_json=True)
    assert list(tmp_path.iterdir()) == []


def test_onnxruntime_missing_message(monkeypatch, tmp_path) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(NasforgeError, match=r"pip install 'nasforge\[onnx\]'"):
        check_onnx(_model(), tmp_path / "m.onnx", SHAPE)
    with pytest.raises(NasforgeError, match="onnxruntime is not installed"):
        export_model(_model(), SHAPE, tmp_path, "onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_of_a_quantize_run_exports_the_quantized_network(tmp_path) -> None:
    """`nasforge export HAQ_RUN` (quantized.pt, no model.pt): the ONNX file computes the quantized network."""
    ort = pytest.importorskip("onnxruntime")
    from test_cli import run_main

    from nasforge.export import load_quantized
    from nasforge.quant.modules import quant_layers, wrap_model
    from nasforge.train import load_model

    run, q, out = tmp_path / "run", tmp_path / "q", tmp_path / "export"
    assert run_main("search", "--data", "synthetic", "--set", "strategy.epochs=1", "--set", "train.epochs=1",
                    "--out", run, "-q") == 0
    assert run_main("quantize", run, "--budget", "size=0.5", "--episodes", "2", "--finetune-epochs", "1",
                    "--set", "haq.warmup=1", "--set", "haq.hidden=16", "--set", "haq.update_batch=8",
                    "--set", "haq.calib_samples=64", "--out", q, "-q") == 0
    assert not (q / "model.pt").exists()
    assert run_main("export", q, "--out", out) == 0
    assert (out / "model.onnx").is_file() and (out / "model.onnx.latency.json").is_file()
    # the network as HAQ fine-tuned it: fake-quant layers with the run's bits, thresholds and weights
    blob = torch.load(q / "quantized.pt", weights_only=False)
    reference = wrap_model(load_model(run / "model.pt")[0])
    for (_, layer), (w, a) in zip(quant_layers(reference), blob["policy"]):
        layer.wbits, layer.abits = w, a
    reference.load_state_dict(blob["state_dict"])
    reference.eval()
    frozen, _, shape = load_quantized(q)
    x = torch.randn(16, *shape)
    with torch.no_grad():
        expected = reference(x)
        float_out = load_model(run / "model.pt")[0](x)
        torch.testing.assert_close(frozen(x), expected, rtol=0, atol=1e-4)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected.numpy()).max() < 1e-4
    assert np.abs(got - float_out.numpy()).max() > 1e-3  # quantized, not the float network
    most = max(w for w, _ in blob["policy"])
    big = [m for m in frozen.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() > 2**most]
    assert big and all(m.weight.unique().numel() <= 2**most for m in big)  # weights on the quantization grid
