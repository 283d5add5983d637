"""The text messages screens (the list, one message, writing one) and the idle screen's notices
(missed calls, voicemail, texts, DND, a watched colleague ringing). Pure functions of the Phone's
state, like firmware/screens/views.py.

The idle screen has room for three lines above its softkeys (128x64, 11-pixel lines): the line
name, its registration and one notice line. Several notices share that line in their short forms
("2 missed, 1 text, DND") rather than pushing the softkeys off the panel.
"""

from __future__ import annotations

from offhook.firmware.events import Screen
from offhook.firmware.features.blf import ringing_labels
from offhook.firmware.features.messages import heading, list_label, unread
from offhook.firmware.phone_state import PhoneState
from offhook.firmware.screens.lists import window
from offhook.firmware.screens.text import wrap

WIDTH = 21  # characters of the 6x11 font on a 128-pixel panel
BODY_LINES = 3  # an opened message: its heading, then this many lines of text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + "s" * (n != 1)


def idle_notices(view: PhoneState) -> list[tuple[str, str]]:
    """(long, short) forms of what the idle screen has to tell, most urgent first."""
    notices: list[tuple[str, str]] = []
    for name in ringing_labels(view.config, view.watched):
        notices.append((f"{name} ringing", f"{name} rings"))
    missed = view.unseen_missed
    if missed:
        notices.append((_plural(missed, "missed call"), f"{missed} missed"))
    texts = unread(view.messages)
    if texts:
        notices.append((_plural(texts, "new text"), _plural(texts, "text")))
    if view.message_waiting:
        new = view.new_messages
        long = _plural(new, "new message") if new else "Messages waiting"
        notices.append((long, f"{new} VM" if new else "VM"))
    if view.dnd:
        notices.append(("Do not disturb", "DND"))
    return notices


def notice_line(view: PhoneState) -> str:
    notices = idle_notices(view)
    if not notices:
        return ""
    if len(notices) == 1:
        return notices[0][0]
    return ", ".join(short for _, short in notices)


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    """The panel's wrap, with a ``~`` at the end when the text goes on beyond the last line."""
    lines = list(wrap(text, width, max_lines))
    if lines and len(lines) == max_lines and len(" ".join(lines)) < len(text):
        lines[-1] = lines[-1][: width - 1] + "~"  # more to read than the panel holds
    return lines


def messages_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    messages = view.messages
    if not messages:
        return Screen("messages", ("Messages", "(none)"), status, ("Back", "", ""))
    index = min(view.message_cursor.index, len(messages) - 1)
    if view.message_cursor.opened:
        message = messages[index]
        lines = [heading(message, view.tz)]
        if message.outgoing:
            lines.append(_fit(delivery(message.status)))
        lines += _wrap(message.body, WIDTH, BODY_LINES + 1 - len(lines))
        # four lines hide the softkeys (the renderer keeps them only under three)
        softkeys = ("Back", "Call", "Reply") if len(lines) <= 3 else ()
        return Screen("message", tuple(lines), status, softkeys)
    title = f"Messages ({unread(messages)} new)" if unread(messages) else "Messages"
    labels = [list_label(m) for m in messages]
    return Screen("messages", (title, *window(labels, index, rows=2)), status,
                  ("Back", "Call", "Reply", "Open"))  # fmt: skip


def delivery(status: str) -> str:
    """An outgoing message's status as the screen says it: Sending..., Sent, Failed 404 ..."""
    if status == "sending":
        return "Sending..."
    return status[:1].upper() + status[1:]


def _fit(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "~"


def draft_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    """Typing: who to, the characters left, the end of the text with the letter being chosen in
    brackets. Sent: who to, the delivery result and the text's start."""
    draft = view.draft
    if draft is None:
        return Screen("compose", ("No message",), status, ("Back", "", ""))
    if draft.request:
        result = delivery(draft.result or "sending")
        lines = (_fit(f"To {draft.label}"), _fit(result), _fit(draft.text))
        if not draft.result:
            softkeys: tuple[str, ...] = ("", "", "")
        elif draft.result.startswith("failed"):
            softkeys = ("Back", "", "Retry")
        else:
            softkeys = ("Back", "", "OK")
        return Screen("compose", lines, status, softkeys)
    left = str(draft.left)
    to = f"To {draft.label}"
    room = WIDTH - len(left) - 1
    head = (to if len(to) <= room else to[: room - 1] + "~").ljust(room) + " " + left
    shown = draft.text + (f"[{draft.pending_letter}]" if draft.tap_key else "_")
    # cut by characters, not words: the cursor is where the next letter goes
    chunks = [shown[i : i + WIDTH] for i in range(0, len(shown), WIDTH)]
    body = chunks[-2:] if len(chunks) > 1 else [chunks[0], "" if draft.typed else "2=abc 0=space"]
    softkeys = ("Del", "", "Send") if draft.typed else ("Back", "", "Send")
    return Screen("compose", (head, *body), status, softkeys)
