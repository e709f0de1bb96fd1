"""Export models to ONNX and to ``torch.export`` programs (``.pt2``), with a numerical check against PyTorch.

ONNX files are written by PyTorch's current exporter (``torch.onnx.export(..., dynamo=True)``,
which needs the ``onnxscript`` package of the ``onnx`` extra) with a dynamic batch axis; where it
is missing or fails on a network, the legacy TorchScript-based exporter is used instead and the
result says so (``exporter``). Timing a piece of a network on ONNX Runtime (lookup tables) uses
the legacy exporter first: it is 5-20 times faster to run and gives ONNX Runtime the same ops.
TorchScript (``torch.jit.trace``) is deprecated in PyTorch and no longer offered: ``pt2``
(``torch.export``) replaces it. Exporter warnings and progress lines are not shown.
"""

from __future__ import annotations

import contextlib
import io
import logging
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

__all__ = ["to_pt2", "to_onnx", "check_onnx", "export_model", "write_latency", "latency_path", "load_quantized",
           "load_exportable", "check_format", "EXPORT_FORMATS", "ONNX_TOLERANCE", "DEFAULT_OPSET"]

EXPORT_FORMATS: dict[str, str] = {"onnx": ".onnx", "pt2": ".pt2"}
ONNX_TOLERANCE = 1e-4
#: ONNX opset of exported files (the lowest the current exporter implements)
DEFAULT_OPSET = 18
_EXPORTERS = ("dynamo", "legacy")
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
def _quiet_export() -> Iterator[None]:
    """Silence the exporters: warnings of every kind, their loggers, and what they print."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
                                                    "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def check_format(fmt: str, with_json: bool = False) -> str:
    """Refuse an unknown export format, and TorchScript with what replaces it (before any work)."""
    names = [*EXPORT_FORMATS, *(["json"] if with_json else [])]
    if fmt == "torchscript":
        raise NasforgeError("TorchScript export (torch.jit.trace) is deprecated in PyTorch and no longer offered; "
                            "use --format pt2 (torch.export) or --format onnx")
    if fmt not in names:
        raise NasforgeError(f"unknown export format {fmt!r}; use one of: {'|'.join(names)}")
    return fmt


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


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=65536)


def to_pt2(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str]) -> Path:
    """``torch.export`` ``model`` in eval mode (dynamic batch axis) and save the program atomically to ``path``
    (load it with ``torch.export.load(path).module()``)."""
    x = example_input(model, input_shape, _TRACE_BATCH, seed=0)
    with eval_mode(model), torch.no_grad(), _quiet_export():
        try:
            program = torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim()},))
        except Exception as exc:
            raise NasforgeError(f"torch.export failed ({_first_line(exc)}); use --format onnx") from exc

    def write(tmp: str) -> None:
        with _quiet_export():
            torch.export.save(program, tmp)

    return atomic_write(path, write)


def to_onnx(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
            exporter: str = "dynamo") -> Path:
    """Export ``model`` (eval mode, dynamic batch axis) to ONNX atomically and validate it with ``onnx.checker``.

    ``exporter``: ``dynamo`` (``torch.onnx.export(..., dynamo=True)``) or ``legacy`` (TorchScript-based) is
    tried first, the other one if it is unavailable or fails (``onnx_export`` also says which one wrote it).
    """
    return onnx_export(model, input_shape, path, opset, exporter)[0]


def _onnxscript_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxscript") is not None


def onnx_export(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str],
                opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> tuple[Path, str]:
    """``to_onnx`` returning also the exporter that wrote the file (``dynamo`` or ``legacy``)."""
    onnx = _import_onnx()
    if exporter not in _EXPORTERS:
        raise NasforgeError(f"unknown ONNX exporter {exporter!r}; use one of: {'|'.join(_EXPORTERS)}")
    if not isinstance(opset, int) or isinstance(opset, bool) or not 7 <= opset <= 30:
        raise NasforgeError(f"invalid --opset {opset!r}; use an ONNX opset between 7 and 30 (default {DEFAULT_OPSET})")
    x = example_input(model, input_shape, _TRACE_BATCH, seed=0)
    with eval_mode(model), torch.no_grad():
        n_outputs = len(_flatten_outputs(model(x)))
    output_names = ["output"] if n_outputs == 1 else [f"output{i}" for i in range(n_outputs)]
    order = [exporter] + [e for e in _EXPORTERS if e != exporter]
    if not _onnxscript_available():  # the current exporter needs onnxscript (the onnx extra)
        order.remove("dynamo")
    if opset < DEFAULT_OPSET and "dynamo" in order:  # the current exporter writes opset >= 18 only
        order.remove("dynamo")
    errors: list[str] = []

    def export(tmp: str, how: str) -> None:
        with eval_mode(model), torch.no_grad(), _quiet_export():
            if how == "dynamo":
                program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                            output_names=output_names, dynamic_shapes=({0: _batch_dim()},),
                                            verbose=False, report=False, optimize=True)
                program.save(tmp)
            else:
                torch.onnx.export(model, (x,), tmp, dynamo=False, opset_version=opset, input_names=["input"],
                                  output_names=output_names,
                                  dynamic_axes={name: {0: "batch"} for name in ["input", *output_names]},
                                  do_constant_folding=True)

    for how in order:
        try:
            written = atomic_write(path, lambda tmp: export(tmp, how))
        except Exception as exc:
            errors.append(f"{how}: {_first_line(exc)}")
            continue
        try:
            onnx.checker.check_model(str(written))
        except Exception as exc:
            Path(written).unlink(missing_ok=True)
            errors.append(f"{how}: invalid model ({_first_line(exc)})")
            continue
        return Path(written), how
    raise NasforgeError(f"ONNX export failed at opset {opset} ({'; '.join(errors)}); try another --opset "
                        "or --format pt2")


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
    opset: int = DEFAULT_OPSET,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``out_dir/name.{onnx,pt2}`` (or to ``path``); ONNX exports are checked against
    PyTorch with ONNX Runtime, ``pt2`` programs against the model."""
    check_format(fmt)
    if not name or name in {".", ".."} or "/" in name or os.sep in name:
        raise NasforgeError(f"invalid export name {name!r}; use a plain file stem such as 'model'")
    target = Path(path) if path is not None else Path(out_dir) / f"{name}{EXPORT_FORMATS[fmt]}"
    if fmt == "pt2":
        written = to_pt2(model, input_shape, target)
        x = example_input(model, input_shape, 3, seed=1)
        with eval_mode(model), torch.no_grad(), _quiet_export():
            expected = _flatten_outputs(model(x))
            got = _flatten_outputs(torch.export.load(str(written)).module()(x))
        diff = max((float((a - b).abs().max()) for a, b in zip(expected, got) if a.numel()), default=0.0)
        return {"path": str(written), "format": fmt, "exporter": "torch.export", "max_abs_diff": diff}
    _import_onnxruntime()  # fail before writing anything if the check cannot run
    written, exporter = onnx_export(model, input_shape, target, opset)
    diff = check_onnx(model, written, input_shape)
    if not diff <= ONNX_TOLERANCE:
        raise NasforgeError(
            f"ONNX output differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE:g}) in {written}; "
            "try another --opset or use --format pt2"
        )
    return {"path": str(written), "format": fmt, "exporter": exporter, "opset": opset, "max_abs_diff": diff}


