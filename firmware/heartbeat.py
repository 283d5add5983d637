"""The phone process's heartbeat to its supervisor (docs/operations.md).

A byte goes down the supervisor's pipe every HEARTBEAT_INTERVAL_S while every watched loop (the
runtime's, the SIP engine owner's) has turned recently; if one hangs, the beats stop and the
supervisor kills and restarts the phone process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from offhook.contract.logs import kv

log = logging.getLogger("offhook.phone")

HEARTBEAT_INTERVAL_S = 0.5
STALE_AFTER_S = 3.0  # a loop that has not turned for this long counts as hung
# The supervisor's hang limit (5 s by default) when the environment sets one; the phone then
# counts a loop as stalled after the same share of it (3 s of 5 s), so the two stay in step.
HUNG_AFTER_ENV = "OFFHOOK_HUNG_AFTER_S"
STALE_SHARE = 0.6
# Tells a restarted phone how its predecessor ended ("hung, returncode -9"), so a config whose
# apply it interrupted can be reported to the server with that cause. Set by the supervisor;
# here so that the phone process reads it without importing the supervisor.
PREVIOUS_EXIT_ENV = "OFFHOOK_PREVIOUS_EXIT"


def seconds_from_env(env: Mapping[str, str], name: str) -> float | None:
    """A limit in seconds (1-600) from ``env[name]``; None when unset or blank."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= 600.0:  # also refuses nan
        raise ValueError(f"{name}={raw!r}: need seconds from 1 to 600")
    return value


def stale_after_from_env(env: Mapping[str, str] | None = None) -> float:
    hung = seconds_from_env(os.environ if env is None else env, HUNG_AFTER_ENV)
    return STALE_AFTER_S if hung is None else hung * STALE_SHARE


class Heartbeat:
    """Writes one byte to the supervisor's pipe per interval while every check is fresh."""

    def __init__(
        self,
        fd: int,
        sources: dict[str, Callable[[], float]],
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.fd = fd
        self.sources = sources  # name -> callable returning a time.monotonic() stamp
        self.stale_after_s = stale_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._reported_stale: str | None = None
        self.supervisor_gone = threading.Event()

    def start(self) -> None:
        os.set_blocking(self.fd, False)  # a stalled supervisor must not block this thread
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def stale(self) -> str | None:
        now = time.monotonic()
        for name, stamp in self.sources.items():
            age = now - stamp()
            if age > self.stale_after_s:
                return f"{name} ({age:.1f}s)"
        return None

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            stale = self.stale()
            if stale:
                if stale.split()[0] != self._reported_stale:
                    log.error("loop stalled; withholding heartbeat", extra=kv(stalled=stale))
                    self._reported_stale = stale.split()[0]
                continue
            self._reported_stale = None
            try:
                os.write(self.fd, b".")
            except BrokenPipeError:
                log.error("supervisor gone; stopping")
                self.supervisor_gone.set()
                return
            except BlockingIOError:
                pass  # the supervisor is slow to read; the next beat will do
