"""Progress reporting that library code can call without printing.

Library code receives a ``Progress`` and calls ``task(...)``; the default does nothing.
The CLI passes ``RichProgress``, which draws bars on the terminal.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


class Task:
    """A unit of tracked work; ``advance`` moves it and may update shown fields."""

    def advance(self, n: int = 1, **fields: Any) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass


class Progress:
    """No-op progress (the library default)."""

    @contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[Task]:
        yield Task()


class _RichTask(Task):
    def __init__(self, bar: Any, task_id: Any):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1, **fields: Any) -> None:
        if fields:
            self.bar.update(self.task_id, advance=n, info=_fmt(fields))
        else:  # keep what is shown (passing info=None would print "None")
            self.bar.update(self.task_id, advance=n)

    def update(self, **fields: Any) -> None:
        self.bar.update(self.task_id, info=_fmt(fields))


def _fmt(fields: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class RichProgress(Progress):
    """Progress bars with rich: one bar per task, with its latest metrics beside it."""

    def __init__(self, console: Any = None, disable: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as _Bar

        self.disable = disable
        self.bar = _Bar(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, disable=disable, transient=False,
        )

    def __enter__(self) -> "RichProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    @contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[Task]:
        task_id = self.bar.add_task(description, total=total, completed=completed, info="")
        try:
            yield _RichTask(self.bar, task_id)
        finally:
            self.bar.stop_task(task_id)
