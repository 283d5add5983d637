"""What the Phone does with text messages: keeping them, the list's keys (firmware/features/
messages.py holds the records and their labels)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from offhook.contract.logs import kv
from offhook.firmware.events import Command, MessageReceived
from offhook.firmware.features import compose
from offhook.firmware.features.compose import REPLY
from offhook.firmware.features.messages import MessageCursor, mark_read, received, text_target
from offhook.firmware.phone_state import Mode

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

log = logging.getLogger(__name__)

CALL_SENDER = "call_sender"  # what the list's "Call" softkey does


def on_message(phone: Phone, ev: MessageReceived, out: list[Command]) -> None:
    message = received(phone.state.messages, ev, phone.state.now)
    log.info("text message received", extra=kv(account=ev.account, sender=message.from_uri,
                                                chars=len(message.body)))  # fmt: skip
    if phone.state.mode is Mode.MESSAGES:
        # the list shows the newest first: keep the cursor on the message it was on
        cursor = phone.state.message_cursor
        phone.state.message_cursor = replace(cursor, index=cursor.index + 1)


def open_list(phone: Phone) -> None:
    state = phone.state
    state.messages_back = state.mode
    state.message_cursor = MessageCursor()
    state.mode = Mode.MESSAGES


def _leave(phone: Phone) -> None:
    state = phone.state
    back = state.messages_back
    state.mode = back if (back is not Mode.DIALING or state.hook_off) else Mode.IDLE


def key(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    cursor, messages = state.message_cursor, state.messages
    if not messages:
        if key in ("cancel", "left", "messages", "ok"):
            _leave(phone)
        return
    index = min(cursor.index, len(messages) - 1)
    if key == CALL_SENDER:
        number = messages[index].number
        if number:
            _leave(phone)
            phone._place_call(number, out)
        return
    if key == REPLY:
        message = messages[index]
        mark_read(messages, index)
        accounts = state.config.accounts
        domain = accounts[message.account].domain if message.account < len(accounts) else ""
        to = text_target(message.from_uri, domain)
        compose.open_draft(phone, message.account, to, message.from_name, Mode.MESSAGES)
        return
    if cursor.opened:
        if key in ("cancel", "left", "ok"):
            state.message_cursor = replace(cursor, opened=False)
        elif key in ("up", "down"):
            step = -1 if key == "up" else 1
            new = (index + step) % len(messages)
            mark_read(messages, new)
            state.message_cursor = MessageCursor(new, True)
        elif key == "messages":
            _leave(phone)
        return
    if key in ("up", "down"):
        step = -1 if key == "up" else 1
        state.message_cursor = MessageCursor((index + step) % len(messages), False)
    elif key in ("ok", "right"):
        mark_read(messages, index)
        state.message_cursor = MessageCursor(index, True)
    elif key in ("cancel", "left", "messages"):
        _leave(phone)
