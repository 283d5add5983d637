"""SipEngine registration against real Kamailio: transports, digest auth, MWI, restarts, garbage."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offhook.firmware.events import MessageWaiting, RegistrationChanged, SipEngineStatus
from offhook.firmware.sip import SipEngine, SipEngineError
from tests.fixtures.kamailio import HOST, KamailioServer, kamailio_server, sip_options_ping  # noqa: F401
from tests.fixtures.sip_phone import EventRecorder, account, phone_config, running_engine
from tests.fixtures.tls import make_certificates, tls_certificates  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_registers_over_udp_tcp_and_tls_with_digest(kamailio_server: KamailioServer) -> None:  # noqa: F811
    kam = kamailio_server
    config = phone_config(
        kam, [account(kam, "1001", "udp"), account(kam, "1002", "tcp"), account(kam, "1003", "tls")]
    )
    with running_engine(config, register=False) as (engine, events):
        for index in range(3):
            event = events.wait_registration(index)
            assert event.registered and event.status_code == 200, event
        assert set(engine.ports) == {"udp", "tcp", "tls"}
        assert all(port > 0 for port in engine.ports.values())


def test_engine_reports_its_bound_ports_as_an_event(kamailio_server: KamailioServer) -> None:  # noqa: F811
    """The Phone judges a provisioned apply by SipEngineStatus events, not by reading the engine."""
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001", "udp")])
    with running_engine(config, register=False) as (engine, events):
        status = events.wait_for(lambda e: isinstance(e, SipEngineStatus))
        assert status == SipEngineStatus(True, tuple(sorted(engine.ports.items())))
        assert dict(status.ports)["udp"] > 0


def test_tls_server_verification_against_the_configured_ca(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    accounts = [account(kam, "1003", "tls")]
    with running_engine(phone_config(kam, accounts, tls_verify_server=True)):
        pass  # registered: Kamailio's certificate chains to the configured CA
    stranger = make_certificates(tmp_path / "other-ca")
    config = phone_config(kam, accounts, tls_verify_server=True, tls_ca_file=str(stranger.ca_cert))
    with running_engine(config, register=False) as (_engine, events):
        event = events.wait_registration(0)
    assert not event.registered
    assert event.status_code == 503 and "verification" in event.reason, event


def test_wrong_password_is_rejected(kamailio_server: KamailioServer) -> None:  # noqa: F811
    config = phone_config(kamailio_server, [account(kamailio_server, "1004", password="wrong")])
    with running_engine(config, register=False) as (_engine, events):
        event = events.wait_registration(0)
    assert not event.registered
    assert event.status_code in (401, 403)


def test_user_added_while_running_can_register(kamailio_server: KamailioServer) -> None:  # noqa: F811
    user, password = f"77{secrets.randbelow(1000):03d}", secrets.token_hex(6)
    kamailio_server.add_user(user, password)
    config = phone_config(kamailio_server, [account(kamailio_server, user, password=password)])
    with running_engine(config):  # raises unless registered
        pass


def test_apply_config_reregisters_only_the_changed_account(
    kamailio_server: KamailioServer,  # noqa: F811
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001"), account(kam, "1005", password="bad")])
    with running_engine(config, register=False) as (engine, events):
        assert events.wait_registration(0).registered
        assert not events.wait_registration(1).registered
        mark = events.mark()
        fixed = phone_config(kam, [account(kam, "1001"), account(kam, "1005")])
        engine.apply_config(fixed)
        event = events.wait_for(
            lambda e: isinstance(e, RegistrationChanged) and e.account == 1 and e.registered,
            start=mark,
        )
        assert event.status_code == 200
        time.sleep(0.3)  # let any stray re-registration of account 0 show up
        assert not [e for e in events.of_type(RegistrationChanged)[mark:] if e.account == 0]


def test_apply_config_moves_an_account_to_tls_without_a_restart(
    kamailio_server: KamailioServer,  # noqa: F811
) -> None:
    kam = kamailio_server
    with running_engine(phone_config(kam, [account(kam, "1009", "udp")])) as (engine, events):
        before = engine.ports
        mark = events.mark()
        engine.apply_config(phone_config(kam, [account(kam, "1009", "tls")]))
        event = events.wait_for(
            lambda e: isinstance(e, RegistrationChanged) and e.registered, start=mark
        )
        assert event.status_code == 200
        assert engine.ports == before  # same sockets: only the account was re-created


def test_apply_config_of_transport_settings_recreates_the_library(
    kamailio_server: KamailioServer,  # noqa: F811
) -> None:
    kam = kamailio_server
    with running_engine(phone_config(kam, [account(kam, "1009")])) as (engine, events):
        before = engine.ports
        mark = events.mark()
        engine.apply_config(phone_config(kam, [account(kam, "1009")], user_agent="offhook-2"))
        event = events.wait_for(
            lambda e: isinstance(e, RegistrationChanged) and e.registered, start=mark
        )
        assert event.status_code == 200
        assert engine.ports != before  # new port-0 sockets after the restart


def test_mwi_notify_through_kamailio_reaches_the_phone(
    kamailio_server: KamailioServer,  # noqa: F811
) -> None:
    kam = kamailio_server
    with running_engine(phone_config(kam, [account(kam, "1006")])) as (_engine, events):
        body = "Messages-Waiting: yes\r\nMessage-Account: sip:*97@127.0.0.1\r\n"
        body += "Voice-Message: 2/8 (1/0)\r\n"
        _send_udp_request(kam.udp_port, "NOTIFY", f"sip:1006@{kam.domain}", body)
        event = events.wait_for(lambda e: isinstance(e, MessageWaiting))
    assert event == MessageWaiting(account=0, waiting=True, new=2, old=8)


def test_engine_survives_garbage_on_its_sip_port(kamailio_server: KamailioServer) -> None:  # noqa: F811
    kam = kamailio_server
    with running_engine(phone_config(kam, [account(kam, "1007")])) as (engine, _events):
        port = engine.ports["udp"]
        junk = [
            os.urandom(700),
            b"\x00" * 64,
            b"INVITE sip:x SIP/2.0\r\nVia: garbage\r\nContent-Length: 99999\r\n\r\nv=0",
            b"SIP/2.0 200 OK\r\nCSeq: banana\r\n\r\n",
            b"OPTIONS sip:1007@127.0.0.1 SIP/2.0\r\n" + b"X-Long: " + b"a" * 3000 + b"\r\n\r\n",
            _invite_with_broken_sdp(port),
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in junk * 5:
                sock.sendto(packet, (HOST, port))
        with socket.create_connection((HOST, engine.ports["tcp"]), timeout=2) as tcp:
            tcp.sendall(os.urandom(2000))
        before = engine.last_heartbeat
        assert sip_options_ping(port, timeout=2.0), "engine stopped answering SIP"
        # the owner loop keeps turning (it may not have turned yet right after the answer)
        deadline = time.monotonic() + 5.0
        while engine.last_heartbeat <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.running and engine.last_heartbeat > before


def test_engine_stops_and_starts_repeatedly(kamailio_server: KamailioServer) -> None:  # noqa: F811
    config = phone_config(kamailio_server, [account(kamailio_server, "1008", "tcp")])
    for _ in range(4):
        with running_engine(config) as (engine, events):
            assert engine.running
        assert not engine.running
        assert engine.calls_info() == []
        # stop() un-registers and waits for the registrar's answer
        assert events.of_type(RegistrationChanged)[-1] == RegistrationChanged(0, False, 200, "OK")


def test_start_fails_clearly_when_the_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        from offhook.contract.config import PhoneConfig

        config = PhoneConfig.model_validate({"sip": {"port": port, "bind_address": HOST}})
        engine = SipEngine(config, EventRecorder())
        with pytest.raises(
            SipEngineError, match=rf"udp transport on 127\.0\.0\.1:{port}: .*Address already in use"
        ):
            engine.start()
        assert not engine.running


def _send_udp_request(port: int, method: str, uri: str, body: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        local = sock.getsockname()[1]
        message = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:voicemail@{HOST}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{HOST}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:voicemail@{HOST}:{local}>\r\n"
            "Event: message-summary\r\n"
            "Subscription-State: active\r\n"
            "Content-Type: application/simple-message-summary\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        sock.sendto(message.encode(), (HOST, port))


def test_engine_runner_process_registers_and_quits(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config_path = tmp_path / "phone.toml"
    config_path.write_text(
        phone_config(kamailio_server, [account(kamailio_server, "1005")]).to_toml()
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "offhook.firmware.sip", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        # "ready", the engine's status event and the registration event may come in any order
        lines = [process.stdout.readline() for _ in range(3)]
        assert any(line.startswith("ready ports=") for line in lines), lines
        assert any("event=RegistrationChanged" in ln and "registered=True" in ln for ln in lines)
        process.stdin.write("calls\nquit\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "calls=[]"
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def _invite_with_broken_sdp(port: int) -> bytes:
    """A well-formed INVITE whose SDP is nonsense (bad port, unknown payload, no c= line)."""
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio notaport RTP/AVP 999 x\r\n"
    return (
        f"INVITE sip:1007@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:9;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:evil@{HOST}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:1007@{HOST}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:evil@{HOST}:9>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
