"""Hold and unhold against scripted SIPp far ends: while the engine's own offer is unanswered,
and when the hold re-INVITE is answered 491.

SIPp answers the phone's INVITE with two codecs, so pjsua locks one with an UPDATE straight after
the ACK; SIPp answers that UPDATE only after 1.5 s. A hold submitted meanwhile used to leave as a
re-INVITE carrying the pending offer (pjsip: "already have an offer, new offer is ignored") while
the engine reported the call held. Now it waits: SIPp fails the run on a re-INVITE during its
pause, and checks that the hold (sendonly) and then the unhold (sendrecv) follow.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from offhook.firmware.events import CallMediaChanged, CallState, Hangup, Hold, MakeCall, Unhold
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import account, phone_config, running_engine
from tests.fixtures.sipp_peer import SippPeer
from tests.fixtures.tls import tls_certificates  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_hold_and_unhold_wait_for_the_codec_locking_update(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")])
    sipp = SippPeer(tmp_path / "sipp", "hold_during_codec_update")
    with sipp, running_engine(config) as (engine, events):
        mark = events.mark()
        engine.submit(MakeCall(0, sipp.uri))
        call_id = events.wait_call_state(CallState.CONFIRMED, timeout=15, start=mark).call_id
        # pjsua sends the UPDATE from a timer: hold once SIPp has it (it answers 1.5 s later).
        deadline = time.monotonic() + 15
        while sipp.requests_received("UPDATE") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # SIPp's message log is the only sign of it: read it again
        assert sipp.requests_received("UPDATE") == 1, sipp.report()
        engine.submit(Hold(call_id))
        engine.submit(Unhold(call_id))
        held = events.wait_for(
            lambda e: isinstance(e, CallMediaChanged) and e.held_locally, timeout=15, start=mark
        )
        resumed = events.wait_for(
            lambda e: isinstance(e, CallMediaChanged) and not e.held_locally,
            timeout=15,
            start=events.events.index(held) + 1,
        )
        assert resumed.call_id == held.call_id == call_id
        assert [c["held_locally"] for c in engine.calls_info()] == [False]
        engine.submit(Hangup(call_id))
        events.wait_call_state(CallState.DISCONNECTED, call_id, timeout=15, start=mark)
        assert sipp.wait() == 0, sipp.report()
    assert sipp.requests_received("INVITE") == 3, sipp.report()  # call, hold, unhold


def test_hold_answered_491_is_sent_again_after_the_back_off(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")])
    sipp = SippPeer(tmp_path / "sipp", "hold_491_then_accept")
    with sipp, running_engine(config) as (engine, events):
        mark = events.mark()
        engine.submit(MakeCall(0, sipp.uri))
        call_id = events.wait_call_state(CallState.CONFIRMED, timeout=15, start=mark).call_id
        engine.submit(Hold(call_id))
        held = events.wait_for(
            lambda e: isinstance(e, CallMediaChanged) and e.held_locally, timeout=20, start=mark
        )
        assert held.call_id == call_id
        assert [c["held_locally"] for c in engine.calls_info()] == [True]
        engine.submit(Hangup(call_id))
        events.wait_call_state(CallState.DISCONNECTED, call_id, timeout=15, start=mark)
        assert sipp.wait() == 0, sipp.report()
    assert sipp.requests_received("INVITE") == 3, sipp.report()  # call, hold, hold again
