"""Hardware cost: static counts (params, FLOPs, size) and measured latency."""

from nasforge.hardware.cost import count_flops, count_macs, count_params, model_size_bytes
from nasforge.hardware.latency import DEVICES, LatencyResult, describe_device, measure_latency
from nasforge.hardware.accelerators import (  # analytic accelerator models (HAQ)
    Accelerator, BitFusion, BitSerial, LayerInfo, LookupTableAccelerator, accelerator_names, make_accelerator,
)

__all__ = [
    "count_params",
    "count_flops",
    "count_macs",
    "model_size_bytes",
    "LatencyResult",
    "measure_latency",
    "describe_device",
    "DEVICES",
    "Accelerator",
    "BitFusion",
    "BitSerial",
    "LayerInfo",
    "LookupTableAccelerator",
    "accelerator_names",
    "make_accelerator",
]
