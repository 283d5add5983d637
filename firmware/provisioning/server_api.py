"""The HTTP calls of docs/provisioning-protocol.md, with each failure mapped to an exception.

One ``ServerApi`` per poll cycle: it keeps one persistent connection (TLS verified against the
pinned CA) that the enrollment/config/report calls of that cycle share. Standard library only
(``http.client``): an HTTP client library would cost the phone process several MB of RSS.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import select
import ssl
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from offhook.contract.errors import OffhookError
from offhook.firmware.provisioning.pinning import PinnedCA

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/device"
TIMEOUT_S = 15.0
# a reused keep-alive connection the server closed in the meantime fails like this before any
# answer; the request is sent once more on a fresh connection (every call of the protocol is safe
# to repeat: enrollment by its nonce, reports by their record ids)
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
)


class ServerError(OffhookError):
    """Base of every failure talking to the server."""


class ServerUnavailable(ServerError):
    """Unreachable, TLS refused, 5xx or 503: keep the cached config and back off."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Refused(ServerError):
    """4xx with a machine code (bad_token, rejected, already_enrolled, revoked, not_approved)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ProtocolError(ServerError):
    """A response that breaks the contract (bad JSON, missing fields)."""


@dataclass(frozen=True)
class EnrollReply:
    status: str  # "approved" | "pending"
    device_id: str = ""
    secret: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class ConfigReply:
    not_modified: bool
    etag: str = ""
    revision: int = 0
    body: Any = None


@dataclass(frozen=True)
class Response:
    """A fully read HTTP answer (headers look-ups are case-insensitive)."""

    status_code: int
    headers: Message
    content: bytes

    @property
    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # unknown charset name
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ``ValueError`` if it is not (UTF-8/16/32) JSON."""
        return json.loads(self.content)


def retry_after(response: Response) -> float | None:
    value = (response.headers.get("retry-after") or "").strip()
    return float(value) if value.isdigit() else None


def basic_auth(device_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()


class ServerApi:
    def __init__(
        self, url: str, pinned: PinnedCA | None, user_agent: str, timeout_s: float = TIMEOUT_S
    ) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError as exc:
            raise ServerUnavailable(f"bad port in provisioning URL {url!r}") from exc
        if not host:
            raise ServerUnavailable(f"no host in provisioning URL {url!r}")
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            if pinned is None:
                raise ServerUnavailable("https server needs provisioning.ca_fingerprint to pin")
            port = port or 443
            try:
                # verifies the chain against the pinned CA only, the host name and validity dates
                self._context = pinned.ssl_context(host, port)
            except ConnectionError as exc:  # includes PinningError
                raise ServerUnavailable(str(exc)) from exc
        elif parts.scheme == "http":
            port = port or 80  # plain http is for tests only (see the protocol doc)
        else:
            raise ServerUnavailable(f"unsupported provisioning URL scheme in {url!r}")
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._base_path = parts.path.rstrip("/") + API_PREFIX
        self._user_agent = user_agent
        self._connection: http.client.HTTPConnection | None = None
        self._requests_on_connection = 0
        self.auth: str | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> ServerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> http.client.HTTPConnection:
        """The persistent connection, opened anew if there is none or the server closed it."""
        if self._connection is not None and _closed_by_peer(self._connection):
            self.close()
        if self._connection is None:
            if self._context is not None:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout_s, context=self._context
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout_s
                )
            self._requests_on_connection = 0
        return self._connection

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Response:
        connection = self._open()
        reused = self._requests_on_connection > 0
        self._requests_on_connection += 1
        try:
            connection.request(method, self._base_path + path, body=body, headers=headers)
            answer = connection.getresponse()
            content = answer.read()
        except _STALE_CONNECTION_ERRORS:
            self.close()
            if not reused:
                raise
            log.debug("kept-alive connection was closed by the server; reconnecting")
            return self._exchange(method, path, body, headers)
        except BaseException:
            self.close()  # the connection's state is unknown: the next request opens a new one
            raise
        if answer.will_close:
            self.close()
        return Response(answer.status, answer.msg, content)

    def _request(
        self,
        method: str,
        path: str,
        json_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        headers = {"User-Agent": self._user_agent, "Accept": "application/json", **(headers or {})}
        if self.auth:
            headers["Authorization"] = self.auth
        body = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self._exchange(method, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            # refused/reset/timed out, TLS verification failures (ssl.SSLError is an OSError),
            # malformed HTTP
            raise ServerUnavailable(
                f"{method} {path}: server unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnavailable(
                f"{method} {path}: HTTP {response.status_code}", retry_after(response)
            )
        if response.status_code >= 400:
            code, detail = _error_body(response)
            raise Refused(response.status_code, code, detail)
        return response

    def enroll(self, payload: dict[str, str]) -> EnrollReply:
        response = self._request("POST", "/enroll", json_body=payload)
        body = _json(response)
        if response.status_code == 202 or body.get("status") == "pending":
            return EnrollReply("pending", retry_after_s=retry_after(response))
        if body.get("status") != "approved" or not body.get("device_id") or not body.get("secret"):
            raise ProtocolError(f"enroll answer lacks status/device_id/secret: {sorted(body)}")
        return EnrollReply("approved", str(body["device_id"]), str(body["secret"]))

    def get_config(self, etag: str | None) -> ConfigReply:
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request("GET", "/config", headers=headers)
        if response.status_code == 304:
            return ConfigReply(not_modified=True, etag=etag or "")
        try:
            body = response.json()
        except ValueError:
            body = response.text  # kept: the phone reports it as a rejected config
        etag = response.headers.get("etag") or '"' + hashlib.sha256(response.content).hexdigest()
        revision_header = response.headers.get("x-config-revision") or "0"
        revision = int(revision_header) if revision_header.isdigit() else 0
        return ConfigReply(False, etag, revision, body)

    def post(self, kind: str, payload: dict[str, Any]) -> list[str]:
        """POST a report; return the ids the server now holds."""
        body = _json(self._request("POST", f"/{kind}", json_body=payload))
        accepted = body.get("accepted")
        if not isinstance(accepted, list) or not all(isinstance(i, str) for i in accepted):
            raise ProtocolError(f"{kind} answer has no list of accepted ids")
        return accepted


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """True if an idle keep-alive socket is readable: the server closed it (or sent junk)."""
    sock = connection.sock
    if sock is None:
        return False  # not connected yet, or http.client closed it: request() reconnects
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # ValueError: socket already closed (fd -1)
        return True
    return bool(readable)


def _json(response: Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProtocolError(f"HTTP {response.status_code} body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"HTTP {response.status_code} body is not a JSON object")
    return body


def _error_body(response: Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body.get("code", "")), str(body.get("detail", ""))
    except (ValueError, AttributeError):
        return "", response.text[:200]
