"""The byte-count progress bar shared by flashing and downloads (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
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
        TimeRemainingColumn(),
    )
    if transient is None:
        transient = not console.is_terminal
    with Progress(*columns, console=console, transient=transient) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
