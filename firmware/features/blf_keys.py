"""What the Phone does with BLF keys and the subscriptions' reports (see firmware/features/blf.py).

Handlers in the style of the Phone's own: they take the Phone, change its state, append commands.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from offhook.contract.config import PhoneConfig
from offhook.contract.logs import kv
from offhook.firmware.events import Command, ExtensionState
from offhook.firmware.features.blf import (
    Watched,
    pickup_dialog,
    pickup_target,
    replaces_value,
    watch_command,
)
from offhook.firmware.phone_state import Mode

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

log = logging.getLogger(__name__)

# The modes in which a BLF key places a call (elsewhere it is ignored: menus, lists, transfer).
CALLING_MODES = frozenset({Mode.IDLE, Mode.DIALING, Mode.ENDED, Mode.HOWLER, Mode.CALLS})


def on_state(phone: Phone, ev: ExtensionState, out: list[Command]) -> None:
    watched = {key.extension for key in phone.state.config.blf}
    if ev.extension in watched:
        phone.state.watched[ev.extension] = Watched(ev.subscribed, ev.dialogs)


def press(phone: Phone, index: int, out: list[Command]) -> None:
    """Call the watched extension, or pick up the call ringing there."""
    state = phone.state
    if index >= len(state.config.blf) or state.mode not in CALLING_MODES:
        return
    if state.pending is not None or state.alerting is not None:
        return  # a call being placed or one ringing here: answer or end that first
    key = state.config.blf[index]
    if key.account < len(state.config.accounts) and state.config.accounts[key.account].enabled:
        state.line = key.account
    dialog = pickup_dialog(state.watched.get(key.extension, Watched()))
    if dialog is None:
        log.info("blf call", extra=kv(extension=key.extension))
        phone._place_call(key.extension, out)
        return
    log.info("blf pickup", extra=kv(extension=key.extension, caller=dialog.remote_uri))
    name = dialog.remote_name or f"Pickup {key.label or key.extension}"
    phone._place_call(pickup_target(dialog), out, replaces=replaces_value(dialog), name=name)


def config_changed(phone: Phone, old: PhoneConfig, out: list[Command]) -> None:
    """After a ConfigApplied: forget extensions no longer watched, and give the watcher the new
    set when the keys or the accounts they subscribe with changed."""
    state = phone.state
    new = state.config
    keep = {key.extension for key in new.blf}
    for extension in list(state.watched):
        if extension not in keep:
            del state.watched[extension]
    if (new.blf or old.blf) and (new.blf, new.accounts) != (old.blf, old.accounts):
        out.append(watch_command(new))
