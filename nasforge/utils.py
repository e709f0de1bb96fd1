"""Small shared helpers: atomic file writes, disk-fault messages and the environment a result was produced in."""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from nasforge.errors import ExperimentError

#: errno values that mean "the disk (or the user's quota) is full"
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)


def _mb(n_bytes: float) -> int:
    return max(1, math.ceil(n_bytes / 1e6))


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing parent); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_read_only(path: str | os.PathLike) -> bool:
    """Whether the filesystem holding ``path`` (or its nearest existing parent) is mounted read-only."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return bool(os.statvfs(p).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


def disk_error(exc: BaseException, directory: str | os.PathLike, needed: int | None = None,
               what: str = "the run") -> ExperimentError | None:
    """The one-line error of a write that failed for lack of space or on a read-only filesystem, else None.

    Recognises ``OSError`` (ENOSPC, EDQUOT, EFBIG, EROFS), SQLite's "disk is full" and torch's
    ``inline_container.cc`` write failures (checked against the free space left).
    """
    directory = Path(directory)
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    need = f", about {_mb(needed)} MB needed" if needed else ""
    if code == errno.EROFS or (code in (errno.EACCES, errno.EPERM, None) and "read-only" in text) or (
            "readonly" in text and is_read_only(directory)):
        return ExperimentError(f"{directory} is on a read-only filesystem; write {what} to a writable place "
                               "(choose another --out, or copy the run there and resume it)")
    if code in (errno.EACCES, errno.EPERM):
        return ExperimentError(f"cannot write in {directory}: it is read-only for this user (permission denied); "
                               "check its permissions or choose another --out")
    if code not in _FULL and "disk is full" not in text and "no space left" not in text:
        if not (isinstance(exc, RuntimeError) and ("inline_container" in text or "write" in text)):
            return None
        free = free_bytes(directory)
        if free is None or free > max(needed or 0, 1_000_000):
            return None  # not a full disk: a real bug keeps its traceback
    if code == errno.EFBIG:
        return ExperimentError(f"cannot write in {directory}: the file size limit (ulimit -f) is reached{need}; "
                               "raise it and run again (checkpoints already written are kept)")
    return ExperimentError(f"no space left on {directory}{need}; free some space and run again "
                           "(checkpoints already written are kept: 'nasforge resume DIR' continues a run)")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise disk_error(exc, path.parent) or exc from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except Exception as exc:
        needed = max(_size(tmp), _size(path))
        if os.path.exists(tmp):
            os.unlink(tmp)  # free the partial file before saying how much space is missing
        err = disk_error(exc, path.parent, needed or None)
        if err is not None:
            raise err from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _size(path: str | os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete ``.NAME.XXXX.tmp`` files a kill during an ``atomic_write`` left in ``directory`` (and one level down).

    Only call it while holding the run's lock: a live writer's temporary would be deleted too.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for folder in (directory, *(p for p in directory.iterdir() if p.is_dir())):
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that a reader never sees a half-written file."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and ``os.replace``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the ``(cost, value)`` points no other point dominates: lower cost and
    higher value are better, and a point is dominated by one at least as good in both and better in
    one (so equal points both stay). One sort and a sweep over the costs."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best: tuple[float, float] | None = None  # the last front point: (cost, value)
    for i in order:
        cost, value = points[i]
        if best is None or value > best[1] or (cost, value) == best:
            front.append(i)
            best = (cost, value)
    return sorted(front)


def environment_info(device: str = "cpu") -> dict[str, str]:
    """What a result was produced with: nasforge, torch and Python versions and the device."""
    import platform

    from nasforge import __version__

    return {"nasforge": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device)}
