"""Dataset profiles: the defaults that scale with the data.

Fields left as ``None`` ("auto") in a config take the profile's value for the dataset.
``cifar10`` carries the DARTS paper's settings, the other papers' datasets theirs (see each
entry), a user's images or arrays (``imagefolder``, ``npz``) a generic profile; ``digits`` is sized so that the main job
(search + final training) runs in a few minutes on a 2-core CPU; ``synthetic`` is tiny,
for tests.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "search": {"epochs": 10, "batch_size": 64, "layers": 5, "channels": 8,
                   "start_layers": 2, "layers_every": 10, "trials": 20},  # NAS-RL growth, MetaQNN schedule length
        "train": {"epochs": 20, "batch_size": 64, "layers": 6, "channels": 16, "cutout": 0,
                  "auxiliary": False, "drop_path": 0.0},
        "evaluate": {"epochs": 2, "batch_size": 64, "layers": 3, "channels": 8},  # one trial of the train evaluator
        "trials": {"max_trials": 20},  # sample-based search budget
    },
    "cifar10": {
        "search": {"epochs": 50, "batch_size": 64, "layers": 8, "channels": 16,
                   "start_layers": 6, "layers_every": 1600, "trials": 100},  # NAS-RL paper; MetaQNN: the trial budget
        "train": {"epochs": 600, "batch_size": 96, "layers": 20, "channels": 36, "cutout": 16,
                  "auxiliary": True, "drop_path": 0.2},
        "evaluate": {"epochs": 10, "batch_size": 64, "layers": 8, "channels": 16},
        "trials": {"max_trials": 100},
    },
    # CIFAR-100 (DARTS+ searched it with CIFAR-10's settings)
    "cifar100": {
        "search": {"epochs": 50, "batch_size": 64, "layers": 8, "channels": 16,
                   "start_layers": 6, "layers_every": 1600, "trials": 100},
        "train": {"epochs": 600, "batch_size": 96, "layers": 20, "channels": 36, "cutout": 16,
                  "auxiliary": True, "drop_path": 0.2},
        "evaluate": {"epochs": 10, "batch_size": 64, "layers": 8, "channels": 16},
        "trials": {"max_trials": 100},
    },
    # ImageNet at 224x224: ProxylessNAS/DenseNAS search on it directly; the final training is DARTS's
    # mobile setting (14 cells, 48 channels, 250 epochs, batch 128, auxiliary head, no cutout)
    "imagenet": {
        "search": {"epochs": 120, "batch_size": 256, "layers": 8, "channels": 16,
                   "start_layers": 6, "layers_every": 1600, "trials": 100},
        "train": {"epochs": 250, "batch_size": 128, "layers": 14, "channels": 48, "cutout": 0,
                  "auxiliary": True, "drop_path": 0.0},
        "evaluate": {"epochs": 5, "batch_size": 128, "layers": 8, "channels": 16},
        "trials": {"max_trials": 100},
    },
    # ImageNet16-120: NAS-Bench-201's network (5 cells per stage: 17 cells, 16 channels, 200 epochs, batch 256)
    "imagenet16": {
        "search": {"epochs": 50, "batch_size": 64, "layers": 8, "channels": 16,
                   "start_layers": 6, "layers_every": 1600, "trials": 100},
        "train": {"epochs": 200, "batch_size": 256, "layers": 17, "channels": 16, "cutout": 0,
                  "auxiliary": False, "drop_path": 0.0},
        "evaluate": {"epochs": 12, "batch_size": 256, "layers": 5, "channels": 16},
        "trials": {"max_trials": 100},
    },
    # Tiny-ImageNet (DARTS+): CIFAR's search settings at 64x64
    "tiny-imagenet": {
        "search": {"epochs": 50, "batch_size": 64, "layers": 8, "channels": 16,
                   "start_layers": 6, "layers_every": 1600, "trials": 100},
        "train": {"epochs": 250, "batch_size": 128, "layers": 14, "channels": 48, "cutout": 0,
                  "auxiliary": True, "drop_path": 0.2},
        "evaluate": {"epochs": 5, "batch_size": 128, "layers": 8, "channels": 16},
        "trials": {"max_trials": 100},
    },
    # your own images or arrays (imagefolder, npz): no paper to follow; sized for a first run
    "generic": {
        "search": {"epochs": 20, "batch_size": 64, "layers": 5, "channels": 16,
                   "start_layers": 2, "layers_every": 20, "trials": 30},
        "train": {"epochs": 50, "batch_size": 64, "layers": 8, "channels": 16, "cutout": 0,
                  "auxiliary": False, "drop_path": 0.0},
        "evaluate": {"epochs": 3, "batch_size": 64, "layers": 3, "channels": 8},
        "trials": {"max_trials": 30},
    },
    "synthetic": {
        "search": {"epochs": 2, "batch_size": 32, "layers": 3, "channels": 4,
                   "start_layers": 1, "layers_every": 2, "trials": 4},
        "train": {"epochs": 2, "batch_size": 32, "layers": 3, "channels": 4, "cutout": 0,
                  "auxiliary": False, "drop_path": 0.0},
        "evaluate": {"epochs": 1, "batch_size": 32, "layers": 2, "channels": 4},
        "trials": {"max_trials": 4},
    },
}


#: datasets whose content is the user's: the generic profile, without a notice
GENERIC = ("imagefolder", "npz")
_noticed: set[str] = set()


def profile(dataset: str, section: str) -> dict[str, Any]:
    """Defaults of ``section`` ("search", "train", "evaluate", "trials") for ``dataset``; a dataset
    without a profile gets the generic one, and says so once (never the digits profile silently)."""
    name = "imagenet16" if str(dataset).startswith("imagenet16") else str(dataset)
    if name not in PROFILES:
        if name not in GENERIC and name not in _noticed:
            _noticed.add(name)
            log.warning("dataset %s has no profile: its auto settings are the generic ones (search %d epochs, "
                        "final training %d epochs); set them with --set", name, PROFILES["generic"]["search"]["epochs"],
                        PROFILES["generic"]["train"]["epochs"])
        name = "generic"
    return dict(PROFILES[name][section])


def fill_auto(obj: Any, dataset: str, section: str) -> Any:
    """Replace ``None`` fields of a config dataclass with the profile's values (in place)."""
    for key, value in profile(dataset, section).items():
        if hasattr(obj, key) and getattr(obj, key) is None:
            setattr(obj, key, value)
    return obj
