"""What the control API's server and clients share: the path prefix, the key syntax, the listen
address and the rule on exposing it (docs/control-api.md)."""

from __future__ import annotations

import ipaddress
from http import HTTPStatus
from typing import Any

from offhook.contract.errors import OffhookError
from offhook.contract.keys import DIGIT_KEYS, FUNCTION_KEYS

API = "/api/v1"
MAX_KEYS = 64  # keys per request: a dial string plus some function keys


class ControlError(OffhookError):
    """The control API cannot start with this configuration."""


class RequestError(OffhookError):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_keys(value: Any) -> list[str]:
    """``"123#"`` -> digits; ``["hold", "12", "#"]`` -> function key names and digit strings."""
    if isinstance(value, str):
        items = [value]
        allow_names = False
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
        allow_names = True
    else:
        raise RequestError(HTTPStatus.BAD_REQUEST, '"keys" must be a string or a list of strings')
    keys: list[str] = []
    for item in items:
        if allow_names and item in FUNCTION_KEYS:
            keys.append(item)
            continue
        if item == "":
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty key name")
        bad = [c for c in item if c not in DIGIT_KEYS]
        if bad:
            what = f"unknown key {item!r}" if allow_names else f"unknown key {bad[0]!r} in {item!r}"
            hint = "digits 0-9 * #" + ("; function keys: " + ", ".join(sorted(FUNCTION_KEYS)))
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{what}; valid keys are {hint}")
        keys.extend(item)
    if not keys:
        raise RequestError(HTTPStatus.BAD_REQUEST, '"keys" is empty')
    if len(keys) > MAX_KEYS:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"at most {MAX_KEYS} keys per request")
    return keys


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(listen: str, token: str) -> None:
    """Refuse an unauthenticated control API on anything but loopback."""
    host, _ = split_listen(listen)
    if not token and not is_loopback(host):
        raise ControlError(
            f"control.listen {listen!r} is not a loopback address and control.token is empty:"
            " set a token to expose the control API on the network"
        )
