"""Outgoing text messages (SIP MESSAGE, RFC 3428) through pjsua2, on the engine's owner thread.

pjsua2's Python API sends an instant message only through a ``Buddy`` (or a call), so each send
creates a buddy that never subscribes to presence. Its result arrives later, on the account, as
``onInstantMessageStatus`` with the message's URI and body but no usable request token (the
``userData`` token does not cross SWIG as a number), so pending sends are matched by account,
body and URI, oldest first. A buddy is released on the loop turn after its answer, never inside
pjsua's callback, and all of them before the accounts go (see docs/sip.md on wrapper order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pjsua2 as pj

from offhook.contract.logs import kv

log = logging.getLogger("offhook.sip")

CONTENT_TYPE = "text/plain; charset=utf-8"


@dataclass
class PendingText:
    request: int
    account: int
    uri: str
    body: str
    buddy: pj.Buddy


def _bare(uri: str) -> str:
    """``"Bob" <sip:1002@pbx;transport=tcp>`` -> ``sip:1002@pbx`` (to compare URIs)."""
    inner = uri.split("<", 1)[-1].split(">", 1)[0]
    return inner.split(";", 1)[0].strip().lower()


class TextSender:
    def __init__(self) -> None:
        self.pending: list[PendingText] = []
        self.spent: list[pj.Buddy] = []  # answered: released on the next loop turn

    def send(self, request: int, account: pj.Account, index: int, uri: str, body: str) -> None:
        """Hand the MESSAGE to pjsua; pj.Error if it refuses it at once (a bad URI...)."""
        config = pj.BuddyConfig()
        config.uri = uri
        config.subscribe = False
        buddy = pj.Buddy()
        buddy.create(account, config)
        prm = pj.SendInstantMessageParam()
        prm.content = body
        prm.contentType = CONTENT_TYPE
        try:
            buddy.sendInstantMessage(prm)
        except pj.Error:
            self.spent.append(buddy)
            raise
        self.pending.append(PendingText(request, index, uri, body, buddy))
        log.info("text message sent", extra=kv(request=request, account=index, uri=uri))

    def answered(self, index: int, to_uri: str, body: str) -> PendingText | None:
        """The pending send an ``onInstantMessageStatus`` is about (removed), if any."""
        candidates = [p for p in self.pending if p.account == index and p.body == body]
        same_uri = [p for p in candidates if _bare(p.uri) == _bare(to_uri)]
        found = same_uri or candidates
        if not found:
            return None
        match = found[0]
        self.pending.remove(match)
        self.spent.append(match.buddy)
        return match

    def waiting(self, index: int | None = None) -> int:
        """Sends still without an answer (of one account, or all)."""
        return sum(index is None or p.account == index for p in self.pending)

    def release_spent(self) -> None:
        self.spent.clear()

    def clear(self) -> None:
        """At teardown, before the accounts are shut down: drop every buddy wrapper."""
        self.pending.clear()
        self.spent.clear()
