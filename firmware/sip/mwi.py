"""Message-summary bodies (RFC 3842) from MWI NOTIFY requests."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WAITING = re.compile(r"^\s*Messages-Waiting\s*:\s*(yes|no)\s*$", re.IGNORECASE | re.MULTILINE)
_VOICE = re.compile(
    r"^\s*Voice-Message\s*:\s*(\d+)\s*/\s*(\d+)(?:\s*\((\d+)\s*/\s*(\d+)\))?\s*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class MessageSummary:
    waiting: bool
    new: int = 0
    old: int = 0


def parse_message_summary(message: str) -> MessageSummary | None:
    """Parse a whole SIP message or just its body; None when there is no Messages-Waiting line."""
    body = message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else message
    waiting = _WAITING.search(body)
    if not waiting:
        return None
    voice = _VOICE.search(body)
    new, old = (int(voice.group(1)), int(voice.group(2))) if voice else (0, 0)
    return MessageSummary(waiting=waiting.group(1).lower() == "yes", new=new, old=old)
