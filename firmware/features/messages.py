"""Text messages (SIP MESSAGE, RFC 3428): the list the phone keeps and how it shows them.

The engine answers each MESSAGE 200 and reports it as MessageReceived; the Phone keeps the last
MAX_MESSAGES, newest first, counts the unread ones (the envelope icon, the idle line and the MWI
lamp) and shows them in a list (key ``messages`` or the idle screen's "Texts" softkey): ``ok``
opens one and marks it read, ``cancel`` goes back, the "Call" softkey calls its sender and
"Reply" writes back (firmware/features/compose.py). Messages sent from the phone are kept in the
same list, marked "To", with their delivery result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from offhook.firmware.calls import number_from_uri
from offhook.firmware.events import MessageReceived
from offhook.firmware.features.t9 import letters_of

MAX_MESSAGES = 20
MAX_BODY_CHARS = 1000  # what is kept of a long message
# Characters the panel cannot draw (controls) become spaces; runs of white space one space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A message received, or one sent from the keypad (``outgoing``: ``from_uri`` and
    ``from_name`` are then the recipient's, ``received`` when it was sent)."""

    received: float  # epoch seconds
    account: int
    from_uri: str
    from_name: str
    body: str
    read: bool = False
    outgoing: bool = False
    request: int = 0  # an outgoing message's SendMessage request
    status: str = ""  # an outgoing message's delivery: "sending", "sent", "failed <code> <why>"

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


def _host(uri_or_domain: str) -> str:
    host = uri_or_domain.split("@", 1)[-1].split(";", 1)[0].split(">", 1)[0].strip("<> ")
    return host.removeprefix("sip:").rsplit(":", 1)[0].lower()


def text_target(uri: str, domain: str) -> str:
    """Where a text to ``uri`` (a sender, a caller) goes: someone on the line's own domain by
    number, as "Call" dials them (a From URI carries no port or route; the line's proxy knows
    the user), anyone else by the URI itself."""
    number = number_from_uri(uri)
    if number and _host(uri) == _host(domain):
        return number
    return uri


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


def sent(messages: list[TextMessage], message: TextMessage) -> None:
    """Keep a message sent from the keypad in the list (newest first, bounded)."""
    messages.insert(0, message)
    del messages[MAX_MESSAGES:]


def set_status(messages: list[TextMessage], request: int, status: str) -> None:
    for i, message in enumerate(messages):
        if message.outgoing and message.request == request:
            messages[i] = replace(message, status=status)


def list_label(message: TextMessage) -> str:
    """``*Bob: see you at 3`` (``*`` while unread); ``To Bob: on my way`` for one sent, ``To
    Bob!`` when it failed."""
    if message.outgoing:
        mark = "!" if message.status.startswith("failed") else ""
        return f"To {message.sender}{mark}: {message.body}"
    return ("*" if not message.read else "") + f"{message.sender}: {message.body}"


def heading(message: TextMessage, tz: tzinfo) -> str:
    stamp = datetime.fromtimestamp(message.received, tz).strftime("%H:%M")
    if message.outgoing:
        return f"{stamp} to {message.sender}"
    return f"{stamp} {message.sender}"


MAX_SEND_CHARS = 160  # a message typed on the keypad: one screen-full of work, one UDP packet


@dataclass(frozen=True, slots=True)
class TextDraft:
    """A text being typed by multi-tap (firmware/features/compose.py), then its delivery."""

    account: int
    to: str  # a number or URI, as dialled
    name: str  # shown instead of ``to`` when known
    text: str = ""  # committed letters
    tap_key: str = ""  # the key of the letter still being chosen ("" none)
    tap_index: int = 0
    request: int = 0  # the SendMessage sent (0: still typing)
    result: str = ""  # "" typing or sending, "sent", "failed <code> <reason>"
    back: str = "idle"  # Mode value to return to

    @property
    def pending_letter(self) -> str:
        return letters_of(self.tap_key)[self.tap_index] if self.tap_key else ""

    @property
    def typed(self) -> str:
        return self.text + self.pending_letter

    @property
    def label(self) -> str:
        return self.name or number_from_uri(self.to) or self.to

    @property
    def left(self) -> int:
        return MAX_SEND_CHARS - len(self.typed)
