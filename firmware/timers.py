"""Named one-shot timers for the Phone (StartTimer/CancelTimer), fired on a thread of their own."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class TimerWheel:
    """Named one-shot timers on one thread; starting a name again replaces the pending one."""

    def __init__(self, fire: Callable[[str], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, str]] = []
        self._current: dict[str, int] = {}  # name -> sequence number of its live entry
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(2)

    def set(self, name: str, seconds: float) -> None:
        with self._cond:
            seq = next(self._seq)
            self._current[name] = seq
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, seconds), seq, name))
            self._cond.notify()

    def cancel(self, name: str) -> None:
        with self._cond:
            self._current.pop(name, None)

    def pending(self) -> list[str]:
        with self._cond:
            return sorted(self._current)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due: list[str] = []
                while self._heap and self._heap[0][0] <= now:
                    _, seq, name = heapq.heappop(self._heap)
                    if self._current.get(name) == seq:
                        del self._current[name]
                        due.append(name)
                if not due:
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                    continue
            for name in due:
                self._fire(name)
