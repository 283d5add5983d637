"""The server's two alert tasks, started and stopped by the app's lifespan.

- **Sweep**: every ``OFFHOOK_ALERT_SWEEP_INTERVAL_S`` (first at start, which catches phones
  that went silent while the server was down) ``alert_engine.sweep`` in a worker thread.
- **Sender**: delivers queued notifications (``alert_notify.deliver_pending``) when woken by
  this process's ingestion or sweep, and every ``SENDER_POLL_S`` for rows other server
  processes queued.

Both run their database and network work in threads (``asyncio.to_thread``), so request
handling never waits for them. ``stop()`` sets the stop flag (the sender's retry waits end at
once), lets the round in progress finish (bounded by the channels' timeouts) and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from offhook.contract.logs import kv
from offhook.provisioning.alert_engine import Outcome, sweep
from offhook.provisioning.alert_notify import deliver_pending
from offhook.provisioning.db import Database
from offhook.provisioning.settings import ServerSettings

log = logging.getLogger(__name__)

SENDER_POLL_S = 15.0
STOP_WAIT_S = 30.0  # the longest stop() waits for a round in progress before cancelling it


class AlertWakeup:
    """Wakes this process's sender from any thread (the device API's handlers run in the
    thread pool). Before the sender runs (tests, the CLI) it does nothing."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._loop, self._event = loop, event

    def unbind(self) -> None:
        self._loop, self._event = None, None

    def set(self) -> None:
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def after(self, outcome: Outcome) -> None:
        """Wake the sender when an evaluation opened or resolved alerts (after the commit)."""
        if outcome.changed:
            self.set()


class AlertTasks:
    def __init__(self, database: Database, settings: ServerSettings, wakeup: AlertWakeup) -> None:
        self.database = database
        self.settings = settings
        self.wakeup = wakeup
        self._stop = threading.Event()  # read by the sender's thread between attempts
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.wakeup.bind(asyncio.get_running_loop(), self._wake)
        alerts = self.settings.alerts
        if alerts.sweep_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name="alert-sweep"))
        if alerts.channels:
            self._tasks.append(asyncio.create_task(self._send_loop(), name="alert-sender"))
        log.info(
            "alert tasks started",
            extra=kv(sweep_interval_s=alerts.sweep_interval_s, channels=",".join(alerts.channels)),
        )

    async def stop(self) -> None:
        self._stop.set()
        self.wakeup.unbind()
        if self._stopping is not None:
            self._stopping.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        log.info("alert tasks stopped")

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` or until stop(); True when stopping."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    def _sweep_once(self) -> Outcome:
        with self.database.session() as db:
            return sweep(db, self.settings)

    async def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            try:
                outcome = await asyncio.to_thread(self._sweep_once)
                if outcome.changed:
                    log.info(
                        "alert sweep",
                        extra=kv(opened=len(outcome.opened), resolved=len(outcome.resolved)),
                    )
                    self.wakeup.set()
            except Exception:  # the next round retries; a failed sweep must not end the task
                log.exception("alert sweep failed")
            if await self._pause(self.settings.alerts.sweep_interval_s):
                return

    async def _send_loop(self) -> None:
        assert self._wake is not None and self._stopping is not None
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await asyncio.to_thread(
                    deliver_pending,
                    self.database,
                    self.settings.alerts,
                    self.settings.alerts.public_url,
                    self._stop,
                )
            except Exception:  # e.g. the database briefly unavailable: the next round retries
                log.exception("alert sender failed")
            waits = {
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            }
            _done, pending = await asyncio.wait(
                waits, timeout=SENDER_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
