"""The Phone with the real SIP engine (pjsua2), Kamailio and baresip: calls the Phone did not place
(being transferred), what the caller hears before a refusal, the ring timeout, remote hold in
the state and the status of calls we hang up."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from offhook.firmware.events import CallState, CallStateChanged
from tests.fixtures.engine_process import EngineProcess
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.phone_rig import PhoneRig, running_phone
from tests.fixtures.sip_phone import account, phone_config
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.integration.sip_peers import peer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def config_for(kam: KamailioServer, **features: object):
    config = phone_config(kam, [account(kam, "1001")])
    return config.model_copy(update={"features": config.features.model_copy(update=features)})


def talking_to(number: str) -> object:
    def check(snap: dict) -> bool:
        calls = snap["calls"]
        return (
            len(calls) == 1
            and calls[0]["state"] == "confirmed"
            and number in (calls[0]["remote_uri"])
        )

    return check


def call_out(rig: PhoneRig, number: str) -> dict:
    rig.hook(True)
    rig.dial(number)
    return rig.wait_until(talking_to(number), what=f"talking to {number}")


def test_being_transferred_the_phone_shows_the_new_call_and_the_handset_ends_it(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="offhook.firmware.phone")
    kam = kamailio_server
    with (
        peer(kam, tmp_path, "1002") as transferor,
        peer(kam, tmp_path, "1003") as target,
        running_phone(config_for(kam), tmp_path) as rig,
    ):
        call_out(rig, "1002")
        transferor.wait_event("CALL_ESTABLISHED")
        transferor.command("transfer", f"sip:1003@{kam.domain}")
        target.wait_event("CALL_ESTABLISHED", peer="sip:1001@")
        snap = rig.wait_until(talking_to("1003"), what="talking to the transfer target")
        assert snap["screen"][0] == "1003" and "Call ended" not in snap["screen"]
        rig.hook(False)  # the handset ends the call pjsua placed for the REFER
        target.wait_event("CALL_CLOSED")
        rig.wait_until(lambda s: s["calls"] == [] and s["hook"] == "on")
        records = rig.wait_history(2)
        assert [(r["direction"], r["disposition"]) for r in records] == [
            ("outgoing", "answered"),
            ("outgoing", "answered"),
        ]
        assert "1002@" in records[0]["remote_uri"] and "1003@" in records[1]["remote_uri"]
    assert [r.getMessage() for r in caplog.records if r.name == "offhook.firmware.phone"] == []


@pytest.mark.parametrize("why", ["dnd", "busy"])
def test_refused_calls_get_their_final_answer_without_180_first(
    why: str,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    features = {"dnd": True} if why == "dnd" else {"call_waiting": False}
    with (
        peer(kam, tmp_path, "1002") as caller,
        peer(kam, tmp_path, "1003") as other,
        running_phone(config_for(kam, **features), tmp_path) as rig,
    ):
        if why == "busy":
            call_out(rig, "1003")
            other.wait_event("CALL_ESTABLISHED")
        caller.dial(f"sip:1001@{kam.domain}")
        closed = caller.wait_event("CALL_CLOSED")
        assert ("480" if why == "dnd" else "486") in str(closed.get("param"))
        assert "CALL_RINGING" not in caller.event_types()


def test_a_call_that_rings_sends_180_and_gives_up_after_the_ring_timeout(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    with (
        peer(kam, tmp_path, "1002") as caller,
        running_phone(config_for(kam, ring_timeout_s=5), tmp_path) as rig,
    ):
        caller.dial(f"sip:1001@{kam.domain}")
        caller.wait_event("CALL_RINGING")
        rig.wait_until(lambda s: s["screen"][:1] == ["Incoming call"])
        closed = caller.wait_event("CALL_CLOSED", timeout=30)
        assert "480" in str(closed.get("param"))
        snap = rig.wait_until(lambda s: s["calls"] == [] and s["history"])
        assert (snap["history"][0]["kind"], snap["history"][0]["status"]) == ("missed", 480)


def test_state_says_held_remotely_when_the_far_end_holds(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    with peer(kam, tmp_path, "1002") as far, running_phone(config_for(kam), tmp_path) as rig:
        call_out(rig, "1002")
        far.wait_event("CALL_ESTABLISHED")
        far.command("hold")
        snap = rig.wait_until(
            lambda s: s["calls"] and s["calls"][0]["state"] == "held_remotely",
            what="held_remotely",
        )
        assert "Held by remote" in snap["screen"]
        assert snap["calls"][0]["held_remotely"] is True


def test_calls_we_hang_up_are_recorded_with_the_status_pjsua_reports(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="offhook.firmware.phone")
    kam = kamailio_server
    with (
        peer(kam, tmp_path, "1002") as far,
        peer(kam, tmp_path, "1003", answermode="manual") as ringing,
        running_phone(config_for(kam), tmp_path) as rig,
    ):
        call_out(rig, "1002")
        far.wait_event("CALL_ESTABLISHED")
        rig.hook(False)  # BYE
        far.wait_event("CALL_CLOSED")
        rig.hook(True)
        rig.dial("1003")
        ringing.wait_event("CALL_INCOMING")
        rig.wait_until(lambda s: s["calls"] and s["calls"][0]["state"] == "early")
        rig.hook(False)  # CANCEL
        ringing.wait_event("CALL_CLOSED")
        records = rig.wait_history(2)
        ended = rig.events.wait_for(
            lambda e: (
                isinstance(e, CallStateChanged)
                and e.state is CallState.DISCONNECTED
                and e.call_id == records[1]["call_id"]
            ),
        )
        first_end = rig.events.wait_call_state(CallState.DISCONNECTED, records[0]["call_id"])
    assert [(r["status_code"], r["reason"]) for r in records] == [
        (200, "OK"),
        (487, "Request Terminated"),
    ]
    # the same codes pjsua itself gives these calls once they are over
    assert (first_end.status_code, ended.status_code) == (200, 487)
    assert [r.getMessage() for r in caplog.records if r.name == "offhook.firmware.phone"] == []


def test_target_of_an_attended_transfer_shows_and_ends_the_replacing_call(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """We talk to A (1002); A transfers B (1003) to us attended: B's INVITE with Replaces, which
    pjsua answers by itself, becomes the call on the handset."""
    caplog.set_level(logging.WARNING, logger="offhook.firmware.phone")
    kam = kamailio_server
    with (
        EngineProcess(tmp_path / "a", phone_config(kam, [account(kam, "1002")])) as a,
        EngineProcess(tmp_path / "b", phone_config(kam, [account(kam, "1003")])) as b,
        running_phone(config_for(kam), tmp_path) as rig,
    ):
        a.wait_event("RegistrationChanged", registered="True")
        b.wait_event("RegistrationChanged", registered="True")
        a.send("call 1001")
        rig.wait_until(lambda s: s["screen"][:1] == ["Incoming call"], what="ringing")
        rig.hook(True)
        rig.wait_until(talking_to("1002"), what="talking to A")
        to_us = a.wait_event("CallStateChanged", state="confirmed")["call_id"]
        mark = a.mark()
        a.send("call 1003")
        b.send(f"answer {b.wait_event('CallIncoming')['call_id']}")
        to_b = a.wait_event("CallStateChanged", state="confirmed", start=mark)["call_id"]
        b_mark = b.mark()
        a.send(f"replace {to_b} {to_us}")
        snap = rig.wait_until(talking_to("1003"), what="talking to B")
        assert snap["calls"][0]["direction"] == "incoming"
        assert snap["screen"][0] == "1003" and snap["hook"] == "off"
        rig.hook(False)  # the handset ends the call pjsua answered by itself
        b.wait_event(
            "CallStateChanged",
            state="disconnected",
            start=b_mark,
            where=lambda e: "1001@" in e["remote_uri"],
        )
        records = rig.wait_history(2)
        assert [(r["direction"], r["disposition"]) for r in records] == [
            ("incoming", "answered"),
            ("incoming", "answered"),
        ]
        assert "1003@" in records[1]["remote_uri"]
    assert [r.getMessage() for r in caplog.records if r.name == "offhook.firmware.phone"] == []
