"""uvicorn's HTTP/1.1 protocol with the fleet's config poll answered inside the parser callback.

Most of a poll's cost on uvicorn is the ASGI cycle itself: a cycle object, an event, a task and
four message dicts per request, for an answer that on SQLite needs one indexed lookup (the
revocation check, kept per request) and a render-cache hit. When both are available without
waiting, this protocol writes the reply from ``on_headers_complete`` and never starts a cycle;
anything else (another path or method, a pipelined or closing request, a cache miss that needs a
render, PostgreSQL's awaited lookup) takes uvicorn's normal path unchanged, so the fast path can
only ever answer what ConfigFastPath would have answered.

This leans on uvicorn's ``HttpToolsProtocol`` internals (``cycle``, ``pipeline``, ``headers``,
``on_response_complete``...): they are imported and listed in provisioning.uvicorn_contract,
which checks them; ``offhook server`` runs this protocol only when they fit, and uvicorn's own
otherwise. pyproject pins uvicorn to the versions the tests have run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from offhook.contract.logs import kv
from offhook.provisioning.api.config_path import CONFIG_PATH, ConfigFastPath, config_reply_inline
from offhook.provisioning.limits import body_limit, parse_length, too_large_body
from offhook.provisioning.uvicorn_contract import STATUS_LINE, HttpToolsProtocol

_CONFIG_URL = CONFIG_PATH.encode("ascii")


class _NoEvent:
    def set(self) -> None:
        """connection_lost wakes the cycle's event; an inline answer has none to wake."""


class _AnsweredInline:
    """Stands in for uvicorn's cycle after an inline answer: complete, so a body or the
    message-complete callback of the same request is ignored, as for a finished cycle."""

    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NoEvent()


_ANSWERED = _AnsweredInline()
_TIMEOUT_BODY = b'{"detail": "request not received in time", "code": "timeout"}'
DEFAULT_READ_TIMEOUT_S = 60.0


def find_fast_path(app: Any) -> ConfigFastPath | None:
    """ConfigFastPath under uvicorn's own wrappers (proxy headers, message logger)."""
    for _ in range(8):
        if isinstance(app, ConfigFastPath):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class ConfigPollProtocol(HttpToolsProtocol):
    """Pass to uvicorn as ``http=`` (``offhook server`` does). Counts its inline answers in
    ``inline_answers`` (per process), which tests and the benchmark read.

    It also guards every request, inline or not: a body above the route's cap
    (provisioning.limits) is refused with 413 from the headers (Content-Length) or as it streams
    in (chunked), and a request whose headers and body have not all arrived within the read
    timeout of its first byte gets 408; both close the connection. uvicorn itself only times
    out idle keep-alive connections."""

    inline_answers = 0
    _fast_path: ConfigFastPath | None = None
    _scope_pending = False
    _read_timeout_s = DEFAULT_READ_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None
    _body_cap = 0
    _body_seen = 0
    _reading = False  # between a request's first byte and its last
    _read_started: float | None = None  # when the request being read began (None: not reading)
    # Keep-alive after inline answers: uvicorn arms and cancels a timer per request; a poll
    # connection instead notes when it went idle and one timer per timeout period checks it.
    _idle_since: float | None = None
    _idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._fast_path = find_fast_path(self.app)
        if self._fast_path is not None:
            self._read_timeout_s = float(self._fast_path.services.settings.request_read_timeout_s)
        self._read_started = self.loop.time()  # the first request must arrive in time too
        self._arm_deadline(self._read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._cancel_deadline()
        super().connection_lost(exc)

    # --- read deadline and body caps ------------------------------------------------------------

    # Like the keep-alive timer above, one timer per read timeout period rather than one per
    # request: the poll path must not arm and cancel a timer for every request.
    def _arm_deadline(self, delay: float) -> None:
        if self._deadline is None and self._read_timeout_s > 0:
            self._deadline = self.loop.call_later(delay, self._check_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check_deadline(self) -> None:
        self._deadline = None
        started = self._read_started
        if started is None or self.transport.is_closing():
            return  # not reading: the next request's first byte arms the next check
        left = started + self._read_timeout_s - self.loop.time()
        if left > 0:
            self._arm_deadline(left)
        elif not self._reading:  # nothing of a request arrived: no one to answer
            self.transport.close()
        else:
            self.logger.info(
                "request not received in time: closing",
                extra=kv(timeout_s=round(self._read_timeout_s)),
            )
            self._refuse(408, _TIMEOUT_BODY)

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer ``status`` unless a response has begun, then close: the rest of the request
        is never read, and the app (if it has the request) sees a disconnect."""
        cycle = self.cycle
        started = cycle is not None and getattr(cycle, "response_started", True)
        if not started and not self.transport.is_closing():
            out = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                out += [name, b": ", value, b"\r\n"]
            out += [
                b"content-type: application/json\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\nconnection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(out))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self._cancel_deadline()
        self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: the parser still hands over what it had buffered
        self._body_seen += len(body)
        if self._body_seen > self._body_cap:
            self._refuse(413, too_large_body(self._body_cap))
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading = False
        self._read_started = None
        if not self.transport.is_closing():
            super().on_message_complete()

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # data arrived: not idle
        super()._unset_keepalive_if_required()

    def _inline_response_complete(self) -> None:
        """on_response_complete for an inline answer (no pipeline: _answer_inline checked)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._idle_since is None or self.transport.is_closing():
            return  # busy: whatever answers the request arms the next check
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_check)
        else:
            self.timeout_keep_alive_handler()

    def on_message_begin(self) -> None:
        # The ASGI scope (a dozen entries and a copy of the app state) is only built when the
        # request goes to the app; an inline answer needs the URL and the headers alone.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._scope_pending = True
        self._reading = True
        if self._read_started is None:
            self._read_started = self.loop.time()
        if self._deadline is None:
            self._arm_deadline(self._read_timeout_s)

    def on_headers_complete(self) -> None:
        # One pass over the headers for both the body cap and the inline answer.
        authorization = if_none_match = length = b""
        chunked = False
        for name, value in self.headers:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        url = self.url
        cap = 0 if url == _CONFIG_URL else body_limit(url.split(b"?", 1)[0])
        self._body_cap, self._body_seen = cap, 0
        if (length and parse_length(length) > cap) or (chunked and cap == 0):
            self._refuse(413, too_large_body(cap))  # a route without a body refuses chunked
            return
        if self._answer_inline(authorization, if_none_match):
            return
        if self._scope_pending:
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers
            self._scope_pending = False
        super().on_headers_complete()

    def _answer_inline(self, authorization: bytes, if_none_match: bytes) -> bool:
        parser = self.parser
        if (
            self.url != _CONFIG_URL
            or parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.pipeline
        ):
            return False
        fast_path = self._fast_path
        if fast_path is None:
            return False
        reply = config_reply_inline(
            fast_path, authorization.decode("latin-1"), if_none_match.decode("latin-1")
        )
        if reply is None:
            return False
        status, head, body = reply
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            out += [name, b": ", value, b"\r\n"]
        out += [head, b"\r\n", body]
        self.transport.write(b"".join(out))
        ConfigPollProtocol.inline_answers += 1
        self.cycle = _ANSWERED  # type: ignore[assignment]
        self._inline_response_complete()
        return True
