"""A worker thread that only ever carries out the newest job (the OLED's frames): a slow panel
skips stale screens instead of falling behind the Phone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from offhook.contract.logs import kv

log = logging.getLogger("offhook.runtime")

T = TypeVar("T")


class LatestWorker(Generic[T]):
    """Runs ``job(item)`` on its own thread for the newest item only (e.g. OLED frames)."""

    def __init__(self, name: str, job: Callable[[T], None]) -> None:
        self._job = job
        self._item: tuple[T] | None = None  # the newest item not yet taken, if any
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: T) -> None:
        with self._cond:
            self._item = (item,)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._item is None and not self._stopped:
                    self._cond.wait()
                if self._stopped or self._item is None:
                    return
                (item,), self._item = self._item, None
            try:
                self._job(item)
            except Exception:
                log.exception("worker job failed", extra=kv(worker=self._thread.name))
