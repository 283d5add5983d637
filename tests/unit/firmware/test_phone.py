"""Phone state machine: events in, commands out. Each scenario is what a desk phone user expects."""

from __future__ import annotations

import itertools
import json

import pytest

from offhook.contract.config import parse_config
from offhook.firmware.events import (
    Answer,
    AttendedTransfer,
    CallIncoming,
    CallMediaChanged,
    CallQuality,
    CallState,
    CallStateChanged,
    CancelTimer,
    ClockTick,
    Conference,
    ConfigApplied,
    DeviceInfo,
    Hangup,
    Hold,
    HookChanged,
    KeyPressed,
    MakeCall,
    MessageWaiting,
    PlayTone,
    RecordCall,
    Redirect,
    RegistrationChanged,
    Reject,
    Render,
    SendDtmf,
    SetLed,
    SetMute,
    SetRinger,
    SetVolume,
    StartTimer,
    StopTone,
    TimerFired,
    Tone,
    Transfer,
    Unhold,
)
from offhook.firmware.phone import Phone

T0 = 1_700_000_000.0


def make_config(**sections):
    data = {
        "accounts": [{"user": "1001", "domain": "pbx.example", "voicemail": "*97"}],
        "dialplan": {"digit_map": "[2-9]xxx|0|00|911|112|1[2-9]xx[2-9]xxxxxx|011x.T|x.T"},
    }
    for name, values in sections.items():
        data[name] = values
    return parse_config(data)


class Driver:
    """Feeds events with a steadily advancing clock and keeps the commands of the last event."""

    def __init__(self, config=None) -> None:
        ids = (f"id{i}" for i in itertools.count())
        self.phone = Phone(config or make_config(), id_factory=lambda: next(ids))
        self.now = T0
        self.recorded: list = []  # every CallRecord so far, oldest first
        self.out = self.phone.start(self.now)

    def __call__(self, event, advance: float = 0.1):
        self.now += advance
        self.out = self.phone.handle(event, self.now)
        self.recorded += [c.record for c in self.out if isinstance(c, RecordCall)]
        return self.out

    def keys(self, text: str):
        collected = []
        for key in text:
            collected += self(KeyPressed(key))
        self.out = collected
        return collected

    def of(self, kind):
        return [c for c in self.out if isinstance(c, kind)]

    @property
    def lines(self):
        return self.phone.screen.lines

    def records(self):
        return [c.record for c in self.out if isinstance(c, RecordCall)]


def place(d: Driver, number: str, call_id: int = 1) -> None:
    """Off-hook, dial a complete number, engine reports the call as ringing."""
    d(HookChanged(True))
    d.keys(number)
    assert MakeCall(0, number) in d.out
    d(CallStateChanged(call_id, CallState.CALLING))
    d(CallStateChanged(call_id, CallState.EARLY, 180))


def talk(d: Driver, number: str = "2001", call_id: int = 1) -> None:
    place(d, number, call_id)
    d(CallStateChanged(call_id, CallState.CONFIRMED, 200, codec="G722"))


def ring(d: Driver, call_id: int = 7, uri: str = "sip:2002@pbx.example", name: str = "Bob"):
    return d(CallIncoming(call_id, 0, uri, name))


# --- start, off-hook, dial tone ------------------------------------------------------------------


def test_start_renders_idle_and_sets_leds() -> None:
    d = Driver()
    assert isinstance(d.out[-1], Render)
    assert d.phone.screen.kind == "idle"
    assert d.lines[:2] == ("1001", "Not registered")
    assert SetLed("mwi", "off") in d.out and SetLed("dnd", "off") in d.out


def test_offhook_plays_dial_tone_and_starts_offhook_timer() -> None:
    d = Driver()
    d(HookChanged(True))
    assert PlayTone(Tone.DIAL) in d.out
    assert StartTimer("offhook", 15.0) in d.out
    assert d.phone.screen.kind == "dialing"


def test_offhook_timeout_without_digits_gives_howler() -> None:
    d = Driver()
    d(HookChanged(True))
    d(TimerFired("offhook"), advance=15)
    assert d.out[0] == PlayTone(Tone.HOWLER)
    assert d.lines[0] == "Please hang up"
    d(HookChanged(False))
    assert StopTone() in d.out
    assert d.phone.screen.kind == "idle"


def test_message_waiting_gives_stutter_dial_tone_led_and_idle_line() -> None:
    d = Driver()
    d(MessageWaiting(0, True, new=2, old=1))
    assert SetLed("mwi", "blink") in d.out
    assert "2 new messages" in d.lines
    assert d.phone.screen.status["mwi"] == "2"
    d(HookChanged(True))
    assert PlayTone(Tone.STUTTER) in d.out
    d(HookChanged(False))
    d(MessageWaiting(0, False))
    assert SetLed("mwi", "off") in d.out
    assert d.phone.snapshot(d.now)["mwi"]["waiting"] is False


# --- digits and the dial plan ------------------------------------------------------------------


