"""Call bookkeeping for the Phone: one record per SIP call and how a finished call is described."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from offhook.firmware.events import CallRecord, CallState, Tone

_URI_USER = re.compile(r"^(?:sips?:|tel:)?([^@;>]+)")
UNPLACED = -1  # a call's id until the engine reports it (the engine's ids are never negative)


def number_from_uri(uri: str) -> str:
    """The user part of a SIP URI (``sip:1002@pbx`` -> ``1002``); the text itself when not a URI."""
    uri = uri.strip().strip("<>")
    match = _URI_USER.match(uri)
    return match.group(1) if match else uri


@dataclass(slots=True)
class Call:
    """What the Phone knows about one call. ``id`` is UNPLACED until the engine reports it."""

    id: int
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
    transfer_to: int | None = None  # attended transfer: our call to the target
    takes_over: int | None = None  # adopted call that replaces this call once answered
    forwarded_to: str = ""
    uid: str = ""  # the CallRecord id, taken early when an action URL names the call
    sip_call_id: str = ""  # the dialog's Call-ID, from the engine's first report naming it

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


# Calls refused without ringing: 486 (busy) or 480 (DND). A caller retrying while we are busy, or an
# INVITE flood, would otherwise fill the history; calls that rang here stay one entry each.
AUTO_REFUSED = frozenset({480, 486})


def _auto_refused(record: CallRecord) -> bool:
    return record.disposition == "rejected" and record.status_code in AUTO_REFUSED


def same_missed_caller(earlier: CallRecord, later: CallRecord) -> bool:
    """Two refused calls in a row from the same caller on the same line: one history entry."""
    return (
        _auto_refused(earlier)
        and _auto_refused(later)
        and earlier.account == later.account
        and number_from_uri(earlier.remote_uri) == number_from_uri(later.remote_uri)
        and earlier.remote_uri.split(";")[0] == later.remote_uri.split(";")[0]
    )


def merge_repeat(earlier: CallRecord, later: CallRecord) -> CallRecord:
    """The entry for a run of missed calls: the newest call's details, counted."""
    return replace(later, id=earlier.id, count=earlier.count + later.count)


def collapse_repeats(newest_first: list[CallRecord]) -> list[CallRecord]:
    """History as shown (newest first) with each run of missed calls from one caller merged."""
    out: list[CallRecord] = []
    for record in reversed(newest_first):  # oldest first, so each run merges forwards in time
        if out and same_missed_caller(out[-1], record):
            out[-1] = merge_repeat(out[-1], record)
        else:
            out.append(record)
    out.reverse()
    return out


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


def call_summary(call: Call, now: float) -> dict[str, Any]:
    """A live call as the control API's snapshot shows it (JSON-ready)."""
    if call.held:
        state = "held"
    elif call.held_remotely and call.state is CallState.CONFIRMED:
        state = "held_remotely"  # the far end holds us: the screen says "Held by remote"
    else:
        state = call.state.value
    return {
        "id": call.id,
        "state": state,
        "held": call.held,
        "held_remotely": call.held_remotely,
        "direction": call.direction,
        "remote_uri": call.remote_uri,
        "remote_name": call.remote_name,
        "codec": call.codec,
        "duration_s": round(call.duration(now), 3),
    }


def record_summary(record: CallRecord) -> dict[str, Any]:
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
        "reason": record.reason,
        "count": record.count,
    }
