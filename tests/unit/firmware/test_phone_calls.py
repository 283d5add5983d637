"""Phone scenarios around calls the Phone did not place itself, transfers that do not complete,
and how calls are recorded (issue 8, calls): events in, commands out."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offhook.firmware.events import (
    Answer,
    CallIncoming,
    CallMediaChanged,
    CallState,
    CallStateChanged,
    Hangup,
    Hold,
    HookChanged,
    KeyPressed,
    PlayTone,
    RecordCall,
    Redirect,
    Reject,
    Ringing,
    SetRinger,
    StartTimer,
    TimerFired,
    Tone,
    Transfer,
    TransferStatus,
    Unhold,
)
from offhook.firmware.phone import TRANSFER_GIVE_UP_S, Phone
from tests.unit.firmware.test_phone import Driver, make_config, place, ring, talk
from tests.unit.firmware.test_phone_properties import CALL_IDS, CONFIG, EVENTS


@pytest.fixture
def phone_warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="offhook.firmware.phone")
    return caplog


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "offhook.firmware.phone"]


# --- calls pjsua started itself ----------------------------------------------------------------


def test_call_started_by_a_refer_is_adopted_shown_ended_by_the_handset_and_recorded(
    phone_warnings: pytest.LogCaptureFixture,
) -> None:
    d = Driver()
    talk(d, "2001", call_id=0)
    # 2001 transferred us to 3005: pjsua places the REFER'd call, then 2001 hangs up on us.
    d(CallStateChanged(1, CallState.CALLING, 0, "", "sip:3005@pbx.example", "", "", "outgoing",
                       0, 0))  # fmt: skip
    d(CallStateChanged(1, CallState.EARLY, 180, "Ringing", "sip:3005@pbx.example"))
    d(CallStateChanged(1, CallState.CONFIRMED, 200, "OK", "sip:3005@pbx.example", codec="PCMU"))
    d(CallStateChanged(0, CallState.DISCONNECTED, 200, "Normal call clearing"))
    assert d.phone.screen.kind == "talking"
    assert d.lines[0] == "3005" and "Call ended" not in d.lines
    calls = d.phone.snapshot(d.now)["calls"]
    assert [(c["id"], c["state"], c["direction"]) for c in calls] == [(1, "confirmed", "outgoing")]
    d(HookChanged(False))
    assert Hangup(1) in d.out
    assert d.phone.screen.kind == "idle"
    assert [(r.call_id, r.remote_uri, r.disposition) for r in d.recorded] == [
        (0, "2001", "answered"),
        (1, "sip:3005@pbx.example", "answered"),
    ]
    d(CallStateChanged(1, CallState.DISCONNECTED, 200))
    assert warnings_of(phone_warnings) == []


def refer_call(call_id: int, state: CallState, status: int = 0) -> CallStateChanged:
    """pjsua's report of the call it places for a REFER that arrived on call 0."""
    return CallStateChanged(call_id, state, status, "", "sip:3005@pbx.example",
                            direction="outgoing", replaces=0)  # fmt: skip


def test_refer_call_that_fails_leaves_the_transferor_call_on_the_handset() -> None:
    d = Driver()
    talk(d, "2001", call_id=0)
    d(refer_call(1, CallState.CALLING))
    d(refer_call(1, CallState.EARLY, 180))
    assert d.lines[0] == "2001"  # still the call we talk on until the new one is answered
    d(refer_call(1, CallState.DISCONNECTED, 486))
    assert d.phone.screen.kind == "talking" and d.lines[0] == "2001"
    assert not d.of(PlayTone)
    d(HookChanged(False))
    assert Hangup(0) in d.out
    assert [(r.call_id, r.disposition) for r in d.recorded] == [(1, "busy"), (0, "answered")]


def test_transferor_hanging_up_first_hands_the_handset_to_the_ringing_refer_call() -> None:
    d = Driver()
    talk(d, "2001", call_id=0)
    d(refer_call(1, CallState.EARLY, 180))
    d(CallStateChanged(0, CallState.DISCONNECTED, 200))
    assert PlayTone(Tone.RINGBACK) in d.out and d.lines[:2] == ("Ringing", "3005")
    d(refer_call(1, CallState.CONFIRMED, 200))
    assert d.phone.screen.kind == "talking" and d.lines[0] == "3005"


