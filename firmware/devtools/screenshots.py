"""OLED screenshots of the BLF, text message, idle and history screens for docs/phone.md.

``python -m offhook.firmware.devtools.screenshots docs/screens`` drives a Phone (the pure core,
no SIP) through each scene and writes what the 128x64 panel shows, 4x enlarged, as PNG.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from offhook.contract.config import parse_config
from offhook.firmware.events import (
    CallIncoming,
    CallState,
    CallStateChanged,
    Event,
    ExtensionState,
    HookChanged,
    KeyPressed,
    MessageReceived,
    MessageStatus,
    RegistrationChanged,
    TimerFired,
    WatchedDialog,
)
from offhook.firmware.features.compose import T_TAP
from offhook.firmware.features.events import NetworkStatus
from offhook.firmware.features.t9 import KEY_LETTERS
from offhook.firmware.phone import Phone
from offhook.firmware.screens import render_image

T0 = 1_700_000_000.0  # 22:13 UTC
SCALE = 4
RINGING = WatchedDialog(
    call_id="c1", state="early", direction="recipient", local_tag="b", remote_tag="a",
    remote_uri="sip:1005@pbx", remote_name="Carol", remote_target="sip:1005@10.0.0.5",
)  # fmt: skip


def _phone() -> tuple[Phone, Callable[..., None]]:
    config = parse_config(
        {
            "accounts": [{"user": "1001", "domain": "pbx", "display_name": "Alice"}],
            "blf": [{"extension": "1002", "label": "Bob"}],
            "admin": {"pin": "2468"},
        }
    )
    ids = (f"id{i}" for i in itertools.count())
    phone = Phone(config, id_factory=lambda: next(ids))
    clock = [T0]
    phone.start(clock[0])

    def feed(*events: Event, advance: float = 1.0) -> None:
        for event in events:
            clock[0] += advance
            phone.handle(event, clock[0])

    feed(RegistrationChanged(0, True, 200, "OK"))
    return phone, feed


def _text(feed: Callable[..., None], body: str, name: str = "Dana") -> None:
    feed(MessageReceived(0, "sip:1004@pbx", name, body))


def _keys(feed: Callable[..., None], *keys: str) -> None:
    for key in keys:
        feed(KeyPressed(key), advance=0.1)


def _multi_tap(feed: Callable[..., None], text: str) -> None:
    """Type ``text`` as a user would: each letter's key pressed until it shows, then a pause."""
    for char in text:
        key = next((k for k, letters in KEY_LETTERS.items() if char in letters), "1")
        for _ in range(KEY_LETTERS[key].index(char) + 1 if char in KEY_LETTERS[key] else 1):
            feed(KeyPressed(key), advance=0.1)
        feed(TimerFired(T_TAP), advance=1.0)


def scenes() -> dict[str, Phone]:
    out: dict[str, Phone] = {}

    phone, feed = _phone()
    feed(ExtensionState("1002", (RINGING,)))
    out["blf-ringing"] = phone

    phone, feed = _phone()
    feed(ExtensionState("1002", (RINGING,)), HookChanged(True), KeyPressed("blf1"))
    out["blf-pickup"] = phone

    phone, feed = _phone()
    feed(KeyPressed("dnd"))
    _text(feed, "Lunch at 12?")
    feed(CallIncoming(3, 0, "sip:2001@pbx", ""), CallStateChanged(3, CallState.DISCONNECTED, 487))
    out["idle-notices"] = phone

    phone, feed = _phone()
    _text(feed, "Can you call the front desk?", "Front desk")
    _text(feed, "Meeting moved to 3pm, room 2")
    feed(KeyPressed("messages"))
    out["messages-list"] = phone

    phone, feed = _phone()
    _text(feed, "Meeting moved to 3pm, room 2 on the first floor. Bring the slides please.")
    feed(KeyPressed("messages"), KeyPressed("ok"))
    out["message-open"] = phone

    phone, feed = _phone()
    _text(feed, "Meeting moved to 3pm", "Front desk")
    feed(KeyPressed("messages"), KeyPressed("softkey3"), advance=0.1)
    _multi_tap(feed, "on my way. 5 mi")
    for key in "66":  # the "n" still being chosen shows in brackets
        feed(KeyPressed(key), advance=0.1)
    out["message-compose"] = phone

    phone, feed = _phone()
    _text(feed, "Meeting moved to 3pm", "Front desk")
    feed(KeyPressed("messages"), KeyPressed("softkey3"), advance=0.1)
    _multi_tap(feed, "call me")
    feed(KeyPressed("ok"), MessageStatus(1, 480, "Temporarily Unavailable"))
    out["message-failed"] = phone

    phone, feed = _phone()
    feed(NetworkStatus("eth0", "dhcp", "10.20.0.7/24", "10.20.0.1", "", True, "b8:27", 20))
    _keys(feed, "menu", "up", "ok", *"2468", "ok", "ok", "up")
    out["settings-network-vlan"] = phone

    phone, feed = _phone()
    feed(NetworkStatus("eth0", "dhcp", "192.0.2.10/24", "192.0.2.1", "", True, "b8:27"))
    _keys(feed, "menu", "up", "ok", *"2468", "ok", "ok", "up", "ok", *"5000", "ok")
    out["settings-vlan-refused"] = phone

    phone, feed = _phone()
    feed(CallIncoming(1, 0, "sip:2001@pbx", "Bob Smith"), HookChanged(True))
    feed(CallStateChanged(1, CallState.CONFIRMED, 200, direction="incoming"))
    feed(HookChanged(False), advance=185)
    feed(CallIncoming(2, 0, "sip:2002@pbx", ""), CallStateChanged(2, CallState.DISCONNECTED, 487))
    feed(KeyPressed("history"), advance=60)
    out["history"] = phone
    return out


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, phone in scenes().items():
        image = render_image(phone.screen, 128, 64).convert("L")
        big = image.resize((128 * SCALE, 64 * SCALE), Image.Resampling.NEAREST)
        path = directory / f"{name}.png"
        big.save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    for path in write(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
