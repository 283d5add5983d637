"""Writing text messages on the keypad: Reply from the messages list, Text on a contact or a
history entry, multi-tap letters, the characters left, SendMessage and its delivery result."""

from __future__ import annotations

from offhook.firmware.events import (
    CallIncoming,
    CallState,
    CallStateChanged,
    KeyPressed,
    MessageReceived,
    MessageStatus,
    SendMessage,
    StartTimer,
    TimerFired,
)
from offhook.firmware.features.messages import MAX_SEND_CHARS
from tests.unit.firmware.test_phone import Driver, make_config


def press(d: Driver, *keys: str) -> list:
    out: list = []
    for key in keys:
        out += d(KeyPressed(key))
    return out


def sends(out: list) -> list[SendMessage]:
    return [c for c in out if isinstance(c, SendMessage)]


def reply_to_alice() -> Driver:
    d = Driver()
    d(MessageReceived(0, "sip:1004@pbx.example", "Alice", "Lunch at 12?"))
    press(d, "messages")
    assert d.phone.screen.softkeys == ("Back", "Call", "Reply", "Open")
    press(d, "softkey3")
    assert d.phone.screen.kind == "compose"
    return d


def test_reply_types_by_multi_tap_counts_down_and_sends() -> None:
    d = reply_to_alice()
    assert d.lines == (f"{'To Alice':<17} {MAX_SEND_CHARS}", "_", "2=abc 0=space")
    assert d.phone.screen.softkeys == ("Back", "", "Send")
    out = press(d, "9", "9", "3", "3")  # x, then e
    assert StartTimer("text_tap", 1.0) in out
    assert d.lines[:2] == (f"{'To Alice':<17} {MAX_SEND_CHARS - 2}", "x[e]")
    assert d.phone.screen.softkeys == ("Del", "", "Send")
    d(TimerFired("text_tap"))  # a pause keeps the e
    assert d.lines[1] == "xe_"
    press(d, "cancel")  # deletes the e
    press(d, "4", "4", "4", "0", "2")  # y? no: i (3rd of ghi), space, a
    assert d.lines[1] == "xi [a]"
    press(d, "left", "left")  # the letter being chosen, then the space
    press(d, "0", "4", "4", "4")  # a space cannot follow: it is kept, then i
    out = press(d, "softkey3")
    assert sends(out) == [SendMessage(1, 0, "1004", "xi i")]  # our domain: by number
    assert d.lines == ("To Alice", "Sending...", "xi i")
    d(MessageStatus(1, 200, "OK"))
    assert d.lines == ("To Alice", "Sent", "xi i")
    assert d.phone.screen.softkeys == ("Back", "", "OK")
    press(d, "ok")
    assert d.phone.screen.kind == "messages"
    # the list keeps it, marked as sent, and the cursor stays on Alice's message
    assert d.lines == ("Messages", "  To Alice: xi i", "> Alice: Lunch at 12?")
    press(d, "up", "ok")
    assert d.lines[1:] == ("Sent", "xi i") and d.lines[0].endswith("to Alice")


def test_a_failed_send_says_why_and_can_be_sent_again() -> None:
    d = reply_to_alice()
    press(d, "4", "4", "4", "ok")
    d(MessageStatus(1, 404, "Not Found"))
    assert d.lines == ("To Alice", "Failed 404 Not Found", "i")
    assert d.phone.screen.softkeys == ("Back", "", "Retry")
    press(d, "softkey3")  # back to editing the same text
    assert d.lines[1] == "i_"
    out = press(d, "ok")
    assert sends(out) == [SendMessage(2, 0, "1004", "i")]
    d(MessageStatus(2, 0, "account 0 is not configured or not enabled"))
    assert d.lines[1] == "Failed account 0 is ~"
    press(d, "cancel")
    labels = [m.status for m in d.phone.state.messages if m.outgoing]
    assert labels == ["failed account 0 is not configured or not enabled", "failed 404 Not Found"]
    assert d.lines[1] == "  To Alice!: i"  # failed: marked with !


def test_an_empty_text_is_not_sent_and_cancel_leaves() -> None:
    d = reply_to_alice()
    assert sends(press(d, "ok")) == []
    press(d, "0", "ok")  # only a space
    assert sends(d.out) == []
    press(d, "cancel", "cancel")
    assert d.phone.screen.kind == "messages"


def test_the_text_stops_at_the_limit_and_long_text_shows_its_end() -> None:
    d = reply_to_alice()
    for _ in range(MAX_SEND_CHARS):
        press(d, "2", "5")  # a new key each time keeps the last letter
    assert d.lines[0].endswith(" 0")
    assert len(d.phone.state.draft.typed) == MAX_SEND_CHARS
    press(d, "2")  # full: nothing starts
    assert len(d.phone.state.draft.typed) == MAX_SEND_CHARS
    assert all(len(line) <= 21 for line in d.lines)
    assert d.lines[2].endswith("[j]")  # the last line shows where typing goes on
    out = press(d, "ok")
    assert len(sends(out)[0].body) == MAX_SEND_CHARS


def test_text_from_a_contact_and_from_history() -> None:
    d = Driver(make_config(phonebook=[{"name": "Reception", "number": "2000"}]))
    press(d, "phonebook")
    assert d.phone.screen.softkeys == ("Back", "Text", "Dial")
    press(d, "softkey2")
    assert d.lines[0].startswith("To Reception")
    out = press(d, "4", "ok")
    assert sends(out) == [SendMessage(1, 0, "2000", "g")]
    d(MessageStatus(1, 202, "Accepted"))
    press(d, "ok")
    assert d.phone.screen.kind == "phonebook"
    press(d, "cancel")

    d(CallIncoming(7, 0, "sip:1005@pbx.example", "Bob"))
    d(CallStateChanged(7, CallState.DISCONNECTED, 487, "Request Terminated"))
    press(d, "history", "softkey2")
    assert d.lines[0].startswith("To Bob")
    out = press(d, "6", "ok")
    assert sends(out) == [SendMessage(2, 0, "1005", "m")]


def test_a_late_or_unknown_status_changes_only_its_own_message() -> None:
    d = reply_to_alice()
    press(d, "2", "ok")
    press(d, "cancel")  # left while still sending
    d(MessageStatus(9, 500, "Server Error"))  # not ours
    d(MessageStatus(1, 200, "OK"))
    outgoing = [m for m in d.phone.state.messages if m.outgoing]
    assert [m.status for m in outgoing] == ["sent"]
    assert d.phone.screen.kind == "messages"


def test_a_sender_on_another_domain_is_answered_at_its_uri() -> None:
    d = Driver()
    d(MessageReceived(0, "sip:carol@partner.example", "Carol", "hello"))
    press(d, "messages", "softkey3", "2", "ok")
    assert sends(d.out) == [SendMessage(1, 0, "sip:carol@partner.example", "a")]
