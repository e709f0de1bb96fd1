"""Analytic accelerator models for mixed-precision quantization (HAQ's hardware feedback).

No bit-serial or bit-fusion chip is at hand, so latency and energy of a layer come from
two small roofline models whose formulas are stated here and in docs/haq.md. For a layer
with ``M`` multiply-accumulates, ``P`` weights, ``I`` input and ``O`` output activation
values, run with ``w`` weight bits and ``a`` activation bits:

    bytes   = (P * w + I * a + O * out_bits) / 8                      (off-chip traffic)
    compute = M * w * a / bit_ops_per_cycle                            (BitSerial, BISMO-like)
            = M * ceil(w/2) * ceil(a/2) / bricks                       (BitFusion, 2-bit bricks)
    cycles  = max(compute, bytes / bytes_per_cycle)                    (roofline)
    latency = cycles / freq_hz                                         [seconds]
    energy  = M * w * a * e_bitop + bytes * e_byte                     (BitSerial)   [joules]
            = M * ceil(w/2) * ceil(a/2) * e_brick + bytes * e_byte     (BitFusion)

A depthwise convolution does ``k*k`` MACs per input value, a pointwise one ``C_in``: its
arithmetic intensity is far lower, so with the default constants depthwise layers are
memory-bound on the narrow-memory bit-serial (edge) design (their latency falls with
activation bits, hardly with weight bits) and compute-bound on the wide-memory BitFusion
(cloud) design, where odd bit widths cost as much as the next even one. The constants
are illustrative, not measurements of a chip. Subclass ``Accelerator`` (or use
``LookupTableAccelerator`` with a measured table) to plug in your own hardware.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nasforge.errors import ConfigError

__all__ = [
    "ACCELERATORS",
    "Accelerator",
    "BitFusion",
    "BitSerial",
    "LayerInfo",
    "LookupTableAccelerator",
    "accelerator_names",
    "make_accelerator",
]


@dataclass(frozen=True)
class LayerInfo:
    """Static shape facts of one conv/linear layer, measured with one forward pass (batch 1)."""

    name: str
    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel: int  # kernel height (1 for linear)
    stride: int  # stride height (0 for linear, as in the HAQ code)
    groups: int
    in_hw: int  # input feature-map area (h * w; 1 for a linear layer on vectors)
    weight_params: int
    macs: int
    in_elems: int
    out_elems: int

    @property
    def depthwise(self) -> bool:
        """True for a depthwise convolution (one group per input channel)."""
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels

    def traffic_bytes(self, wbits: int, abits: int, out_bits: int = 8) -> float:
        """Off-chip bytes moved: weights at ``wbits``, inputs at ``abits``, outputs at ``out_bits``."""
        return (self.weight_params * wbits + self.in_elems * abits + self.out_elems * out_bits) / 8.0


class Accelerator:
    """A hardware cost model: ``layer_cost(info, wbits, abits) -> (latency seconds, energy joules)``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def layer_cost(self, info: LayerInfo, wbits: int, abits: int) -> tuple[float, float]:
        raise NotImplementedError

    def bound(self, info: LayerInfo, wbits: int, abits: int) -> str:
        """'compute' or 'memory': which roof limits the layer (``unknown`` for table models)."""
        return "unknown"

    def model_cost(self, infos: list[LayerInfo], policy: list[tuple[int, int]]) -> tuple[float, float]:
        """Summed (latency, energy) of all layers under ``policy`` = [(wbits, abits), ...]."""
        lat = en = 0.0
        for info, (w, a) in zip(infos, policy):
            dl, de = self.layer_cost(info, w, a)
            lat += dl
            en += de
        return lat, en


