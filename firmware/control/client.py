"""A small client for the control API (the demo, the tests, the image's boot test and helpdesk
scripts use it)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from offhook.firmware.control.protocol import API, split_listen


class ControlClient:
    """A small client for the control API (the demo, the tests and helpdesk scripts use it)."""

    def __init__(self, listen: str, token: str = "", timeout: float = 10.0) -> None:
        self.host, self.port = split_listen(listen)
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, data: Any = None) -> tuple[int, Any]:

        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = None if data is None else json.dumps(data).encode()
        try:
            conn.request(method, API + path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if "json" in (resp.getheader("Content-Type") or ""):
            return resp.status, json.loads(raw)
        return resp.status, raw

    def _ok(self, method: str, path: str, data: Any = None) -> Any:
        status, body = self.request(method, path, data)
        if status >= 300:
            message = body.get("error") if isinstance(body, dict) else body
            raise RuntimeError(f"{method} {path}: {status} {message}")
        return body

    def state(self) -> dict:
        return self._ok("GET", "/state")

    def hook(self, offhook: bool) -> dict:
        return self._ok("POST", "/hook", {"offhook": offhook})

    def keys(self, keys: str | list[str]) -> dict:
        return self._ok("POST", "/keys", {"keys": keys})

    def screen(self) -> dict:
        return self._ok("GET", "/screen")

    def screen_png(self) -> bytes:
        return self._ok("GET", "/screen.png")

    def resync(self) -> dict:
        return self._ok("POST", "/resync", {})

    def test_hook(self, name: str) -> dict:
        return self._ok("POST", f"/test/{name}", {})