def test_first_digit_stops_tone_and_digits_are_shown() -> None:
    d = Driver()
    d(HookChanged(True))
    d(KeyPressed("2"))
    assert d.out[0] == StopTone()
    assert CancelTimer("offhook") in d.out
    assert StartTimer("interdigit", 4.0) in d.out
    d.keys("00")
    assert "200" in d.lines
    assert d.phone.snapshot(d.now)["dialing"] == "200"


def test_complete_number_is_sent_at_once() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("2001")
    assert MakeCall(0, "2001") in d.out
    assert CancelTimer("interdigit") in d.out
    assert d.lines[:2] == ("Calling", "2001")


def test_timed_pattern_sends_when_interdigit_timer_fires() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("01144")
    assert not d.of(MakeCall)
    d(TimerFired("interdigit"), advance=4)
    assert d.of(MakeCall) == [MakeCall(0, "01144")]


def test_stale_timer_is_ignored() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("2001")
    d(TimerFired("interdigit"))
    assert not d.of(MakeCall) and not d.of(PlayTone)


def test_no_matching_pattern_is_invalid_number_with_congestion() -> None:
    d = Driver(make_config(dialplan={"digit_map": "[2-9]xxx"}))
    d(HookChanged(True))
    d.keys("1")
    assert PlayTone(Tone.CONGESTION) in d.out
    assert d.lines[0] == "Invalid number"
    assert not d.of(MakeCall)
    d(TimerFired("howler"), advance=15)
    assert PlayTone(Tone.HOWLER) in d.out


def test_interdigit_timeout_on_incomplete_number_rejects() -> None:
    d = Driver(make_config(dialplan={"digit_map": "[2-9]xxx"}))
    d(HookChanged(True))
    d.keys("20")
    d(TimerFired("interdigit"), advance=4)
    assert PlayTone(Tone.CONGESTION) in d.out
    assert not d.of(MakeCall)


def test_hash_sends_what_was_dialled() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("0114420#")
    assert d.of(MakeCall) == [MakeCall(0, "0114420")]


def test_hash_is_a_digit_when_a_pattern_uses_it() -> None:
    d = Driver(make_config(dialplan={"digit_map": "*xx#|[2-9]xxx"}))
    d(HookChanged(True))
    d.keys("*72#")
    assert d.of(MakeCall) == [MakeCall(0, "*72#")]


def test_emergency_number_is_sent_immediately_even_when_map_would_wait() -> None:
    # "911" could still grow into 9112 under [2-9]xxx: emergency numbers do not wait.
    d = Driver(make_config(dialplan={"digit_map": "[2-9]xxx", "emergency_numbers": ["911"]}))
    d(KeyPressed("dnd"))
    d(HookChanged(True))
    d.keys("911")
    assert d.of(MakeCall) == [MakeCall(0, "911")]


def test_backspace_removes_last_digit() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("20")
    d(KeyPressed("cancel"))
    assert d.phone.snapshot(d.now)["dialing"] == "2"


def test_speed_dial_code_with_ok_calls_the_entry() -> None:
    d = Driver(make_config(phonebook=[{"name": "Alice", "number": "2005", "speed_dial": "5"}]))
    d(HookChanged(True))
    d.keys("5")
    d(KeyPressed("ok"))
    assert d.of(MakeCall) == [MakeCall(0, "2005")]
    assert d.lines == ("Calling", "Alice")


# --- outgoing calls ----------------------------------------------------------------------------


def test_outgoing_call_ringback_then_talking_screen_with_timer_codec_quality() -> None:
    d = Driver()
    place(d, "2001")
    assert PlayTone(Tone.RINGBACK) in d.out
    assert d.lines[0] == "Ringing"
    d(CallStateChanged(1, CallState.CONFIRMED, 200, remote_name="Carol", codec="G722"))
    assert StopTone() in d.out
    assert d.phone.screen.kind == "talking"
    assert d.lines[:3] == ("Carol", "2001", "00:00  G722")
    assert d.phone.screen.status["codec"] == "G722"
    d(ClockTick(), advance=65)
    assert d.lines[2] == "01:05  G722"
    d(CallQuality(1, "G722", jitter_ms=30, loss_pct=5, rtt_ms=200, mos=3.2))
    assert d.phone.screen.status["quality"] == "2"
    snap = d.phone.snapshot(d.now)
    assert snap["calls"][0]["state"] == "confirmed"
    assert snap["calls"][0]["duration_s"] == pytest.approx(65.1)
    json.dumps(snap)


def test_second_early_report_does_not_restart_ringback() -> None:
    d = Driver()
    place(d, "2001")
    d(CallStateChanged(1, CallState.EARLY, 183))
    assert not d.of(PlayTone)


def test_clock_tick_without_change_renders_nothing_new() -> None:
    d = Driver()
    d(ClockTick(), advance=0.1)
    assert not d.of(Render)
    d(ClockTick(), advance=120)
    assert d.of(Render)


