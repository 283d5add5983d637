"""The Phone (real engine) against scripted SIPp far ends: blind transfers where the final NOTIFY
cannot be parsed, the REFER crosses the hold re-INVITE and is answered 491, or the REFER is
refused; and an INVITE flood while busy."""

from __future__ import annotations

from pathlib import Path

import pytest

from offhook.firmware.events import CallIncoming, CallMediaChanged, TransferStatus
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.phone_rig import PhoneRig, running_phone
from tests.fixtures.sip_phone import account, phone_config
from tests.fixtures.sipp_peer import SippPeer
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.integration.sip_peers import peer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SPEED_DIAL = "77"
FLOOD = 100  # INVITEs from one caller while the phone is busy


def config_calling(kam: KamailioServer, sipp: SippPeer):
    config = phone_config(kam, [account(kam, "1001")])
    entry = {"name": "Transferee", "number": sipp.uri, "speed_dial": SPEED_DIAL}
    return config.model_validate({**config.model_dump(), "phonebook": [entry]})


def call_and_transfer(rig: PhoneRig, target: str = "3005") -> None:
    rig.hook(True)
    rig.dial(SPEED_DIAL)
    rig.press("ok")
    rig.wait_until(
        lambda s: s["calls"] and s["calls"][0]["state"] == "confirmed", what="talking to SIPp"
    )
    # Transfer key (holds the call), the number and # straight away, as fast as keys can come.
    rig.press("transfer")
    rig.dial(target)
    rig.press("#")


def transfer_statuses(rig: PhoneRig) -> list[TransferStatus]:
    return rig.events.of_type(TransferStatus)


def test_unparseable_final_notify_still_ends_our_leg(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    sipp = SippPeer(tmp_path / "sipp", "refer_notify_malformed")
    with sipp, running_phone(config_calling(kamailio_server, sipp), tmp_path) as rig:
        call_and_transfer(rig)
        snap = rig.wait_until(lambda s: s["calls"] == [], timeout=40, what="leg ended")
        assert snap["screen"][0] == "Call transferred"
        assert sipp.wait() == 0, sipp.report()
        (record,) = rig.wait_history(1)
        assert record["disposition"] == "answered"
        # the REFER was accepted, and no NOTIFY got through: the timer ended the leg
        statuses = transfer_statuses(rig)
        assert [(s.status_code, s.final) for s in statuses] == [(100, False)]


def test_refer_waits_for_the_hold_and_is_sent_again_after_491(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    sipp = SippPeer(tmp_path / "sipp", "refer_491_then_accept")
    with sipp, running_phone(config_calling(kamailio_server, sipp), tmp_path) as rig:
        call_and_transfer(rig)
        snap = rig.wait_until(lambda s: s["calls"] == [], timeout=40, what="leg ended")
        assert snap["screen"][0] == "Call transferred"
        assert sipp.wait() == 0, sipp.report()
        assert sipp.requests_received("REFER") == 2
        # the 491 was the engine's to handle: the Phone saw acceptance and success only
        statuses = transfer_statuses(rig)
        assert [(s.status_code, s.final) for s in statuses] == [(100, False), (200, True)]


def test_refused_refer_shows_transfer_failed_and_the_call_can_be_resumed(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    sipp = SippPeer(tmp_path / "sipp", "refer_refused")
    with sipp, running_phone(config_calling(kamailio_server, sipp), tmp_path) as rig:
        call_and_transfer(rig)
        snap = rig.wait_until(
            lambda s: s["screen"][:1] == ["Transfer failed"], what="Transfer failed"
        )
        assert snap["screen"][1] == "603 Decline"
        assert snap["calls"][0]["state"] == "held"
        mark = rig.events.mark()
        rig.press("hold")  # resume: a re-INVITE SIPp expects
        rig.wait_until(
            lambda s: s["calls"] and s["calls"][0]["state"] == "confirmed", what="resumed"
        )
        # the re-INVITE is answered (SIPp wants its ACK before the BYE)
        rig.events.wait_for(
            lambda e: isinstance(e, CallMediaChanged) and not e.held_locally, start=mark
        )
        rig.hook(False)
        assert sipp.wait() == 0, sipp.report()
        (record,) = rig.wait_history(1)
        assert record["disposition"] == "answered"


def test_invite_flood_while_busy_is_refused_without_ringing_and_is_one_history_entry(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001")])
    config = config.model_copy(
        update={"features": config.features.model_copy(update={"call_waiting": False})}
    )
    with peer(kam, tmp_path, "1002") as far, running_phone(config, tmp_path) as rig:
        rig.hook(True)
        rig.dial("1002")
        rig.wait_until(lambda s: s["calls"] and s["calls"][0]["state"] == "confirmed")
        far.wait_event("CALL_ESTABLISHED")
        flood = SippPeer(
            tmp_path / "flood",
            "invite_flood_refused",
            calls=FLOOD,
            rate=50,
            remote=f"127.0.0.1:{rig.engine.ports['udp']}",
            service="1001",
        )
        with flood:
            assert flood.wait() == 0, flood.report()  # every INVITE: 486, no 180 before it
        # pjsua itself answers 486 to INVITEs beyond its call slots: those never reach the Phone
        offered = len(rig.events.of_type(CallIncoming))
        assert offered > FLOOD // 2
        snap = rig.wait_until(
            lambda s: s["history"] and s["history"][0]["count"] == offered, what="one entry"
        )
        assert len(snap["history"]) == 1
        assert (snap["history"][0]["number"], snap["history"][0]["status"]) == ("6666", 486)
        assert len(snap["calls"]) == 1  # the call in progress went on
        # the history file holds them as one line too (each call is still a CDR of its own)
        (line,) = rig.wait_history(where=lambda records: records[-1]["count"] == offered)
        assert (line["remote_uri"], line["status_code"]) == (snap["history"][0]["remote_uri"], 486)
        rig.hook(False)
        rig.wait_until(lambda s: s["calls"] == [] and s["screen"][2:3] == ["1 missed call"])
