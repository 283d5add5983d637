"""One background daemon thread with a stop flag, shared by the board's polling loops."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Worker:
    """Runs ``loop(stop)`` in a daemon thread until ``stop()``; ``loop`` returns once set.

    ``start()`` while running is a no-op, and ``stop()`` may be called any number of times, so the
    owners' own start/stop stay idempotent.
    """

    def __init__(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        self.name = name
        self._loop = loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
