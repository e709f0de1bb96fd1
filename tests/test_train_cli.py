"""`nasforge train RUN/arch.json` builds the arch in the space its run searched (the run's space options)."""

from __future__ import annotations

import numpy as np
from pathlib import Path

import yaml

from nasforge.spaces import make_space
from test_cli import run_main


def test_train_takes_the_space_options_of_the_arch_s_run(tmp_path: Path) -> None:
    space = make_space("mbconv", preset="cifar")  # not the default preset: the arch has other choices
    arch = space.sample(np.random.default_rng(0))
    run = tmp_path / "run"
    run.mkdir()
    arch.save(run / "arch.json")
    (run / "config.yaml").write_text(yaml.safe_dump({"space": {"name": "mbconv", "preset": "cifar"}}))
    out = tmp_path / "trained"
    code = run_main("train", run / "arch.json", "--data", "synthetic", "--epochs", "1", "--out", out, "-q")
    assert code == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["space"]["preset"] == "cifar"
    assert (out / "model.pt").exists()
