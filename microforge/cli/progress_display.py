"""Progress that reads well on a terminal and in a log file alike.

rich draws its live bar only on an interactive terminal. Redirected to a file (a batch job
under SLURM, ``nohup``, a CI log) it shows nothing until the very end, which for a training
run means hours of silence and no way to tell a slow run from a stuck one. Off a terminal we
therefore print one plain line every ``interval`` seconds (``MICROFORGE_PROGRESS_INTERVAL``,
default 30) and a last one when the work ends.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn

INTERVAL_ENV = "MICROFORGE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_SECONDS = 30.0


def progress_display(
    columns: tuple[ProgressColumn | str, ...],
    *,
    line: str,
    console: Console | None = None,
    local_eta: bool = True,
) -> Progress | LineProgress:
    """A rich bar on a terminal, else :class:`LineProgress` printing ``line`` periodically.

    ``line`` is a ``str.format`` template over the task's fields plus ``description``,
    ``completed``, ``total`` and ``percent``; the elapsed time is appended, and an ETA
    estimated here unless ``local_eta`` is False (when the line carries a better one,
    e.g. the server's, which knows the recent pace of the job).
    """
    console = console or Console()
    if console.is_terminal:
        return Progress(*columns, console=console, transient=False)
    return LineProgress(line, console, progress_interval(), local_eta=local_eta)


def progress_interval() -> float:
    value = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL_SECONDS
    except ValueError:
        return DEFAULT_INTERVAL_SECONDS


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    start_completed: float = 0.0
    printed: tuple | None = None


class LineProgress:
    """The subset of ``rich.progress.Progress`` the CLI uses, as timestamped plain lines."""

    def __init__(
        self, line: str, console: Console, interval: float, *, local_eta: bool = True
    ) -> None:
        self.line = line
        self.console = console
        self.interval = interval
        self.local_eta = local_eta
        self.tasks: list[_Task] = []
        self._last_print = -float("inf")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for task in self.tasks:
            self._print(task)

    def add_task(
        self, description: str, total: float | None = None, completed: float = 0, **fields: Any
    ) -> int:
        task = _Task(description, total, completed, fields, start_completed=completed)
        self.tasks.append(task)
        return len(self.tasks) - 1

    def update(
        self,
        task_id: int,
        *,
        completed: float | None = None,
        total: float | None = None,
        **fields: Any,
    ) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task.completed = completed
        if total is not None:
            task.total = total
        task.fields.update(fields)
        if time.monotonic() - self._last_print >= self.interval:
            self._print(task)

    def _print(self, task: _Task) -> None:
        state = (task.completed, task.total, tuple(sorted(task.fields.items())))
        if state == task.printed:
            return  # nothing new since the last line
        task.printed = state
        self._last_print = time.monotonic()
        self.console.print(self.render(task), highlight=False, markup=False, soft_wrap=True)

    def render(self, task: _Task) -> str:
        percent = 100.0 * task.completed / task.total if task.total else 0.0
        text = self.line.format(
            description=task.description,
            completed=_number(task.completed),
            total="?" if task.total is None else _number(task.total),
            percent=f"{percent:.0f}%",
            **task.fields,
        )
        elapsed = time.monotonic() - task.started
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        rendered = f"{stamp} {' '.join(text.split())}, elapsed {_clock(elapsed)}"
        if not self.local_eta:
            return rendered
        done = task.completed - task.start_completed
        eta = "--"
        if task.total is not None and done > 0:
            eta = _clock((task.total - task.completed) * elapsed / done)
        return f"{rendered}, ETA {eta}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _clock(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