@dataclass
class _Roofline(Accelerator):
    """Shared roofline: cycles = max(compute, traffic / bandwidth); energy = compute + traffic."""

    freq_hz: float = 200e6
    bytes_per_cycle: float = 2.0
    e_byte: float = 100e-12
    out_bits: int = 8

    def compute_units(self, info: LayerInfo, wbits: int, abits: int) -> float:
        raise NotImplementedError

    def units_per_cycle(self) -> float:
        raise NotImplementedError

    def unit_energy(self) -> float:
        raise NotImplementedError

    def _cycles(self, info: LayerInfo, wbits: int, abits: int) -> tuple[float, float, float]:
        wbits, abits = min(wbits, 32), min(abits, 32)
        units = self.compute_units(info, wbits, abits)
        traffic = info.traffic_bytes(wbits, abits, self.out_bits)
        return units / self.units_per_cycle(), traffic / self.bytes_per_cycle, traffic

    def layer_cost(self, info: LayerInfo, wbits: int, abits: int) -> tuple[float, float]:
        compute, memory, traffic = self._cycles(info, wbits, abits)
        latency = max(compute, memory) / self.freq_hz
        energy = self.compute_units(info, min(wbits, 32), min(abits, 32)) * self.unit_energy() + traffic * self.e_byte
        return latency, energy

    def bound(self, info: LayerInfo, wbits: int, abits: int) -> str:
        compute, memory, _ = self._cycles(info, wbits, abits)
        return "compute" if compute >= memory else "memory"


@dataclass
class BitSerial(_Roofline):
    """Temporal bit-serial design (BISMO-like, edge): a MAC costs ``wbits * abits`` binary ops."""

    name: ClassVar[str] = "bitserial"
    description: ClassVar[str] = "bit-serial (BISMO-like, edge): cost per MAC ~ wbits*abits, narrow memory"
    bit_ops_per_cycle: float = 1024.0
    bytes_per_cycle: float = 2.0
    e_bitop: float = 0.05e-12

    def compute_units(self, info: LayerInfo, wbits: int, abits: int) -> float:
        return float(info.macs) * wbits * abits

    def units_per_cycle(self) -> float:
        return self.bit_ops_per_cycle

    def unit_energy(self) -> float:
        return self.e_bitop


@dataclass
class BitFusion(_Roofline):
    """Spatial design of fused 2-bit bricks (BitFusion-like, cloud): a MAC costs ``ceil(w/2)*ceil(a/2)`` bricks."""

    name: ClassVar[str] = "bitfusion"
    description: ClassVar[str] = "bit-fusion (2-bit bricks, cloud): cost per MAC ~ ceil(w/2)*ceil(a/2), wide memory"
    bricks: float = 512.0
    bytes_per_cycle: float = 16.0
    e_brick: float = 0.2e-12

    def compute_units(self, info: LayerInfo, wbits: int, abits: int) -> float:
        return float(info.macs) * math.ceil(wbits / 2) * math.ceil(abits / 2)

    def units_per_cycle(self) -> float:
        return self.bricks

    def unit_energy(self) -> float:
        return self.e_brick


class LookupTableAccelerator(Accelerator):
    """Measured costs: ``table[layer name][(wbits, abits)] = (latency s, energy J)``."""

    name: ClassVar[str] = "table"
    description: ClassVar[str] = "a measured per-layer lookup table"

    def __init__(self, table: Mapping[str, Mapping[tuple[int, int], tuple[float, float]]]):
        self.table = {k: dict(v) for k, v in table.items()}

    def layer_cost(self, info: LayerInfo, wbits: int, abits: int) -> tuple[float, float]:
        try:
            lat, en = self.table[info.name][(wbits, abits)]
        except KeyError:
            raise ConfigError(f"the lookup table has no entry for layer '{info.name}' at w{wbits}/a{abits}; "
                              "measure that setting or narrow the bit range") from None
        return float(lat), float(en)


ACCELERATORS: dict[str, type[Accelerator]] = {"bitserial": BitSerial, "bitfusion": BitFusion}


def accelerator_names() -> list[str]:
    """Names accepted by :func:`make_accelerator`."""
    return sorted(ACCELERATORS)


def make_accelerator(spec: str | Accelerator, **options: Any) -> Accelerator:
    """An accelerator by name (``bitserial``/``bitfusion``) with optional constants, or pass one through."""
    if isinstance(spec, Accelerator):
        return spec
    try:
        cls = ACCELERATORS[str(spec)]
    except KeyError:
        raise ConfigError(f"unknown accelerator '{spec}'; choose one of {accelerator_names()}") from None
    return cls(**options)
