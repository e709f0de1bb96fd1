"""Linear (uniform) quantization to k bits with an MSE-optimal clipping threshold and an STE.

A tensor is clipped to ``[-t, t]`` (signed, weights and activations that can be negative)
or ``[0, t]`` (unsigned, e.g. after a ReLU) and rounded to ``2**(k-1) - 1`` (signed) or
``2**k - 1`` (unsigned) steps of size ``t / steps``, as in the HAQ code's ``QModule``.
The clipping threshold ``t`` comes from one of two rules (``threshold``): ``mse`` (the
default) minimises the mean squared quantization error over a grid of candidates
(``best_threshold``); ``kl`` is the HAQ code's rule (``kl_threshold``, ``QModule.
_compute_threshold`` in ``lib/utils/quantize_utils.py``): below 5 bits the threshold that
minimises a symmetric KL divergence between the cumulative histogram of ``|x|`` and its
``2**(k-1)``-level resampling, at 5 bits and more ``max|x|``. 32 bits means "float": the
tensor passes through unchanged. ``kmeans_1d`` clusters weights into ``2**k`` shared values
(HAQ's k-means quantization for size budgets).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nasforge.errors import ConfigError

__all__ = ["CLIP_METHODS", "FLOAT_BITS", "best_threshold", "check_bits", "fake_quantize", "kl_threshold",
           "kmeans_1d", "quantize_tensor", "threshold"]

#: clipping-threshold rules: ``mse`` (nasforge's default) and ``kl`` (the HAQ code's)
CLIP_METHODS = ("mse", "kl")

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


def kl_threshold(x: Tensor, bits: int) -> float:
    """The HAQ code's clipping threshold for ``x`` at ``bits`` (``QModule._compute_threshold``).

    A histogram of ``|x|`` over ``[0, max|x|]`` with ``numpy``'s ``sqrt`` bin count, normalised
    to a cumulative distribution ``P``; for each candidate cut ``i`` (from ``2**(k-1) + 1``
    bins up) ``P`` is saturated to 1 from bin ``i - 1`` on, its first ``i`` values are
    resampled to ``2**(k-1)`` points and back (``np.interp``) to give ``Q``, and the cut
    minimising ``sum((P - Q) * log2(P / Q))`` gives ``t = (i + 0.5) * bin width``. As in the
    code, 5 bits and more return ``max|x|``, and so do histograms with too few bins to cut.
    Terms where ``P`` and ``Q`` are both 0 count 0 (the code would make them NaN).
    """
    import numpy as np

    data = np.abs(x.detach().flatten().double().cpu().numpy())
    top = float(data.max()) if data.size else 0.0
    if top <= 0.0 or bits >= 5:
        return max(top, 1e-8)
    hist, edges = np.histogram(data, bins="sqrt", range=(0.0, top), density=True)
    hist = hist / np.sum(hist)
    cumsum = np.cumsum(hist)
    n = 2 ** (int(bits) - 1)
    if n + 1 > len(edges) - 1:
        return float(edges[-1])
    width = edges[1] - edges[0]
    best, best_d = float(edges[-1]), np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n + 1, len(edges)):
            p = cumsum.copy()
            p[i - 1:] = 1
            p_interp = np.interp(np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, i), p[:i])
            q = p.copy()
            q[:i] = np.interp(np.linspace(0.0, 1.0, i), np.linspace(0.0, 1.0, n), p_interp)
            terms = (cumsum - q) * np.log2(cumsum / q)
            d = float(np.sum(np.where((cumsum == 0) & (q == 0), 0.0, terms)))
            if d < best_d:  # the first minimum, as np.argmin
                best, best_d = (i + 0.5) * width, d
    return float(best)


def threshold(x: Tensor, bits: int, signed: bool = True, method: str = "mse") -> float:
    """The clipping threshold of ``x`` at ``bits`` by ``method`` (``mse`` or ``kl``; see the module)."""
    if method == "mse":
        return best_threshold(x, bits, signed=signed)
    if method == "kl":
        flat = x.detach().flatten().float()
        return kl_threshold(flat if signed else flat.clamp_min(0), bits)
    raise ConfigError(f"unknown clipping method {method!r}; use one of {list(CLIP_METHODS)}")


@torch.no_grad()
def kmeans_1d(x: Tensor, bits: int, iters: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Cluster the values of ``x`` into ``2**bits`` centroids: (centroids ``[K]``, labels shaped like ``x``).

    k-means++ seeding (seeded) and ``iters`` Lloyd iterations, as the HAQ code's ``k_means_cpu``
    (scikit-learn ``KMeans(init='k-means++', n_init=1, max_iter=3)`` during the search). The
    centroids returned are the means of their final clusters, so a cluster's shared weight is
    the mean of its members; fewer distinct values than clusters give one centroid per value.
    """
    flat = x.detach().flatten().double().cpu()
    values = torch.unique(flat)
    k = min(2 ** int(bits), int(values.numel()))
    gen = torch.Generator().manual_seed(int(seed))
    if k == values.numel():  # every value its own centroid: exact
        centroids = values
    else:
        centroids = flat[torch.randint(len(flat), (1,), generator=gen)]
        d2 = (flat - centroids[0]) ** 2
        for _ in range(1, k):  # k-means++: next centre with probability proportional to D(x)^2
            total = float(d2.sum())
            idx = torch.multinomial(d2 / total, 1, generator=gen) if total > 0 else \
                torch.randint(len(flat), (1,), generator=gen)
            centroids = torch.cat([centroids, flat[idx]])
            d2 = torch.minimum(d2, (flat - flat[idx]) ** 2)
        for _ in range(max(int(iters), 0)):
            centroids = _update(flat, centroids)
    centroids = _update(flat, centroids)  # shared values = the means of the final clusters
    return centroids.to(x.dtype), _assign(flat, centroids).reshape(x.shape)


def _assign(flat: Tensor, centroids: Tensor) -> Tensor:
    """The nearest centroid of each value (1-D: by the midpoints between sorted centroids)."""
    order = torch.argsort(centroids)
    mids = (centroids[order][1:] + centroids[order][:-1]) / 2
    return order[torch.bucketize(flat, mids)]


def _update(flat: Tensor, centroids: Tensor) -> Tensor:
    """One Lloyd step: each centroid becomes the mean of its cluster (an empty cluster keeps its centroid)."""
    labels = _assign(flat, centroids)
    k = len(centroids)
    sums = torch.zeros(k, dtype=flat.dtype).index_add_(0, labels, flat)
    counts = torch.bincount(labels, minlength=k).to(flat.dtype)
    return torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
