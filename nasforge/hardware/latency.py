"""Measured inference latency on CPU (PyTorch eager), CUDA, or ONNX Runtime."""

from __future__ import annotations

import copy
import functools
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.hardware.cost import _check_input_shape, eval_mode, example_input

__all__ = ["LatencyResult", "measure_latency", "describe_device", "check_device", "DEVICES"]

DEVICES: tuple[str, ...] = ("cpu", "cuda", "onnxruntime")


@dataclass
class LatencyResult:
    """Summary statistics (milliseconds) of repeated timed forward passes."""

    device: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    warmup: int
    batch_size: int
    input_shape: tuple[int, ...]
    threads: int
    device_name: str
    warmup_seconds: float = 0.0  # warm-up went on at least this long (besides the ``warmup`` calls)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (``input_shape`` as a list)."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data


def _check_device(device: str) -> str:
    """Validate a device name and return it."""
    if device not in DEVICES:
        raise NasforgeError(f"unknown device {device!r}; use one of: {'|'.join(DEVICES)}")
    return device


def _require_cuda() -> None:
    """Raise a NasforgeError if CUDA cannot be used."""
    if not torch.cuda.is_available():
        raise NasforgeError("CUDA is not available on this machine; use --device cpu (or onnxruntime)")


def check_device(device: str, what: str = "--device") -> None:
    """Refuse a timing target this machine cannot use (unknown, CUDA without a GPU, onnxruntime missing),
    before anything is built, trained or measured."""
    import importlib.util

    if device not in DEVICES:
        raise NasforgeError(f"unknown {what} {device!r}; use one of: {'|'.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise NasforgeError(f"{what}=cuda but CUDA is not available on this machine; use cpu (or onnxruntime)")
    if device == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise NasforgeError(f"{what}=onnxruntime but onnxruntime is not installed; pip install 'nasforge[onnx]' "
                            "or use cpu")


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    """Return the CPU model string from /proc/cpuinfo or ``platform``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in {"model name", "Hardware", "Processor", "cpu model"} and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device: str = "cpu") -> str:
    """Return a human-readable name for ``device`` (CPU model, GPU name, or ORT version and providers)."""
    _check_device(device)
    if device == "cpu":
        return _cpu_name()
    if device == "cuda":
        _require_cuda()
        return torch.cuda.get_device_name(torch.cuda.current_device())
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise NasforgeError("onnxruntime is not installed; pip install 'nasforge[onnx]'") from exc
    return f"onnxruntime {ort.__version__} CPUExecutionProvider on {_cpu_name()}"


def _check_count(name: str, value: Any, minimum: int) -> int:
    """Validate an integer option with a lower bound."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise NasforgeError(f"invalid {name} {value!r}; use an integer >= {minimum}")
    return value


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Set ``torch.set_num_threads`` for the block and restore the previous value after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _time_calls(fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None] | None = None,
                warmup_seconds: float = 0.0) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, and on until ``warmup_seconds`` have passed (a runtime's first calls
    allocate memory and pick kernels), then ``repeats`` times; return per-call milliseconds."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_seconds:
        fn()
        done += 1
    if sync is not None:
        sync()
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _is_on(model: nn.Module, device: torch.device) -> bool:
    """Return True if every parameter and buffer of ``model`` lives on ``device``'s type."""
    return all(t.device.type == device.type for t in list(model.parameters()) + list(model.buffers()))


def _measure_torch(model: nn.Module, shape: tuple[int, ...], device: str, batch_size: int,
                   warmup: int, repeats: int, warmup_seconds: float = 0.0) -> list[float]:
    """Time eager PyTorch forward passes on ``device`` without modifying ``model``."""
    target = torch.device(device)
    if device == "cuda":
        target = torch.device("cuda", torch.cuda.current_device())
    # Never move the caller's model: run a copy if it lives elsewhere.
    runner = model if _is_on(model, target) else copy.deepcopy(model).to(target)
    x = example_input(runner, shape, batch_size, seed=0, device=target)
    sync = torch.cuda.synchronize if device == "cuda" else None
    with eval_mode(runner), torch.inference_mode():
        return _time_calls(lambda: runner(x), warmup, repeats, sync, warmup_seconds)


def _measure_onnxruntime(model: nn.Module, shape: tuple[int, ...], batch_size: int,
                         warmup: int, repeats: int, threads: int, warmup_seconds: float = 0.0) -> list[float]:
    """Export ``model`` to a temporary ONNX file and time ONNX Runtime CPU inference."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise NasforgeError("onnxruntime is not installed; pip install 'nasforge[onnx]'") from exc
    from nasforge.export import to_onnx

    x = example_input(model, shape, batch_size, seed=0).detach().cpu().numpy()
    with tempfile.TemporaryDirectory(prefix="nasforge-ort-") as tmp:
        # the legacy exporter first: many times faster to run (a table exports every candidate op), same ops
        path = to_onnx(model, shape, Path(tmp) / "model.onnx", exporter="legacy")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x)}
        return _time_calls(lambda: session.run(None, feed), warmup, repeats, warmup_seconds=warmup_seconds)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    warmup_seconds: float = 0.0,
) -> LatencyResult:
    """Time ``repeats`` inference calls after ``warmup`` calls (and at least ``warmup_seconds`` of them) on
    cpu|cuda|onnxruntime and summarise them (``warmup`` in the result: the warm-up calls made)."""
    _check_device(device)
    shape = _check_input_shape(input_shape)
    _check_count("batch_size", batch_size, 1)
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    if not isinstance(warmup_seconds, (int, float)) or not 0 <= warmup_seconds <= 3600:
        raise NasforgeError(f"invalid warmup_seconds {warmup_seconds!r}; use a number of seconds in [0, 3600]")
    if threads is None:
        threads = torch.get_num_threads()
    _check_count("threads", threads, 1)
    if device == "cuda":
        _require_cuda()
    device_name = describe_device(device)

    with _torch_threads(threads):
        if device == "onnxruntime":
            times = _measure_onnxruntime(model, shape, batch_size, warmup, repeats, threads, warmup_seconds)
        else:
            times = _measure_torch(model, shape, device, batch_size, warmup, repeats, warmup_seconds)

    arr = np.asarray(times, dtype=np.float64)
    p10, median, p90 = np.percentile(arr, [10, 50, 90])
    return LatencyResult(
        device=device,
        median_ms=float(median),
        p10_ms=float(p10),
        p90_ms=float(p90),
        mean_ms=float(arr.mean()),
        std_ms=float(arr.std()),
        repeats=repeats,
        warmup=warmup,
        batch_size=batch_size,
        input_shape=shape,
        threads=threads,
        device_name=device_name,
        warmup_seconds=float(warmup_seconds),
    )
