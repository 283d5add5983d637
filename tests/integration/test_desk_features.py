"""Text messages and action URLs on real peers: linphone sends a SIP MESSAGE through Kamailio and
the phone shows it; baresip calls the phone and a loopback HTTP server gets the action URLs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from offhook.contract.config import PhoneConfig
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.http_recorder import HttpRecorder, http_recorder
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401 (fixture)
from tests.fixtures.linphone import LinphonePeer
from tests.fixtures.phone_rig import running_phone
from tests.fixtures.sip_phone import account, phone_config
from tests.fixtures.tls import tls_certificates  # noqa: F401 (fixture)
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.integration


def with_sections(kam: KamailioServer, **sections: object) -> PhoneConfig:
    base = phone_config(kam, [account(kam, "1001")])
    return PhoneConfig.model_validate({**base.model_dump(), **sections})


def test_a_text_message_from_linphone_shows_with_its_indicator(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    with (
        running_phone(with_sections(kam), tmp_path / "phone") as rig,
        LinphonePeer(tmp_path / "linphone", "1004", "pw1004", kam.domain) as peer,
    ):
        peer.command(f"chat sip:1001@{kam.domain} Meeting moved to 3pm")
        wait_until(lambda: "1 new text" in rig.snapshot()["screen"], "the idle line", timeout=15)
        assert rig.leds["mwi"] == "blink"
        assert rig.runtime.screen is not None and rig.runtime.screen.status["texts"] == "1"
        rig.press("messages")
        rig.wait_until(lambda s: s["screen"][0] == "Messages (1 new)", what="the list")
        rig.press("ok")
        snap = rig.wait_until(lambda s: "Meeting moved to 3pm" in s["screen"], what="opened")
        assert snap["screen"][0].endswith("1004")
        wait_until(lambda: rig.leds["mwi"] == "off", "the lamp off once read")


def _fields(path: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}


def _urls(http: HttpRecorder) -> dict[str, str]:
    base = http.base
    return {
        "incoming": f"{base}/incoming?caller={{caller}}&name={{caller_name}}&id={{call_id}}",
        "answered": f"{base}/answered?id={{call_id}}",
        "ended": f"{base}/ended?id={{call_id}}&duration={{duration}}&status={{status}}",
        "missed": f"{base}/missed?caller={{caller}}&status={{status}}",
        "registered": f"{base}/registered?line={{line}}",
    }


def test_action_urls_follow_a_real_call_and_a_missed_one(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    with http_recorder() as http:
        config = with_sections(kam, action_urls={**_urls(http), "timeout_s": 2})
        with (
            running_phone(config, tmp_path / "phone") as rig,
            BaresipPeer(
                tmp_path / "bob", "1002", "pw1002", kam.domain, display_name="Bob Smith"
            ) as bob,
        ):
            wait_until(lambda: http.paths(), "the registered URL")
            assert http.paths() == ["/registered?line=1001"]
            bob.dial(f"sip:1001@{kam.domain}")
            rig.wait_until(lambda s: s["screen"][:1] == ["Incoming call"], what="ringing")
            rig.hook(True)
            bob.wait_event("CALL_ESTABLISHED")
            wait_until(lambda: len(http.paths()) >= 3, "incoming and answered")
            bob.hangup()
            wait_until(lambda: len(http.paths()) >= 4, "ended")
            rig.hook(False)
            incoming, answered, ended = http.paths()[1:4]
            assert incoming.startswith("/incoming?")
            assert _fields(incoming)["caller"] == "1002"
            assert _fields(incoming)["name"] == "Bob Smith"
            call_id = _fields(incoming)["id"]
            assert answered == f"/answered?id={call_id}"
            assert ended.startswith("/ended?") and _fields(ended)["id"] == call_id
            assert _fields(ended)["status"] == "200"
            assert int(_fields(ended)["duration"]) >= 0
            records = rig.wait_history(1)
            assert records[-1]["id"] == call_id  # the CDR and the CRM name the same call

            # a call nobody answers here: the caller gives up
            bob.dial(f"sip:1001@{kam.domain}")
            rig.wait_until(lambda s: s["screen"][:1] == ["Incoming call"], what="ringing again")
            bob.hangup()
            wait_until(lambda: any(p.startswith("/missed") for p in http.paths()), "missed")
            missed = [p for p in http.paths() if p.startswith("/missed")]
            assert _fields(missed[0]) == {"caller": "1002", "status": "487"}


def _type(rig: object, keys: str) -> None:
    """Multi-tap keys, each a separate press (no letter here repeats its key)."""
    for key in keys:
        rig.press(key)  # type: ignore[attr-defined]


def test_a_text_typed_on_the_keypad_reaches_linphone_and_a_failure_shows(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    phonebook = [{"name": "Linphone", "number": "1004"}, {"name": "Nobody", "number": "1999"}]
    with (
        LinphonePeer(tmp_path / "linphone", "1004", "pw1004", kam.domain) as peer,
        running_phone(with_sections(kam, phonebook=phonebook), tmp_path / "phone") as rig,
    ):
        rig.wait_until(lambda s: s["registration"][0]["registered"], 20, what="registered")
        mark = peer.mark()
        rig.press("phonebook", "softkey2")  # "Text" on the first contact
        rig.wait_until(lambda s: s["screen"][0].startswith("To Linphone"), what="compose")
        # l-u-n-c-h space a-t space 2: 555 88 66 222 44 0 2 8 0 2222
        _type(rig, "55588662224402802222")
        rig.wait_until(
            lambda s: s["screen"][1] in ("lunch at [2]", "lunch at 2_"), what="typed"
        )  # the "2" is kept by a pause of a second, or by Send
        rig.press("softkey3")  # Send
        rig.wait_until(lambda s: s["screen"][1:] == ["Sent", "lunch at 2"], what="delivered")
        assert peer.wait_line(r"lunch at 2$", timeout=15, start=mark)
        rig.press("ok", "cancel", "messages")
        rig.wait_until(lambda s: "> To Linphone: lunch at 2" in s["screen"], what="kept as sent")
        rig.press("cancel")

        # linphone writes; "Reply" in the list answers the URI the message came from
        peer.command(f"chat sip:1001@{kam.domain} Where?")
        rig.wait_until(lambda s: "1 new text" in s["screen"], what="a text from linphone")
        rig.press("messages")
        rig.wait_until(lambda s: s["screen"][1].startswith("> *1004: Where?"), what="the list")
        mark = peer.mark()
        rig.press("softkey3")  # Reply
        rig.wait_until(lambda s: s["screen"][0].startswith("To 1004"), what="replying")
        _type(rig, "377733")  # 3 = d, 777 = r, 33 = e
        rig.wait_until(lambda s: s["screen"][1] in ("dr[e]", "dre_"), what="typed the reply")
        rig.press("ok")
        rig.wait_until(lambda s: s["screen"][1] == "Sent", what="the reply delivered")
        assert peer.wait_line(r"dre$", timeout=15, start=mark)
        rig.press("ok", "cancel")

        rig.press("phonebook", "down", "softkey2")  # a user Kamailio does not know
        rig.wait_until(lambda s: s["screen"][0].startswith("To Nobody"), what="compose again")
        _type(rig, "99")
        rig.press("softkey3")
        snap = rig.wait_until(lambda s: s["screen"][1].startswith("Failed"), 40, what="refused")
        assert snap["screen"][1].split()[1] in ("404", "480"), snap["screen"]
        assert rig.snapshot()["screen"][2] == "x"
