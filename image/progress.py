"""Progress display (rich): the byte-count bar shared by flashing and downloads, and the bar over
a build's steps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def byte_progress(
    console: Console | None, description: str, total: int | None, transient: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """Yields advance(n_bytes). No console: a no-op. ``transient`` (default: not a terminal)
    removes the bar when done."""
    if console is None:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    if transient is None:
        transient = not console.is_terminal
    with Progress(*columns, console=console, transient=transient) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


class StepBar:
    """One bar over a job's steps (``total`` of them, when known) with the job's elapsed time.

    ``live(name)`` shows the bar while a step runs that draws nothing itself; a step with its own
    progress display runs without it (rich allows one live display at a time), and ``done()``
    prints one line per finished step either way: step count, elapsed time, the step's time.
    """

    def __init__(self, console: Console, total: int | None = None) -> None:
        self.console = console
        self.total = total
        self.done_steps = 0
        self.started = time.monotonic()

    def _position(self) -> str:
        of = f"/{self.total}" if self.total else ""
        return f"{self.done_steps + 1}{of}"

    @contextmanager
    def live(self, name: str) -> Iterator[None]:
        columns = (
            SpinnerColumn(),
            TextColumn(f"[bold]step {self._position()}[/] {name}"),
            BarColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            progress.add_task(name, total=self.total or None, completed=self.done_steps)
            # The task's clock starts with the job, so the column shows the whole elapsed time.
            progress.tasks[0].start_time = progress.get_time() - (time.monotonic() - self.started)
            yield

    def done(self, name: str, seconds: float) -> None:
        self.done_steps += 1
        elapsed = time.monotonic() - self.started
        of = f"/{self.total}" if self.total else ""
        self.console.print(
            f"[green]done[/] {name} ({seconds} s) [dim][{self.done_steps}{of}, "
            f"{int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed][/]"
        )
