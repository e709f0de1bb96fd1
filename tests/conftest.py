"""Shared fixtures."""

import pytest
import torch

from nasforge.data import synthetic_dataset


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (deterministic and fast on small tensors), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    """A small synthetic image dataset (240 samples), the default data of the strategy tests."""
    return synthetic_dataset(num_samples=240, seed=0)
