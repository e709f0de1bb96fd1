"""Seconds per search step and peak memory of one-shot supernet search steps.

A *search step* is one step of the shared one-shot loop (``nasforge.oneshot.loop.search_step``):
the method's architecture step on a valid batch and the weight step on a train batch
(``nasforge.training.weight_step``), in the method's order. DARTS: architecture first (first
order: the gradient of the valid loss w.r.t. the alphas; second order: ``unrolled_arch_grads``;
then Adam), then SGD (momentum 0.9, weight decay 3e-4, gradient-norm clip 5). GDAS: weights
first, each step running only one Gumbel-sampled op per edge (weight decay 5e-4). Steps run on
``--device`` in ``--precision`` (the engine's autocast).

Rows: ``darts-1st``, ``darts-2nd`` (DARTS, first / second order), ``gdas`` (GDAS, all
cells searched), ``gdas-frc`` (GDAS with its hand-designed fixed reduction cell); on the
mbconv space (preset ``small``, the config's input and batch): ``proxyless-w`` (ProxylessNAS
weight step, one sampled path), ``proxyless`` (weight step + two-path architecture step),
``mbconv-largest`` (training step of the all-``mb_k7_e6`` network), ``mbconv-allpaths``
(DARTS-style all-paths mixed op over the same space).

Every (method, config) row runs in a fresh subprocess (this script re-invokes itself
with ``--worker``), so that one row's allocations and allocator caches cannot leak into
the next row's peak memory. Timing: median of ``--steps`` timed steps after
``--warmup`` warm-up steps, on fixed random batches (the values do not matter for speed).

Memory:
  * CPU: peak RSS increase. The worker resets the kernel's RSS high-water mark
    (``/proc/self/clear_refs`` = 5) right before the first (warm-up) step, reads the
    current RSS as the baseline, and reads the high-water mark after the last timed step.
    So "step peak" = max RSS during the warm-up + timed steps - RSS before them; it
    includes state created by the first step (SGD momentum buffers, Adam state) and the
    activations/gradients alive at once. Where the reset is not available, the
    ``ru_maxrss`` high-water mark is used and the row is marked ``*`` (a lower bound
    when the build itself peaked higher).
  * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` before
    the first step, minus ``memory_allocated`` at that point (tensor memory only, not
    the caching allocator's reserve or the CUDA context).

Adding a one-shot method: register a row in ``STEP_MAKERS`` with ``oneshot_maker(name,
space_factory, **options)``; the supernet, optimisers and step are those of the shared loop.

Usage::

    python benchmarks/supernet_step.py                      # both configs, every row, CPU
    python benchmarks/supernet_step.py --configs small --steps 50 --warmup 5
    python benchmarks/supernet_step.py --device cuda --precision bf16 --json out.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from nasforge.oneshot.loop import make_optimizers, search_step
from nasforge.hardware.penalty import LatencyConfig
from nasforge.progress import Progress
from nasforge.spaces.darts import DartsSpace
from nasforge.strategies import get_strategy_class
from nasforge.training import Engine, EngineConfig, weight_step

RESULT_TAG = "@@SUPERNET_STEP_RESULT@@"
MiB = 2 ** 20


# --------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class BenchConfig:
    """One supernet / batch size to benchmark, with its default step counts."""

    name: str
    layers: int
    channels: int
    batch: int
    input_shape: tuple[int, int, int]
    num_classes: int = 10
    nodes: int = 4
    steps: int = 3
    warmup: int = 1
    mbconv_preset: str = "small"

    def describe(self) -> str:
        c, h, w = self.input_shape
        return (f"{self.layers} cells, {self.channels} channels, {self.nodes} nodes, batch {self.batch}, "
                f"input {c}x{h}x{w}, {self.num_classes} classes")


CONFIGS: dict[str, BenchConfig] = {
    # The DARTS paper's CIFAR-10 search supernet.
    "paper": BenchConfig("paper", layers=8, channels=16, batch=64, input_shape=(3, 32, 32), steps=3, warmup=1),
    # GDAS's official CIFAR search batch (256) on the same supernet.
    "paper-b256": BenchConfig("paper-b256", layers=8, channels=16, batch=256, input_shape=(3, 32, 32), steps=3,
                              warmup=1),
    # ProxylessNAS's ImageNet setting: the imagenet mbconv preset at 224x224, batch 256 (mbconv rows only).
    "imagenet": BenchConfig("imagenet", layers=0, channels=0, batch=256, input_shape=(3, 224, 224), num_classes=1000,
                            steps=3, warmup=1, mbconv_preset="imagenet"),
    # The supernet of the digits main job (profiles.PROFILES["digits"]["search"]).
    "small": BenchConfig("small", layers=5, channels=8, batch=64, input_shape=(1, 8, 8), steps=20, warmup=3),
}


def random_batches(cfg: BenchConfig, device: torch.device) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A fixed (train, valid) pair of random batches for ``cfg`` (same shapes as real data)."""
    def one() -> tuple[Tensor, Tensor]:
        x = torch.randn(cfg.batch, *cfg.input_shape, device=device)
        y = torch.randint(0, cfg.num_classes, (cfg.batch,), device=device)
        return x, y
    return one(), one()