@pytest.mark.parametrize(
    ("status", "tone", "title", "disposition"),
    [
        (486, Tone.BUSY, "Busy", "busy"),
        (600, Tone.BUSY, "Busy", "busy"),
        (404, Tone.CONGESTION, "Number not found", "failed"),
        (484, Tone.CONGESTION, "Number not found", "failed"),
        (604, Tone.CONGESTION, "Number not found", "failed"),
        (480, Tone.CONGESTION, "Unavailable", "no_answer"),
        (408, Tone.CONGESTION, "No answer", "no_answer"),
        (503, Tone.CONGESTION, "Service Unavailable", "failed"),
    ],
)
def test_failed_call_feedback(status, tone, title, disposition) -> None:
    d = Driver()
    place(d, "2001")
    reason = "Service Unavailable" if status == 503 else "x"
    d(CallStateChanged(1, CallState.DISCONNECTED, status, reason))
    assert PlayTone(tone) in d.out
    assert d.lines[0] == title
    (record,) = d.records()
    assert (record.disposition, record.status_code, record.direction) == (
        disposition,
        status,
        "outgoing",
    )
    assert StartTimer("howler", 15.0) in d.out


def test_remote_hangup_offhook_shows_call_ended_then_howler_idle_only_on_hangup() -> None:
    d = Driver()
    talk(d)
    d(CallStateChanged(1, CallState.DISCONNECTED, 200, "Normal"), advance=30)
    assert PlayTone(Tone.BUSY) in d.out
    assert d.lines[0] == "Call ended"
    (record,) = d.records()
    assert record.disposition == "answered" and record.end - record.answer == pytest.approx(30)
    d(TimerFired("howler"), advance=15)
    assert PlayTone(Tone.HOWLER) in d.out
    assert d.phone.screen.kind == "howler"
    d(HookChanged(False))
    assert d.phone.screen.kind == "idle"


def test_handset_down_hangs_up_and_records() -> None:
    d = Driver()
    talk(d)
    d(HookChanged(False))
    assert Hangup(1) in d.out and StopTone() in d.out
    (record,) = d.records()
    assert record.id == "id0" and record.disposition == "answered"
    assert record.local_uri == "sip:1001@pbx.example"
    assert d.phone.screen.kind == "idle"
    # the engine's own report of the end changes nothing
    d(CallStateChanged(1, CallState.DISCONNECTED, 200))
    assert not d.records()


def test_handset_down_before_engine_reported_call_id_still_hangs_it_up() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("2001")
    d(HookChanged(False))
    assert d.records()[0].disposition == "no_answer"
    d(CallStateChanged(9, CallState.CALLING))
    assert d.out[0] == Hangup(9)


def test_redial_and_voicemail_keys() -> None:
    d = Driver()
    talk(d, "2001")
    d(HookChanged(False))
    d(HookChanged(True))
    d(KeyPressed("redial"))
    assert MakeCall(0, "2001") in d.out
    d(HookChanged(False))
    d(HookChanged(True))
    d(KeyPressed("voicemail"))
    assert MakeCall(0, "*97") in d.out


# --- incoming calls ----------------------------------------------------------------------------


def test_incoming_rings_shows_caller_and_answers_on_lift() -> None:
    d = Driver()
    ring(d)
    assert PlayTone(Tone.RING) in d.out and SetRinger(True) in d.out
    assert SetLed("line1", "fast_blink") in d.out
    assert d.lines == ("Incoming call", "Bob", "2002")
    d(HookChanged(True))
    assert Answer(7) in d.out and SetRinger(False) in d.out and StopTone() in d.out
    assert not d.of(MakeCall) and PlayTone(Tone.DIAL) not in d.out
    d(CallStateChanged(7, CallState.CONFIRMED, 200))
    assert d.phone.screen.kind == "talking"
    d(HookChanged(False))
    assert Hangup(7) in d.out
    assert d.records()[0].disposition == "answered"
    assert d.phone.snapshot(d.now)["history"][0]["kind"] == "received"


def test_caller_gives_up_is_missed_and_counted_on_idle() -> None:
    d = Driver()
    ring(d)
    d(CallStateChanged(7, CallState.DISCONNECTED, 487, "Request Terminated"))
    assert StopTone() in d.out and SetRinger(False) in d.out
    assert d.records()[0].disposition == "missed"
    assert d.phone.screen.kind == "idle"
    assert "1 missed call" in d.lines
    assert d.phone.snapshot(d.now)["history"][0]["kind"] == "missed"


def test_cancel_on_ringing_call_declines() -> None:
    d = Driver()
    ring(d)
    d(KeyPressed("cancel"))
    assert Reject(7, 603) in d.out and SetRinger(False) in d.out
    assert d.phone.screen.kind == "idle"


