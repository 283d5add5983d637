"""Matching pjsua2's onInstantMessageStatus to the send it answers: it carries the URI and the
body but no request token, so the oldest pending send with the same account, body and URI wins.
The buddies are real pjsua2 wrappers that were never created (no endpoint needed)."""

from __future__ import annotations

import pjsua2 as pj

from offhook.firmware.sip.text_out import PendingText, TextSender


def pending(request: int, account: int, uri: str, body: str) -> PendingText:
    return PendingText(request, account, uri, body, pj.Buddy())


def sender_with(*sends: PendingText) -> TextSender:
    sender = TextSender()
    sender.pending.extend(sends)
    return sender


def test_the_same_body_to_two_people_is_told_apart_by_the_uri() -> None:
    sender = sender_with(
        pending(1, 0, "sip:1002@pbx;transport=tcp", "ok"), pending(2, 0, "sip:1003@pbx", "ok")
    )
    answer = sender.answered(0, '"Carol" <sip:1003@PBX>', "ok")
    assert answer is not None and answer.request == 2
    answer = sender.answered(0, "<sip:1002@pbx;transport=tcp>", "ok")
    assert answer is not None and answer.request == 1
    assert sender.pending == [] and len(sender.spent) == 2
    sender.release_spent()
    assert sender.spent == []


def test_oldest_first_for_the_same_uri_and_other_lines_are_not_matched() -> None:
    sender = sender_with(pending(1, 0, "sip:1002@pbx", "hi"), pending(2, 0, "sip:1002@pbx", "hi"))
    assert sender.answered(1, "sip:1002@pbx", "hi") is None  # another line's answer
    first = sender.answered(0, "sip:1002@pbx", "hi")
    assert first is not None and first.request == 1
    assert sender.answered(0, "sip:1002@pbx", "other") is None
    # a URI pjsua rewrote (an alias) still finds the send by its body
    second = sender.answered(0, "sip:bob@pbx", "hi")
    assert second is not None and second.request == 2
