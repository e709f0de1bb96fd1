"""One writer per run directory: an exclusive OS file lock on ``DIR/.lock``.

``search``, ``resume``, ``train`` and ``quantize`` take the lock of the run they write
before touching any of its files; a second writer fails at once with one line naming
the holder's PID and host (written in the lock file). Readers (``report``, reading the
store) never take it. The lock is ``fcntl.flock``: the operating system drops it when the
process exits, is killed (``kill -9`` included) or crashes, so a stale ``.lock`` file
left behind never blocks the next run. On platforms without ``fcntl`` the lock is a
no-op (documented: one writer per run is then the user's job).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path

from nasforge.errors import ExperimentError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


def _holder(path: Path) -> str:
    """'PID N on HOST' from a lock file a live writer holds (it may still be writing it)."""
    for _ in range(20):
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        parts = text.split()
        if len(parts) >= 2 and parts[0].isdigit():
            return f"PID {parts[0]} on {parts[1]}"
        time.sleep(0.01)  # the holder has just taken the lock and not yet written its PID
    return "another process (PID unknown)"


class RunLock:
    """The exclusive write lock of a run directory (``with RunLock(dir):`` or ``acquire``/``release``)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock now or raise ``ExperimentError`` naming the process that holds it."""
        if self._fd is not None or fcntl is None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise ExperimentError(f"{self.directory} is on a read-only filesystem; copy the run to a writable "
                                      "place to continue it (reading it with 'nasforge report' works as is)") from None
            raise ExperimentError(f"cannot write in {self.directory} ({exc.strerror}); check its permissions "
                                  "or choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ExperimentError(f"{self.directory} is in use by {_holder(self.path)} (lock {self.path}); "
                                      "wait for that run to end or stop it, or choose another --out") from None
            raise ExperimentError(f"cannot lock {self.path} ({exc.strerror}); put the run on a local "
                                  "filesystem") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            pass  # the lock holds even if its note cannot be written (a full disk)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a process about to take it)."""
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_FILE", "RunLock"]
