"""BLF keys (busy lamp field): what a watched extension's dialogs mean for its lamp and its key.

Config ``blf[n]`` is key ``blf<n+1>`` and LED ``blf<n+1>``. The dialog-event subscriptions
(firmware/sip/dialog_watch.py) report each extension's dialogs as ExtensionState; the lamp is
off while idle (or unknown), fast blinking while a call rings there, on while it is in a call.
Pressing the key calls the extension, or picks up the call ringing there (an INVITE with Replaces
to the caller, RFC 3891, built from the dialog's Call-ID and tags).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from offhook.contract.config import BlfKey, PhoneConfig
from offhook.firmware.calls import number_from_uri
from offhook.firmware.events import WatchedDialog, WatchExtensions

RINGING_STATES = frozenset({"trying", "proceeding", "early"})


class Lamp(enum.StrEnum):
    UNKNOWN = "unknown"  # not (yet) subscribed, or the subscription was refused
    IDLE = "idle"
    RINGING = "ringing"
    BUSY = "busy"


LED_OF_LAMP = {Lamp.UNKNOWN: "off", Lamp.IDLE: "off", Lamp.RINGING: "fast_blink", Lamp.BUSY: "on"}


@dataclass(frozen=True, slots=True)
class Watched:
    """What the subscription last said about one extension."""

    subscribed: bool = False
    dialogs: tuple[WatchedDialog, ...] = ()

    @property
    def lamp(self) -> Lamp:
        if not self.subscribed:
            return Lamp.UNKNOWN
        live = [d for d in self.dialogs if d.state != "terminated"]
        # A call ringing there wins over one in progress: that is when the key can pick up.
        if any(d.state in RINGING_STATES and d.direction != "initiator" for d in live):
            return Lamp.RINGING
        return Lamp.BUSY if live else Lamp.IDLE


NOT_WATCHED = Watched()


def key_index(key: str) -> int | None:
    """``blf3`` -> 2 (the config.blf index); None for other keys."""
    if key.startswith("blf") and key[3:].isdigit():
        return int(key[3:]) - 1
    return None


def led_name(index: int) -> str:
    return f"blf{index + 1}"


def watch_command(config: PhoneConfig) -> WatchExtensions:
    return WatchExtensions(
        tuple(dict.fromkeys((key.account, key.extension) for key in config.blf)), config
    )


def pickup_dialog(watched: Watched) -> WatchedDialog | None:
    """The ringing call the key would pick up: an incoming early dialog whose Call-ID, tags and
    caller are known (pua_dialoginfo sends the tags only while the dialog is early)."""
    for dialog in watched.dialogs:
        if (
            dialog.state in RINGING_STATES
            and dialog.direction == "recipient"
            and dialog.call_id
            and dialog.local_tag
            and dialog.remote_tag
            and dialog.remote_uri
        ):
            return dialog
    return None


def pickup_target(dialog: WatchedDialog) -> str:
    """Where the pickup INVITE goes: the caller's contact (its dialog's remote target), else its
    identity's user part dialled on our own line (pjsip, for one, leaves the port out of the
    identities it sends, so the identity's host alone may not reach anyone)."""
    if dialog.remote_target.startswith(("sip:", "sips:")):
        return dialog.remote_target
    return number_from_uri(dialog.remote_uri)


def replaces_value(dialog: WatchedDialog) -> str:
    """The Replaces header for the INVITE to the caller. Its tags name the dialog as the caller
    sees it (RFC 3891 3: to-tag is compared with the recipient's local tag): the caller's own tag
    is the watched phone's remote tag. ``early-only``: do not take a call already answered."""
    return f"{dialog.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag};early-only"


def label(key: BlfKey) -> str:
    return key.label or key.extension


def ringing_labels(config: PhoneConfig, watched: dict[str, Watched]) -> list[str]:
    """The BLF keys whose extension rings now (for the idle screen's "Bob ringing")."""
    return [
        label(key)
        for key in config.blf
        if watched.get(key.extension, NOT_WATCHED).lamp is Lamp.RINGING
    ]


def led_states(config: PhoneConfig, watched: dict[str, Watched]) -> dict[str, str]:
    return {
        led_name(i): LED_OF_LAMP[watched.get(key.extension, NOT_WATCHED).lamp]
        for i, key in enumerate(config.blf)
    }


def blf_summary(config: PhoneConfig, watched: dict[str, Watched]) -> list[dict[str, str]]:
    """The keys for the control API's state: key, extension, label and lamp."""
    return [
        {
            "key": led_name(i),
            "extension": key.extension,
            "label": label(key),
            "lamp": watched.get(key.extension, NOT_WATCHED).lamp.value,
        }
        for i, key in enumerate(config.blf)
    ]
