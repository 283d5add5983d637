"""Request body caps per route, enforced before a body is read.

``BodyLimit`` (ASGI middleware, any server) refuses a declared ``Content-Length`` above the
route's cap with 413 before the app reads a byte, and counts a chunked body as it streams in,
answering 413 once the cap is passed. ``provisioning.poll_protocol.ConfigPollProtocol`` does the
same in the HTTP parser (``offhook server``), so an oversized request never reaches the ASGI
cycle. Either way the connection is closed after the 413: the rest of the body is not read.
``BodyLimit`` also refuses a NUL character in the path or query string (422).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
MIB = 1024 * KIB

# (path prefix, cap in bytes): the longest matching prefix wins. The device routes are the ones
# an unauthenticated client reaches first; their caps sit well above what a phone sends (the
# client batches 100 records, the server accepts 1000).
BODY_LIMITS: tuple[tuple[str, int], ...] = (
    ("/api/v1/device/config", 0),  # a GET: no body at all
    ("/api/v1/device/enroll", 16 * KIB),
    ("/api/v1/device/status", 64 * KIB),
    ("/api/v1/device/", 2 * MIB),  # cdrs, quality, events batches
    ("/api/v1/admin/devices/import", 16 * MIB),  # CSV
    ("/devices/import", 3 * MIB),  # the web UI's CSV upload (2 MB file + form encoding)
    # A firmware bundle: the route itself enforces OFFHOOK_FIRMWARE_MAX_BYTES as it streams.
    ("/api/v1/admin/firmware", 1 << 50),
)
DEFAULT_BODY_LIMIT = 1 * MIB  # admin JSON, web forms


@functools.lru_cache(maxsize=512)
def body_limit(path: str | bytes) -> int:
    """The cap for a request path (str from ASGI, bytes from the HTTP parser)."""
    text = path.decode("latin-1") if isinstance(path, bytes) else path
    best, limit = -1, DEFAULT_BODY_LIMIT
    for prefix, cap in BODY_LIMITS:
        if text.startswith(prefix) and len(prefix) > best:
            best, limit = len(prefix), cap
    return limit


def too_large_body(limit: int) -> bytes:
    detail = f"request body too large: at most {limit} bytes on this route"
    return json.dumps({"detail": detail, "code": "too_large"}).encode()


def parse_length(value: bytes) -> int:
    """A Content-Length value; a malformed one counts as too large (the parser refuses most)."""
    text = value.strip()
    return int(text) if text.isdigit() and len(text) < 19 else 1 << 62


def declared_length(headers: list[tuple[bytes, bytes]] | Any) -> int | None:
    """Content-Length as an int; None when absent."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return parse_length(value)
    return None


class _TooLarge(Exception):
    """The streamed body passed the cap (raised from ``receive``)."""


class BodyLimit:
    """Pure ASGI middleware: 413 + ``Connection: close`` for a body above ``body_limit(path)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"].lower():
            await _answer(send, 422, _NUL_IN_URL)  # no database can store it: bad input
            return
        limit = body_limit(scope["path"])
        declared = declared_length(scope["headers"])
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a cut-off body (a 400): the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _refuse(send, limit)


_NUL_IN_URL = b'{"detail": "the URL must not contain a NUL character (%00)", "code": "invalid"}'


async def _refuse(send: Send, limit: int) -> None:
    await _answer(send, 413, too_large_body(limit), close=True)


async def _answer(send: Send, status: int, body: bytes, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
