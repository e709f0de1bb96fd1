"""Measured latency of quantized layers on ONNX Runtime's CPU int8 kernels (a hardware that runs them).

The analytic accelerator models (``bitserial``, ``bitfusion``) stand in for chips that are
not at hand; a CPU with ONNX Runtime is at hand and runs quantized kernels, so its latency
is measured instead of modelled. For every conv/linear layer of a wrapped model, the layer
alone (its weights, its input shape from one forward pass) is exported to ONNX twice and
timed on ONNX Runtime:

- **float**: the layer as is (``Conv`` / ``Gemm``), the kernel a layer kept above 8 bits runs;
- **int8**: the same file quantized by ONNX Runtime's ``quantize_static`` in QDQ format
  (int8 weights, uint8 activations, per-tensor scales calibrated on random inputs), which
  ONNX Runtime fuses into ``QLinearConv`` / ``QLinearMatMul``: the kernel a layer at 2-8
  bits runs, since the CPU has no narrower integer kernels.

``OrtInt8Accelerator.layer_cost(info, w, a)`` is the int8 time when both widths are at most
8 and the float time otherwise; a policy's latency is the sum over its layers (the int8
time includes quantizing the layer's input and dequantizing its output, as between the
float BatchNorm/activation of a QDQ network). Energy is not measured (no power counter is
read), so an energy budget is refused on this target.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from nasforge.errors import ConfigError, NasforgeError
from nasforge.hardware.accelerators import Accelerator, LayerInfo

__all__ = ["INT8_MAX_BITS", "OrtInt8Accelerator", "measure_ort_table"]

#: layers whose weight and activation widths are both at most this run the int8 kernels
INT8_MAX_BITS = 8


class OrtInt8Accelerator(Accelerator):
    """Measured per-layer latency on ONNX Runtime (CPU): int8 kernels at <= 8 bits, float kernels above."""

    name: ClassVar[str] = "onnxruntime"
    description: ClassVar[str] = "ONNX Runtime on this CPU, measured: int8 QDQ kernels at <= 8 bits, float above"
    has_energy: ClassVar[bool] = False

    def __init__(self, table: Mapping[str, Mapping[str, float]], meta: Mapping[str, Any] | None = None):
        #: layer name -> {"int8": seconds, "float": seconds}
        self.table = {k: {"int8": float(v["int8"]), "float": float(v["float"])} for k, v in table.items()}
        self.meta = dict(meta or {})

    def layer_cost(self, info: LayerInfo, wbits: int, abits: int) -> tuple[float, float]:
        try:
            row = self.table[info.name]
        except KeyError:
            raise ConfigError(f"no ONNX Runtime measurement for layer '{info.name}'; measure the model it came "
                              "from (measure_ort_table)") from None
        kernel = "int8" if max(wbits, abits) <= INT8_MAX_BITS else "float"
        return row[kernel], 0.0

    def bound(self, info: LayerInfo, wbits: int, abits: int) -> str:
        return "int8 kernel" if max(wbits, abits) <= INT8_MAX_BITS else "float kernel"


class _Calibration:
    """Random calibration batches for ``quantize_static`` (ONNX Runtime's CalibrationDataReader protocol)."""

    def __init__(self, name: str, samples: Sequence[np.ndarray]):
        self.items = iter([{name: s} for s in samples])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _median_seconds(session: Any, x: np.ndarray, repeats: int, warmup_seconds: float) -> float:
    from nasforge.hardware.latency import _time_calls

    feed = {session.get_inputs()[0].name: x}
    times = _time_calls(lambda: session.run(None, feed), 3, repeats, warmup_seconds=warmup_seconds)
    return float(np.median(times)) / 1000.0


def _input_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Each wrapped layer's input shape (without batch) from one batch-1 float forward pass."""
    from nasforge.quant.modules import layer_shapes

    return {name: shapes[0][1:] for name, shapes in layer_shapes(model, input_shape).items()}


def measure_ort_table(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1, threads: int = 1,
                      repeats: int = 30, warmup_seconds: float = 0.2, seed: int = 0) -> OrtInt8Accelerator:
    """Time every wrapped layer of ``model`` alone on ONNX Runtime, float and int8 (QDQ), at ``batch_size``.

    ``threads``: ONNX Runtime intra-op threads. Returns the accelerator holding the table; its
    ``meta`` records the batch, threads, repeats and the ONNX Runtime version.
    """
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise NasforgeError("measured latency on ONNX Runtime needs onnxruntime; pip install 'nasforge[onnx]'") \
            from exc
    from nasforge.export import onnx_export
    from nasforge.quant.modules import quant_layers

    shapes = _input_shapes(model, input_shape)
    rng = np.random.default_rng(seed)
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="nasforge-ortq-") as tmp:
        for i, (name, q) in enumerate(quant_layers(model)):
            layer = _float_copy(q.layer)
            shape = shapes[name]
            fp32 = Path(tmp) / f"layer{i}.onnx"
            onnx_export(layer, shape, fp32, exporter="legacy")
            int8 = Path(tmp) / f"layer{i}.int8.onnx"
            samples = [rng.standard_normal((batch_size, *shape)).astype(np.float32) for _ in range(4)]
            logging.disable(logging.WARNING)  # quantize_static's advice to pre-process (nothing to gain here)
            try:
                quantize_static(str(fp32), str(int8), _Calibration("input", samples),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=False)
            finally:
                logging.disable(logging.NOTSET)
            x = np.ascontiguousarray(samples[0])
            table[name] = {"float": _median_seconds(_session(fp32, threads), x, repeats, warmup_seconds),
                           "int8": _median_seconds(_session(int8, threads), x, repeats, warmup_seconds)}
    meta = {"batch_size": batch_size, "threads": threads, "repeats": repeats, "onnxruntime": ort.__version__}
    return OrtInt8Accelerator(table, meta)


def _float_copy(layer: nn.Module) -> nn.Module:
    import copy

    out = copy.deepcopy(layer).float().cpu().eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out
