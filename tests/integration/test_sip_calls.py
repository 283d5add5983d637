"""Calls between the SipEngine and baresip through real Kamailio."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from offhook.firmware.events import (
    Answer,
    CallIncoming,
    CallMediaChanged,
    CallQuality,
    CallState,
    CallStateChanged,
    Hangup,
    Hold,
    MakeCall,
    Reject,
    Ringing,
    SendDtmf,
    Transfer,
    Unhold,
)
from offhook.firmware.sip import SipEngine
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import EventRecorder, account, phone_config, running_engine
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.integration.sip_peers import media_change_after, peer, place_call

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Phone = tuple[SipEngine, EventRecorder]


@pytest.fixture
def phone(kamailio_server: KamailioServer) -> Iterator[Phone]:  # noqa: F811
    with running_engine(phone_config(kamailio_server, [account(kamailio_server, "1001")])) as p:
        yield p


class CallTo1002(NamedTuple):
    engine: SipEngine
    events: EventRecorder
    far: BaresipPeer
    confirmed: CallStateChanged


@pytest.fixture
def call_to_1002(
    phone: Phone,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> Iterator[CallTo1002]:
    """The engine's call to baresip 1002, confirmed on the engine's side."""
    engine, events = phone
    with peer(kamailio_server, tmp_path, "1002") as far:
        yield CallTo1002(engine, events, far, place_call(engine, events, "1002"))


def test_call_to_baresip_connects_and_hangs_up(call_to_1002: CallTo1002) -> None:
    engine, events, far, confirmed = call_to_1002
    assert confirmed.status_code == 200
    assert confirmed.codec in ("G722", "PCMU", "PCMA")
    assert "1002@" in confirmed.remote_uri
    far.wait_event("CALL_ESTABLISHED")
    (info,) = engine.calls_info()
    assert info["id"] == confirmed.call_id and info["state"] == "confirmed"
    quality = events.wait_for(lambda e: isinstance(e, CallQuality), timeout=5)
    assert quality.codec == confirmed.codec and 1.0 <= quality.mos <= 4.5
    mark = events.mark()
    engine.submit(Hangup(confirmed.call_id))
    events.wait_call_state(CallState.DISCONNECTED, confirmed.call_id, start=mark)
    far.wait_event("CALL_CLOSED")
    assert engine.calls_info() == []


def test_incoming_call_shows_caller_and_can_be_answered(
    phone: Phone,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, events = phone
    with peer(kamailio_server, tmp_path, "1002", display_name="Bob Builder") as far:
        far.dial(f"sip:1001@{kamailio_server.domain}")
        incoming = events.wait_for(lambda e: isinstance(e, CallIncoming))
        assert incoming.remote_name == "Bob Builder"
        assert incoming.remote_uri.startswith("sip:1002@")
        assert incoming.account == 0
        engine.submit(Ringing(incoming.call_id))  # the Phone's decision: this call rings
        far.wait_event("CALL_RINGING")
        engine.submit(Answer(incoming.call_id))
        events.wait_call_state(CallState.CONFIRMED, incoming.call_id)
        far.wait_event("CALL_ESTABLISHED")


def test_rejecting_an_incoming_call_sends_the_given_code(
    phone: Phone,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, events = phone
    with peer(kamailio_server, tmp_path, "1002") as far:
        far.dial(f"sip:1001@{kamailio_server.domain}")
        incoming = events.wait_for(lambda e: isinstance(e, CallIncoming))
        engine.submit(Reject(incoming.call_id, 603))
        closed = far.wait_event("CALL_CLOSED")
        ended = events.wait_call_state(CallState.DISCONNECTED, incoming.call_id)
    assert "603" in str(closed.get("param"))
    assert ended.status_code == 603


def test_busy_far_end_gives_486(
    phone: Phone,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, events = phone
    with peer(kamailio_server, tmp_path, "1002", answermode="manual") as far:
        engine.submit(MakeCall(0, "1002"))
        far.wait_event("CALL_INCOMING")
        far.hangup()  # baresip rejects a ringing call with 486
        ended = events.wait_call_state(CallState.DISCONNECTED)
    assert ended.status_code == 486


def test_unknown_number_gives_404(phone: Phone) -> None:
    engine, events = phone
    engine.submit(MakeCall(0, "1099"))
    ended = events.wait_call_state(CallState.DISCONNECTED)
    assert ended.status_code == 404


def test_unusable_dial_target_is_reported_without_a_call(phone: Phone) -> None:
    engine, events = phone
    engine.submit(MakeCall(0, "12 34"))
    ended = events.wait_call_state(CallState.DISCONNECTED)
    assert ended.call_id == -1 and "12 34" in ended.reason
    engine.submit(MakeCall(5, "1002"))
    ended = events.wait_for(lambda e: isinstance(e, CallStateChanged) and "account 5" in e.reason)
    assert ended.call_id == -1


def test_dtmf_digits_reach_baresip(call_to_1002: CallTo1002) -> None:
    engine, _events, far, call = call_to_1002
    far.wait_event("CALL_ESTABLISHED")
    engine.submit(SendDtmf(call.call_id, "147*0#"))
    deadline = time.monotonic() + 10
    while far.received_dtmf() != "147*0#" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert far.received_dtmf() == "147*0#"


@pytest.mark.parametrize("side", ["local", "far_end"])
def test_hold_and_resume_renegotiate_media(side: str, call_to_1002: CallTo1002) -> None:
    """Hold then resume, from the engine (``local``) or by the far end: each is reported."""
    engine, events, far, call = call_to_1002
    far.wait_event("CALL_ESTABLISHED")
    if side == "local":
        hold, resume = Hold(call.call_id), Unhold(call.call_id)
        held = media_change_after(events, lambda: engine.submit(hold))
        resumed = media_change_after(events, lambda: engine.submit(resume))
    else:
        held = media_change_after(events, lambda: far.command("hold"))
        resumed = media_change_after(events, lambda: far.command("resume"))
    local = side == "local"
    assert held == CallMediaChanged(call.call_id, held_locally=local, held_remotely=not local)
    assert resumed == CallMediaChanged(call.call_id, held_locally=False, held_remotely=False)
    assert "CALL_CLOSED" not in far.event_types()


def test_blind_transfer_connects_the_far_end_to_the_target(
    phone: Phone,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, events = phone
    with (
        peer(kamailio_server, tmp_path, "1002") as transferee,
        peer(kamailio_server, tmp_path, "1003") as target,
    ):
        call = place_call(engine, events, "1002")
        transferee.wait_event("CALL_ESTABLISHED")
        engine.submit(Transfer(call.call_id, "1003"))
        established = target.wait_event("CALL_ESTABLISHED")
        assert "1002@" in established["peeruri"]
        ended = events.wait_call_state(CallState.DISCONNECTED, call.call_id)
        assert ended.call_id == call.call_id


def test_only_configured_codecs_are_offered(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001")], codecs=["PCMA"])
    # baresip prefers PCMU and G722: it can only pick PCMA if nothing else was offered.
    with (
        peer(kam, tmp_path, "1002", codecs="PCMU,G722/16000,PCMA") as far,
        running_engine(config) as (engine, events),
    ):
        confirmed = place_call(engine, events, "1002")
        assert confirmed.codec == "PCMA"
        sdp = far.wait_event("CALL_REMOTE_SDP")
        assert sdp  # baresip saw our offer


def test_a_failing_event_handler_does_not_stop_the_engine(
    kamailio_server: KamailioServer,  # noqa: F811
) -> None:
    kam = kamailio_server
    seen: list[object] = []

    def broken_handler(event: object) -> None:
        seen.append(event)
        raise RuntimeError("consumer bug")

    engine = SipEngine(phone_config(kam, [account(kam, "1001")]), broken_handler)
    engine.start()
    try:
        engine.submit(MakeCall(0, "1099"))
        deadline = time.monotonic() + 10
        while not any(isinstance(e, CallStateChanged) for e in seen):
            assert time.monotonic() < deadline, f"engine went quiet after {seen}"
            time.sleep(0.02)
        assert engine.running
    finally:
        engine.stop()
