"""In-memory mini-batches over tensors, shuffled and augmented from an explicit generator."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from nasforge.data.augment import Augment
from nasforge.errors import ConfigError

__all__ = ["iterate_batches", "num_batches"]


def _check_batch_size(batch_size: int) -> None:
    """Reject a batch size that is not a positive whole number."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch size {batch_size!r} is invalid; use a whole number >= 1")


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches one epoch over ``n`` samples yields."""
    _check_batch_size(batch_size)
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` batches for one epoch; shuffled by ``generator`` if given, augmented if ``augment`` is given."""
    _check_batch_size(batch_size)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x has {n} samples but y has {y.shape[0]}")
    if augment is not None and not augment.is_identity and generator is None:
        raise ValueError("iterate_batches needs a generator to apply random augmentation")
    return _batches(x, y, batch_size, generator, augment, drop_last)


def _batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    augment: Augment | None,
    drop_last: bool,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Generator body of :func:`iterate_batches` (argument checks happen eagerly there)."""
    n = x.shape[0]
    order: Tensor | None = None
    if generator is not None:
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    for start in range(0, num_batches(n, batch_size, drop_last) * batch_size, batch_size):
        stop = min(start + batch_size, n)
        if order is None:
            xb, yb = x[start:stop], y[start:stop]
        else:
            idx = order[start:stop]
            xb, yb = x[idx], y[idx.to(y.device)]
        if augment is not None and not augment.is_identity:
            assert generator is not None
            xb = augment(xb, generator)
        yield xb, yb
