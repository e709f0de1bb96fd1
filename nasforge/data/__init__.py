"""In-memory datasets (digits, CIFAR-10, synthetic), augmentation and mini-batching."""

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

__all__ = [
    "Augment",
    "CIFAR10_CLASSES",
    "Dataset",
    "dataset_names",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "split_half",
    "synthetic_dataset",
]