def latency_path(exported: str | os.PathLike[str]) -> Path:
    """Where the latency of an exported file is written: ``FILE.latency.json`` (one per file and format)."""
    exported = Path(exported)
    return exported.with_name(f"{exported.name}.latency.json")


def write_latency(model: nn.Module, input_shape: Sequence[int], exported: dict[str, Any],
                  repeats: int = 50, threads: int | None = None, warmup_seconds: float = 0.5) -> Path:
    """Measure the exported model's latency where it will run (ONNX Runtime for .onnx, eager PyTorch on the
    CPU for a .pt2 program) and write it beside the export as ``FILE.latency.json``."""
    import json

    from nasforge.hardware.latency import measure_latency
    from nasforge.utils import atomic_write_text

    device = "onnxruntime" if exported["format"] == "onnx" else "cpu"
    result = measure_latency(model, tuple(input_shape), device=device, repeats=repeats, threads=threads,
                             warmup_seconds=warmup_seconds)
    path = Path(exported["path"])
    return atomic_write_text(latency_path(path), json.dumps({"file": path.name, **result.to_dict()}, indent=2) + "\n")


def _frozen_quantized(model: nn.Module) -> nn.Module:
    """A quantized network (``QuantLayer``s) for inference and export: each layer's weights replaced by their
    quantized values and its quantizers fixed QuantizeLinear/DequantizeLinear pairs (``nasforge.quant.qdq``),
    so the ONNX file is a QDQ model."""
    import copy

    from nasforge.quant.modules import QuantLayer
    from nasforge.quant.qdq import qdq_layer

    model = copy.deepcopy(model).eval()
    done: dict[int, nn.Module] = {}

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantLayer):
                if id(child) not in done:
                    done[id(child)] = qdq_layer(child)
                setattr(parent, name, done[id(child)])
            else:
                visit(child)

    visit(model)
    return model


