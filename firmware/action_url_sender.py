"""Fetches action URLs (ActionUrl commands) in a thread of its own, so the phone never waits.

One GET at a time, in the order the events happened (a CRM sees "incoming" before "answered").
Each attempt has the command's timeout; a connection error, a timeout or a 5xx answer is tried
again, at most ``retries`` more times, with a growing pause; a 4xx is final. The queue is
bounded: when a dead server lets it fill, the oldest waiting fetch is dropped (and logged).
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from offhook.contract.logs import kv
from offhook.firmware.events import ActionUrl

log = logging.getLogger(__name__)

QUEUE_LIMIT = 64
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # pause before retry n (bounded by the retries setting)
USER_AGENT = "offhook-action-url"


class ActionUrlSender:
    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        sleep: Callable[[float], bool] | None = None,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        self._context = ssl_context or ssl.create_default_context()
        self._queue: collections.deque[ActionUrl] = collections.deque()
        self._limit = limit
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        # the pause between attempts; returns True when the sender is stopping
        self._sleep = sleep or self._stopping.wait
        self._thread = threading.Thread(target=self._run, name="action-urls", daemon=True)
        self.sent = 0  # fetches answered 2xx/3xx
        self.failed = 0  # fetches given up
        self.dropped = 0  # fetches pushed out of a full queue

    def start(self) -> None:
        self._thread.start()

    def submit(self, command: ActionUrl) -> None:
        with self._cond:
            if len(self._queue) >= self._limit:
                old = self._queue.popleft()
                self.dropped += 1
                log.warning("action url dropped: queue full", extra=kv(event=old.event))
            self._queue.append(command)
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                command = self._queue.popleft()
            self._fetch(command)

    def _fetch(self, command: ActionUrl) -> None:
        for attempt in range(command.retries + 1):
            if attempt and self._sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]):
                return  # stopping
            outcome = self._attempt(command)
            if outcome is None:
                self.sent += 1
                return
            retry, why = outcome
            log.info("action url attempt failed",
                     extra=kv(event=command.event, attempt=attempt + 1, error=why))  # fmt: skip
            if not retry:
                break
        self.failed += 1
        log.warning("action url given up", extra=kv(event=command.event, url=command.url))

    def _attempt(self, command: ActionUrl) -> tuple[bool, str] | None:
        """None when the server took it, else (worth retrying, why not)."""
        request = urllib.request.Request(command.url, headers={"User-Agent": USER_AGENT})
        try:
            # the scheme (http/https) is checked by the config schema
            with urllib.request.urlopen(
                request, timeout=command.timeout_s, context=self._context
            ) as response:
                response.read(4096)
                log.info("action url sent", extra=kv(event=command.event, status=response.status))
                return None
        except urllib.error.HTTPError as exc:
            return exc.code >= 500, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return True, str(reason)

    # what the tests and the control API read
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)
