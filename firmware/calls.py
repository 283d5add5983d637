"""Call bookkeeping for the Phone: one record per SIP call and how a finished call is described."""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware.events import CallRecord, CallState, Tone

_URI_USER = re.compile(r"^(?:sips?:|tel:)?([^@;>]+)")


def number_from_uri(uri: str) -> str:
    """The user part of a SIP URI (``sip:1002@pbx`` -> ``1002``); the text itself when not a URI."""
    uri = uri.strip().strip("<>")
    match = _URI_USER.match(uri)
    return match.group(1) if match else uri


@dataclass
class Call:
    """What the Phone knows about one call. ``id`` is None until the engine reports it."""

    id: int | None
    direction: str  # "outgoing" | "incoming"
    account: int
    number: str  # what was dialled, or the caller's user part
    remote_uri: str
    remote_name: str
    state: CallState
    start: float
    answer: float | None = None
    codec: str = ""
    mos: float | None = None
    held: bool = False  # held by us
    held_remotely: bool = False
    transferred: bool = False  # we sent REFER for it
    forwarded_to: str = ""

    @property
    def label(self) -> str:
        return self.remote_name or self.number or self.remote_uri

    def duration(self, now: float) -> float:
        return max(0.0, now - self.answer) if self.answer is not None else 0.0


@dataclass(frozen=True)
class Outcome:
    """How a call that ended is shown, heard and recorded."""

    title: str
    detail: str
    tone: Tone | None
    disposition: str


def ended_outcome(call: Call, status: int, reason: str) -> Outcome:
    """Map how a call ended (final SIP status) to the user's feedback.

    486/600 busy and 603 declined give busy tone; numbers that do not exist (404/484/604), 480/408
    and server failures give congestion (reorder) tone, with the reason shown.
    """
    detail = f"{status} {reason}".strip() if status else reason
    if call.transferred:
        return Outcome("Call transferred", call.number, None, "answered")
    if call.answer is not None:
        return Outcome("Call ended", call.label, Tone.BUSY, "answered")
    if status in (486, 600):
        return Outcome("Busy", detail, Tone.BUSY, "busy")
    if status == 603:
        return Outcome("Declined", detail, Tone.BUSY, "busy")
    if status in (404, 484, 604):
        return Outcome("Number not found", detail, Tone.CONGESTION, "failed")
    if status == 480:
        return Outcome("Unavailable", detail, Tone.CONGESTION, "no_answer")
    if status == 408:
        return Outcome("No answer", detail, Tone.CONGESTION, "no_answer")
    if 500 <= status < 600:
        return Outcome(reason or "Service unavailable", f"{status}", Tone.CONGESTION, "failed")
    return Outcome("Call failed", detail or "no response", Tone.CONGESTION, "failed")


def history_kind(record: CallRecord) -> str:
    """History lists: every incoming call not answered here counts as missed (DND, forwarded...)."""
    if record.direction == "outgoing":
        return "dialled"
    return "received" if record.disposition == "answered" else "missed"


def format_duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def quality_bars(mos: float) -> int:
    """0-4 bars from the MOS estimate (4.0+ is toll quality, below 2.6 most users complain)."""
    for bars, floor in ((4, 4.0), (3, 3.6), (2, 3.1), (1, 2.6)):
        if mos >= floor:
            return bars
    return 0


def call_summary(call: Call, now: float) -> dict:
    """A live call as the control API's snapshot shows it (JSON-ready)."""
    return {
        "id": call.id if call.id is not None else -1,
        "state": "held" if call.held else call.state.value,
        "direction": call.direction,
        "remote_uri": call.remote_uri,
        "remote_name": call.remote_name,
        "codec": call.codec,
        "duration_s": round(call.duration(now), 3),
    }


def record_summary(record: CallRecord) -> dict:
    """A history entry as the control API's snapshot shows it (JSON-ready)."""
    return {
        "id": record.id,
        "kind": history_kind(record),
        "direction": record.direction,
        "remote_uri": record.remote_uri,
        "remote_name": record.remote_name,
        "number": number_from_uri(record.remote_uri),
        "start": record.start,
        "duration_s": round(record.end - record.answer, 3) if record.answer else 0.0,
        "disposition": record.disposition,
        "status": record.status_code,
    }
