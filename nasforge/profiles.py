"""Dataset profiles: the defaults that scale with the data.

Fields left as ``None`` ("auto") in a config take the profile's value for the dataset.
``cifar10`` carries the DARTS paper's settings; ``digits`` is sized so that the main job
(search + final training) runs in a few minutes on a 2-core CPU; ``synthetic`` is tiny,
for tests.
"""

from __future__ import annotations

from typing import Any

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
    "synthetic": {
        "search": {"epochs": 2, "batch_size": 32, "layers": 3, "channels": 4,
                   "start_layers": 1, "layers_every": 2, "trials": 4},
        "train": {"epochs": 2, "batch_size": 32, "layers": 3, "channels": 4, "cutout": 0,
                  "auxiliary": False, "drop_path": 0.0},
        "evaluate": {"epochs": 1, "batch_size": 32, "layers": 2, "channels": 4},
        "trials": {"max_trials": 4},
    },
}


def profile(dataset: str, section: str) -> dict[str, Any]:
    """Defaults of ``section`` ("search" or "train") for ``dataset`` (digits' when unknown)."""
    return dict(PROFILES.get(dataset, PROFILES["digits"])[section])


def fill_auto(obj: Any, dataset: str, section: str) -> Any:
    """Replace ``None`` fields of a config dataclass with the profile's values (in place)."""
    for key, value in profile(dataset, section).items():
        if hasattr(obj, key) and getattr(obj, key) is None:
            setattr(obj, key, value)
    return obj