def test_dnd_rejects_with_480_and_toggles_led() -> None:
    d = Driver()
    d(KeyPressed("dnd"))
    assert SetLed("dnd", "on") in d.out
    assert "Do not disturb" in d.lines
    ring(d)
    assert d.out[0] == Reject(7, 480)
    assert not d.of(PlayTone) and not d.of(SetRinger)
    assert d.records()[0].disposition == "rejected"
    d(KeyPressed("dnd"))
    assert SetLed("dnd", "off") in d.out


def test_dnd_from_config() -> None:
    d = Driver(make_config(features={"dnd": True}))
    ring(d)
    assert d.out[0] == Reject(7, 480)


def test_forward_always_redirects_at_once() -> None:
    d = Driver(make_config(features={"forward_always": "3000"}))
    ring(d)
    assert d.out[0] == Redirect(7, "3000")
    assert not d.of(PlayTone)
    assert d.records()[0].status_code == 302


def test_forward_busy_when_line_in_use_and_no_call_waiting() -> None:
    d = Driver(make_config(features={"forward_busy": "3000", "call_waiting": False}))
    talk(d)
    ring(d, call_id=8)
    assert d.out[0] == Redirect(8, "3000")


def test_busy_without_call_waiting_rejects_486() -> None:
    d = Driver(make_config(features={"call_waiting": False}))
    talk(d)
    ring(d, call_id=8)
    assert d.out[0] == Reject(8, 486)
    assert not d.of(PlayTone)


def test_incoming_while_dialling_is_busy() -> None:
    d = Driver()
    d(HookChanged(True))
    ring(d, call_id=8)
    assert d.out[0] == Reject(8, 486)


def test_forward_no_answer_after_timer() -> None:
    d = Driver(make_config(features={"forward_no_answer": "3000", "forward_no_answer_s": 10}))
    ring(d)
    assert StartTimer("no_answer:7", 10) in d.out
    d(TimerFired("no_answer:7"), advance=10)
    assert Redirect(7, "3000") in d.out
    assert SetRinger(False) in d.out
    assert d.phone.screen.kind == "idle"


def test_answering_cancels_no_answer_timer() -> None:
    d = Driver(make_config(features={"forward_no_answer": "3000"}))
    ring(d)
    d(HookChanged(True))
    assert CancelTimer("no_answer:7") in d.out
    d(TimerFired("no_answer:7"))
    assert not d.of(Redirect)


def test_auto_answer() -> None:
    d = Driver(make_config(features={"auto_answer": True}))
    ring(d)
    assert Answer(7) in d.out
    assert not d.of(SetRinger) or SetRinger(True) not in d.out


# --- features during a call ---------------------------------------------------------------------


def test_digits_during_call_send_dtmf() -> None:
    d = Driver()
    talk(d)
    d.keys("5#")
    assert d.out == [SendDtmf(1, "5"), SendDtmf(1, "#")]


def test_hold_toggles() -> None:
    d = Driver()
    talk(d)
    d(KeyPressed("hold"))
    assert Hold(1) in d.out
    assert d.phone.screen.kind == "held"
    assert SetLed("line1", "blink") in d.out
    assert d.phone.snapshot(d.now)["calls"][0]["state"] == "held"
    d(KeyPressed("hold"))
    assert Unhold(1) in d.out
    assert d.phone.screen.kind == "talking"


def test_mute_toggles_and_resets_after_call() -> None:
    d = Driver()
    talk(d)
    d(KeyPressed("mute"))
    assert SetMute(True) in d.out and SetLed("mute", "on") in d.out
    d(HookChanged(False))
    assert SetMute(False) in d.out


def test_call_waiting_beep_answer_with_hold_then_swap() -> None:
    d = Driver()
    talk(d)
    ring(d, call_id=8, name="Dave")
    assert d.out[0] == PlayTone(Tone.CALL_WAITING)
    assert not d.of(SetRinger)
    assert "Waiting: Dave" in d.lines
    d(KeyPressed("hold"))
    assert d.out[:3] == [Hold(1), StopTone(), Answer(8)]
    d(CallStateChanged(8, CallState.CONFIRMED, 200))
    assert d.lines[0] == "Dave"
    d(KeyPressed("hold"))
    assert d.out[:2] == [Hold(8), Unhold(1)]


def test_waiting_caller_gives_up() -> None:
    d = Driver()
    talk(d)
    ring(d, call_id=8)
    d(CallStateChanged(8, CallState.DISCONNECTED, 487))
    assert StopTone() in d.out
    assert d.records()[0].disposition == "missed"
    assert d.phone.screen.kind == "talking"


def test_hanging_up_with_a_waiting_call_makes_it_ring() -> None:
    d = Driver()
    talk(d)
    ring(d, call_id=8)
    d(HookChanged(False))
    assert Hangup(1) in d.out and Hangup(8) not in d.out
    assert PlayTone(Tone.RING) in d.out and SetRinger(True) in d.out
    d(HookChanged(True))
    assert Answer(8) in d.out


