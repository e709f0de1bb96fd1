"""A quantized network for deployment: QuantizeLinear/DequantizeLinear (QDQ) pairs in the exported graph.

``qdq_layer(q)`` turns a ``QuantLayer`` into an inference module whose ONNX export (either
exporter) is the standard QDQ form that ONNX Runtime, TensorRT and OpenVINO read as a
quantized model:

- the **input** of a layer at ``k <= 8`` activation bits: ``Clip`` to the layer's threshold
  range, then ``QuantizeLinear``/``DequantizeLinear`` with scale ``t / (2**k - 1)`` on uint8
  (unsigned inputs, after a ReLU) or ``t / (2**(k-1) - 1)`` on int8 (signed inputs): the
  clip keeps a ``k``-bit input inside its ``2**k`` levels of the 8-bit carrier;
- the **weight** at ``k <= 8`` bits: the quantized weight (already on the ``k``-bit grid)
  through ``QuantizeLinear``/``DequantizeLinear`` on int8 with scale ``t / (2**(k-1) - 1)``,
  so the stored integers are the ``k``-bit codes.

The values equal the fake-quantized network's (``torch.fake_quantize_per_tensor_affine``
is what the exporters turn into the QDQ pair). Widths above 8 bits have no 8-bit carrier:
their weights are stored on their grid in float and their input is clipped and rounded
with float ops. k-means weights (shared values, not a uniform grid) are stored as their
cluster means in float.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.quant.linear import FLOAT_BITS, _steps, quantize_tensor
from nasforge.quant.modules import QuantLayer

__all__ = ["QDQInput", "QDQLayer", "qdq_layer"]

CARRIER_BITS = 8


class QDQInput(nn.Module):
    """Clip to the threshold range and quantize to ``bits`` (QDQ on an 8-bit carrier up to 8 bits)."""

    def __init__(self, bits: int, threshold: float, signed: bool):
        super().__init__()
        self.bits, self.threshold, self.signed = int(bits), max(float(threshold), 1e-12), bool(signed)
        self.scale = self.threshold / _steps(self.bits, self.signed)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits > CARRIER_BITS:
            return quantize_tensor(x, self.bits, self.threshold, self.signed)
        lo = -self.threshold if self.signed else 0.0
        x = torch.clamp(x, lo, self.threshold)
        qmin, qmax = (-128, 127) if self.signed else (0, 255)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, qmin, qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, threshold={self.threshold:.4g}, signed={self.signed}"


class QDQLayer(nn.Module):
    """A conv/linear layer whose weight (on the ``wbits`` grid) passes a QDQ pair, after an optional input QDQ."""

    def __init__(self, layer: nn.Module, w_scale: float | None, quant_input: QDQInput | None):
        super().__init__()
        self.layer, self.w_scale, self.quant_input = layer, w_scale, quant_input

    def forward(self, x: Tensor) -> Tensor:
        if self.quant_input is not None:
            x = self.quant_input(x)
        w = self.layer.weight
        if self.w_scale is not None:
            w = torch.fake_quantize_per_tensor_affine(w, self.w_scale, 0, -128, 127)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


@torch.no_grad()
def qdq_layer(q: QuantLayer) -> nn.Module:
    """The inference module of one ``QuantLayer``: its float layer when it is not quantized, else a ``QDQLayer``."""
    layer = copy.deepcopy(q.layer).eval()
    for p in layer.parameters():
        p.requires_grad_(False)
    w_scale = None
    if q.wbits < FLOAT_BITS:
        layer.weight.copy_(q.quantized_weight().detach())
        if q.quantizer == "linear" and q.wbits <= CARRIER_BITS:
            w_scale = max(float(q.w_threshold), 1e-12) / _steps(q.wbits, True)
    quant_input = QDQInput(q.abits, float(q.a_threshold), bool(q.a_signed)) if q.abits < FLOAT_BITS else None
    if w_scale is None and quant_input is None:
        return layer
    return QDQLayer(layer, w_scale, quant_input)
