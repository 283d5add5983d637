"""The HTTP calls of docs/provisioning-protocol.md, with each failure mapped to an exception.

One ``ServerApi`` per poll cycle: it opens one connection (TLS verified against the pinned CA)
that the enrollment/config/report calls of that cycle share.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from firmware.provisioning.pinning import PinnedCA

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/device"
TIMEOUT_S = 15.0


class ServerError(Exception):
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


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def basic_auth(device_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()


class ServerApi:
    def __init__(
        self, url: str, pinned: PinnedCA | None, user_agent: str, timeout_s: float = TIMEOUT_S
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https":
            if pinned is None:
                raise ServerUnavailable("https server needs provisioning.ca_fingerprint to pin")
            port = parts.port or 443
            try:
                verify: Any = pinned.ssl_context(parts.hostname or "", port)
            except ConnectionError as exc:  # includes PinningError
                raise ServerUnavailable(str(exc)) from exc
        elif parts.scheme == "http":
            verify = False  # plain http is for tests only (see the protocol doc)
        else:
            raise ServerUnavailable(f"unsupported provisioning URL scheme in {url!r}")
        self._http = httpx.Client(
            base_url=url.rstrip("/") + API_PREFIX,
            verify=verify,
            timeout=timeout_s,
            headers={"User-Agent": user_agent},
        )
        self.auth: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if self.auth:
            headers["Authorization"] = self.auth
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:  # connect/read errors, TLS verification failures
            raise ServerUnavailable(f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnavailable(
                f"{method} {path}: HTTP {response.status_code}", retry_after(response)
            )
        if response.status_code >= 400:
            code, detail = _error_body(response)
            raise Refused(response.status_code, code, detail)
        return response

    def enroll(self, payload: dict[str, str]) -> EnrollReply:
        response = self._request("POST", "/enroll", json=payload)
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
        revision_header = response.headers.get("x-config-revision", "0")
        revision = int(revision_header) if revision_header.isdigit() else 0
        return ConfigReply(False, etag, revision, body)

    def post(self, kind: str, payload: dict[str, Any]) -> list[str]:
        """POST a report; return the ids the server now holds."""
        body = _json(self._request("POST", f"/{kind}", json=payload))
        accepted = body.get("accepted")
        if not isinstance(accepted, list) or not all(isinstance(i, str) for i in accepted):
            raise ProtocolError(f"{kind} answer has no list of accepted ids")
        return accepted


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProtocolError(f"HTTP {response.status_code} body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"HTTP {response.status_code} body is not a JSON object")
    return body


def _error_body(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body.get("code", "")), str(body.get("detail", ""))
    except (ValueError, AttributeError):
        return "", response.text[:200]
