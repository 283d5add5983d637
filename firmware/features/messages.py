"""Text messages (SIP MESSAGE, RFC 3428): the list the phone keeps and how it shows them.

The engine answers each MESSAGE 200 and reports it as MessageReceived; the Phone keeps the last
MAX_MESSAGES, newest first, counts the unread ones (the envelope icon, the idle line and the MWI
lamp) and shows them in a list (key ``messages`` or the idle screen's "Texts" softkey): ``ok``
opens one and marks it read, ``cancel`` goes back, the "Call" softkey calls its sender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from offhook.firmware.calls import number_from_uri
from offhook.firmware.events import MessageReceived

MAX_MESSAGES = 20
MAX_BODY_CHARS = 1000  # what is kept of a long message
# Characters the panel cannot draw (controls) become spaces; runs of white space one space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TextMessage:
    received: float  # epoch seconds
    account: int
    from_uri: str
    from_name: str
    body: str
    read: bool = False

    @property
    def sender(self) -> str:
        return self.from_name or number_from_uri(self.from_uri) or self.from_uri

    @property
    def number(self) -> str:
        return number_from_uri(self.from_uri)


@dataclass(frozen=True, slots=True)
class MessageCursor:
    index: int = 0
    opened: bool = False


def clean_body(body: str) -> str:
    text = _SPACES.sub(" ", _CONTROL.sub(" ", body)).strip()
    return text[:MAX_BODY_CHARS]


def received(messages: list[TextMessage], event: MessageReceived, now: float) -> TextMessage:
    """Keep a new message (newest first, bounded); returns it."""
    message = TextMessage(
        received=now,
        account=event.account,
        from_uri=event.from_uri,
        from_name=event.from_name,
        body=clean_body(event.body) or "(empty)",
    )
    messages.insert(0, message)
    del messages[MAX_MESSAGES:]
    return message


def mark_read(messages: list[TextMessage], index: int) -> None:
    if 0 <= index < len(messages) and not messages[index].read:
        messages[index] = replace(messages[index], read=True)


def unread(messages: list[TextMessage]) -> int:
    return sum(not m.read for m in messages)


def list_label(message: TextMessage) -> str:
    """``*Bob: see you at 3`` (``*`` while unread)."""
    return ("*" if not message.read else "") + f"{message.sender}: {message.body}"


def heading(message: TextMessage, tz: tzinfo) -> str:
    stamp = datetime.fromtimestamp(message.received, tz).strftime("%H:%M")
    return f"{stamp} {message.sender}"
