"""Small benchmark files in NAS-Bench-201's and NATS-Bench's released formats, for the tests.

Layouts as the official APIs read them (``nas_201_api``/``nats_bench``): a ``.pth`` dict
``{meta_archs, arch2infos: {i: {"less", "full"}}, evaluated_indexes, total_archs}``, a
NATS-Bench ``.pickle.pbz2`` with ``{"12", "200"}`` per cell, and the NATS-Bench topology
folder (``meta.pickle.pbz2`` + ``NNNNNN.pickle.pbz2``). Each cell's results are an
``ArchResults`` state dict with ``ResultsCount`` state dicts per (dataset, seed), with
numpy float64 scalars where the real files have them. Numbers are a known function of the
cell index (and epoch: a learning curve rising linearly to the final accuracy), so the
tests can check what the reader returns.
"""

from __future__ import annotations

import bz2
import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: eval splits of each benchmark run, as in the real files
EVAL_NAMES = {"cifar10-valid": ["x-valid", "ori-test"], "cifar10": ["ori-test"],
              "cifar100": ["ori-test", "x-valid", "x-test"], "ImageNet16-120": ["ori-test", "x-valid", "x-test"]}
SEEDS = {"12": {"cifar10-valid": [111, 777], "cifar10": [111], "cifar100": [111], "ImageNet16-120": [111]},
         "200": {d: [777, 888] for d in EVAL_NAMES}}
SPLIT_OFFSET = {"x-valid": 0.0, "ori-test": 1.0, "x-test": 2.0}
DATASET_OFFSET = {"cifar10-valid": 80.0, "cifar10": 85.0, "cifar100": 60.0, "ImageNet16-120": 30.0}


def accuracy(index: int, dataset: str, hp: str, split: str, seed: int) -> float:
    """The percent accuracy a generated file holds for this run."""
    return DATASET_OFFSET[dataset] + (0.0 if hp == "12" else 5.0) + SPLIT_OFFSET[split] + (index % 7) + seed / 1000.0


def epoch_seconds(index: int, dataset: str) -> float:
    return 1.0 + index % 5 + (1.0 if dataset == "ImageNet16-120" else 0.0)


def train_seconds(index: int, dataset: str, epoch: int, ramp: bool = False) -> float:
    """Training time of epoch ``epoch`` (0-based): ``epoch_seconds``, or with ``ramp`` growing 10% an epoch."""
    return epoch_seconds(index, dataset) * (1.0 + 0.1 * epoch if ramp else 1.0)


def eval_seconds(epoch: int, seed: int, ramp: bool = False) -> float:
    """Evaluation time after epoch ``epoch`` (0-based): 0.5, or with ``ramp`` 0.5 + epoch/100 + seed/10000."""
    return 0.5 + epoch / 100.0 + seed / 10000.0 if ramp else 0.5


def results_count(index: int, arch: str, dataset: str, hp: str, seed: int, times: bool = True,
                  ramp: bool = False) -> dict[str, Any]:
    epochs = int(hp)
    names = EVAL_NAMES[dataset]
    last = epochs - 1
    eval_acc, eval_times = {}, {}
    for name in names:
        for e in range(epochs):
            eval_acc[f"{name}@{e}"] = accuracy(index, dataset, hp, name, seed) * (e + 1) / epochs
            eval_times[f"{name}@{e}"] = eval_seconds(e, seed, ramp)
    assert eval_acc[f"{names[0]}@{last}"] == accuracy(index, dataset, hp, names[0], seed)
    return {"name": dataset, "train_acc1es": {e: 50.0 for e in range(epochs)}, "train_acc5es": None,
            "train_losses": {e: 1.0 for e in range(epochs)},
            "train_times": collections.OrderedDict((e, train_seconds(index, dataset, e, ramp)) for e in range(epochs))
            if times else None,
            "arch_config": {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": 10},
            "params": np.float64(0.1 + index / 100.0), "flop": 15.0 + index, "seed": f"{seed:04d}",
            "epochs": epochs, "latency": [np.float64(0.01 + index / 1000.0)], "eval_names": list(names),
            "eval_acc1es": eval_acc, "eval_times": eval_times if times else {}, "eval_losses": {},
            "net_state_dict": None}


def arch_results(index: int, arch: str, hp: str, datasets: tuple[str, ...], times: bool = True,
                 ramp: bool = False) -> dict[str, Any]:
    seeds = {d: list(SEEDS[hp][d]) for d in datasets}
    return {"arch_index": index, "arch_str": arch, "clear_net_done": True, "dataset_seed": seeds,
            "all_results": {(d, s): results_count(index, arch, d, hp, s, times, ramp)
                            for d in datasets for s in seeds[d]}}


def cell_entry(index: int, arch: str, style: str, datasets: tuple[str, ...], hps: tuple[str, ...] = ("12", "200"),
               times: bool = True, ramp: bool = False) -> dict[str, Any]:
    keys = {"12": "less", "200": "full"} if style == "pth" else {"12": "12", "200": "200"}
    out: Any = collections.OrderedDict() if style != "pth" else {}
    for hp in hps:
        out[keys[hp]] = arch_results(index, arch, hp, datasets, times, ramp)
    return out


def write_benchmark(path: Path, archs: list[str], fmt: str, datasets: tuple[str, ...] = tuple(EVAL_NAMES),
                    hps: tuple[str, ...] = ("12", "200"), times: bool = True, ramp: bool = False) -> Path:
    """Write ``archs`` (cell strings, index = position) as ``fmt``: ``pth``, ``pbz2`` or ``folder``;
    ``ramp``: per-epoch training and evaluation times that change from epoch to epoch (and seed to
    seed), so per-epoch costs can be told apart (``train_seconds``, ``eval_seconds``)."""
    path = Path(path)
    if fmt == "folder":
        path.mkdir(parents=True, exist_ok=True)
        meta = {"meta_archs": list(archs), "total_archs": len(archs), "arch2infos": None, "evaluated_indexes": set()}
        (path / "meta.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(meta, protocol=4)))
        for i, arch in enumerate(archs):
            entry = cell_entry(i, arch, "nats", datasets, hps, times, ramp)
            (path / f"{i:06d}.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(entry, protocol=4)))
        return path
    style = "pth" if fmt == "pth" else "nats"
    data = {"meta_archs": list(archs), "total_archs": len(archs), "evaluated_indexes": set(range(len(archs))),
            "arch2infos": {i: cell_entry(i, a, style, datasets, hps, times, ramp) for i, a in enumerate(archs)}}
    if fmt == "pth":
        torch.save(data, path)
    else:
        path.write_bytes(bz2.compress(pickle.dumps(data, protocol=4)))
    return path
