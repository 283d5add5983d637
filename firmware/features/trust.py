"""Trust on first use of a discovered provisioning server (pure).

A phone without a pinned CA that found a server by DHCP or DNS gets ServerDiscovered with the
SHA-256 fingerprint of the CA the server presented. The Phone shows it, marked as unverified,
and waits: ``ok`` ("Trust") answers TrustServer(accepted=True), ``cancel`` ("Reject") refuses.
With an admin PIN in the config the PIN is asked first. Nothing is trusted without a key press:
the prompt stays (and comes back on the idle screen) until answered. `up`/`down` page through
the fingerprint, 16 hex digits at a time, to compare it with the one the server's admin reads
from `offhook server` (docs/provisioning.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from offhook.firmware.events import Command
from offhook.firmware.features.events import ServerDiscovered, TrustServer
from offhook.firmware.features.settings import PIN_MAX, check_pin
from offhook.firmware.features.state import TrustPrompt
from offhook.firmware.phone_state import Mode

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

FINGERPRINT_PAGE = 16  # hex digits shown at a time


def pages(fingerprint: str) -> int:
    return max(1, -(-len(fingerprint) // FINGERPRINT_PAGE))


def on_discovered(phone: Phone, ev: ServerDiscovered, out: list[Command]) -> None:
    state = phone.state
    current = state.trust
    if current is not None and current.server == ev:
        return  # discovery repeats itself while nobody answered
    state.trust = TrustPrompt(ev)
    if state.mode is Mode.IDLE:
        state.mode = Mode.TRUST


def show_if_waiting(phone: Phone) -> bool:
    """From the idle screen, an unanswered prompt comes back (``ok`` opens it)."""
    if phone.state.trust is None:
        return False
    phone.state.mode = Mode.TRUST
    return True


def _answer(phone: Phone, accepted: bool, out: list[Command]) -> None:
    state = phone.state
    prompt = state.trust
    if prompt is None:
        return
    out.append(TrustServer(prompt.server.url, prompt.server.fingerprint, accepted))
    state.trust = None
    state.mode = Mode.IDLE


def key(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    prompt = state.trust
    if prompt is None:
        state.mode = Mode.IDLE
        return
    if prompt.asking_pin:
        if key.isdigit() and len(prompt.entry) < PIN_MAX:
            state.trust = replace(prompt, entry=prompt.entry + key, message="")
        elif key in ("ok", "#") and prompt.entry:
            if state.admin_lock.locked_until > state.now:
                state.trust = replace(prompt, entry="", message="Locked, wait")
            elif check_pin(phone, prompt.entry, out):
                _answer(phone, True, out)
            else:
                state.trust = replace(prompt, entry="", message="Wrong PIN")
        elif key in ("cancel", "left"):
            if prompt.entry:
                state.trust = replace(prompt, entry=prompt.entry[:-1])
            else:
                state.trust = replace(prompt, asking_pin=False, message="")
        return
    if key in ("up", "down"):
        count = pages(prompt.server.fingerprint)
        step = -1 if key == "up" else 1
        state.trust = replace(prompt, page=(prompt.page + step) % count)
    elif key == "ok":
        if state.config.admin.pin:
            state.trust = replace(prompt, asking_pin=True, entry="")
        else:
            _answer(phone, True, out)
    elif key == "cancel":
        _answer(phone, False, out)
    elif key in ("menu", "left"):
        state.mode = Mode.IDLE  # later: the prompt stays and comes back from the idle screen
