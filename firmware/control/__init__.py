"""The phone's local control API: HTTP + JSON, like a desk phone's action URI (see
docs/control-api.md). The server (server.py), what it can do to a phone (actions.py), the client
(client.py) and what both sides share (protocol.py)."""

from offhook.firmware.control.actions import PhoneActions
from offhook.firmware.control.client import ControlClient
from offhook.firmware.control.png import png_of
from offhook.firmware.control.protocol import (
    ControlError,
    RequestError,
    check_exposure,
    is_loopback,
    parse_keys,
    split_listen,
)
from offhook.firmware.control.server import ControlServer

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlServer",
    "PhoneActions",
    "RequestError",
    "check_exposure",
    "is_loopback",
    "parse_keys",
    "png_of",
    "split_listen",
]