def test_blind_transfer() -> None:
    d = Driver()
    talk(d, call_id=0)  # pjsua2 numbers calls from 0
    d(KeyPressed("transfer"))
    assert Hold(0) in d.out
    assert d.lines[0] == "Transfer to:"
    d.keys("3005")
    assert "3005" in d.lines
    d(KeyPressed("#"))
    assert d.out[0] == Transfer(0, "3005")
    d(CallStateChanged(0, CallState.DISCONNECTED, 200))
    assert d.lines[0] == "Call transferred"
    assert not d.of(PlayTone)


def test_transfer_cancel_resumes() -> None:
    d = Driver()
    talk(d)
    d(KeyPressed("transfer"))
    d(KeyPressed("cancel"))
    assert Unhold(1) in d.out
    assert d.phone.screen.kind == "talking"


def test_consult_call_then_attended_transfer() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(KeyPressed("hold"))
    d.keys("3005")
    assert MakeCall(0, "3005") in d.out
    d(CallStateChanged(2, CallState.CALLING))
    d(CallStateChanged(2, CallState.CONFIRMED, 200))
    assert "Hold: 2001" in d.lines
    d(KeyPressed("transfer"))
    assert AttendedTransfer(1, 2) in d.out


def test_conference_merges_held_and_active() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(KeyPressed("hold"))
    d.keys("3005")
    d(CallStateChanged(2, CallState.CONFIRMED, 200))
    d(KeyPressed("conference"))
    assert Unhold(1) in d.out and Conference((1, 2)) in d.out
    assert d.phone.screen.kind == "conference"
    d(CallStateChanged(2, CallState.DISCONNECTED, 200))
    assert d.phone.screen.kind == "talking"
    assert d.lines[0] == "2001"


# --- registration, config, browsing ------------------------------------------------------------


def test_registration_shown_on_idle() -> None:
    d = Driver()
    d(RegistrationChanged(0, True, 200))
    assert d.lines[1] == "Registered"
    d(RegistrationChanged(0, False, 403, "Forbidden"))
    assert d.lines[1] == "No service 403 Forbidden"
    reg = d.phone.snapshot(d.now)["registration"]
    assert reg == [{"account": 0, "user": "1001", "registered": False, "status": 403}]


def test_config_applied_changes_dial_plan_and_accounts() -> None:
    d = Driver()
    new = make_config(
        accounts=[{"user": "1500", "domain": "pbx.example"}], dialplan={"digit_map": "xx"}
    )
    d(ConfigApplied(new))
    assert d.lines[0] == "1500"
    d(HookChanged(True))
    d.keys("42")
    assert MakeCall(0, "42") in d.out


def test_config_applied_rejects_wrong_type() -> None:
    d = Driver()
    with pytest.raises(TypeError, match="PhoneConfig"):
        d(ConfigApplied({"not": "a config"}))


def test_history_browse_and_dial() -> None:
    d = Driver()
    ring(d, call_id=7, name="Bob")
    d(CallStateChanged(7, CallState.DISCONNECTED, 487))
    talk(d, "2001", call_id=1)
    d(HookChanged(False))
    d(KeyPressed("history"))
    assert d.lines[0] == "History"
    assert d.lines[1] == "> >22:13 2001 0:00"  # kind, time, name, how long it lasted
    assert d.lines[2] == "  !22:13 Bob"
    d(KeyPressed("down"))
    d(KeyPressed("ok"))
    assert MakeCall(0, "2002") in d.out
    assert "missed" not in " ".join(d.lines)


def test_phonebook_browse() -> None:
    d = Driver(
        make_config(phonebook=[{"name": "Alice", "number": "2005"}, {"name": "Zed", "number": "9"}])
    )
    d(KeyPressed("phonebook"))
    assert d.lines == ("Contacts", "> Alice", "  Zed")
    d(KeyPressed("up"))
    assert d.lines[2] == "> Zed"
    d(KeyPressed("cancel"))
    assert d.phone.screen.kind == "idle"


def test_history_keeps_last_50() -> None:
    d = Driver()
    for i in range(55):
        ring(d, call_id=100 + i)
        d(CallStateChanged(100 + i, CallState.DISCONNECTED, 487))
    assert len(d.phone.snapshot(d.now)["history"]) == 50


def test_default_ids_are_uuid_hex() -> None:
    phone = Phone(make_config())
    phone.start(T0)
    out = phone.handle(CallIncoming(1, 0, "sip:2@x", ""), T0)
    out += phone.handle(CallStateChanged(1, CallState.DISCONNECTED, 487), T0 + 1)
    (rec,) = [c.record for c in out if isinstance(c, RecordCall)]
    assert len(rec.id) == 32 and int(rec.id, 16) >= 0


# --- softkeys and ending a call without hanging up ------------------------------------------------