def load_quantized(run_dir: str | os.PathLike[str]) -> tuple[nn.Module, Any, tuple[int, ...]]:
    """The network of a ``nasforge quantize`` run (``quantized.pt``: its bits per layer, thresholds and
    fine-tuned weights, on the float ``model.pt`` it was made from), frozen for inference and export:
    (model in eval mode, arch, input shape)."""
    from nasforge.config import read_yaml
    from nasforge.errors import ExperimentError
    from nasforge.quant.modules import quant_layers, set_quantizer, wrap_model
    from nasforge.train import load_model

    run_dir = Path(run_dir)
    path = run_dir / "quantized.pt"
    if not path.is_file():
        raise ExperimentError(f"{run_dir} has no quantized.pt; the quantize run has not finished: "
                              f"continue it with 'nasforge resume {run_dir}'")
    q = read_yaml(run_dir / "config.yaml").get("quantize") or {}
    base = Path(q.get("model") or "")
    if not base.is_file():
        raise ExperimentError(f"the float model {base} that {run_dir} was quantized from is missing; put it back "
                              "(its architecture and shapes rebuild the quantized network)")
    model, arch, input_shape = load_model(base)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        wrapped = wrap_model(model)
        if blob.get("quantizer", "linear") != "linear":  # k-means: the cluster of each weight is in the state
            set_quantizer(wrapped, blob["quantizer"])
        layers = quant_layers(wrapped)
        policy = blob["policy"]
        if len(policy) != len(layers):
            raise ValueError("policy length")
        for (_, layer), (w, a) in zip(layers, policy):
            layer.wbits, layer.abits = int(w), int(a)
        wrapped.load_state_dict(blob["state_dict"])
    except Exception as exc:  # a damaged file, or one made from another model
        raise ExperimentError(f"{path} is corrupt or was not made from {base} ({type(exc).__name__}); "
                              f"rerun 'nasforge quantize'") from None
    return _frozen_quantized(wrapped), arch, input_shape


def load_exportable(source: str | os.PathLike[str]) -> tuple[nn.Module, Any, tuple[int, ...], Path]:
    """The network behind an export source: a run directory (its ``model.pt``, or for a quantize run its
    quantized network) or a ``model.pt``: (model, arch, input shape, the file it came from)."""
    from nasforge.train import load_model

    source = Path(source)
    if source.is_dir() and not (source / "model.pt").is_file() and (source / "quantized.pt").is_file():
        model, arch, shape = load_quantized(source)
        return model, arch, shape, source / "quantized.pt"
    path = source / "model.pt" if source.is_dir() else source
    model, arch, shape = load_model(path)
    return model, arch, shape, path
