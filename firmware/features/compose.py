"""Writing a text message on the keypad (pure): "Reply" in the messages list, "Text" on a
contact or a history entry.

Letters are typed by multi-tap as in the directory search (firmware/features/t9.py: ``2`` = a b
c 2, ``0`` = space 0, ``1`` = . 1); a letter is kept by another key or after TAP_S. The screen
counts the characters left (MAX_SEND_CHARS). ``cancel`` deletes, then leaves; ``ok`` sends:
SendMessage goes to the engine, the message joins the list marked as sent, and MessageStatus
says whether the far end took it (2xx) or why not; after a failure ``ok`` edits it again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from offhook.contract.logs import kv
from offhook.firmware.events import Command, MessageStatus, SendMessage
from offhook.firmware.features.messages import (
    MAX_SEND_CHARS,
    TextDraft,
    TextMessage,
    sent,
    set_status,
)
from offhook.firmware.features.t9 import commit, letters_of, tap
from offhook.firmware.phone_state import Mode

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

log = logging.getLogger(__name__)

T_TAP = "text_tap"  # the letter being chosen is kept
TAP_S = 1.0
REPLY = "reply"  # what the messages list's "Reply" softkey does
TEXT = "text"  # what a contact's or history entry's "Text" softkey does


def result_of(status_code: int, reason: str) -> str:
    if 200 <= status_code < 300:
        return "sent"
    return " ".join(part for part in ("failed", str(status_code or ""), reason) if part)


def open_draft(phone: Phone, account: int, to: str, name: str, back: Mode) -> None:
    state = phone.state
    state.draft = TextDraft(account=account, to=to, name=name, back=back.value)
    state.mode = Mode.COMPOSE


def _leave(phone: Phone, out: list[Command]) -> None:
    state = phone.state
    phone._cancel_timer(T_TAP, out)
    back = Mode(state.draft.back) if state.draft is not None else Mode.IDLE
    state.draft = None
    state.mode = back if (back is not Mode.DIALING or state.hook_off) else Mode.IDLE


def tap_timeout(phone: Phone, _: str, out: list[Command]) -> None:
    draft = phone.state.draft
    if draft is not None and draft.tap_key:
        text = commit(draft.text, draft.tap_key, draft.tap_index)
        phone.state.draft = replace(draft, text=text, tap_key="", tap_index=0)


def key(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    draft = state.draft
    if draft is None:
        _leave(phone, out)
        return
    if draft.request:  # sending, or its answer shows
        if key == "ok" and draft.result.startswith("failed"):
            state.draft = replace(draft, request=0, result="")  # edit and send again
        elif key in ("cancel", "left") or (key == "ok" and draft.result):
            _leave(phone, out)  # the result still reaches the list
        return
    if letters_of(key):
        if key != draft.tap_key and len(draft.typed) >= MAX_SEND_CHARS:
            return  # full: the letter being chosen can still change, no new one starts
        text, tap_key, tap_index = tap(draft.text, draft.tap_key, draft.tap_index, key)
        state.draft = replace(draft, text=text, tap_key=tap_key, tap_index=tap_index)
        phone._start_timer(T_TAP, TAP_S, out)
    elif key == "ok":
        _send(phone, draft, out)
    elif key in ("cancel", "left"):
        phone._cancel_timer(T_TAP, out)
        if draft.tap_key:
            state.draft = replace(draft, tap_key="", tap_index=0)
        elif draft.text:
            state.draft = replace(draft, text=draft.text[:-1])
        else:
            _leave(phone, out)


def _send(phone: Phone, draft: TextDraft, out: list[Command]) -> None:
    state = phone.state
    phone._cancel_timer(T_TAP, out)
    body = commit(draft.text, draft.tap_key, draft.tap_index).strip()
    if not body:
        return
    state.text_requests += 1
    request = state.text_requests
    out.append(SendMessage(request, draft.account, draft.to, body))
    state.draft = replace(draft, text=body, tap_key="", tap_index=0, request=request, result="")
    message = TextMessage(
        received=state.now,
        account=draft.account,
        from_uri=draft.to,
        from_name=draft.name,
        body=body,
        read=True,
        outgoing=True,
        request=request,
        status="sending",
    )
    sent(state.messages, message)
    if state.mode is Mode.COMPOSE and Mode(draft.back) is Mode.MESSAGES:
        # the list shows the newest first: keep its cursor on the message it was on
        cursor = state.message_cursor
        state.message_cursor = replace(cursor, index=cursor.index + 1)


def on_status(phone: Phone, ev: MessageStatus, out: list[Command]) -> None:
    state = phone.state
    result = result_of(ev.status_code, ev.reason)
    log.info("text message result", extra=kv(request=ev.request, code=ev.status_code))
    set_status(state.messages, ev.request, result)
    draft = state.draft
    if draft is not None and draft.request == ev.request:
        state.draft = replace(draft, result=result)