def test_incoming_call_with_replaces_takes_over_the_call_it_replaces() -> None:
    d = Driver()
    ring(d, call_id=7)
    d(HookChanged(True))
    d(CallStateChanged(7, CallState.CONFIRMED, 200))
    # We are the target of an attended transfer: pjsua answers the INVITE with Replaces itself.
    d(CallStateChanged(8, CallState.CONFIRMED, 200, "OK", "sip:2003@pbx.example", "Carol",
                       direction="incoming", replaces=7))  # fmt: skip
    d(CallStateChanged(7, CallState.DISCONNECTED, 200))
    assert d.phone.screen.kind == "talking" and d.lines[0] == "Carol"
    d(KeyPressed("cancel"))  # "End"
    assert Hangup(8) in d.out
    record = d.recorded[-1]
    assert (record.call_id, record.direction, record.disposition) == (8, "incoming", "answered")


def test_adopted_call_while_the_handset_talks_to_another_waits_on_hold() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(CallStateChanged(5, CallState.CONFIRMED, 200, "", "sip:3005@pbx.example",
                       direction="outgoing", replaces=9))  # fmt: skip
    assert Hold(5) in d.out
    assert d.lines[0] == "2001" and "Hold: 3005" in d.lines
    d(KeyPressed("hold"))  # swap to it
    assert Unhold(5) in d.out and d.lines[0] == "3005"


def test_calls_we_ended_are_not_unknown_when_the_engine_reports_their_end(
    phone_warnings: pytest.LogCaptureFixture,
) -> None:
    d = Driver()
    talk(d, call_id=1)
    d(HookChanged(False))
    d(CallStateChanged(1, CallState.DISCONNECTED, 200, "Normal call clearing"))
    ring(d, call_id=7)
    d(KeyPressed("cancel"))  # keypad reject: 603
    assert Reject(7, 603) in d.out
    d(CallStateChanged(7, CallState.INCOMING, 603))
    d(CallStateChanged(7, CallState.DISCONNECTED, 603, "Decline"))
    assert warnings_of(phone_warnings) == []
    assert not d.of(Hangup)


# --- what calls we end are recorded with -------------------------------------------------------


def test_calls_we_hang_up_are_recorded_with_the_status_of_the_hang_up() -> None:
    d = Driver()
    talk(d, call_id=1)
    d(HookChanged(False))  # BYE after 200
    d.keys("")
    d(HookChanged(True))
    d.keys("2001")
    d(CallStateChanged(2, CallState.EARLY, 180))
    d(HookChanged(False))  # CANCEL
    ring(d, call_id=7)
    d(KeyPressed("cancel"))  # 603 Decline
    assert [(r.status_code, r.reason) for r in d.recorded] == [
        (200, "OK"),
        (487, "Request Terminated"),
        (603, "Decline"),
    ]


def test_far_end_reason_is_recorded() -> None:
    d = Driver()
    talk(d, call_id=1)
    d(CallStateChanged(1, CallState.DISCONNECTED, 200, "Normal call clearing"))
    assert (d.recorded[0].status_code, d.recorded[0].reason) == (200, "Normal call clearing")
    assert d.phone.snapshot(d.now)["history"][0]["reason"] == "Normal call clearing"


# --- blind and attended transfers that do not complete -----------------------------------------


def blind_transfer(d: Driver, call_id: int = 0) -> None:
    talk(d, call_id=call_id)
    d(KeyPressed("transfer"))
    d.keys("3005")
    d(KeyPressed("#"))
    assert Transfer(call_id, "3005") in d.out


def test_accepted_refer_without_final_notify_ends_our_leg_on_a_timer() -> None:
    d = Driver()
    blind_transfer(d)
    d(TransferStatus(0, 100, "Accepted"))
    assert StartTimer("xfer:0", TRANSFER_GIVE_UP_S) in d.out
    d(TransferStatus(0, 180, "Ringing"))  # a NOTIFY that is not final changes nothing
    assert not d.of(StartTimer)
    d(TimerFired("xfer:0"), advance=TRANSFER_GIVE_UP_S)
    assert Hangup(0) in d.out
    assert d.lines[0] == "Call transferred"
    assert d.recorded[-1].disposition == "answered"
    assert d.phone.snapshot(d.now)["calls"] == []


def test_final_notify_cancels_the_transfer_timer() -> None:
    d = Driver()
    blind_transfer(d)
    d(TransferStatus(0, 100, "Accepted"))
    d(TransferStatus(0, 200, "OK", final=True))
    assert d.of(Hangup) == []  # the engine ends the leg on a final 2xx
    d(CallStateChanged(0, CallState.DISCONNECTED, 200))
    d(TimerFired("xfer:0"))
    assert not d.of(Hangup)
    assert d.lines[0] == "Call transferred"


