"""Seconds per search step and peak memory of one-shot supernet search steps.

A *search step* is what a bi-level one-shot search does per iteration. For DARTS
(``DartsStrategy.search_step``): one architecture step on a valid batch (first order: the
gradient of the valid loss w.r.t. the alphas; second order: ``unrolled_arch_grads``;
then Adam), followed by one weight step on a train batch (SGD, momentum 0.9, weight
decay 3e-4, gradient-norm clip 5). For GDAS (``GdasStrategy.search_step``): the same two
steps, weights first, each running only one Gumbel-sampled op per edge (weight decay 5e-4).

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

Adding a method: write a *step maker* ``maker(cfg: BenchConfig, device) -> (model,
step_fn)`` that builds the supernet, optimizers and batches for ``cfg`` and returns the
supernet module and a no-argument callable doing one full search step; register it in
``STEP_MAKERS`` under the row name (e.g. "gdas"). DARTS subclasses (GDAS) can reuse
``darts_family_maker``.

Usage::

    python benchmarks/supernet_step.py                      # both configs, every row, CPU
    python benchmarks/supernet_step.py --configs small --steps 50 --warmup 5
    python benchmarks/supernet_step.py --device cuda --json out.json
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

from nasforge.spaces.darts import DartsSpace, num_edges
from nasforge.strategies.darts import DartsStrategy
from nasforge.strategies.gdas import GdasStrategy

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

    def describe(self) -> str:
        c, h, w = self.input_shape
        return (f"{self.layers} cells, {self.channels} channels, {self.nodes} nodes, batch {self.batch}, "
                f"input {c}x{h}x{w}, {self.num_classes} classes")


CONFIGS: dict[str, BenchConfig] = {
    # The DARTS paper's CIFAR-10 search supernet.
    "paper": BenchConfig("paper", layers=8, channels=16, batch=64, input_shape=(3, 32, 32), steps=3, warmup=1),
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


# --------------------------------------------------------------------------- DARTS step
def build_darts_search(strategy: DartsStrategy, cfg: BenchConfig, device: torch.device):
    """Supernet, alphas and optimizers exactly as ``DartsStrategy.search`` sets them up."""
    space = DartsSpace(nodes=cfg.nodes)
    data_info = SimpleNamespace(input_shape=cfg.input_shape, num_classes=cfg.num_classes)
    model = strategy.build_supernet(space, data_info).to(device)
    edges, ops = num_edges(space.nodes), len(space.primitives)
    strategy.alphas = [nn.Parameter(1e-3 * torch.randn(edges, ops, device=device)) for _ in range(2)]
    c = strategy.config
    w_opt = torch.optim.SGD(model.parameters(), lr=c.w_lr, momentum=c.w_momentum, weight_decay=c.w_wd)
    a_opt = torch.optim.Adam(strategy.alphas, lr=c.a_lr, betas=(c.a_beta1, c.a_beta2), weight_decay=c.a_wd)
    model.train()
    return space, model, w_opt, a_opt


def darts_family_maker(strategy_cls: type[DartsStrategy], order: int, **options: Any):
    """A step maker for DARTS or a DARTS subclass that keeps its step loop (e.g. GDAS)."""
    def make(cfg: BenchConfig, device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
        config = strategy_cls.Config(epochs=1, batch_size=cfg.batch, layers=cfg.layers,
                                     channels=cfg.channels, order=order, **options)
        strategy = strategy_cls(config)
        _, model, w_opt, a_opt = build_darts_search(strategy, cfg, device)
        params = list(model.parameters())
        train_batch, valid_batch = random_batches(cfg, device)
        strategy.epoch_started(0)
        lr = config.w_lr  # cosine_lr at epoch 0

        def step() -> dict[str, float]:
            loss, acc, arch_loss = strategy.search_step(model, params, w_opt, a_opt, train_batch, valid_batch, lr)
            return {"train_loss": loss, "train_acc": acc, "arch_loss": arch_loss}
        return model, step
    return make


#: Row name -> step maker. Other strategies (GDAS, ProxylessNAS) add their rows here.
STEP_MAKERS: dict[str, Callable[[BenchConfig, torch.device], tuple[nn.Module, Callable[[], Any]]]] = {
    "darts-1st": darts_family_maker(DartsStrategy, order=1),
    "darts-2nd": darts_family_maker(DartsStrategy, order=2),
    "gdas": darts_family_maker(GdasStrategy, order=1),
    "gdas-frc": darts_family_maker(GdasStrategy, order=1, fixed_reduce=True),
}


# --------------------------------------------------------------------------- ProxylessNAS on the mbconv space
def mbconv_maker(kind: str):
    """Step makers on the mbconv space (preset ``small``, which fits 8x8 and 32x32 inputs), for the rows
    ``proxyless-w`` (weight step: one sampled path per layer), ``proxyless`` (weight step + two-path
    binary architecture step), ``mbconv-largest`` (training step of the all-``mb_k7_e6`` network) and
    ``mbconv-allpaths`` (DARTS-style: every op of every layer runs, softmax-weighted; weights and alphas
    from one backward)."""
    def make(cfg: BenchConfig, device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
        from nasforge.spaces.mbconv import LARGEST_OP, MBConvSpace
        from nasforge.strategies.proxyless import ProxylessConfig, ProxylessStrategy

        space = MBConvSpace(preset="small")
        train_batch, valid_batch = random_batches(cfg, device)
        x, y = train_batch
        if kind == "mbconv-largest":
            model = space.build(space.uniform_arch(LARGEST_OP), cfg.input_shape, cfg.num_classes).to(device)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)

            def step() -> dict[str, float]:
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                return {"train_loss": loss.item()}
            return model, step
        if kind == "mbconv-allpaths":
            model = space.all_paths_supernet(cfg.input_shape, cfg.num_classes).to(device)
            alphas = [nn.Parameter(1e-3 * torch.randn(len(c), device=device)) for c in model.base.candidates]
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)

            def step() -> dict[str, float]:
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x, [torch.softmax(a, 0) for a in alphas]), y)
                loss.backward()
                opt.step()
                return {"train_loss": loss.item()}
            return model, step
        strategy = ProxylessStrategy(ProxylessConfig(epochs=1, warmup_epochs=0, latency_loss="none"))
        model = space.supernet(cfg.input_shape, cfg.num_classes).to(device)
        strategy.alphas = [nn.Parameter(1e-3 * torch.randn(len(c), device=device)) for c in model.candidates]
        c = strategy.config
        w_opt = torch.optim.SGD(model.parameters(), lr=c.w_lr, momentum=c.w_momentum, nesterov=True,
                                weight_decay=c.w_wd)
        a_opt = torch.optim.Adam(strategy.alphas, lr=c.a_lr, betas=(c.a_beta1, c.a_beta2), eps=c.a_eps)
        params = list(model.parameters())

        def step() -> dict[str, float]:
            loss, acc = strategy.weight_step(model, params, w_opt, train_batch)
            out = {"train_loss": loss, "train_acc": acc}
            if kind == "proxyless":
                out["arch_loss"] = strategy.binary_step(model, a_opt, valid_batch)
            return out
        return model, step
    return make


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
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    model, step = STEP_MAKERS[method](cfg, device)
    param_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / MiB
    num_params = sum(p.numel() for p in model.parameters())
    sync()

    out: dict[str, Any] = {"method": method, "config": cfg.name, "params": num_params, "param_mib": param_mib,
                           "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
                           "device": str(device), "steps": spec["steps"], "warmup": spec["warmup"]}
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
        f"- python {info['python']}, torch {info['torch']}, device {args.device}, intra-op threads {threads}",
        f"- at start: 1-min load average {os.getloadavg()[0]:.2f}, CPU pressure (PSI some) {cpu_pressure()}",
    ]

    results = []
    for cname in configs:
        cfg = CONFIGS[cname]
        for method in methods:
            spec = {"method": method, "config": asdict(cfg), "device": args.device, "threads": args.threads,
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
        "- one **search step** = the strategy's own `search_step`: one architecture step (Adam) and one weight "
        "step (SGD momentum 0.9, grad clip 5). DARTS: architecture first (1st order: grad of the valid loss "
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
                   "machine": info, "device": args.device, "threads_flag": args.threads,
                   "total_wall_s": total, "configs": {c: asdict(CONFIGS[c]) for c in configs},
                   "results": results}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
