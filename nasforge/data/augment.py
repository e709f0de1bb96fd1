"""Batch-vectorised data augmentation on float image tensors (N, C, H, W), without torchvision."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nasforge.errors import ConfigError

__all__ = ["Augment"]


def _draw_randint(low: int, high: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Draw ``n`` integers in [low, high) on the generator's device, then move them to ``device``."""
    return torch.randint(low, high, (n,), generator=generator, device=generator.device).to(device)


@dataclass(frozen=True)
class Augment:
    """Random crop (zero padding), horizontal flip and cutout, applied per sample; all randomness from a generator."""

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        """Reject negative sizes."""
        for field in ("crop_padding", "cutout"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"augment {field}={value!r} is invalid; use a whole number >= 0 (0 turns it off)")

    @property
    def is_identity(self) -> bool:
        """True when every augmentation is switched off."""
        return self.crop_padding == 0 and not self.flip and self.cutout == 0

    def replace(self, **kw: Any) -> "Augment":
        """Return a copy with the given fields changed."""
        return dataclasses.replace(self, **kw)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return an augmented copy of the batch ``x`` (N, C, H, W): crop, then flip, then cutout."""
        if x.dim() != 4:
            raise ValueError(f"Augment expects a (N, C, H, W) batch, got shape {tuple(x.shape)}")
        out = x
        if self.crop_padding > 0:
            out = self._crop(out, generator)
        if self.flip:
            out = self._flip(out, generator)
        if self.cutout > 0:
            out = self._cutout(out, generator)
        return out.clone() if out is x else out

    def _crop(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Random crop of the zero-padded batch: translate each sample by -p..p in both directions."""
        n, _, h, w = x.shape
        p = self.crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        oy = _draw_randint(0, 2 * p + 1, n, generator, x.device)
        ox = _draw_randint(0, 2 * p + 1, n, generator, x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)[None, :]  # (N, H)
        cols = ox[:, None] + torch.arange(w, device=x.device)[None, :]  # (N, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        channels_last = padded.permute(0, 2, 3, 1)  # (N, H+2p, W+2p, C)
        cropped = channels_last[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
        return cropped.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _flip(x: Tensor, generator: torch.Generator) -> Tensor:
        """Flip each sample left-right with probability 0.5."""
        n = x.shape[0]
        mask = torch.rand((n,), generator=generator, device=generator.device).to(x.device) < 0.5
        return torch.where(mask[:, None, None, None], x.flip(3), x)

    def _cutout(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Zero a square of side ``cutout`` whose centre is uniform over the image (clipped at the borders)."""
        n, _, h, w = x.shape
        size = self.cutout
        cy = _draw_randint(0, h, n, generator, x.device)
        cx = _draw_randint(0, w, n, generator, x.device)
        y0 = (cy - size // 2)[:, None]
        x0 = (cx - size // 2)[:, None]
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        in_y = (ys >= y0) & (ys < y0 + size)  # (N, H)
        in_x = (xs >= x0) & (xs < x0 + size)  # (N, W)
        mask = in_y[:, :, None] & in_x[:, None, :]  # (N, H, W)
        return x.masked_fill(mask[:, None, :, :], 0.0)