def test_refused_refer_shows_transfer_failed_and_leaves_the_call_to_the_user() -> None:
    d = Driver()
    blind_transfer(d)
    d(TransferStatus(0, 491, "Request Pending", final=True))
    assert d.lines[:2] == ("Transfer failed", "491 Request Pending")
    assert d.phone.screen.softkeys == ("Resume", "Xfer", "")
    assert not d.of(StartTimer) and not d.of(Hangup)
    d(KeyPressed("hold"))
    assert Unhold(0) in d.out and d.phone.screen.kind == "talking"
    d(HookChanged(False))
    assert Hangup(0) in d.out
    assert d.recorded[-1].disposition == "answered"


def test_failed_attended_transfer_keeps_both_calls() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(KeyPressed("hold"))
    d.keys("3005")
    d(CallStateChanged(2, CallState.CONFIRMED, 200))
    d(KeyPressed("transfer"))
    d(TransferStatus(1, 603, "Decline", final=True))
    assert d.phone.screen.kind == "talking" and "Transfer failed" in d.lines
    d(KeyPressed("hold"))  # swap back to the first caller
    assert Unhold(1) in d.out


def test_attended_transfer_without_final_notify_ends_both_legs() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(KeyPressed("hold"))
    d.keys("3005")
    d(CallStateChanged(2, CallState.CONFIRMED, 200))
    d(KeyPressed("transfer"))
    d(TransferStatus(1, 100, "Accepted"))
    d(TimerFired("xfer:1"), advance=TRANSFER_GIVE_UP_S)
    assert Hangup(1) in d.out and Hangup(2) in d.out
    assert d.lines[0] == "Call transferred"


# --- incoming calls: decide before 180, ring timeout ---------------------------------------------


def test_ringing_is_sent_only_for_calls_that_ring_or_wait() -> None:
    d = Driver()
    ring(d, call_id=7)
    assert Ringing(7) in d.out and SetRinger(True) in d.out
    d(KeyPressed("dnd"))
    d(HookChanged(True))
    d(HookChanged(False))
    ring(d, call_id=8)
    assert d.out[0] == Reject(8, 480) and not d.of(Ringing)


@pytest.mark.parametrize(
    ("features", "first"),
    [
        ({"dnd": True}, Reject(7, 480)),
        ({"forward_always": "3000"}, Redirect(7, "3000")),
        ({"call_waiting": False}, Reject(7, 486)),
    ],
)
def test_refused_calls_get_no_ringing(features, first) -> None:
    d = Driver(make_config(features=features))
    if not features.get("call_waiting", True):
        talk(d, call_id=1)
    ring(d, call_id=7)
    assert d.out[0] == first and not d.of(Ringing)


def test_auto_answer_answers_without_ringing() -> None:
    d = Driver(make_config(features={"auto_answer": True}))
    ring(d, call_id=7)
    assert Answer(7) in d.out and not d.of(Ringing)


def test_unanswered_call_gives_up_after_the_ring_timeout_with_480() -> None:
    d = Driver(make_config(features={"ring_timeout_s": 45}))
    ring(d, call_id=7)
    assert StartTimer("ring_timeout:7", 45) in d.out
    d(TimerFired("ring_timeout:7"), advance=45)
    assert Reject(7, 480) in d.out and SetRinger(False) in d.out
    assert d.phone.screen.kind == "idle" and "1 missed call" in d.lines
    record = d.recorded[-1]
    assert (record.disposition, record.status_code) == ("missed", 480)


def test_ring_timeout_default_and_answering_cancels_it() -> None:
    d = Driver()
    ring(d, call_id=7)
    assert StartTimer("ring_timeout:7", 120) in d.out
    d(HookChanged(True))
    d(TimerFired("ring_timeout:7"), advance=120)
    assert not d.of(Reject)


# --- state and history -----------------------------------------------------------------------


def test_snapshot_says_when_the_far_end_holds_the_call() -> None:
    d = Driver()
    talk(d, call_id=1)
    d(CallMediaChanged(1, held_remotely=True))
    (call,) = d.phone.snapshot(d.now)["calls"]
    assert (call["state"], call["held_remotely"], call["held"]) == ("held_remotely", True, False)
    d(CallMediaChanged(1, held_remotely=False))
    assert d.phone.snapshot(d.now)["calls"][0]["state"] == "confirmed"
    d(KeyPressed("hold"))
    (call,) = d.phone.snapshot(d.now)["calls"]
    assert (call["state"], call["held"]) == ("held", True)


