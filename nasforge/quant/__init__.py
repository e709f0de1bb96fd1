"""Mixed-precision quantization: linear quantizers, fake-quant wrappers, budgets, HAQ's environment and agent.

The search itself (``quantize``) lives in ``nasforge.strategies.haq``; this package holds
the parts a user can reuse on any model: ``wrap_model`` + ``calibrate`` + ``set_policy``.
"""

from nasforge.quant.budget import Budget, format_value, parse_budget
from nasforge.quant.linear import (
    FLOAT_BITS,
    best_threshold,
    check_bits,
    fake_quantize,
    quantize_tensor,
)
from nasforge.quant.modules import (
    QuantLayer,
    calibrate,
    layer_infos,
    quant_layers,
    quantized_size_bytes,
    set_policy,
    wrap_model,
)

__all__ = [
    "FLOAT_BITS",
    "Budget",
    "QuantLayer",
    "best_threshold",
    "calibrate",
    "check_bits",
    "fake_quantize",
    "format_value",
    "layer_infos",
    "parse_budget",
    "quant_layers",
    "quantize_tensor",
    "quantized_size_bytes",
    "set_policy",
    "wrap_model",
]
