"""Export models to TorchScript and ONNX, with a numerical check against PyTorch."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.utils import atomic_write
from nasforge.hardware.cost import eval_mode, example_input

__all__ = ["to_torchscript", "to_onnx", "check_onnx", "export_model", "write_latency", "EXPORT_FORMATS",
           "ONNX_TOLERANCE"]

EXPORT_FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_TOLERANCE = 1e-4
_TRACE_BATCH = 2  # trace with batch > 1 so nothing specialises on a batch of one


def _import_onnx() -> Any:
    """Import ``onnx`` or raise a NasforgeError explaining how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise NasforgeError("onnx is not installed; pip install 'nasforge[onnx]'") from exc
    return onnx


def _import_onnxruntime() -> Any:
    """Import ``onnxruntime`` or raise a NasforgeError explaining how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise NasforgeError("onnxruntime is not installed; pip install 'nasforge[onnx]'") from exc
    return onnxruntime


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Silence PyTorch's deprecation/tracer warnings for the legacy exporters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _first_line(exc: BaseException) -> str:
    """Return ``"Type: first line of message"`` for an exception."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Flatten a tensor / tuple / list / dict model output into a list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten_outputs(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten_outputs(item)]
    raise NasforgeError(
        f"model returned {type(out).__name__}; export needs a model that returns tensors "
        "(or tuples/lists/dicts of tensors)"
    )


def to_torchscript(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str]) -> Path:
    """Trace ``model`` in eval mode with ``torch.jit.trace`` and save it atomically to ``path``."""
    x = example_input(model, input_shape, _TRACE_BATCH, seed=0)
    with eval_mode(model), torch.no_grad(), _quiet_deprecations():
        try:
            traced = torch.jit.trace(model, x)
        except Exception as exc:
            raise NasforgeError(
                f"TorchScript tracing failed ({_first_line(exc)}); "
                "check the model runs on input_shape or use --format onnx"
            ) from exc

        def write(tmp: str) -> None:
            with _quiet_deprecations():
                torch.jit.save(traced, tmp)

        return atomic_write(path, write)


def to_onnx(
    model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str], opset: int = 17
) -> Path:
    """Export ``model`` to ONNX (legacy tracer, dynamic batch axis) atomically and validate it."""
    onnx = _import_onnx()
    x = example_input(model, input_shape, _TRACE_BATCH, seed=0)
    with eval_mode(model), torch.no_grad():
        n_outputs = len(_flatten_outputs(model(x)))
    output_names = ["output"] if n_outputs == 1 else [f"output{i}" for i in range(n_outputs)]
    dynamic_axes = {name: {0: "batch"} for name in ["input", *output_names]}

    def write(tmp: str) -> None:
        with eval_mode(model), torch.no_grad(), _quiet_deprecations():
            try:
                # The torch.export-based exporter needs the extra ``onnxscript`` package;
                # the legacy TorchScript exporter works with torch alone.
                torch.onnx.export(
                    model,
                    (x,),
                    tmp,
                    dynamo=False,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
            except Exception as exc:
                raise NasforgeError(
                    f"ONNX export failed at opset {opset} ({_first_line(exc)}); "
                    "try another --opset or --format torchscript"
                ) from exc
        try:
            onnx.checker.check_model(tmp)
        except Exception as exc:
            raise NasforgeError(
                f"exported ONNX model is invalid ({_first_line(exc)}); try another --opset or --format torchscript"
            ) from exc

    return atomic_write(path, write)


def check_onnx(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    input_shape: Sequence[int],
    batch_size: int = 2,
    seed: int = 0,
) -> float:
    """Run PyTorch (eval) and ONNX Runtime (CPU) on one seeded input; return the max abs difference."""
    ort = _import_onnxruntime()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise NasforgeError(f"ONNX file {str(onnx_path)!r} not found; export it first with to_onnx")
    x = example_input(model, input_shape, batch_size, seed=seed)
    with eval_mode(model), torch.no_grad():
        expected = [t.detach().float().cpu().numpy() for t in _flatten_outputs(model(x))]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    feed = x.detach().cpu().numpy()
    got = session.run(None, {input_name: feed})
    if len(got) != len(expected):
        raise NasforgeError(
            f"ONNX model has {len(got)} outputs but PyTorch gives {len(expected)}; re-export it from this model"
        )
    diff = 0.0
    for a, b in zip(expected, got):
        b = np.asarray(b, dtype=np.float32)
        if a.shape != b.shape:
            raise NasforgeError(
                f"ONNX output shape {b.shape} differs from PyTorch {a.shape}; re-export it from this model"
            )
        if a.size:
            diff = max(diff, float(np.max(np.abs(a.astype(np.float32) - b))))
    return diff


def export_model(
    model: nn.Module,
    input_shape: Sequence[int],
    out_dir: str | os.PathLike[str],
    fmt: str,
    name: str = "model",
) -> dict[str, Any]:
    """Export ``model`` to ``out_dir/name.{onnx,pt}``; ONNX exports are checked against PyTorch."""
    if fmt not in EXPORT_FORMATS:
        raise NasforgeError(f"unknown export format {fmt!r}; use one of: {'|'.join(EXPORT_FORMATS)}")
    if not name or name in {".", ".."} or "/" in name or os.sep in name:
        raise NasforgeError(f"invalid export name {name!r}; use a plain file stem such as 'model'")
    path = Path(out_dir) / f"{name}{EXPORT_FORMATS[fmt]}"
    if fmt == "torchscript":
        written = to_torchscript(model, input_shape, path)
        return {"path": str(written), "format": fmt, "max_abs_diff": None}
    _import_onnxruntime()  # fail before writing anything if the check cannot run
    written = to_onnx(model, input_shape, path)
    diff = check_onnx(model, written, input_shape)
    if not diff <= ONNX_TOLERANCE:
        raise NasforgeError(
            f"ONNX output differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE:g}) in {written}; "
            "try another opset or use --format torchscript"
        )
    return {"path": str(written), "format": fmt, "max_abs_diff": diff}


def write_latency(model: nn.Module, input_shape: Sequence[int], exported: dict[str, Any],
                  repeats: int = 50, threads: int | None = None) -> Path:
    """Measure the exported model's latency where it will run (ONNX Runtime for .onnx, else
    PyTorch CPU) and write it beside the export as ``NAME.latency.json``."""
    import json

    from nasforge.hardware.latency import measure_latency
    from nasforge.utils import atomic_write_text

    device = "onnxruntime" if exported["format"] == "onnx" else "cpu"
    result = measure_latency(model, tuple(input_shape), device=device, repeats=repeats, threads=threads)
    path = Path(exported["path"])
    stem = path.name[: -len(EXPORT_FORMATS.get(exported["format"], path.suffix))] or path.stem
    target = path.with_name(f"{stem}.latency.json")
    return atomic_write_text(target, json.dumps({"file": path.name, **result.to_dict()}, indent=2) + "\n")
