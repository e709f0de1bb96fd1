"""Shared fixtures, and the thread budget of parallel test workers."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the cores: each gets its share of torch threads, and so do the nasforge
    # processes the tests start (OMP_NUM_THREADS is inherited); oversubscribed cores slow torch down badly.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _threads = max(1, (os.cpu_count() or 1) // _workers)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)

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


def pytest_collection_modifyitems(config, items):
    """The end-to-end runs (marked ``slow``) first: parallel workers then start the longest runs at once
    instead of ending the suite on one of them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
