"""The control API's HTTP server: routes, bearer token, body limits and deadlines.

Helpdesks and the end-to-end tests lift the handset, press keys, read the state and the screen
through it. Stdlib only (the phone carries no web framework). See docs/control-api.md.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from offhook.contract.logs import kv
from offhook.firmware.control.actions import PhoneActions
from offhook.firmware.control.protocol import (
    API,
    ControlError,
    RequestError,
    check_exposure,
    parse_keys,
    split_listen,
)

log = logging.getLogger("offhook.control")

MAX_BODY = 64 * 1024
# A request (and the wait for it on a kept-alive connection) must arrive whole within this; a
# client that trickles bytes (slowloris) or goes quiet is cut off so it cannot pin a thread.
REQUEST_TIMEOUT_S = 10.0
# Connections served at once (a thread each); more are answered 503 at once and closed, so a
# flood of slow clients cannot make the phone start thread after thread.
MAX_CONNECTIONS = 32
_BUSY_BODY = b'{"error": "too many connections; try again", "status": 503}'
_BUSY_REPLY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that fail once the current request's deadline has passed.

    A per-read socket timeout alone lets a client that sends a byte now and then hold the
    connection for ever; the deadline bounds the whole request, however it is trickled."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = time.monotonic() + REQUEST_TIMEOUT_S

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"
    server_version = "offhook-control/1"

    # --- plumbing -------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.server.request_timeout_s
        self._body_pending = False
        super().handle_one_request()
        if self._body_pending:  # an unread body would be parsed as the next request
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: refuse an oversized body before inviting the client to send."""
        try:
            self._body_length()
        except RequestError as exc:
            self._error(exc.status, exc.message)
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http", extra=kv(request=format % args))

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        # reads left the socket with what remained of the request's deadline: give the answer
        # a full period of its own (a client that never reads it is cut off then)
        self.connection.settimeout(self.server.request_timeout_s)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self._body_pending:
            self.send_header("Connection", "close")
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="offhook"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message, "status": int(status)})

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), token.encode())

    def _body_length(self) -> int:
        """The announced body size, checked before any of the body is read."""
        if "Transfer-Encoding" in self.headers:
            self._body_pending = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        length_text = self.headers.get("Content-Length", "0").strip()
        if not length_text.isdigit():
            self._body_pending = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length must be a number")
        length = int(length_text)
        self._body_pending = length > 0
        if length > MAX_BODY:
            too_large = f"request body too large (max {MAX_BODY} bytes)"
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large)
        return length

    def _body(self) -> dict:
        length = self._body_length()
        try:
            raw = self.rfile.read(length) if length else b""
        except TimeoutError:
            late = "request body not received in time"
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, late) from None
        if len(raw) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body shorter than Content-Length")
        self._body_pending = False
        if not raw:
            raise RequestError(HTTPStatus.BAD_REQUEST, "a JSON object body is required")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return data

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            self._body_length()  # refuse an oversized or unframed body before anything else
            if not path.startswith(API + "/"):
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint {path!r}")
            if not self._authorized():
                self.close_connection = True
                raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
            route = ROUTES.get(path[len(API) :])
            if route is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint {path!r}")
            handler = route.get(method)
            if handler is None:
                allowed = ", ".join(sorted(route))
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here; use {allowed}"
                )
            handler(self)
        except RequestError as exc:
            if exc.status == HTTPStatus.BAD_REQUEST:
                log.info("bad control request", extra=kv(path=path, error=exc.message))
            self._error(exc.status, exc.message)
        except TimeoutError:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "the phone did not answer in time")
        except Exception:
            log.exception("control request failed", extra=kv(path=path))
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the phone's log")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- endpoints ------------------------------------------------------------------------------

    def hook(self) -> None:
        body = self._body()
        offhook = body.get("offhook")
        if not isinstance(offhook, bool) or set(body) != {"offhook"}:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'expected {"offhook": true|false}')
        self._json(HTTPStatus.OK, self.server.actions.set_hook(offhook))

    def keys(self) -> None:
        body = self._body()
        if set(body) != {"keys"}:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'expected {"keys": "123#"} or a list')
        self._json(HTTPStatus.OK, self.server.actions.press(parse_keys(body["keys"])))

    def state(self) -> None:
        self._json(HTTPStatus.OK, self.server.actions.state())

    def screen(self) -> None:
        self._json(HTTPStatus.OK, self.server.actions.screen())

    def screen_png(self) -> None:
        self._send(HTTPStatus.OK, self.server.actions.screen_png(), "image/png")

    def resync(self) -> None:
        self._json(HTTPStatus.ACCEPTED, self.server.actions.resync())

    def test_hook(self) -> None:
        name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        hook = self.server.actions.test_hooks.get(name)
        if hook is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "test hooks are disabled on this phone")
        log.warning("test hook triggered", extra=kv(hook=name))
        self._json(HTTPStatus.ACCEPTED, {"hook": name, "result": hook()})


ROUTES: dict[str, dict[str, Callable[[_Handler], None]]] = {
    "/hook": {"POST": _Handler.hook},
    "/keys": {"POST": _Handler.keys},
    "/state": {"GET": _Handler.state},
    "/screen": {"GET": _Handler.screen},
    "/screen.png": {"GET": _Handler.screen_png},
    "/resync": {"POST": _Handler.resync},
    "/test/hang-engine": {"POST": _Handler.test_hook},
}


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted phone must get its port back at once

    def __init__(
        self,
        listen: str,
        token: str,
        actions: PhoneActions,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        check_exposure(listen, token)
        host, port = split_listen(listen)
        self.token = token
        self.actions = actions
        self.request_timeout_s = request_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:  # e.g. another phone (or simulator) already listens there
            raise ControlError(f"control.listen {listen}: cannot listen: {exc.strerror}") from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("control API busy; connection refused", extra=kv(client=client_address[0]))
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY_REPLY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="control", daemon=True
        )
        self._thread.start()
        host = self.server_address[0]  # typed str | bytes (AF_UNIX); always str for AF_INET
        address = f"{host.decode() if isinstance(host, bytes) else host}:{self.port}"
        log.info("control API listening", extra=kv(address=address))

    def stop(self) -> None:
        # shutdown() waits for serve_forever() to return: without a serving thread (a phone
        # that failed to start) it would wait for ever
        if self._thread is not None:
            self.shutdown()
            self._thread.join(2)
        self.server_close()
