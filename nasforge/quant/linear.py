"""Linear (uniform) quantization to k bits with an MSE-optimal clipping threshold and an STE.

A tensor is clipped to ``[-t, t]`` (signed, weights and activations that can be negative)
or ``[0, t]`` (unsigned, e.g. after a ReLU) and rounded to ``2**(k-1) - 1`` (signed) or
``2**k - 1`` (unsigned) steps of size ``t / steps``, as in the HAQ code's ``QModule``.
HAQ picks ``t`` by minimising the KL divergence between the float and the quantized
histograms; here ``t`` minimises the mean squared quantization error over a grid of
candidates (``best_threshold``), which is cheaper, deterministic and, for the few-bit
widths where clipping matters, picks a similar threshold. 32 bits means "float": the
tensor passes through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nasforge.errors import ConfigError

__all__ = ["FLOAT_BITS", "best_threshold", "check_bits", "fake_quantize", "quantize_tensor"]

FLOAT_BITS = 32


def check_bits(bits: int, what: str = "bits") -> int:
    """``bits`` as an int in 1..32 (32 = float), else a one-line ConfigError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= FLOAT_BITS:
        raise ConfigError(f"{what}={bits!r} is out of range; use an integer bit width in 1..32 (32 = float)")
    return bits


def _steps(bits: int, signed: bool) -> int:
    """Quantization steps above zero: ``2**(k-1)-1`` signed (1 for k=1: binary), ``2**k-1`` unsigned."""
    return max(2 ** (bits - 1) - 1, 1) if signed else 2**bits - 1


def quantize_tensor(x: Tensor, bits: int, threshold: float | Tensor, signed: bool = True) -> Tensor:
    """``x`` clipped to the threshold and rounded to ``bits`` (no gradient; 32 bits returns ``x``)."""
    if bits >= FLOAT_BITS:
        return x
    t = torch.as_tensor(threshold, dtype=x.dtype, device=x.device).clamp_min(1e-12)
    scale = t / _steps(bits, signed)
    lo = -t if signed else torch.zeros_like(t)
    return torch.round(torch.maximum(torch.minimum(x, t), lo) / scale) * scale


def fake_quantize(x: Tensor, bits: int, threshold: float | Tensor, signed: bool = True) -> Tensor:
    """Quantized ``x`` in the forward; straight-through gradient (1 inside the clip range, 0 outside)."""
    if bits >= FLOAT_BITS:
        return x
    t = torch.as_tensor(threshold, dtype=x.dtype, device=x.device).clamp_min(1e-12)
    lo = -t if signed else torch.zeros_like(t)
    clipped = torch.maximum(torch.minimum(x, t), lo)
    return clipped + (quantize_tensor(x.detach(), bits, t, signed) - clipped).detach()


@torch.no_grad()
def best_threshold(x: Tensor, bits: int, signed: bool = True, candidates: int = 100) -> float:
    """The clipping threshold in ``(0, max|x|]`` that minimises the MSE of quantizing ``x`` to ``bits``."""
    x = x.detach().flatten().float()
    top = float(x.abs().max()) if signed else float(x.clamp_min(0).max())
    if x.numel() == 0 or top <= 0.0 or bits >= FLOAT_BITS:
        return max(top, 1e-8)
    grid = torch.linspace(top / candidates, top, candidates)  # [C]
    scale = grid / _steps(bits, signed)
    lo = -grid if signed else torch.zeros_like(grid)
    errors = torch.empty(candidates)
    # chunked over candidates so a large tensor does not need a [C, N] matrix at once
    chunk = max(1, (1 << 22) // max(x.numel(), 1))
    for start in range(0, candidates, chunk):
        sl = slice(start, start + chunk)
        t, s, low = grid[sl, None], scale[sl, None], lo[sl, None]
        q = torch.round(torch.maximum(torch.minimum(x[None, :], t), low) / s) * s
        errors[sl] = ((q - x[None, :]) ** 2).mean(dim=1)
    return float(grid[int(torch.argmin(errors))])