# --------------------------------------------------------------------------- one-shot search steps
def oneshot_maker(name: str, space_factory: Callable[[BenchConfig], Any], arch: bool = True, **options: Any):
    """A step maker for a one-shot strategy: its supernet, architecture parameters and optimisers as the
    shared loop builds them (``nasforge.oneshot.loop.make_optimizers``), and one loop step
    (``search_step``: the architecture step and the weight step, in the method's order)."""
    def make(cfg: BenchConfig, engine: Engine) -> tuple[nn.Module, Callable[[], Any]]:
        strategy = get_strategy_class(name)(get_strategy_class(name).Config(epochs=1, batch_size=cfg.batch, **options))
        strategy.engine = engine
        strategy.latency_config = LatencyConfig(loss="none")  # step timing only: no latency term, no table
        space = space_factory(cfg)
        data_info = SimpleNamespace(input_shape=cfg.input_shape, num_classes=cfg.num_classes)
        strategy.setup(space, data_info, None, Progress())
        model = engine.module(strategy.build_supernet(space, data_info))
        strategy.init_arch(space, model)
        params = list(model.parameters())
        make_optimizers(strategy, params)
        train_batch, valid_batch = random_batches(cfg, engine.device)
        strategy.epoch_started(0)
        model.train()

        def step() -> dict[str, float]:
            res, values = search_step(strategy, engine, model, params, train_batch, valid_batch if arch else None)
            return {"train_loss": res.loss, "train_acc": res.acc, **(values or {})}
        return model, step
    return make


def _darts_space(cfg: BenchConfig) -> DartsSpace:
    return DartsSpace(nodes=cfg.nodes)


def _mbconv_space(cfg: BenchConfig) -> Any:
    from nasforge.spaces.mbconv import MBConvSpace

    return MBConvSpace(preset=cfg.mbconv_preset)


def darts_family_maker(name: str, order: int, **options: Any):
    """DARTS or GDAS on the darts cell space (``layers``/``channels`` from the bench config)."""
    def make(cfg: BenchConfig, engine: Engine) -> tuple[nn.Module, Callable[[], Any]]:
        return oneshot_maker(name, _darts_space, layers=cfg.layers, channels=cfg.channels, order=order,
                             **options)(cfg, engine)
    return make


