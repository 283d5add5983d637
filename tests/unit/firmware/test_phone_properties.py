"""Any sequence of events, however odd, leaves the Phone consistent (property-based)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offhook.contract.config import parse_config
from offhook.firmware.events import (
    DIGIT_KEYS,
    FUNCTION_KEYS,
    CallIncoming,
    CallQuality,
    CallState,
    CallStateChanged,
    ClockTick,
    Hangup,
    HookChanged,
    KeyPressed,
    MessageWaiting,
    PlayTone,
    RecordCall,
    RegistrationChanged,
    Render,
    SetRinger,
    TimerFired,
)
from offhook.firmware.phone import Phone

CALL_IDS = st.integers(min_value=0, max_value=3)
EVENTS = st.one_of(
    st.builds(HookChanged, st.booleans()),
    st.builds(KeyPressed, st.sampled_from(sorted(DIGIT_KEYS | FUNCTION_KEYS))),
    st.builds(KeyPressed, st.sampled_from(["2", "0", "1", "#", "hold", "ok", "cancel", "speaker"])),
    st.builds(CallIncoming, CALL_IDS, st.just(0), st.just("sip:2002@pbx"), st.just("Bob")),
    st.builds(
        CallStateChanged,
        CALL_IDS,
        st.sampled_from(list(CallState)),
        st.sampled_from([0, 180, 200, 404, 408, 480, 486, 487, 503, 603]),
    ),
    st.builds(
        TimerFired,
        st.sampled_from(["offhook", "interdigit", "howler", "no_answer:0", "no_answer:1",
                         "volume"]),
    ),
    st.builds(ClockTick),
    st.builds(MessageWaiting, st.just(0), st.booleans(), st.integers(0, 3)),
    st.builds(RegistrationChanged, st.just(0), st.booleans(), st.sampled_from([200, 403, 408])),
    st.builds(CallQuality, CALL_IDS, st.just("PCMU"), st.just(5.0), st.just(0.0), st.just(50.0),
              st.floats(1.0, 4.5)),
)  # fmt: skip

CONFIG = parse_config(
    {
        "accounts": [{"user": "1001", "domain": "pbx.example", "voicemail": "*97"}],
        "features": {"forward_no_answer": "3000"},
        "phonebook": [{"name": "Alice", "number": "2005", "speed_dial": "5"}],
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENTS, max_size=40))
def test_any_event_sequence_keeps_the_phone_consistent(events) -> None:
    phone = Phone(CONFIG)
    now = 1_700_000_000.0
    phone.start(now)
    record_ids: set[str] = set()
    ringer = False
    for event in events:
        now += 1.0
        path_before = phone.snapshot(now)["audio_path"]
        out = phone.handle(event, now)
        for command in out:
            if isinstance(command, RecordCall):
                assert command.record.id not in record_ids
                record_ids.add(command.record.id)
                assert command.record.end >= command.record.start
        for command in out:
            if isinstance(command, SetRinger):
                ringer = command.on
        renders = [c for c in out if isinstance(c, Render)]
        assert len(renders) <= 1
        snap = phone.snapshot(now)
        json.dumps(snap)
        assert snap["screen"] == list(phone.screen.lines)
        live = {c["id"] for c in snap["calls"]}
        if ringer:
            assert snap["hook"] == "on", "the ringer stops when the handset is lifted"
            assert any(c["direction"] == "incoming" for c in snap["calls"]), "rings for a call"
        assert len(live) == len(snap["calls"]), "a call is listed once"
        if isinstance(event, HookChanged) and not event.offhook and path_before == "speaker":
            # Handset down while hands-free: the calls go on.
            assert not any(isinstance(c, Hangup) for c in out)
            assert snap["audio_path"] == "speaker"
        if isinstance(event, HookChanged) and not event.offhook and path_before == "handset":
            # Handset down: nothing is left but a call that now rings.
            assert len(snap["calls"]) <= 1
            assert all(c["direction"] == "incoming" for c in snap["calls"])
            hung_up = {c.call_id for c in out if isinstance(c, Hangup)}
            assert not hung_up & live
            assert not any(isinstance(c, PlayTone) and c.tone.value != "ring" for c in out)
        if not snap["calls"] and snap["hook"] == "on":
            idle_kinds = ("idle", "history", "phonebook", "volume", "menu")
            features = ("directory", "settings", "trust", "messages", "message")
            assert phone.screen.kind in (*idle_kinds, *features)
            assert SetRinger(True) not in out
    assert len(snap["history"]) <= 50 if events else True
