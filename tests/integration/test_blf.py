"""BLF keys on real peers: the phone subscribes to a colleague's dialog events through Kamailio's
presence modules (presence, presence_dialoginfo, pua_dialoginfo), its LED follows the colleague's
calls (baresip), the key calls the colleague, and picks up a call ringing there (INVITE with
Replaces to the caller, a pjsua2 engine in its own process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig
from offhook.firmware.devtools.certs import CertificateSet
from offhook.firmware.events import ExtensionState
from offhook.firmware.sip.dialog_watch import DialogWatcher
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.engine_process import EngineProcess
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.phone_rig import PhoneRig, running_phone
from tests.fixtures.sip_phone import account, phone_config
from tests.fixtures.tls import tls_certificates  # noqa: F401 (fixture)
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def presence_kamailio(
    tmp_path_factory: pytest.TempPathFactory,
    tls_certificates: CertificateSet,  # noqa: F811
) -> Iterator[KamailioServer]:
    server = KamailioServer(
        tmp_path_factory.mktemp("kamailio-presence"), tls_certificates, presence=True
    )
    for user, password in DEFAULT_USERS.items():
        server.add_user(user, password)
    with server:
        yield server


def blf_phone_config(kam: KamailioServer) -> PhoneConfig:
    base = phone_config(kam, [account(kam, "1001")])
    return PhoneConfig.model_validate(
        {**base.model_dump(), "blf": [{"extension": "1002", "label": "Bob"}]}
    )


def wait_subscribed(rig: PhoneRig) -> None:
    rig.events.wait_for(
        lambda e: isinstance(e, ExtensionState) and e.extension == "1002" and e.subscribed,
        timeout=10,
    )


def wait_led(rig: PhoneRig, state: str, timeout: float = 10.0) -> None:
    try:
        wait_until(lambda: rig.leds.get("blf1") == state, f"LED blf1 {state}", timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; LEDs {rig.leds}") from None


def test_the_lamp_follows_a_colleague_ringing_talking_and_hanging_up(
    presence_kamailio: KamailioServer, tmp_path: Path
) -> None:
    kam = presence_kamailio
    with (
        running_phone(blf_phone_config(kam), tmp_path / "phone") as rig,
        BaresipPeer(tmp_path / "bob", "1002", "pw1002", kam.domain, answermode="manual") as bob,
        BaresipPeer(tmp_path / "carol", "1003", "pw1003", kam.domain) as carol,
    ):
        wait_subscribed(rig)
        assert rig.leds["blf1"] == "off"
        assert rig.watcher.challenges_answered >= 1  # Kamailio asked the watcher for digest
        carol.dial(f"sip:1002@{kam.domain}")
        bob.wait_event("CALL_INCOMING")
        wait_led(rig, "fast_blink")
        assert "Bob ringing" in rig.snapshot()["screen"]
        bob.accept()
        bob.wait_event("CALL_ESTABLISHED")
        wait_led(rig, "on")
        assert "Bob ringing" not in rig.snapshot()["screen"]
        carol.hangup()
        wait_led(rig, "off")


def test_the_key_calls_the_colleague(presence_kamailio: KamailioServer, tmp_path: Path) -> None:
    kam = presence_kamailio
    with (
        running_phone(blf_phone_config(kam), tmp_path / "phone") as rig,
        BaresipPeer(tmp_path / "bob", "1002", "pw1002", kam.domain) as bob,
    ):
        wait_subscribed(rig)
        rig.hook(True)
        rig.press("blf1")
        bob.wait_event("CALL_ESTABLISHED")
        snap = rig.wait_until(
            lambda s: [c["state"] for c in s["calls"]] == ["confirmed"], what="talking to Bob"
        )
        assert snap["calls"][0]["remote_uri"].startswith("sip:1002@")
        wait_led(rig, "on")  # our own call makes Bob busy
        rig.hook(False)
        bob.wait_event("CALL_CLOSED")
        wait_led(rig, "off")


def test_the_key_picks_up_the_call_ringing_at_the_colleague(
    presence_kamailio: KamailioServer, tmp_path: Path
) -> None:
    kam = presence_kamailio
    caller_config = phone_config(kam, [account(kam, "1003")])
    caller = EngineProcess(tmp_path / "caller", caller_config).start()
    try:
        caller.wait_event("RegistrationChanged", registered="True")
        with (
            running_phone(blf_phone_config(kam), tmp_path / "phone") as rig,
            BaresipPeer(tmp_path / "bob", "1002", "pw1002", kam.domain, answermode="manual") as bob,
        ):
            wait_subscribed(rig)
            caller.send("call 1002")
            bob.wait_event("CALL_INCOMING")
            wait_led(rig, "fast_blink")
            rig.hook(True)
            rig.press("blf1")
            # the caller's pjsua takes our INVITE's Replaces: it now talks to us, not to Bob
            snap = rig.wait_until(
                lambda s: [c["state"] for c in s["calls"]] == ["confirmed"],
                what="talking to the caller",
            )
            assert snap["calls"][0]["remote_uri"].startswith("sip:1003@")
            bob.wait_event("CALL_CLOSED")  # Bob's phone stops ringing
            wait_led(rig, "off")  # Bob is idle again
            caller.wait_event("CallStateChanged", state="confirmed")
            rig.hook(False)
            rig.wait_until(lambda s: s["calls"] == [], what="call ended")
    finally:
        caller.stop()


def test_a_stopped_watcher_ends_its_subscription_at_the_server(
    presence_kamailio: KamailioServer, tmp_path: Path
) -> None:
    kam = presence_kamailio
    config = blf_phone_config(kam)
    seen: list[ExtensionState] = []
    stays = DialogWatcher(seen.append, "127.0.0.1")  # a second watcher that keeps watching
    stays.start()
    try:
        stays.watch(config, ((0, "1002"),))
        with running_phone(config, tmp_path / "phone") as rig:
            wait_subscribed(rig)
            port = rig.watcher.port
            rig.watcher.stop()  # un-SUBSCRIBE (Expires: 0), answered before the socket closes
        mark = len(kam.log_text())
        with (
            BaresipPeer(tmp_path / "bob", "1002", "pw1002", kam.domain, answermode="manual") as bob,
            BaresipPeer(tmp_path / "carol", "1003", "pw1003", kam.domain) as carol,
        ):
            carol.dial(f"sip:1002@{kam.domain}")
            bob.wait_event("CALL_INCOMING")
            wait_until(lambda: any(e.dialogs for e in seen), "the other watcher told")
            carol.hangup()
            bob.wait_event("CALL_CLOSED")
    finally:
        stays.stop()
    notified = [
        line for line in kam.log_text()[mark:].splitlines() if "send_notify_request" in line
    ]
    assert any(f":{stays.port} " in line for line in notified), notified
    assert not any(f":{port} " in line for line in notified), notified


def test_the_subscription_is_refreshed_before_it_expires(
    presence_kamailio: KamailioServer, tmp_path: Path
) -> None:
    kam = presence_kamailio
    seen: list[ExtensionState] = []
    watcher = DialogWatcher(seen.append, "127.0.0.1", expires_s=6)  # refreshed after ~5 s
    watcher.start()
    try:
        watcher.watch(blf_phone_config(kam), ((0, "1002"),))
        wait_until(lambda: watcher.refreshes >= 2, "two refreshes", timeout=20)
        # still subscribed after more than one lifetime: a call to Bob is reported
        with (
            BaresipPeer(tmp_path / "bob", "1002", "pw1002", kam.domain, answermode="manual") as bob,
            BaresipPeer(tmp_path / "carol", "1003", "pw1003", kam.domain) as carol,
        ):
            carol.dial(f"sip:1002@{kam.domain}")
            bob.wait_event("CALL_INCOMING")
            wait_until(lambda: any(e.dialogs for e in seen), "the ringing dialog reported")
            carol.hangup()
    finally:
        watcher.stop()
    assert all(e.subscribed for e in seen)
