"""Packaging: ``nasforge --version``, the package version, and the built wheel installed in a fresh venv.

The slow test builds the wheel from a copy of the source tree, installs it in a new virtual
environment with ``.ci/constraints.txt`` (the tested CPU build of torch, a local wheel), and runs
``nasforge --version`` and a tiny search with the installed script. It skips, saying why, where a
venv or torch cannot be had offline.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nasforge
from nasforge.cli import app
from nasforge.utils import environment_info

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
VERSION_LINE = re.compile(r"^nasforge (\S+) \(torch (\S+), Python (\S+)\)$")


def _project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _pinned(name: str) -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        req = line.split("#")[0].strip()
        if req.startswith(f"{name}=="):
            return req.split("==", 1)[1]
    raise AssertionError(f"{name} is not pinned in {CONSTRAINTS}")


# --------------------------------------------------------------------------- fast
def test_version_flag():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    match = VERSION_LINE.match(result.output.strip())
    assert match, result.output
    assert match.groups() == (nasforge.__version__, torch.__version__, platform.python_version())


def test_version_comes_from_the_package_metadata():
    assert nasforge.__version__ == importlib.metadata.version("nasforge") == _project_version()


def test_environment_info():
    info = environment_info()
    assert info == {"nasforge": nasforge.__version__, "torch": torch.__version__,
                    "python": platform.python_version(), "device": "cpu"}
    assert environment_info("cuda")["device"] == "cuda"


def test_constraints_pin_the_tested_torch_and_the_project_takes_a_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = next(d for d in deps if re.match(r"torch\b", d))
    assert "==" not in torch_dep and ">=" in torch_dep
    assert _pinned("torch")


def test_ci_runs_the_readme_test_command():
    command = 'pip install -c .ci/constraints.txt -e ".[test]" && python -m pytest'
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


# --------------------------------------------------------------------------- slow: wheel in a fresh venv
def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FORCE_COLOR"):
        env.pop(key, None)
    return env


def _run(cmd: list, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _tail(proc: subprocess.CompletedProcess, n: int = 15) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-n:])


OFFLINE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
           "Temporary failure in name resolution", "Network is unreachable", "Max retries exceeded")


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path: Path):
    started = time.monotonic()
    # Build from a copy, so the build never writes build/ or stale files into the working tree.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "nasforge", src / "nasforge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, src],
                tmp_path, 300)
    assert proc.returncode == 0, _tail(proc)
    (wheel,) = dist.glob("nasforge-*.whl")
    assert wheel.name.startswith(f"nasforge-{_project_version()}-")

    # A clean venv (no system site-packages): every dependency must be declared to get installed.
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, 120)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a virtual environment: {_tail(proc, 3)}")
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-compile", "-c", CONSTRAINTS]

    proc = _run([*pip, "torch"], tmp_path, 900)
    if proc.returncode != 0:
        pytest.skip(f"torch=={_pinned('torch')} cannot be installed here (offline?): {_tail(proc, 3)}")
    proc = _run([*pip, wheel], tmp_path, 900)
    if proc.returncode != 0 and any(s in proc.stdout + proc.stderr for s in OFFLINE):
        pytest.skip(f"a dependency cannot be downloaded here (offline?): {_tail(proc, 3)}")
    assert proc.returncode == 0, _tail(proc)

    # The installed package, not the source tree, is what runs (cwd is outside the repository).
    proc = _run([python, "-c", "import nasforge, pathlib; p = pathlib.Path(nasforge.__file__).parent; "
                 "print(p); assert (p / 'py.typed').is_file()"], tmp_path, 120)
    assert proc.returncode == 0, _tail(proc)
    assert Path(proc.stdout.strip()).is_relative_to(venv), proc.stdout

    script = venv / "bin" / "nasforge"
    proc = _run([script, "--version"], tmp_path, 120)
    assert proc.returncode == 0, _tail(proc)
    match = VERSION_LINE.match(proc.stdout.strip())
    assert match, proc.stdout
    assert match.group(1) == _project_version()
    assert match.group(2).split("+")[0] == _pinned("torch")

    out = tmp_path / "run"
    proc = _run([script, "search", "--data", "synthetic", "--set", "strategy.epochs=1", "--set", "train.epochs=1",
                 "--out", out, "-q"], tmp_path, 300)
    assert proc.returncode == 0, _tail(proc)
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["test_acc"] <= 1.0
    versions = result["versions"]
    assert versions["nasforge"] == _project_version()
    assert versions["torch"].split("+")[0] == _pinned("torch")
    assert versions["python"] == platform.python_version() and versions["device"] == "cpu"
    print(f"wheel -> fresh venv -> search: {time.monotonic() - started:.0f} s")