def test_softkeys_follow_their_labels() -> None:
    d = Driver()
    assert d.phone.screen.softkeys == ("Calls", "Dir", "DND", "Texts")
    d(KeyPressed("softkey3"))
    assert SetLed("dnd", "on") in d.out
    d(KeyPressed("softkey1"))
    assert d.phone.screen.kind == "history"
    d(KeyPressed("softkey1"))  # Back
    assert d.phone.screen.kind == "idle"
    d(KeyPressed("softkey2"))
    assert d.phone.screen.kind == "phonebook"
    d(KeyPressed("softkey1"))  # Back
    d(KeyPressed("softkey4"))
    assert d.phone.screen.kind == "messages"
    d(KeyPressed("softkey1"))  # Back
    assert d.phone.screen.kind == "idle"
    d(KeyPressed("softkey3"))  # DND off again
    ring(d)
    d(KeyPressed("softkey4"))  # no fourth label while ringing: nothing happens
    assert d.out == []


def test_answer_softkey_on_ringing_call() -> None:
    d = Driver()
    ring(d)
    assert d.phone.screen.softkeys == ("Reject", "", "Answer")
    d(KeyPressed("softkey3"))
    assert Answer(7) in d.out


def test_end_softkey_hangs_up_and_gives_dial_tone_with_handset_up() -> None:
    d = Driver()
    talk(d)
    assert d.phone.screen.softkeys == ("Hold", "Xfer", "End")
    d(KeyPressed("softkey3"))
    assert Hangup(1) in d.out and PlayTone(Tone.DIAL) in d.out
    assert d.records()[0].disposition == "answered"
    assert d.phone.screen.kind == "dialing"


def test_end_while_calling_abandons_the_attempt() -> None:
    d = Driver()
    d(HookChanged(True))
    d.keys("2001")
    d(KeyPressed("cancel"))
    assert d.records()[0].disposition == "no_answer"
    assert d.phone.screen.kind == "dialing"
    d(CallStateChanged(4, CallState.CALLING))
    assert d.out[0] == Hangup(4)


def test_end_in_conference_hangs_up_everyone() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(KeyPressed("hold"))
    d.keys("3005")
    d(CallStateChanged(2, CallState.CONFIRMED, 200))
    d(KeyPressed("conference"))
    d(KeyPressed("cancel"))
    assert Hangup(1) in d.out and Hangup(2) in d.out
    assert len(d.records()) == 2


def test_handset_down_while_outgoing_call_rings() -> None:
    d = Driver()
    place(d, "2001")
    d(HookChanged(False))
    assert Hangup(1) in d.out and StopTone() in d.out
    assert d.records()[0].disposition == "no_answer"
    assert d.phone.screen.kind == "idle"


def test_remote_hold_is_shown() -> None:
    d = Driver()
    talk(d)
    d(CallMediaChanged(1, held_remotely=True))
    assert "Held by remote" in d.lines


def test_incoming_call_while_browsing_on_hook_rings() -> None:
    d = Driver()
    d(KeyPressed("phonebook"))
    ring(d)
    assert d.phone.screen.kind == "incoming"


def test_history_restored_after_restart() -> None:
    first = Driver()
    ring(first, call_id=1, name="Bob")
    first(CallStateChanged(1, CallState.DISCONNECTED, 487))
    talk(first, "2001", call_id=2)
    first(HookChanged(False))
    phone = Phone(make_config(), history=first.recorded)
    phone.start(T0)
    assert [h["kind"] for h in phone.snapshot(T0)["history"]] == ["dialled", "missed"]
    assert "missed" not in " ".join(phone.screen.lines), "old missed calls are not news"


def test_failed_consultation_call_goes_back_to_the_held_caller() -> None:
    d = Driver(make_config(dialplan={"digit_map": "[2-9]xxx"}))
    talk(d, "2001", call_id=0)
    d(KeyPressed("hold"))
    d.keys("1")  # no such number
    assert PlayTone(Tone.CONGESTION) in d.out
    d(KeyPressed("hold"))
    assert Unhold(0) in d.out and StopTone() in d.out
    assert d.phone.screen.kind == "talking"


def test_busy_consultation_call_leaves_the_first_call_on_hold() -> None:
    d = Driver()
    talk(d, "2001", call_id=1)
    d(KeyPressed("hold"))
    d.keys("3005")
    d(CallStateChanged(2, CallState.DISCONNECTED, 486, "Busy Here"))
    assert PlayTone(Tone.BUSY) in d.out
    assert d.lines == ("Busy", "486 Busy Here", "Hold: 2001")
    assert not d.of(StartTimer), "no howler while a caller waits on hold"
    d(KeyPressed("softkey1"))  # Resume
    assert Unhold(1) in d.out and StopTone() in d.out
    assert d.phone.screen.kind == "talking"


def test_line_key_picks_the_account_for_the_next_call() -> None:
    accounts = [
        {"user": "1001", "domain": "pbx.example"},
        {"user": "2001", "domain": "other.example", "display_name": "Sales"},
    ]
    d = Driver(make_config(accounts=accounts))
    d(RegistrationChanged(1, True, 200))
    assert d.lines[0] == "1001"
    d(KeyPressed("line2"))
    assert d.phone.screen.status["line"] == "Sales" and d.lines[1] == "Registered"
    d(HookChanged(True))
    d.keys("2001")
    assert MakeCall(1, "2001") in d.out
    d(CallStateChanged(3, CallState.DISCONNECTED, 486))
    assert d.records()[0].local_uri == "sip:2001@other.example"
    d(HookChanged(False))
    assert d.phone.screen.status["line"] == "1001", "back to line 1 after the call"
    d(KeyPressed("line2"))
    d(ConfigApplied(make_config(accounts=accounts[:1])))
    d(HookChanged(True))
    d.keys("2001")
    assert MakeCall(0, "2001") in d.out, "a line that is gone is not used"