def mbconv_maker(kind: str):
    """Step makers on the mbconv space (the config's preset; ``small`` fits 8x8 and 32x32 inputs), for the rows
    ``proxyless-w`` (weight step: one sampled path per layer), ``proxyless`` (weight step + two-path
    binary architecture step), ``mbconv-largest`` (training step of the all-``mb_k7_e6`` network) and
    ``mbconv-allpaths`` (DARTS-style: every op of every layer runs, softmax-weighted; weights and alphas
    from one backward)."""
    def make(cfg: BenchConfig, engine: Engine) -> tuple[nn.Module, Callable[[], Any]]:
        from nasforge.spaces.mbconv import LARGEST_OP

        if kind in ("proxyless-w", "proxyless"):
            return oneshot_maker("proxyless", _mbconv_space, arch=kind == "proxyless", warmup_epochs=0)(cfg, engine)
        if kind == "mbconv-allpaths":  # DARTS's softmax relaxation of the same network, weight step only
            return oneshot_maker("darts", _mbconv_space, arch=False)(cfg, engine)
        space = _mbconv_space(cfg)
        train_batch, _ = random_batches(cfg, engine.device)
        model = engine.module(space.build(space.uniform_arch(LARGEST_OP), cfg.input_shape, cfg.num_classes))
        forward = model
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)

        def step() -> dict[str, float]:
            res = weight_step(engine, opt, params, forward, train_batch, grad_clip=0.0)
            return {"train_loss": res.loss}
        return model, step
    return make


#: Row name -> step maker ``(config, engine) -> (supernet, step)``.
STEP_MAKERS: dict[str, Callable[[BenchConfig, Engine], tuple[nn.Module, Callable[[], Any]]]] = {
    "darts-1st": darts_family_maker("darts", order=1),
    "darts-2nd": darts_family_maker("darts", order=2),
    "gdas": darts_family_maker("gdas", order=1),
    "gdas-frc": darts_family_maker("gdas", order=1, fixed_reduce=True),
}
for _row in ("proxyless-w", "proxyless", "mbconv-largest", "mbconv-allpaths"):
    STEP_MAKERS[_row] = mbconv_maker(_row)


# --------------------------------------------------------------------------- memory probes (Linux)
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def _hwm_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:  # ru_maxrss is in KiB on Linux
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


# --------------------------------------------------------------------------- worker
def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one (method, config), run warm-up + timed steps, measure time and memory."""
    method, cfg = spec["method"], BenchConfig(**{**spec["config"], "input_shape": tuple(spec["config"]["input_shape"])})
    engine = Engine(EngineConfig(device=spec["device"], precision=spec.get("precision", "32"), bn_recalibration=0))
    device = engine.device
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    model, step = STEP_MAKERS[method](cfg, engine)
    param_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / MiB
    num_params = sum(p.numel() for p in model.parameters())
    sync()

    out: dict[str, Any] = {"method": method, "config": cfg.name, "params": num_params, "param_mib": param_mib,
                           "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
                           "device": str(device), "precision": engine.precision, "steps": spec["steps"],
                           "warmup": spec["warmup"]}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / MiB
        hwm_reset = True
    else:
        hwm_reset = _reset_hwm()
        base = _rss_mib()
        out["hwm_before_mib"] = _hwm_mib()

    for _ in range(spec["warmup"]):
        step()
    sync()
    if not cuda:
        out["rss_after_warmup_mib"] = _rss_mib()
        out["peak_warmup_mib"] = _hwm_mib()
    times, cpu = [], []
    for _ in range(spec["steps"]):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / MiB
        out.update(base_mib=base, peak_abs_mib=peak, step_peak_mib=peak - base,
                   reserved_peak_mib=torch.cuda.max_memory_reserved(device) / MiB, hwm_reset=True)
    else:
        peak = _hwm_mib()
        out.update(base_mib=base, peak_abs_mib=peak, step_peak_mib=peak - base, rss_after_mib=_rss_mib(),
                   hwm_reset=hwm_reset)
    out.update(times_s=times, cpu_s=cpu, median_s=statistics.median(times), min_s=min(times), max_s=max(times),
               cpu_per_wall=sum(cpu) / max(sum(times), 1e-12))
    return out


# --------------------------------------------------------------------------- driver
def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "torch_default_threads": torch.get_num_threads()}
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_pressure() -> str:
    """Linux PSI "some" CPU pressure (share of time runnable tasks waited for a CPU), if available."""
    try:
        with open("/proc/pressure/cpu") as fh:
            fields = dict(kv.split("=") for kv in fh.readline().split()[1:])
        return f"{fields['avg10']}% (10 s), {fields['avg60']}% (60 s)"
    except (OSError, ValueError, KeyError):
        return "n/a"


def run_row(spec: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": spec["method"], "config": spec["config"]["name"], "error": f"timeout after {timeout}s"}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result.update(worker_wall_s=wall, loadavg_1m_before=load0, loadavg_1m_after=os.getloadavg()[0])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"method": spec["method"], "config": spec["config"]["name"],
            "error": f"worker exit {proc.returncode}: " + " | ".join(tail)}


def fmt_s(s: float) -> str:
    return f"{s:.3f}" if s < 10 else f"{s:.1f}"


COLUMNS = ["method", "config", "s/step (median)", "min-max s", "step peak (MiB)", "process peak (MiB)",
           "params (MiB)", "threads", "cpu/wall", "timed (warm-up)"]


def contended(r: dict[str, Any]) -> bool:
    """CPU rows whose threads got well under their CPUs' worth of time: other work shared the cores."""
    return r.get("device") == "cpu" and r["cpu_per_wall"] < CONTENDED_RATIO * r["threads"]


