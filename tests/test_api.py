"""The Python API as the README shows it: configs with "auto" fields resolve as on the command line."""

from __future__ import annotations

import numpy as np
import pytest

from nasforge.data import synthetic_dataset
from nasforge.spaces import make_space
from nasforge.train import TrainConfig, resolve_train_config, train_arch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_config_with_auto_fields_trains_through_the_api():
    data = synthetic_dataset(num_samples=120, seed=0)
    space = make_space("darts")
    arch = space.sample(np.random.default_rng(0))
    cfg = TrainConfig(epochs=1)  # batch size, depth, width... left "auto"
    trained = train_arch(space, arch, data, cfg)
    assert 0.0 <= trained.metrics["test_acc"] <= 1.0 and trained.metrics["epochs"] == 1
    assert cfg.batch_size is None and cfg.layers is None  # the caller's config is not changed


def test_auto_fields_take_the_dataset_profile():
    from nasforge.profiles import profile

    resolved = resolve_train_config(TrainConfig(epochs=1, channels=12), "digits")
    expected = profile("digits", "train")
    assert resolved.epochs == 1 and resolved.channels == 12  # given values stay
    assert (resolved.batch_size, resolved.layers, resolved.cutout, resolved.auxiliary) == (
        expected["batch_size"], expected["layers"], expected["cutout"], expected["auxiliary"])
