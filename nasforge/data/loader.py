"""Batches of a split, from a torch ``DataLoader`` when workers are asked for.

A :class:`Split` is an index set over a source (the valid split and the two halves of a
bi-level search are index sets over one training source, never copies). A :class:`Loader`
turns a split into the batches of an epoch:

- the order is ``torch.randperm`` of a generator seeded with the epoch's seed (no seed:
  the split's order, for evaluation);
- every batch carries its own seed, derived from the epoch's seed and its position, from
  which its augmentation is drawn; so a batch is the same in the main process or in any
  worker, and an epoch can start at any batch (``start``): the position inside an epoch is
  all a checkpoint needs to resume exactly;
- with ``workers > 0`` the batches come from a ``DataLoader`` (map-style dataset fetched a
  batch at a time, ``persistent_workers``, ``pin_memory`` when the engine is on CUDA);
  with 0 they are made in the calling process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from nasforge.data.augment import Augment
from nasforge.errors import ConfigError

__all__ = ["Loader", "Split", "batch_seed"]

Batch = tuple[Tensor, Tensor]


@dataclass
class Split:
    """The samples ``indices`` of ``source`` (an ``ArraySource`` or ``ImageFileSource``)."""

    source: Any
    indices: np.ndarray

    def __len__(self) -> int:
        return int(len(self.indices))

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def subset(self, positions: np.ndarray) -> "Split":
        """The samples at ``positions`` of this split (an index set over the same source)."""
        return Split(self.source, self.indices[np.asarray(positions, dtype=np.int64)])

    def tensors(self, limit: int | None = None) -> Batch:
        """The first ``limit`` samples (all by default) as normalised tensors (x, y), not augmented."""
        idx = self.indices if limit is None else self.indices[:limit]
        return self.source.fetch(idx), torch.from_numpy(np.ascontiguousarray(self.source.labels[idx]))


def batch_seed(epoch_seed: int, position: int) -> int:
    """Seed of the augmentation of batch ``position`` of an epoch seeded ``epoch_seed``."""
    return (epoch_seed * 1_000_003 + position * 7919 + 17) % (2**63 - 1)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch size {batch_size!r} is invalid; use a whole number >= 1")


def _make_batch(split: Split, augment: Augment | None, train: bool, request: tuple[np.ndarray, int | None]
                ) -> Batch:
    """One batch: fetch (per-image training transforms seeded by the batch), then batch augmentation."""
    idx, seed = request
    rows = split.indices[idx]
    train = train and seed is not None
    rng = np.random.default_rng(seed) if train else None
    x = split.source.fetch(rows, rng, train)
    if train and augment is not None and not augment.is_identity:
        x = augment(x, torch.Generator().manual_seed(seed))
    return x, torch.from_numpy(np.ascontiguousarray(split.source.labels[rows]))


class _BatchDataset(torch.utils.data.Dataset):
    """A map-style dataset a ``DataLoader`` fetches a whole batch from at once (``__getitems__``)."""

    def __init__(self, split: Split, augment: Augment | None, train: bool):
        self.split, self.augment, self.train = split, augment, train

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, request: Any) -> Batch:  # pragma: no cover - DataLoader calls __getitems__
        return _make_batch(self.split, self.augment, self.train, request)

    def __getitems__(self, request: Any) -> Batch:
        return _make_batch(self.split, self.augment, self.train, request)


class _Requests:
    """The batch sampler: yields ``(positions, batch seed)`` for the epoch it was last set to."""

    def __init__(self) -> None:
        self.requests: list[tuple[np.ndarray, int | None]] = []

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        return iter(self.requests)

    def __len__(self) -> int:
        return len(self.requests)


def _first(batch: Batch) -> Batch:
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class Loader:
    """The batches of ``split``: seeded order and augmentation, resumable at any batch.

    ``train``: apply the training transforms (the source's per-image ones and ``augment``) to
    shuffled epochs; False: shuffled or ordered epochs as evaluation sees the images.
    """

    def __init__(self, split: Split, batch_size: int, *, augment: Augment | None = None, train: bool = True,
                 drop_last: bool = False, workers: int = 0, pin_memory: bool = False, prefetch: int = 2,
                 shard: tuple[int, int] = (0, 1)):
        _check_batch_size(batch_size)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"data workers {workers!r} is invalid; use a whole number >= 0 (0: load in the "
                              "main process)")
        self.split, self.batch_size, self.augment, self.train = split, batch_size, augment, train
        self.drop_last, self.workers, self.pin_memory, self.prefetch = drop_last, workers, pin_memory, prefetch
        #: (rank, ranks): this process takes the rank-th of ``ranks`` equal slices of every batch
        self.shard = shard
        self._sampler: _Requests | None = None
        self._loader: torch.utils.data.DataLoader | None = None

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def requests(self, seed: int | None, start: int = 0) -> list[tuple[np.ndarray, int | None]]:
        """The epoch's batches from ``start`` on, as (positions in the split, augmentation seed or None)."""
        n = len(self.split)
        if seed is None:
            order = np.arange(n, dtype=np.int64)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
        out = []
        rank, ranks = self.shard
        for b in range(start, len(self)):
            pos = order[b * self.batch_size:(b + 1) * self.batch_size]
            if ranks > 1:  # a rank's slice, augmented from its own seed
                pos = np.array_split(pos, ranks)[rank]
            out.append((pos, None if seed is None else batch_seed(seed, b * ranks + rank)))
        return out

    def epoch(self, seed: int | None = None, start: int = 0) -> Iterator[Batch]:
        """One epoch's batches, shuffled (and with ``train``, augmented) from ``seed`` (None: in order, not
        augmented), beginning at batch ``start``."""
        requests = self.requests(seed, start)
        if self.workers == 0 or not requests:
            return (_make_batch(self.split, self.augment, self.train, r) for r in requests)
        loader = self._dataloader()
        assert self._sampler is not None
        self._sampler.requests = requests
        return iter(loader)

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            self._sampler = _Requests()
            self._loader = torch.utils.data.DataLoader(
                _BatchDataset(self.split, self.augment, self.train), batch_sampler=self._sampler,
                num_workers=self.workers,
                # its own generator: making an iterator draws a worker base seed, which must not come from
                # (and advance) the global RNG that the search's sampling uses
                generator=torch.Generator().manual_seed(0),
                collate_fn=_first, pin_memory=self.pin_memory, persistent_workers=True,
                prefetch_factor=self.prefetch, worker_init_fn=_worker_init)
        return self._loader

    def endless(self, seed_of_pass: Any, start: int = 0) -> Iterator[Batch]:
        """Pass after pass over the split (pass ``p`` seeded ``seed_of_pass(p)``), beginning at batch ``start``
        counted across passes (ProxylessNAS's architecture stream)."""
        per = len(self)
        if per == 0:
            return
        p, b = divmod(start, per)
        while True:
            yield from self.epoch(seed_of_pass(p), b)
            p, b = p + 1, 0
