"""Signed, tamper-evident cookie values (HMAC-SHA256 over a compact JSON payload).

The web UI keeps no server-side session table: any number of app processes that share the
signing key accept each other's cookies, matching the stateless server design.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs payloads for one purpose; a value signed for one purpose never verifies for another."""

    def __init__(self, keys: list[bytes], purpose: str) -> None:
        """``keys[0]`` signs; every key verifies, so a key rotation does not log everyone out."""
        if not keys or any(len(key) < 32 for key in keys):
            raise ValueError("signing keys must be at least 32 bytes each")
        self._keys = [hashlib.sha256(key + b"|" + purpose.encode()).digest() for key in keys]

    def mac(self, message: str) -> str:
        return self._mac(self._keys[0], message)

    @staticmethod
    def _mac(key: bytes, message: str) -> str:
        return _b64e(hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest())

    def verify(self, message: str, mac: str) -> bool:
        # Check every key (no early exit) so timing does not reveal which key matched.
        results = [hmac.compare_digest(mac, self._mac(key, message)) for key in self._keys]
        return any(results)

    def dumps(self, payload: dict[str, Any], now: float | None = None) -> str:
        body = dict(payload, iat=int(now if now is not None else time.time()))
        encoded = _b64e(json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{encoded}.{self.mac(encoded)}"

    def loads(self, value: str, max_age_s: int, now: float | None = None) -> dict[str, Any] | None:
        """The payload, or None when the value is forged, malformed or older than max_age_s."""
        encoded, sep, mac = value.partition(".")
        if not sep or not self.verify(encoded, mac):
            return None
        try:
            payload = json.loads(_b64d(encoded))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("iat"), int):
            return None
        age = (now if now is not None else time.time()) - payload["iat"]
        if age < 0 or age > max_age_s:
            return None
        return payload
