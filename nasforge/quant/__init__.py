"""Mixed-precision quantization: linear quantizers, fake-quant wrappers, budgets, HAQ's environment and agent.

The search itself (``quantize``) lives in ``nasforge.strategies.haq``; this package holds
the parts a user can reuse on any model: ``wrap_model`` + ``calibrate`` + ``set_policy``.
"""

from nasforge.quant.budget import Budget, format_value, parse_budget
from nasforge.quant.linear import (
    CLIP_METHODS,
    FLOAT_BITS,
    best_threshold,
    check_bits,
    fake_quantize,
    kl_threshold,
    kmeans_1d,
    quantize_tensor,
    threshold,
)
from nasforge.quant.modules import (
    QuantLayer,
    calibrate,
    layer_infos,
    quant_layers,
    QUANTIZERS,
    quantized_size_bytes,
    set_clip,
    set_policy,
    set_quantizer,
    wrap_model,
)

__all__ = [
    "CLIP_METHODS",
    "FLOAT_BITS",
    "QUANTIZERS",
    "Budget",
    "QuantLayer",
    "best_threshold",
    "calibrate",
    "check_bits",
    "fake_quantize",
    "kl_threshold",
    "kmeans_1d",
    "format_value",
    "layer_infos",
    "parse_budget",
    "quant_layers",
    "quantize_tensor",
    "quantized_size_bytes",
    "set_clip",
    "set_policy",
    "set_quantizer",
    "threshold",
    "wrap_model",
]
