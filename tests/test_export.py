"""Tests for nasforge.export: TorchScript and ONNX export with numerical checks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.export import check_onnx, export_model, to_onnx, to_torchscript

SHAPE = (3, 8, 8)


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


def test_torchscript_roundtrip(tmp_path) -> None:
    model = _model()
    path = to_torchscript(model, SHAPE, tmp_path / "m.pt")
    assert path.is_file() and model.training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path))
    x = torch.randn(3, *SHAPE)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp files left


def test_onnx_matches_pytorch(tmp_path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _model()
    path = to_onnx(model, SHAPE, tmp_path / "m.onnx")
    assert path.is_file() and model.training
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
    info = export_model(model, SHAPE, out, "torchscript")
    assert info == {"path": str(out / "model.torchscript.pt"), "format": "torchscript", "max_abs_diff": None}
    assert (out / "model.torchscript.pt").is_file()


def test_export_model_unknown_format(tmp_path) -> None:
    with pytest.raises(NasforgeError, match="onnx\\|torchscript"):
        export_model(_model(), SHAPE, tmp_path, "tflite")
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