CONTENDED_RATIO = 0.75


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["method"], r["config"], "error: " + r["error"]] + [""] * (len(COLUMNS) - 3))
            continue
        mark = "" if r.get("hwm_reset", True) else "*"
        flag = " !" if contended(r) else ""
        rows.append([r["method"], r["config"], fmt_s(r["median_s"]) + flag, f"{fmt_s(r['min_s'])}-{fmt_s(r['max_s'])}",
                     f"{r['step_peak_mib']:.0f}{mark}", f"{r['peak_abs_mib']:.0f}", f"{r['param_mib']:.2f}",
                     str(r["threads"]), f"{r['cpu_per_wall']:.2f}" if r["device"] == "cpu" else "-",
                     f"{r['steps']} ({r['warmup']})"])
    return rows


def print_markdown(header: list[str], results: list[dict[str, Any]], notes: list[str]) -> None:
    print("\n".join(header))
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" if i < 2 else "--:" for i in range(len(COLUMNS))) + "|")
    for row in table_rows(results):
        print("| " + " | ".join(row) + " |")
    print()
    print("\n".join(notes))


def print_rich(header: list[str], results: list[dict[str, Any]], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for line in header:
        console.print(line, markup=False, highlight=False)
    table = Table(title="supernet search step")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 2 else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    for line in notes:
        console.print(line, markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="paper,small",
                   help=f"comma-separated configs from {sorted(CONFIGS)} (default: paper,small)")
    p.add_argument("--methods", default=",".join(STEP_MAKERS),
                   help=f"comma-separated rows from {list(STEP_MAKERS)} (default: all)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: per config; paper 3, small 20)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: per config; paper 1, small 3)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("32", "bf16", "16-mixed"), default="32",
                   help="autocast precision of the steps (the engine's --precision)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=None, help="seconds per row before giving up (default: none)")
    p.add_argument("--format", choices=("markdown", "rich"), default="markdown", help="table style")
    p.add_argument("--json", metavar="PATH", help="also write all results (per-step times included) as JSON")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        try:
            result = run_worker(json.loads(args.worker))
        except Exception as exc:  # report, the parent prints it as an error row
            spec = json.loads(args.worker)
            result = {"method": spec["method"], "config": spec["config"]["name"],
                      "error": f"{type(exc).__name__}: {exc}"}
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name, known, what in ((configs, CONFIGS, "config"), (methods, STEP_MAKERS, "method")):
        bad = [n for n in name if n not in known]
        if bad:
            p.error(f"unknown {what}(s) {bad}; choose from {list(known)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available to torch; use --device cpu")
    for flag in ("steps", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")

    started = _dt.datetime.now().astimezone()
    t_start = time.perf_counter()
    info = machine_info(args.device)
    command = "python " + shlex.join(sys.argv)
    threads = f"{args.threads} (--threads)" if args.threads else f"{info['torch_default_threads']} (torch default)"
    header = [
        "## Supernet search step: seconds per step and peak memory",
        "",
        f"- date: {started.isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- machine: {info['cpu']}, {info['usable_cpus']} usable / {info['logical_cpus']} logical CPUs, "
        f"{info.get('mem_total_gib', '?')} GiB RAM; {info['platform']}"
        + (f"; GPU: {info['gpu']}" if "gpu" in info else ""),
        f"- python {info['python']}, torch {info['torch']}, device {args.device}, precision {args.precision}, "
        f"intra-op threads {threads}",
        f"- at start: 1-min load average {os.getloadavg()[0]:.2f}, CPU pressure (PSI some) {cpu_pressure()}",
    ]

    results = []
    for cname in configs:
        cfg = CONFIGS[cname]
        for method in methods:
            spec = {"method": method, "config": asdict(cfg), "device": args.device, "precision": args.precision,
                    "threads": args.threads,
                    "seed": args.seed, "steps": args.steps or cfg.steps,
                    "warmup": cfg.warmup if args.warmup is None else args.warmup}
            print(f"running {method} on {cname} ...", file=sys.stderr, flush=True)
            results.append(run_row(spec, args.timeout))
    total = time.perf_counter() - t_start
    header.append(f"- at end: 1-min load average {os.getloadavg()[0]:.2f}, CPU pressure (PSI some) "
                  f"{cpu_pressure()}; total wall time {total:.1f} s")

    if args.device == "cuda":
        peak_note = ("- **step peak** = `torch.cuda.max_memory_allocated` over the warm-up + timed steps minus "
                     "`memory_allocated` before the first step (tensor memory; excludes allocator reserve and "
                     "CUDA context); **process peak** = max_memory_allocated (params, optimizer state, batches "
                     "included).")
    else:
        peak_note = ("- **step peak** = highest resident set size (RSS) during the warm-up + timed steps minus "
                     "RSS just before the first step (high-water mark reset via /proc/self/clear_refs); it "
                     "includes optimizer state the first step creates (SGD momentum = 1x params). **process "
                     "peak** = that RSS high-water mark of the whole worker process (Python + torch runtime, "
                     "model, batches).")
    notes = [
        "- one **search step** = one step of the shared one-shot loop (`nasforge.oneshot.loop.search_step`): "
        "the method's architecture step (Adam) and the weight step (`nasforge.training.weight_step`: SGD "
        "momentum 0.9, grad clip 5). DARTS: architecture first (1st order: grad of the valid loss "
        "w.r.t. alphas; 2nd order: `unrolled_arch_grads`), all 8 ops of every edge run. GDAS: weights first "
        "(as its official code), one Gumbel-sampled op per edge runs (gdas-frc: reduction cells fixed). "
        "Fixed random batches; each row in a fresh subprocess.",
        "- **s/step** = median of the timed steps (wall clock); **cpu/wall** = process CPU time / wall time "
        "over the timed steps (about the thread count when the cores are not shared).",
        peak_note,
        "- **params** = supernet parameters (fp32), excluding the alphas.",
    ]
    if any(not r.get("hwm_reset", True) for r in results if "error" not in r):
        notes.append("- `*`: the high-water mark could not be reset; the value uses ru_maxrss and is a lower bound.")
    if any(contended(r) for r in results if "error" not in r):
        notes.append(f"- `!`: cpu/wall < {CONTENDED_RATIO} x threads: the cores were shared with other work "
                     "during this row, so its times are inflated (compare the min); rerun on a quiet machine.")
    for cname in configs:
        notes.append(f"- config `{cname}`: {CONFIGS[cname].describe()}")

    (print_rich if args.format == "rich" else print_markdown)(header, results, notes)

    if args.json:
        payload = {"date": started.isoformat(timespec="seconds"), "command": command, "argv": sys.argv,
                   "machine": info, "device": args.device, "precision": args.precision,
                   "threads_flag": args.threads,
                   "total_wall_s": total, "configs": {c: asdict(CONFIGS[c]) for c in configs},
                   "results": results}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