def test_refusals_from_one_caller_while_busy_are_one_counted_history_entry() -> None:
    d = Driver(make_config(features={"call_waiting": False}))
    talk(d, call_id=1)
    for i in range(300):  # an INVITE flood while busy
        ring(d, call_id=100 + i, uri="sip:6666@pbx.example", name="")
    ring(d, call_id=500, uri="sip:2002@pbx.example")
    history = d.phone.snapshot(d.now)["history"]
    assert [(h["number"], h["count"], h["status"]) for h in history] == [
        ("2002", 1, 486),
        ("6666", 300, 486),
    ]
    assert len(d.recorded) == 301  # every call is still a CDR of its own
    d(HookChanged(False))
    assert "2 missed calls" in d.lines
    # after a restart the history file's records collapse the same way
    restarted = Phone(make_config(), history=d.recorded)
    restarted.start(d.now)
    counts = [h["count"] for h in restarted.snapshot(d.now)["history"]]
    assert counts == [1, 1, 300]


def test_a_repeat_after_the_history_was_read_counts_as_missed_again() -> None:
    d = Driver(make_config(features={"dnd": True}))
    ring(d, call_id=1, uri="sip:6666@pbx.example")
    ring(d, call_id=2, uri="sip:6666@pbx.example")
    d(KeyPressed("history"))
    d(KeyPressed("cancel"))
    assert not any("missed" in line for line in d.lines)
    ring(d, call_id=3, uri="sip:6666@pbx.example")
    assert [h["count"] for h in d.phone.snapshot(d.now)["history"]] == [3]
    assert "1 missed, DND" in d.lines  # with DND on too, the notices share one line
    ring(d, call_id=4, uri="sip:2002@pbx.example")  # another caller: an entry of its own
    assert [h["count"] for h in d.phone.snapshot(d.now)["history"]] == [1, 3]


# --- any sequence, with adopted calls, transfer progress and the new timers -----------------------

ADOPTED_AND_TRANSFERS = st.one_of(
    EVENTS,
    st.builds(
        CallStateChanged,
        CALL_IDS,
        st.sampled_from(list(CallState)),
        st.sampled_from([0, 180, 200, 487]),
        st.just(""),
        st.just("sip:3005@pbx"),
        st.just(""),
        st.just(""),
        st.sampled_from(["outgoing", "incoming", ""]),
        st.just(0),
        st.integers(min_value=-1, max_value=3),
    ),
    st.builds(
        TransferStatus, CALL_IDS, st.sampled_from([100, 180, 200, 491, 603]), st.just(""),
        st.booleans(),
    ),
    st.builds(TimerFired, st.sampled_from([f"{p}{i}" for p in ("ring_timeout:", "xfer:")
                                           for i in range(4)])),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ADOPTED_AND_TRANSFERS, max_size=40))
def test_any_sequence_with_adopted_calls_and_transfers_stays_consistent(events) -> None:
    phone = Phone(CONFIG)
    now = 1_700_000_000.0
    phone.start(now)
    record_ids: set[str] = set()
    ringer = False
    for event in events:
        now += 1.0
        out = phone.handle(event, now)
        for command in out:
            if isinstance(command, RecordCall):
                assert command.record.id not in record_ids, "each call is recorded once"
                record_ids.add(command.record.id)
            if isinstance(command, SetRinger):
                ringer = command.on
        snap = phone.snapshot(now)
        json.dumps(snap)
        ids = [c["id"] for c in snap["calls"]]
        assert len(ids) == len(set(ids)), "a call is listed once"
        if ringer:
            assert snap["hook"] == "on"
            assert any(c["direction"] == "incoming" for c in snap["calls"])
        if not snap["calls"] and snap["hook"] == "on":
            assert phone.screen.kind in (
                "idle",
                "history",
                "phonebook",
                "volume",
                "menu",
                "messages",
                "message",
            )


# --- the SIP Call-ID in the record (the server joins both legs of a fleet call by it) ----------


def test_records_carry_the_sip_call_id_the_engine_reported_both_ways() -> None:
    d = Driver()
    place(d, "2001", 1)
    d(CallStateChanged(1, CallState.CONFIRMED, 200, codec="G722", sip_call_id="abc@pbx"))
    d(HookChanged(False))
    d(CallIncoming(2, 0, "sip:2002@pbx.example", "Bob", "def@10.0.0.2"))
    d(CallStateChanged(2, CallState.DISCONNECTED, 487, "Request Terminated"))
    assert [(r.direction, r.sip_call_id) for r in d.recorded] == [
        ("outgoing", "abc@pbx"),
        ("incoming", "def@10.0.0.2"),
    ]
