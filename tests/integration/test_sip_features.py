"""Engine features with baresip via Kamailio: TCP/TLS calls, SRTP, redirect, attended transfer."""

from __future__ import annotations

from pathlib import Path

import pytest

from offhook.firmware.events import (
    Answer,
    AttendedTransfer,
    CallIncoming,
    CallState,
    CallStateChanged,
    Hangup,
    MakeCall,
    Redirect,
)
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import account, phone_config, running_engine
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.integration.sip_peers import peer, phone_and_two_peers, place_call

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_calls_both_ways_over_connection_transports(
    transport: str,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001", transport)])
    with peer(kam, tmp_path, "1002") as far, running_engine(config) as (engine, events):
        call_id = place_call(engine, events, "1002").call_id
        engine.submit(Hangup(call_id))
        events.wait_call_state(CallState.DISCONNECTED, call_id)
        # Incoming: Kamailio opens a new connection to our Contact (our TLS listener's cert).
        far.dial(f"sip:1001@{kam.domain}")
        incoming = events.wait_for(lambda e: isinstance(e, CallIncoming))
        engine.submit(Answer(incoming.call_id))
        events.wait_call_state(CallState.CONFIRMED, incoming.call_id)


def test_mandatory_srtp_call_with_baresip(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001", srtp="mandatory")])
    with (
        peer(kam, tmp_path, "1002", mediaenc="srtp-mand") as far,
        running_engine(config) as (engine, events),
    ):
        place_call(engine, events, "1002")
        far.wait_event("CALL_ESTABLISHED")


def test_mandatory_srtp_is_refused_by_a_plain_rtp_peer(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001", srtp="mandatory")])
    with peer(kam, tmp_path, "1002"), running_engine(config) as (engine, events):
        engine.submit(MakeCall(0, "1002"))
        ended = events.wait_call_state(CallState.DISCONNECTED)
    assert ended.status_code == 488  # Not Acceptable Here: no common (secure) media


def test_redirect_answers_302_and_the_caller_follows_it(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    with phone_and_two_peers(kam, tmp_path) as (engine, events, caller, forward_to):
        caller.dial(f"sip:1001@{kam.domain}")
        incoming = events.wait_for(lambda e: isinstance(e, CallIncoming))
        engine.submit(Redirect(incoming.call_id, "1003"))
        ended = events.wait_call_state(CallState.DISCONNECTED, incoming.call_id)
        assert ended.status_code == 302
        # baresip follows the 302 Contact to the forwarding target
        established = forward_to.wait_event("CALL_ESTABLISHED")
        assert "1002@" in established["peeruri"]


def test_attended_transfer_joins_the_two_far_ends(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    with phone_and_two_peers(kamailio_server, tmp_path) as (engine, events, _first, second):
        first_call = place_call(engine, events, "1002").call_id
        second_call = place_call(engine, events, "1003").call_id
        engine.submit(AttendedTransfer(first_call, second_call))
        # The transferee accepted the REFER and now calls the target with Replaces.
        events.wait_call_state(CallState.DISCONNECTED, first_call)
        events.wait_call_state(CallState.DISCONNECTED, second_call)
        second.wait_event("CALL_ESTABLISHED", peer="sip:1002@")


def test_being_transferred_by_the_far_end_calls_the_new_target(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    with phone_and_two_peers(kam, tmp_path) as (engine, events, transferor, target):
        first = place_call(engine, events, "1002").call_id
        transferor.wait_event("CALL_ESTABLISHED")
        mark = events.mark()
        transferor.command("transfer", f"sip:1003@{kam.domain}")
        new_call = events.wait_for(
            lambda e: (
                isinstance(e, CallStateChanged)
                and e.state is CallState.CONFIRMED
                and e.call_id != first
            ),
            start=mark,
        )
        assert "1003@" in new_call.remote_uri
        target.wait_event("CALL_ESTABLISHED", peer="sip:1001@")
        events.wait_call_state(CallState.DISCONNECTED, first, start=mark)
        assert {c["id"] for c in engine.calls_info()} == {new_call.call_id}
