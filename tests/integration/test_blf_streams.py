"""BLF subscriptions over TCP and TLS against Kamailio's presence modules: the subscription
follows the line's transport, TLS is verified against the pinned CA as the line's own is, the
NOTIFYs come back on the same connection, and a connection Kamailio closes is made again with
the subscription."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig
from offhook.firmware.devtools.certs import CertificateSet
from offhook.firmware.events import ExtensionState
from offhook.firmware.sip.dialog_watch import DialogWatcher
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.phone_rig import running_phone
from tests.fixtures.sip_phone import account, phone_config
from tests.fixtures.tls import (
    make_certificates,
    tls_certificates,  # noqa: F401 (fixture)
)
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.integration

WATCH = ((0, "1002"),)


def _kamailio(directory: Path, certs: CertificateSet, **options: object) -> KamailioServer:
    server = KamailioServer(directory, certs, presence=True, **options)  # type: ignore[arg-type]
    for user, password in DEFAULT_USERS.items():
        server.add_user(user, password)
    return server


@pytest.fixture(scope="module")
def presence_kamailio(
    tmp_path_factory: pytest.TempPathFactory,
    tls_certificates: CertificateSet,  # noqa: F811
) -> Iterator[KamailioServer]:
    with _kamailio(tmp_path_factory.mktemp("kam-blf-tls"), tls_certificates) as server:
        yield server


def blf_config(kam: KamailioServer, transport: str, **sip: object) -> PhoneConfig:
    base = phone_config(kam, [account(kam, "1001", transport)], **sip)
    return PhoneConfig.model_validate(
        {**base.model_dump(), "blf": [{"extension": "1002", "label": "Bob"}]}
    )


def notified_over(kam: KamailioServer, transport: str, since: int = 0) -> list[str]:
    return [
        line
        for line in kam.log_text()[since:].splitlines()
        if "send_notify_request" in line and f";transport={transport} " in line
    ]


def test_over_tls_the_lamp_follows_a_call_and_kamailio_notifies_on_the_connection(
    presence_kamailio: KamailioServer, tmp_path: Path
) -> None:
    kam = presence_kamailio
    mark = len(kam.log_text())
    # the line registers over TLS with the proxy's certificate verified against the pinned CA;
    # its BLF subscription must take the same way
    config = blf_config(kam, "tls", tls_verify_server=True)
    with (
        running_phone(config, tmp_path / "phone") as rig,
        BaresipPeer(tmp_path / "bob", "1002", "pw1002", kam.domain, answermode="manual") as bob,
        BaresipPeer(tmp_path / "carol", "1003", "pw1003", kam.domain) as carol,
    ):
        rig.events.wait_for(lambda e: isinstance(e, ExtensionState) and e.subscribed, timeout=15)
        assert rig.watcher.transport_of(WATCH[0]) == "tls"
        carol.dial(f"sip:1002@{kam.domain}")
        bob.wait_event("CALL_INCOMING")
        wait_until(lambda: rig.leds.get("blf1") == "fast_blink", "Bob's lamp blinking")
        bob.accept()
        bob.wait_event("CALL_ESTABLISHED")
        wait_until(lambda: rig.leds.get("blf1") == "on", "Bob's lamp on")
        carol.hangup()
        wait_until(lambda: rig.leds.get("blf1") == "off", "Bob's lamp off")
    # every NOTIFY went to the watcher's TLS connection (its Contact), none by UDP
    assert notified_over(kam, "tls", mark), kam.log_text()[mark:][-2000:]
    assert rig.watcher.connections_lost == 0


def test_over_tls_a_proxy_the_pinned_ca_did_not_sign_is_refused_with_the_reason(
    presence_kamailio: KamailioServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kam = presence_kamailio
    stranger = make_certificates(tmp_path / "other-ca")
    config = blf_config(kam, "tls", tls_verify_server=True, tls_ca_file=str(stranger.ca_cert))
    seen: list[ExtensionState] = []
    watcher = DialogWatcher(seen.append, "127.0.0.1")
    caplog.set_level(logging.WARNING, "offhook.firmware.sip.dialog_watch")
    watcher.start()
    try:
        watcher.watch(config, WATCH)
        wait_until(lambda: seen, "the subscription's state reported")
    finally:
        watcher.stop()
    assert seen[0] == ExtensionState("1002", (), False)
    assert not any(e.subscribed for e in seen)
    reasons = [
        str(getattr(r, "fields", {}).get("reason"))
        for r in caplog.records
        if r.getMessage() == "blf connection lost"
    ]
    assert reasons and "TLS certificate verification failed" in reasons[0], reasons
    # Kamailio sends its CA along with its certificate: OpenSSL names that CA as the stranger
    assert "self-signed certificate in certificate chain" in reasons[0], reasons


def test_without_verification_tls_takes_any_certificate_as_the_line_does(
    presence_kamailio: KamailioServer,
) -> None:
    kam = presence_kamailio
    # sip.tls_verify_server off (the default): pjsip takes the proxy's certificate unchecked,
    # and so does the watcher, even with a CA file that did not sign it
    config = blf_config(kam, "tls", tls_ca_file="")
    seen: list[ExtensionState] = []
    watcher = DialogWatcher(seen.append, "127.0.0.1")
    watcher.start()
    try:
        watcher.watch(config, WATCH)
        wait_until(lambda: any(e.subscribed for e in seen), "subscribed over TLS", timeout=15)
    finally:
        watcher.stop()


def test_over_tcp_a_connection_the_proxy_closes_is_made_again_with_the_subscription(
    tmp_path: Path,
    tls_certificates: CertificateSet,  # noqa: F811
) -> None:
    # Kamailio closes TCP connections idle for 2 s (its timer makes that ~10 s in practice):
    # the watcher reports the lamp unknown, connects again and subscribes anew
    with _kamailio(tmp_path / "kam", tls_certificates, tcp_lifetime_s=2) as kam:
        seen: list[ExtensionState] = []
        watcher = DialogWatcher(seen.append, "127.0.0.1")
        watcher.start()
        try:
            watcher.watch(blf_config(kam, "tcp"), WATCH)
            wait_until(lambda: any(e.subscribed for e in seen), "subscribed over TCP", timeout=15)
            wait_until(lambda: watcher.connections_lost >= 1, "the proxy closed it", timeout=40)
            lost_at = next(i for i, e in enumerate(seen) if not e.subscribed)
            wait_until(
                lambda: any(e.subscribed for e in seen[lost_at:]), "subscribed again", timeout=15
            )
            mark = len(kam.log_text())
            with (
                BaresipPeer(
                    tmp_path / "bob", "1002", "pw1002", kam.domain, answermode="manual"
                ) as bob,
                BaresipPeer(tmp_path / "carol", "1003", "pw1003", kam.domain) as carol,
            ):
                carol.dial(f"sip:1002@{kam.domain}")
                bob.wait_event("CALL_INCOMING")
                wait_until(lambda: any(e.dialogs for e in seen[lost_at:]), "Bob's ringing reported")
                carol.hangup()
            assert notified_over(kam, "tcp", mark)
        finally:
            watcher.stop()