def test_call_record_carries_the_engine_call_id() -> None:
    d = Driver()
    talk(d, "2001", call_id=42)
    d(HookChanged(False))
    ring(d, call_id=43)
    d(KeyPressed("cancel"))
    assert [(r.call_id, r.disposition) for r in d.recorded] == [(42, "answered"), (43, "rejected")]


def test_changed_account_forgets_its_registration_until_it_registers_again() -> None:
    two = {
        "accounts": [
            {"user": "1001", "domain": "pbx.example", "password": "old"},
            {"user": "1002", "domain": "pbx.example", "password": "same"},
        ]
    }
    d = Driver(make_config(**two))
    d(RegistrationChanged(0, True, 200))
    d(RegistrationChanged(1, True, 200))
    d(MessageWaiting(0, True, 2, 0))
    new_password = [{**two["accounts"][0], "password": "new"}, two["accounts"][1]]
    d(ConfigApplied(make_config(accounts=new_password)))
    reg = d.phone.snapshot(d.now)["registration"]
    assert [(r["registered"], r["status"]) for r in reg] == [(False, 0), (True, 200)]
    assert d.phone.snapshot(d.now)["mwi"]["waiting"] is False
    d(RegistrationChanged(0, False, 403, "Forbidden"))
    assert "No service 403 Forbidden" in d.lines
    # an apply that leaves the accounts alone keeps their state
    d(ConfigApplied(make_config(accounts=new_password, features={"dnd": True})))
    reg = d.phone.snapshot(d.now)["registration"]
    assert [(r["registered"], r["status"]) for r in reg] == [(False, 403), (True, 200)]


# --- volume keys ---------------------------------------------------------------------------------


def test_start_applies_kept_volumes_and_snapshot_reports_them() -> None:
    d = Driver()
    assert SetVolume("speaker", 80) in d.out and SetVolume("ring", 80) in d.out
    phone = Phone(make_config(), volumes={"speaker": 30, "ring": 200})  # 200: not a level
    out = phone.start(T0)
    assert SetVolume("speaker", 30) in out and SetVolume("ring", 80) in out
    assert phone.snapshot(T0)["volume"] == {"speaker": 30, "ring": 80}


def test_volume_keys_idle_change_ring_volume_with_a_brief_bar() -> None:
    d = Driver()
    d(KeyPressed("vol_down"))
    assert d.of(SetVolume) == [SetVolume("ring", 70)]
    assert StartTimer("volume", 2.0) in d.out
    assert d.phone.screen.kind == "volume"
    assert d.lines == ("Ring volume", "[#######---]", "70%")
    d(TimerFired("volume"))
    assert d.phone.screen.kind == "idle"
    for _ in range(4):
        d(KeyPressed("vol_up"))
    assert d.phone.snapshot(d.now)["volume"]["ring"] == 100  # capped
    assert d.of(SetVolume) == []  # already at 100: nothing to change
    assert d.lines[2] == "100%"


def test_volume_keys_in_a_call_or_offhook_change_speaker_volume_and_ringing_the_ringer() -> None:
    d = Driver()
    d(HookChanged(True))
    d(KeyPressed("vol_up"))
    assert d.of(SetVolume) == [SetVolume("speaker", 90)]
    d(KeyPressed("5"))  # any other key: the bar gives way to the dialling screen
    assert d.phone.screen.kind == "dialing" and CancelTimer("volume") in d.out
    d(HookChanged(False))
    ring(d)
    d(KeyPressed("vol_down"))
    assert d.of(SetVolume) == [SetVolume("ring", 70)]
    d(HookChanged(True))
    d(CallStateChanged(7, CallState.CONFIRMED, 200))
    d(KeyPressed("vol_down"))
    assert d.of(SetVolume) == [SetVolume("speaker", 80)]
    assert d.lines[0] == "Speaker volume"
    d(TimerFired("volume"))
    assert d.phone.screen.kind == "talking"


def test_config_volume_change_wins_over_the_users_level() -> None:
    d = Driver()
    d(KeyPressed("vol_down"))
    d(ConfigApplied(make_config(features={"dnd": True})))
    assert d.of(SetVolume) == []  # the administrator did not touch the volumes
    d(ConfigApplied(make_config(audio={"ring_volume": 40})))
    assert d.of(SetVolume) == [SetVolume("ring", 40)]
    assert d.phone.snapshot(d.now)["volume"] == {"speaker": 80, "ring": 40}


