"""Datasets (embedded, the papers' and your own), their splits, loaders and augmentation."""

from nasforge.data.augment import Augment
from nasforge.data.batches import iterate_batches, num_batches
from nasforge.data.datasets import (
    CIFAR10_CLASSES,
    Dataset,
    dataset_names,
    load_dataset,
    split_half,
    synthetic_dataset,
)
from nasforge.data.loader import Loader, Split

__all__ = [
    "Augment",
    "CIFAR10_CLASSES",
    "Dataset",
    "Loader",
    "Split",
    "dataset_names",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "split_half",
    "synthetic_dataset",
]
