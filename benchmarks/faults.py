"""Fault injection at scale: bad inputs, kill points and concurrent writers, counted.

Three corpora, each case classified as

* **clean**: the promise held. A bad input ended with exit code != 0 and exactly one
  ``error:`` line on stderr (usage errors included); a killed run resumed to the result of
  the uninterrupted run; of two concurrent writers exactly one ran and the run is whole.
* **traceback**: an exception escaped (a traceback, in a terminal).
* **silent**: a wrong success: a bad input that exited 0, or a resumed run whose result
  differs from the uninterrupted one, or two writers that both ran.
* **other**: none of these (several stderr lines, a hang past the time limit, a resume that
  failed with one clean line); listed by name.

Bad inputs run in-process (``nasforge.cli.main`` with a patched ``sys.argv``, one torch
thread); kills run the real command in a subprocess that SIGKILLs itself at the Nth
``os.replace`` onto a chosen file (before the replace: a temporary file is left; after it),
then ``nasforge resume`` in-process. Concurrency runs two real commands at once. Every
run is the tiniest one (synthetic data, the synthetic evaluator on NAS-Bench-201 cells,
two training epochs), so the whole benchmark takes a few minutes on 2 cores.

    python benchmarks/faults.py                  # all three corpora, prints the table
    python benchmarks/faults.py --only inputs    # or kills, concurrency
    python benchmarks/faults.py --list           # also name every case that was not clean
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TIMEOUT = 120  # seconds one case may take before it counts as hung

TINY = ["--data", "synthetic", "--space", "nb201", "--strategy", "random", "--evaluator", "synthetic",
        "--trials", "6", "--set", "train.epochs=2", "--set", "latency.repeats=1", "--set", "latency.warmup=0", "-q"]

KILLER = r"""
import os, signal, sys
suffix, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    hit = str(dst).endswith(suffix)
    if hit:
        seen[0] += 1
    if hit and seen[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    out = real(src, dst, *args, **kwargs)
    if hit and seen[0] == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return out
os.replace = replace
sys.argv = ["nasforge", *sys.argv[4:]]
from nasforge.cli import main
main()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class _Hang(Exception):
    pass


def run_cli(*args: Any) -> tuple[int | None, str, str | None]:
    """Run ``nasforge ARGS`` in-process: (exit code, stderr, traceback text or None)."""
    from nasforge.cli import main

    argv, err, out = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = ["nasforge", *[str(a) for a in args]]
    code: int | None = 0
    tb = None

    def hang(*_: Any) -> None:
        raise _Hang()

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(TIMEOUT)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _Hang:
        code, tb = None, "hung"
    except BaseException:  # noqa: BLE001 - what escapes main is what a user would see as a traceback
        code, tb = 1, traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        sys.argv = argv
    return code, ANSI.sub("", err.getvalue()), tb


def classify_error_case(code: int | None, err: str, tb: str | None) -> str:
    """A bad input: clean (one error line, exit != 0), traceback, silent (exit 0) or other."""
    if tb == "hung":
        return "other"
    if tb is not None or "Traceback" in err:
        return "traceback"
    if code == 0:
        return "silent"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return "clean" if len(lines) == 1 and lines[0].startswith("error: ") else "other"


# --------------------------------------------------------------------------- the corpus of bad inputs
def build_inputs(work: Path, run: Path) -> list[tuple[str, list[Any]]]:
    """(name, argv) of bad inputs; each must end in one error line. ``run``: a finished tiny run."""
    cases: list[tuple[str, list[Any]]] = []
    out = work / "out"

    def add(name: str, *args: Any) -> None:
        cases.append((name, list(args)))

    # options of `search` with values that cannot be right
    for opt, values in {"--epochs": ["nan", "abc", "1.5", "-1", "0", "1e999", "", "99999999999999999999"],
                        "--trials": ["nan", "0", "-5", "x", "2.5"],
                        "--seed": ["-1", "abc", str(2**40), "nan"],
                        "--workers": ["0", "-2", "many"],
                        "--space": ["nope", "", "../x", "nb201:"],
                        "--strategy": ["nope", "", "DARTS!"],
                        "--data": ["imagenet", "", "cifar10"],
                        "--evaluator": ["nope", "table"],
                        "--runner": ["nope", "slurm"],
                        "--early-stop": ["maybe", "dartsplus"],
                        "--device": ["tpu", "cuda:99", "cuda" if not torch.cuda.is_available() else "tpu:0", "-1"],
                        "--precision": ["64", "fp8", "16-mixed" if not torch.cuda.is_available() else "fp4"]}.items():
        for v in values:
            extra = ["--strategy", "gdas", "--space", "darts"] if opt == "--early-stop" and v == "dartsplus" else []
            args = [*TINY, *extra, opt, v, "--out", out]
            if opt == "--early-stop" and v == "dartsplus":
                args = ["search", "--data", "synthetic", "--strategy", "random", opt, v, "--out", out]
            add(f"search {opt} {v!r}", *(["search", *args] if args[0] != "search" else args))
    # --set: unknown keys, wrong types, out-of-range, NaN, sections as values, aliases, garbage
    sets = ["train.foo=1", "train.lr=abc", "train.lr=-1", "train.lr=.nan", "train.lr=.inf", "train=3",
            "train.epochs=0", "train.epochs=1.5", "train.batch_size=0", "train.channels=1", "train.cutout=-1",
            "train.drop_path=2", "train.train_on=test", "seed=-1", "seed=abc", "seed=[1]", "data.name=nope",
            "data.valid_fraction=1.5", "data.valid_fraction=-0.1", "space.name=nope", "space.bogus=1",
            "strategy.name=nope", "strategy.bogus=3", "latency.device=tpu", "latency.repeats=0",
            "latency.batch_size=0", "latency.threads=0", "evaluator.name=nope", "evaluator.bogus=1",
            "trials.max_trials=-1", "trials.max_seconds=0", "trials.max_sim_seconds=-5", "trials.max_repeats=0",
            "trials.repeats=sometimes", "trials.dedupe=maybe", "runner.name=nope", "runner.workers=0",
            "engine.device=tpu", "engine.precision=8", "engine.bogus=1", "nosuchsection.x=1", "=3", "train.=3",
            "train.lr", "train.lr=[&a [1], *a]", ".=1", "train.lr=" + "9" * 400, "latency=[1,2]",
            "train.lr={a: 1}", "space=[darts]"]
    if not torch.cuda.is_available():
        sets += ["latency.device=cuda", "engine.device=cuda"]
    for s in sets:
        add(f"search --set {s[:40]!r}", "search", *TINY, "--set", s, "--out", out)
    # config files
    cfg_dir = work / "configs"
    cfg_dir.mkdir(exist_ok=True)
    bomb = "\n".join(['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
                     + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]) \
        + "\ntrain: {lr: *a8}\n"
    configs: dict[str, bytes] = {
        "list.yaml": b"- 1\n- 2\n", "scalar.yaml": b"3\n", "garbage.yaml": bytes(range(256)),
        "latin1.yaml": "train: {lr: 0.1}\n# caf\xe9\n".encode("latin-1"), "tabs.yaml": b"train:\n\tlr: 0.1\n",
        "unclosed.yaml": b"train: {lr: [0.1\n", "unknown_section.yaml": b"nosuch: {a: 1}\n",
        "section_scalar.yaml": b"train: 3\n", "bad_type.yaml": b"train: {lr: fast}\n",
        "bomb.yaml": bomb.encode(), "anchors.yaml": b"base: &b {lr: 0.1}\ntrain: *b\n",
        "huge.yaml": b"seed: 0\n" + b"#" * 1_200_000 + b"\n", "python_tag.yaml": b"train: !!python/object:os.system {}\n",
        "dup_keys.yaml": b"seed: 1\nseed: [\n", "nan_seed.yaml": b"seed: .nan\n", "neg_epochs.yaml":
        b"strategy: {epochs: -3}\n", "null_section.yaml": b"train:\n  lr:\n", "binary_tag.yaml": b"seed: !!binary AAAA\n",
    }
    for name, content in configs.items():
        (cfg_dir / name).write_bytes(content)
        add(f"search --config {name}", "search", *TINY, "--config", cfg_dir / name, "--out", out)
    add("search --config a directory", "search", *TINY, "--config", cfg_dir, "--out", out)
    add("search --config missing", "search", *TINY, "--config", cfg_dir / "missing.yaml", "--out", out)
    # output directories
    afile = work / "afile"
    afile.write_text("x")
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    (photos / "a.jpg").write_bytes(b"\xff\xd8")
    add("search --out an existing file", "search", *TINY, "--out", afile)
    add("search --out below a file", "search", *TINY, "--out", afile / "run")
    add("search --out a non-run with --force", "search", *TINY, "--out", photos, "--force")
    add("search --out a non-empty dir", "search", *TINY, "--out", photos)
    add("search --out an existing run without --force", "search", *TINY, "--out", run)
    add("train --out an existing file", "train", run / "arch.json", "--data", "synthetic", "--out", afile)
    add("train --out a non-run with --force", "train", run / "arch.json", "--data", "synthetic", "--out", photos,
        "--force")
    if os.geteuid() != 0:
        locked = work / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        add("search --out in an unwritable dir", "search", *TINY, "--out", locked / "run")
        add("latency --out in an unwritable dir", "latency", "--space", "nb201", "--out", locked / "t.json", "-q")
    # data
    npz_dir = work / "npz"
    npz_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    npzs = {"no_test": dict(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0]),
            "no_train": dict(x_train=x[:0], y_train=y[:0], x_test=x, y_test=y),
            "wrong_shape": dict(x_train=x[:, :16], y_train=y, x_test=x, y_test=y),
            "wrong_dtype": dict(x_train=x.astype(np.float32), y_train=y, x_test=x, y_test=y),
            "labels_out_of_range": dict(x_train=x, y_train=y + 10, x_test=x, y_test=y),
            "label_count": dict(x_train=x, y_train=y[:5], x_test=x, y_test=y),
            "missing_keys": dict(x_train=x, y_train=y)}
    for name, arrays in npzs.items():
        np.savez(npz_dir / f"{name}.npz", **arrays)
        add(f"cifar10 npz {name}", "search", "--data", "cifar10", "--data-dir", npz_dir / f"{name}.npz", "-q",
            "--out", out)
    (npz_dir / "truncated.npz").write_bytes((npz_dir / "no_test.npz").read_bytes()[:300])
    (npz_dir / "text.npz").write_text("not a zip")
    np.save(npz_dir / "array.npy", x)
    for name in ("truncated.npz", "text.npz", "array.npy", "missing.npz"):
        add(f"cifar10 --data-dir {name}", "search", "--data", "cifar10", "--data-dir", npz_dir / name, "-q",
            "--out", out)
    add("cifar10 --data-dir an empty dir", "search", "--data", "cifar10", "--data-dir", cfg_dir, "-q", "--out", out)
    add("cifar10 without --data-dir", "search", "--data", "cifar10", "-q", "--out", out)
    for name in ("digits", "synthetic"):
        add(f"{name} with --data-dir", "search", "--data", name, "--data-dir", work, "--out", out)
    # train: bad arch.json files
    arch_dir = work / "archs"
    arch_dir.mkdir(exist_ok=True)
    good = json.loads((run / "arch.json").read_text())
    archs = {"empty": "", "not_json": "{", "list": "[1, 2]", "no_space": json.dumps({"choices": {}}),
             "unknown_space": json.dumps({**good, "space": "nope"}),
             "unknown_op": json.dumps({**good, "choices": {k: "conv_99x99" for k in good.get("choices", {})}}),
             "missing_choice": json.dumps({**good, "choices": {}}),
             "extra_choice": json.dumps({**good, "choices": {**good.get("choices", {}), "bogus": "x"}}),
             "number": "3", "null": "null"}
    for name, text in archs.items():
        (arch_dir / f"{name}.json").write_text(text)
        add(f"train arch.json {name}", "train", arch_dir / f"{name}.json", "--data", "synthetic", "--out", out)
    add("train arch.json missing", "train", arch_dir / "missing.json", "--data", "synthetic", "--out", out)
    add("train --epochs 0", "train", run / "arch.json", "--data", "synthetic", "--epochs", "0", "--out", out)
    add("train --data nope", "train", run / "arch.json", "--data", "nope", "--out", out)
    # export
    bad_model = work / "model.pt"
    bad_model.write_bytes(b"PK\x03\x04 nothing")
    not_model = work / "list.pt"
    torch.save([1, 2, 3], not_model)
    add("export a missing file", "export", work / "missing.pt")
    add("export a corrupt model.pt", "export", bad_model, "--format", "pt2")
    add("export a .pt that is not a model", "export", not_model, "--format", "pt2")
    add("export a dir that is not a run", "export", photos, "--format", "json")
    add("export --format nope", "export", run, "--format", "nope")
    add("export --out a file", "export", run, "--format", "json", "--out", afile)
    add("export a bad arch.json", "export", arch_dir / "unknown_space.json", "--format", "json")
    add("export arch.json --data nope", "export", arch_dir / "missing.json", "--format", "onnx", "--data", "nope")
    add("export --data-dir for digits", "export", run / "arch.json", "--format", "json", "--data-dir", work,
        "--out", work / "exp")
    # latency
    for name, args in {"unknown space": ["--space", "nope"], "unknown device": ["--device", "tpu"],
                       "--out a directory": ["--space", "nb201", "--out", work],
                       "--out below a file": ["--space", "nb201", "--out", afile / "t.json"],
                       "--batch-size 0": ["--space", "nb201", "--batch-size", "0"],
                       "--repeats 0": ["--space", "nb201", "--repeats", "0"],
                       "--warmup -1": ["--space", "nb201", "--warmup", "-1"],
                       "--threads 0": ["--space", "nb201", "--threads", "0"],
                       "--check -1": ["--space", "nb201", "--check", "-1"],
                       "--data nope": ["--space", "nb201", "--data", "nope"],
                       "--set bogus": ["--space", "nb201", "--set", "bogus=1"],
                       "--repeats nan": ["--repeats", "nan"]}.items():
        add(f"latency {name}", "latency", *args, "-q", *([] if "--out" in args else ["--out", work / "t.json"]))
    if not torch.cuda.is_available():
        add("latency --device cuda", "latency", "--space", "nb201", "--device", "cuda", "-q", "--out",
            work / "t.json")
    # quantize
    for budget in ("size=", "size=-1", "foo=1", "size=abc", "latency=0", "size=0.25kB/s", "", "size=nan",
                   "energy=-2uJ", "size=1e999"):
        add(f"quantize --budget {budget!r}", "quantize", run, "--budget", budget, "--out", out, "-q")
    add("quantize a missing model", "quantize", work / "missing.pt", "--budget", "size=0.5", "--out", out)
    add("quantize a corrupt model", "quantize", bad_model, "--budget", "size=0.5", "--out", out)
    add("quantize --accelerator nope", "quantize", run, "--budget", "size=0.5", "--accelerator", "nope",
        "--out", out)
    add("quantize --episodes 0", "quantize", run, "--budget", "size=0.5", "--episodes", "0", "--out", out)
    add("quantize --set bogus", "quantize", run, "--budget", "size=0.5", "--set", "haq.bogus=1", "--out", out)
    add("quantize --out a file", "quantize", run, "--budget", "size=0.5", "--out", afile)
    add("quantize --out a non-run --force", "quantize", run, "--budget", "size=0.5", "--out", photos, "--force")
    # damaged runs: resume and report
    damaged = work / "damaged"
    damaged.mkdir(exist_ok=True)

    def variant(name: str, change: Callable[[Path], None]) -> Path:
        target = damaged / name
        if not target.exists():
            shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock", "*-wal", "*-shm"))
            for f in ("arch.json", "model.pt", "result.json"):
                (target / f).unlink(missing_ok=True)
            change(target)
        return target

    def garbage_store(p: Path) -> None:
        (p / "store.sqlite").write_bytes(b"garbage " * 100)

    def truncated_store(p: Path) -> None:
        data = (p / "store.sqlite").read_bytes()
        (p / "store.sqlite").write_bytes(data[: len(data) // 3])

    def wrong_checkpoint(p: Path) -> None:
        torch.save({"epoch": 0, "written_by": {"checkpoint": "search", "run": "search", "strategy": "darts",
                                               "space": "darts"}}, p / "checkpoints" / "search.pt")

    def list_checkpoint(p: Path) -> None:
        torch.save([1, 2], p / "checkpoints" / "search.pt")

    def truncated_checkpoint(p: Path) -> None:
        data = (p / "checkpoints" / "search.pt").read_bytes()
        (p / "checkpoints" / "search.pt").write_bytes(data[: len(data) // 2])

    def bad_config(p: Path) -> None:
        (p / "config.yaml").write_text("train: {lr: [\n")

    def unknown_section(p: Path) -> None:
        (p / "config.yaml").write_text((p / "config.yaml").read_text() + "nosuch: {a: 1}\n")

    def no_config(p: Path) -> None:
        (p / "config.yaml").unlink()

    def store_is_dir(p: Path) -> None:
        (p / "store.sqlite").unlink()
        (p / "store.sqlite").mkdir()

    def bad_trials_row(p: Path) -> None:
        conn = sqlite3.connect(p / "store.sqlite")
        conn.execute("DELETE FROM trials WHERE id = 1")
        conn.commit()
        conn.close()

    for name, change in {"garbage store": garbage_store, "truncated store": truncated_store,
                         "wrong-kind checkpoint": wrong_checkpoint, "list checkpoint": list_checkpoint,
                         "truncated checkpoint": truncated_checkpoint, "bad config": bad_config,
                         "unknown config section": unknown_section, "no config": no_config,
                         "store is a dir": store_is_dir, "trial row missing": bad_trials_row}.items():
        path = variant(name.replace(" ", "_"), change)
        add(f"resume: {name}", "resume", path, "-q")
    for name in ("garbage_store", "truncated_store", "store_is_dir"):
        add(f"report: {name.replace('_', ' ')}", "report", damaged / name)
    add("report a missing dir", "report", work / "missing")
    add("report a non-run", "report", photos)
    add("resume a missing dir", "resume", work / "missing")
    add("resume a file", "resume", afile)
    # usage errors
    for args in (["serach"], ["search", "--no-such-option"], ["train"], ["export"], ["quantize", run],
                 ["resume"], ["report"], ["list", "extra"], ["search", "--epochs"], ["--nope"],
                 ["search", "--quiet=3"], ["latency", "--batch-size", "1.5"], ["export", run, "--format"],
                 ["search", "--seed", "1", "--seed"], ["quantize", run, "--budget"]):
        add(f"usage: {' '.join(str(a) for a in args)[:40]}", *args)
    return cases


# --------------------------------------------------------------------------- kill points
def _outcome(run: Path) -> dict[str, Any]:
    from nasforge.experiment import Store

    store = Store(run / "store.sqlite", readonly=True)
    try:
        trials = [(t["index"], t["arch_hash"], t["status"], t["metrics"], t["duplicate_of"]) for t in store.trials()]
        train = [(e["epoch"], e["metrics"].get("train_loss")) for e in store.epochs("train")]
    finally:
        store.close()
    result = json.loads((run / "result.json").read_text())
    return {"arch": json.loads((run / "arch.json").read_text()), "trials": trials, "train": train,
            "test_acc": result["test_acc"], "params": result["params"]}


def kill_points() -> list[tuple[str, int, str]]:
    points = [("search.pt", n, when) for n in range(1, 7) for when in ("before", "after")]
    points += [("train.pt", n, when) for n in (1, 2) for when in ("before", "after")]
    points += [(name, 1, when) for name in ("arch.json", "model.pt") for when in ("before", "after")]
    points += [("result.json", 1, "before"), ("config.yaml", 1, "after")]
    return points


def run_kills(work: Path, reference: Path) -> list[tuple[str, str]]:
    expected = _outcome(reference)
    rows = []
    for suffix, nth, when in kill_points():
        name = f"kill at {suffix} #{nth} {when} replace"
        run = work / f"kill-{suffix}-{nth}-{when}"
        proc = subprocess.run([sys.executable, "-c", KILLER, suffix, str(nth), when, "search", *TINY,
                               "--out", str(run)], capture_output=True, text=True, env=_env(), timeout=600)
        if proc.returncode != -signal.SIGKILL:
            rows.append((name, "other"))  # the kill point was never reached
            continue
        code, err, tb = run_cli("resume", run, "-q")
        if tb is not None or "Traceback" in err:
            rows.append((name, "traceback"))
        elif code != 0:
            rows.append((name, "other"))
        elif list(run.rglob(".*.tmp")) or _outcome(run) != expected:
            rows.append((name, "silent"))
        else:
            rows.append((name, "clean"))
    return rows


# --------------------------------------------------------------------------- concurrent writers
def run_concurrency(work: Path, reference: Path) -> list[tuple[str, str]]:
    """Two writers at once on one run directory: exactly one may run; the run must stay whole."""
    rows = []

    def start(*args: Any) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "nasforge.cli", *[str(a) for a in args]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())

    def judge(name: str, procs: list[subprocess.Popen], run: Path, seeds: list[int] | None = None) -> None:
        outs = [(p.wait(timeout=600), ANSI.sub("", p.communicate()[1])) for p in procs]
        if any("Traceback" in err for _, err in outs):
            rows.append((name, "traceback"))
            return
        ok = [i for i, (code, _) in enumerate(outs) if code == 0]
        refused = [i for i, (code, err) in enumerate(outs)  # "in use by PID ..." or "already exists"
                   if code != 0 and err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1]
        if len(ok) > 1:
            rows.append((name, "silent"))  # both ran: results mixed in one directory
            return
        if len(ok) != 1 or len(refused) != len(outs) - 1:
            rows.append((name, "other"))
            return
        if seeds is not None:  # the directory must hold the winner's run only
            from nasforge.config import read_yaml

            config_seed = read_yaml(run / "config.yaml")["seed"]
            result = json.loads((run / "result.json").read_text())
            if config_seed != seeds[ok[0]] or result.get("test_acc") is None:
                rows.append((name, "silent"))
                return
        rows.append((name, "clean"))

    for i in range(3):
        run = work / f"two-forces-{i}"
        procs = [start("search", *TINY, "--seed", str(s), "--out", run, "--force") for s in (0, 1)]
        judge(f"two --force searches at once #{i + 1}", procs, run, seeds=[0, 1])
    for i in range(2):
        run = work / f"two-resumes-{i}"
        shutil.copytree(reference, run, ignore=shutil.ignore_patterns(".lock"))
        for f in ("arch.json", "model.pt", "result.json"):
            (run / f).unlink()
        (run / "checkpoints" / "train.pt").unlink(missing_ok=True)
        procs = [start("resume", run, "-q") for _ in range(2)]
        judge(f"two resumes at once #{i + 1}", procs, run)
    run = work / "resume-and-force"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "result.json").unlink()
    (run / "model.pt").unlink()
    procs = [start("resume", run, "-q"), start("search", *TINY, "--seed", "1", "--out", run, "--force")]
    judge("resume and --force search at once", procs, run)
    run = work / "search-and-train"
    procs = [start("search", *TINY, "--out", run),
             start("train", reference / "arch.json", "--data", "synthetic", "--epochs", "1", "-q", "--out", run)]
    judge("search and train into one --out at once", procs, run)
    return rows


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("inputs", "kills", "concurrency"), action="append")
    parser.add_argument("--list", action="store_true", help="name every case that was not clean")
    args = parser.parse_args()
    parts = args.only or ["inputs", "kills", "concurrency"]
    torch.set_num_threads(1)
    tic = time.time()
    results: dict[str, list[tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="nasforge-faults-") as tmp:
        work = Path(tmp)
        reference = work / "reference"
        code, err, tb = run_cli("search", *TINY, "--out", reference)
        if code != 0:
            sys.exit(f"the reference run failed:\n{err}{tb or ''}")
        if "inputs" in parts:
            rows = []
            inputs = work / "inputs"
            inputs.mkdir()
            for name, argv in build_inputs(inputs, reference):
                shutil.rmtree(inputs / "out", ignore_errors=True)
                code, err, tb = run_cli(*argv)
                rows.append((name, classify_error_case(code, err, tb)))
                if args.list and rows[-1][1] != "clean":
                    last = (tb or err).strip().splitlines()[-1:] or [""]
                    print(f"  {rows[-1][1]:9s} {name}: exit {code}: {last[0][:160]}", file=sys.stderr)
            results["bad inputs"] = rows
        if "kills" in parts:
            results["kill points"] = run_kills(work, reference)
        if "concurrency" in parts:
            results["concurrent writers"] = run_concurrency(work, reference)
    print(f"nasforge fault injection ({dt.date.today()}, {platform.node()}, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
          f"euid {os.geteuid()}), {time.time() - tic:.0f} s")
    print()
    print("| corpus | tried | clean | tracebacks | silent | other |")
    print("|---|---|---|---|---|---|")
    total = {"tried": 0, "clean": 0, "traceback": 0, "silent": 0, "other": 0}
    for corpus, rows in results.items():
        counts = {k: sum(1 for _, c in rows if c == k) for k in ("clean", "traceback", "silent", "other")}
        total["tried"] += len(rows)
        for k, v in counts.items():
            total[k] += v
        print(f"| {corpus} | {len(rows)} | {counts['clean']} | {counts['traceback']} | {counts['silent']} | "
              f"{counts['other']} |")
    print(f"| **all** | {total['tried']} | {total['clean']} | {total['traceback']} | {total['silent']} | "
          f"{total['other']} |")
    if args.list:
        for corpus, rows in results.items():
            for name, verdict in rows:
                if verdict != "clean":
                    print(f"{corpus}: {verdict}: {name}")
    sys.exit(0 if total["traceback"] == total["silent"] == 0 else 1)


if __name__ == "__main__":
    main()