# --- speakerphone --------------------------------------------------------------------------------


def test_speaker_key_goes_offhook_handsfree_and_hangs_up_when_pressed_again() -> None:
    d = Driver()
    d(KeyPressed("speaker"))
    assert PlayTone(Tone.DIAL) in d.out and SetLed("speaker", "on") in d.out
    snap = d.phone.snapshot(d.now)
    assert (snap["hook"], snap["handset"], snap["audio_path"]) == ("off", "down", "speaker")
    d.keys("2001")
    assert MakeCall(0, "2001") in d.out
    d(CallStateChanged(1, CallState.CALLING))
    d(CallStateChanged(1, CallState.CONFIRMED, 200))
    d(KeyPressed("speaker"))
    assert Hangup(1) in d.out and SetLed("speaker", "off") in d.out
    assert d.phone.snapshot(d.now)["audio_path"] == "none"
    assert d.phone.screen.kind == "idle"
    assert [r.disposition for r in d.recorded] == ["answered"]


def test_lifting_the_handset_during_handsfree_keeps_the_call() -> None:
    d = Driver()
    ring(d)
    d(KeyPressed("speaker"))  # answers hands-free
    assert Answer(7) in d.out and SetRinger(False) in d.out
    d(CallStateChanged(7, CallState.CONFIRMED, 200))
    d(HookChanged(True))
    assert not d.of(Hangup) and SetLed("speaker", "off") in d.out
    assert d.phone.snapshot(d.now)["audio_path"] == "handset"
    assert d.phone.screen.kind == "talking"
    d(HookChanged(False))  # the handset now owns the call: down hangs up
    assert Hangup(7) in d.out


def test_handset_down_while_handsfree_does_not_hang_up() -> None:
    d = Driver()
    talk(d)
    d(KeyPressed("speaker"))  # handset still up: move the call to the speaker
    assert not d.of(Hangup) and d.phone.snapshot(d.now)["audio_path"] == "speaker"
    d(HookChanged(False))
    assert not d.of(Hangup) and not d.of(StopTone)
    assert d.phone.screen.kind == "talking"
    d(CallStateChanged(1, CallState.DISCONNECTED, 200))  # the far end hangs up
    assert d.phone.screen.kind == "idle" and d.phone.snapshot(d.now)["hook"] == "on"
    assert not d.of(StartTimer)  # no howler for a loudspeaker


def test_handsfree_dial_tone_times_out_to_idle_not_howler() -> None:
    d = Driver()
    d(KeyPressed("speaker"))
    d(TimerFired("offhook"))
    assert PlayTone(Tone.HOWLER) not in d.out
    assert d.phone.snapshot(d.now)["audio_path"] == "none" and d.phone.screen.kind == "idle"


# --- status menu ---------------------------------------------------------------------------------


def selected(d: Driver) -> str:
    return next(line for line in d.lines if line.startswith("> "))


def test_menu_shows_device_status_and_navigates() -> None:
    config = make_config(provisioning={"url": "https://prov.example"})
    d = Driver(config)
    d(DeviceInfo(("192.0.2.7", "fd00::7"), "1.2.3", (("tcp", 5070), ("udp", 5060))))
    d(RegistrationChanged(0, False, 403, "Forbidden"))
    d(KeyPressed("menu"))
    assert d.phone.screen.kind == "menu"
    assert d.lines == ("Status", "> IP 192.0.2.7", "  IP fd00::7", "  Version 1.2.3")
    d(KeyPressed("up"))  # wraps to the last row: the admin settings
    assert d.lines[-1] == "> Settings (admin)"
    d(KeyPressed("up"))
    assert d.lines[-2] == "> Vol spk 80 ring 80"
    d(KeyPressed("vol_down"))  # the volume keys still work; the menu follows
    d(TimerFired("volume"))
    assert d.lines[-2] == "> Vol spk 80 ring 70"
    d(KeyPressed("up"))
    assert selected(d) == "> Prov https://prov.example"
    d(KeyPressed("ok"))  # the whole text of the row, wrapped for the panel
    assert d.lines == ("Provisioning server:", "https://prov.example")
    d(KeyPressed("cancel"))
    d(KeyPressed("up"))
    assert selected(d) == "> SIP tcp 5070 udp 5060"
    d(KeyPressed("up"))
    assert selected(d) == "> L1 1001 fail 403"
    d(KeyPressed("softkey3"))  # "Open"
    assert d.lines == ("Line 1:", "1001@pbx.example fail", "403 Forbidden")
    d(KeyPressed("cancel"))
    d(KeyPressed("cancel"))
    assert d.phone.screen.kind == "idle"


def test_menu_without_device_info_and_lifting_the_handset_leaves_it() -> None:
    d = Driver()
    d(KeyPressed("menu"))
    assert d.lines[1:3] == ("> IP none", "  Version unknown")
    d(HookChanged(True))
    assert d.phone.screen.kind == "dialing" and PlayTone(Tone.DIAL) in d.out
