"""Static cost measures of a model: parameters, FLOPs/MACs and storage size."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasforge.errors import NasforgeError

__all__ = ["count_params", "count_flops", "count_macs", "model_size_bytes"]


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate a per-sample input shape (no batch dimension) and return it as a tuple."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or any(d <= 0 for d in shape)
    ):
        raise NasforgeError(
            f"invalid input_shape {input_shape!r}; give the per-sample shape as positive ints "
            "without the batch dimension, e.g. (3, 32, 32)"
        )
    return shape


def _check_batch_size(batch_size: int) -> int:
    """Validate a batch size and return it."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise NasforgeError(f"invalid batch_size {batch_size!r}; use a positive integer such as 1")
    return batch_size


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Return the device and floating dtype an input for ``model`` should have."""
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


def example_input(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build a random input of shape ``(batch_size, *input_shape)`` matching the model's device and dtype."""
    shape = _check_input_shape(input_shape)
    batch_size = _check_batch_size(batch_size)
    model_device, dtype = _model_device_dtype(model)
    target = torch.device(device) if device is not None else model_device
    generator = None
    if seed is not None:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
    x = torch.randn((batch_size, *shape), generator=generator, dtype=dtype)
    return x.to(target)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of (shared-once) parameters, optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> int:
    """Return FLOPs (2 per multiply-accumulate) of one eval-mode forward pass at ``batch_size``."""
    x = example_input(model, input_shape, batch_size)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> int:
    """Return multiply-accumulates of one eval-mode forward pass (``count_flops // 2``)."""
    return count_flops(model, input_shape, batch_size) // 2


def model_size_bytes(model: nn.Module, bits: int = 32) -> int:
    """Return parameter storage in bytes at ``bits`` per weight (ceil per tensor, summed)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise NasforgeError(f"invalid bits {bits!r}; use a positive integer such as 32, 8 or 4")
    return sum(math.ceil(p.numel() * bits / 8) for p in model.parameters())
