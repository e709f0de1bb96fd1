"""Where samples come from: arrays in memory, or image files read lazily.

A *source* is a map-style collection of labelled images. ``fetch(indices, rng, train)``
returns one batch as a float32 tensor ``(N, C, H, W)`` normalised with the dataset's
mean and std, before any batch augmentation (``nasforge.data.augment.Augment``):

- :class:`ArraySource` holds the images as one array (uint8 pixels or floats); the
  papers' small datasets (CIFAR, ImageNet16, digits, a user's ``.npz``) fit in memory.
- :class:`ImageFileSource` holds file paths only and decodes with Pillow when a batch is
  fetched (ImageNet, Tiny-ImageNet, any ``ImageFolder``), so memory does not grow with the
  number of images. Its per-image transforms (random-resized crop, flip, colour jitter,
  resize + centre crop for evaluation) draw their parameters from the batch's own
  ``numpy`` generator: a batch is the same whichever process decodes it, so results do not
  depend on the number of loader workers and resume stays exact.

Transforms are written here, not taken from torchvision: torchvision's transforms draw
from the global RNG of whichever worker runs them (a resumed or re-sharded run would see
other crops), and the tested torchvision build does not import beside the CPU torch build.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from nasforge.errors import DataError

__all__ = ["ArraySource", "ImageFileSource", "ImagePipeline", "IMAGE_EXTENSIONS", "decode_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class ArraySource:
    """Images held in memory: ``x`` (N, C, H, W) uint8 pixels or floats, divided by ``scale``."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 scale: float = 1.0):
        if x.ndim != 4:
            raise ValueError(f"ArraySource expects (N, C, H, W) images, got shape {x.shape}")
        self.x = x
        self.labels = np.asarray(labels, dtype=np.int64)
        self.scale = float(scale)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def fetch(self, indices: np.ndarray, rng: np.random.Generator | None = None, train: bool = False) -> Tensor:
        """The images at ``indices`` as normalised float32 (N, C, H, W)."""
        out = self.x[indices].astype(np.float32)
        out *= np.float32(1.0 / self.scale)
        out -= self.mean[None, :, None, None]
        out /= self.std[None, :, None, None]
        return torch.from_numpy(np.ascontiguousarray(out))


@dataclass(frozen=True)
class ImagePipeline:
    """Per-image transforms of a file source, as the papers used them.

    ``size``: side of the network input. Training: ``random_resized`` (scale 0.08-1, ratio
    3/4-4/3, the ImageNet recipe) or a plain resize to ``size``; horizontal flip; colour
    jitter (brightness, saturation as ProxylessNAS/DenseNAS). Evaluation: resize the short
    side to ``size / crop_ratio`` and take the centre ``size`` crop (256 -> 224), or a plain
    resize when ``crop_ratio`` is 1.
    """

    size: int
    random_resized: bool = False
    flip: bool = False
    brightness: float = 0.0
    saturation: float = 0.0
    crop_ratio: float = 1.0


def decode_image(path: str, channels: int) -> "object":
    """Open ``path`` with Pillow and convert it to RGB (3 channels) or L (1 channel); one-line errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB" if channels == 3 else "L")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path} ({exc}); delete or replace the file (earlier epochs of a "
                        f"run are checkpointed: resume after fixing it)") from None


class ImageFileSource:
    """Image files decoded when fetched (never all in memory)."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, channels: int, pipeline: ImagePipeline,
                 mean: Sequence[float], std: Sequence[float]):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.channels = int(channels)
        self.pipeline = pipeline
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.pipeline.size, self.pipeline.size

    def fetch(self, indices: np.ndarray, rng: np.random.Generator | None = None, train: bool = False) -> Tensor:
        """Decode, transform and normalise the images at ``indices``: float32 (N, C, size, size)."""
        size = self.pipeline.size
        out = np.empty((len(indices), size, size, self.channels), dtype=np.uint8)
        for row, i in enumerate(indices):
            img = decode_image(self.paths[int(i)], self.channels)
            img = self._train(img, rng) if train and rng is not None else self._eval(img)
            arr = np.asarray(img, dtype=np.uint8)
            out[row] = arr[:, :, None] if arr.ndim == 2 else arr
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.from_numpy(self.mean)[None, :, None, None]
        std = torch.from_numpy(self.std)[None, :, None, None]
        return ((x - mean) / std).contiguous()

    # --- transforms ----------------------------------------------------------------------
    def _eval(self, img):
        from PIL import Image

        p = self.pipeline
        if p.crop_ratio >= 1.0:
            return img.resize((p.size, p.size), Image.BILINEAR)
        w, h = img.size
        short = max(1, round(p.size / p.crop_ratio))
        if w <= h:
            nw, nh = short, max(1, round(h * short / w))
        else:
            nw, nh = max(1, round(w * short / h)), short
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - p.size) // 2, (nh - p.size) // 2
        return img.crop((left, top, left + p.size, top + p.size))

    def _train(self, img, rng: np.random.Generator):
        from PIL import Image, ImageEnhance

        p = self.pipeline
        if p.random_resized:
            box = _random_resized_box(img.size, rng)
            img = img.resize((p.size, p.size), Image.BILINEAR, box=box)
        else:
            img = img.resize((p.size, p.size), Image.BILINEAR)
        if p.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if p.brightness > 0:
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(1 - p.brightness, 1 + p.brightness))
        if p.saturation > 0 and self.channels == 3:
            img = ImageEnhance.Color(img).enhance(rng.uniform(1 - p.saturation, 1 + p.saturation))
        return img


def _random_resized_box(size: tuple[int, int], rng: np.random.Generator, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """The crop box of the ImageNet random-resized crop (area 8-100 %, aspect 3/4-4/3; ten tries, then
    the centre crop clamped to the aspect range)."""
    width, height = size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


# --------------------------------------------------------------------------- folders


@dataclass
class Folder:
    """A scanned ``root/<class>/<image>`` folder: file paths, integer labels and class names."""

    root: Path
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def scan_class_folder(root: Path, classes: Sequence[str] | None = None, what: str = "images") -> Folder:
    """Scan ``root/<class>/...`` (images in each class folder, nested folders included, sorted).

    ``classes``: the class names to expect (a val folder must hold the train folder's classes).
    """
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; expected {root}/<class>/<image> ({what})")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise DataError(f"{root} holds no class folders; put each class's {what} in {root}/<class name>/")
    if classes is not None:
        extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        if extra or missing:
            what_differs = (f"classes {', '.join(extra[:5])} that the training folder lacks" if extra
                            else f"no folder for classes {', '.join(missing[:5])} of the training folder")
            raise DataError(f"{root} has {what_differs}; use the same class folders in train/ and {root.name}/")
    names = list(classes) if classes is not None else found
    index = {c: i for i, c in enumerate(names)}
    folder = Folder(root=root, classes=names)
    for name in found:
        files = sorted(_image_files(root / name))
        if not files:
            raise DataError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...); "
                            f"add images or remove the folder")
        folder.paths.extend(files)
        folder.labels.extend([index[name]] * len(files))
    return folder


def _image_files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in filenames
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return out
