"""The phone's local control API: HTTP + JSON, like a desk phone's action URI (see
docs/control-api.md). The server (server.py), what it can do to a phone (actions.py), the client
(client.py) and what both sides share (protocol.py)."""

from firmware.control.actions import PhoneActions
from firmware.control.client import ControlClient
from firmware.control.png import png_of
from firmware.control.protocol import (
    ControlError,
    RequestError,
    check_exposure,
    is_loopback,
    parse_keys,
    split_listen,
)
from firmware.control.server import ControlServer

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
