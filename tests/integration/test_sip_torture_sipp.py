"""Requests a UAS must refuse, sent to a running engine with SIPp and raw sockets.

Before firmware/sip/request_checks.py, pjsip (through pjsua2) left REGISTER, unknown methods and
unparseable requests unanswered, answered OPTIONS/MESSAGE with an unsupported ``Require`` 200,
took a request with two Content-Lengths and one whose CSeq method differed from its own. Each
case asserts the exact status; the last test checks the phone still registers and calls.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from offhook.firmware.events import CallState, Hangup, RegistrationChanged
from offhook.firmware.sip import SipEngine
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import EventRecorder, account, phone_config, running_engine
from tests.fixtures.sipp import request_scenario, run_sipp
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.integration.sip_peers import peer, place_call

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Phone = tuple[SipEngine, EventRecorder]
SDP = "\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 [local_ip]",
        "s=-",
        "c=IN IP4 [local_ip]",
        "t=0 0",
        "m=audio [auto_media_port] RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ]
)


@pytest.fixture(scope="module")
def phone(kamailio_server: KamailioServer) -> Iterator[Phone]:  # noqa: F811
    with running_engine(phone_config(kamailio_server, [account(kamailio_server, "1001")])) as p:
        yield p


def sipp_request(
    method: str,
    *extra: str,
    request_uri: str = "sip:1001@[remote_ip]:[remote_port]",
    cseq: str = "",
    version: str = "SIP/2.0",
    body: str = "",
    content_length: bool = True,
) -> str:
    """One request in SIPp's scenario syntax; ``extra`` header lines go after the usual ones."""
    lines = [
        f"{method} {request_uri} {version}",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        "Max-Forwards: 70",
        "From: <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]",
        "To: <sip:1001@[remote_ip]:[remote_port]>",
        "Call-ID: [call_id]",
        f"CSeq: {cseq or '1 ' + method}",
        "Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>",
        *extra,
    ]
    if content_length:
        lines.append("Content-Length: [len]")
    return "\n".join(lines) + "\n\n" + body


@dataclass(frozen=True)
class Case:
    request: str
    status: int
    header: str = ""
    pattern: str = ""


CASES = {
    "register-405": Case(sipp_request("REGISTER"), 405, "Allow", r"\bINVITE\b"),
    "publish-405": Case(sipp_request("PUBLISH", "Event: presence"), 405, "Allow", r"\bBYE\b"),
    "info-405": Case(sipp_request("INFO"), 405, "Allow", r"\bINVITE\b"),
    "refer-405": Case(sipp_request("REFER", "Refer-To: <sip:1002@[remote_ip]>"), 405),
    "bye-outside-a-dialog-481": Case(sipp_request("BYE"), 481),
    "unknown-method-501": Case(sipp_request("FROB"), 501),
    "notify-unknown-event-489": Case(sipp_request("NOTIFY", "Event: x-offhook-none"), 489),
    "options-require-420": Case(
        sipp_request("OPTIONS", "Require: x-offhook-test"), 420, "Unsupported", "x-offhook-test"
    ),
    "message-require-420": Case(
        sipp_request("MESSAGE", "Require: 100rel, x-foo", "Content-Type: text/plain", body="hello"),
        420,
        "Unsupported",
        r"^\s*x-foo\s*$",  # 100rel is supported, so only x-foo is named
    ),
    "invite-require-420": Case(
        sipp_request("INVITE", "Require: x-foo", "Content-Type: application/sdp", body=SDP),
        420,
        "Unsupported",
        "x-foo",
    ),
    "invite-two-content-lengths-400": Case(
        sipp_request("INVITE", "Content-Type: application/sdp", "Content-Length: [len]", body=SDP),
        400,
    ),
    "cseq-not-a-number-400": Case(sipp_request("OPTIONS", cseq="one OPTIONS"), 400),
    "bad-request-uri-400": Case(sipp_request("OPTIONS", request_uri="not-a-uri"), 400),
    "bad-from-400": Case(
        sipp_request("OPTIONS").replace(
            "From: <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]", "From: <<sip:>>;;tag"
        ),
        400,
    ),
    "sip-version-505": Case(sipp_request("OPTIONS", version="SIP/3.0"), 505),
}
TCP_CASES = [
    "register-405",
    "unknown-method-501",
    "options-require-420",
    "invite-two-content-lengths-400",
    "cseq-not-a-number-400",
]


@pytest.mark.parametrize("name", list(CASES))
def test_sipp_udp_request_gets_exact_status(phone: Phone, tmp_path: Path, name: str) -> None:
    engine, _ = phone
    case = CASES[name]
    scenario = request_scenario(case.request, case.status, case.header, case.pattern)
    result = run_sipp(tmp_path, scenario, f"127.0.0.1:{engine.ports['udp']}", "udp")
    assert result.passed, result.explain()


@pytest.mark.parametrize("name", TCP_CASES)
def test_sipp_tcp_request_gets_exact_status(phone: Phone, tmp_path: Path, name: str) -> None:
    engine, _ = phone
    case = CASES[name]
    scenario = request_scenario(case.request, case.status, case.header, case.pattern)
    result = run_sipp(tmp_path, scenario, f"127.0.0.1:{engine.ports['tcp']}", "tcp")
    assert result.passed, result.explain()


def raw_request(
    port: int, local: int, transport: str, skip: str = "", cl: bool = True, cseq: str = "7 OPTIONS"
) -> bytes:
    lines = [
        f"OPTIONS sip:1001@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local};branch=z9hG4bK{secrets.token_hex(8)}",
        "Max-Forwards: 70",
        f"From: <sip:raw@127.0.0.1:{local}>;tag={secrets.token_hex(4)}",
        f"To: <sip:1001@127.0.0.1:{port}>",
        f"Call-ID: {secrets.token_hex(8)}@127.0.0.1",
        f"CSeq: {cseq}",
    ]
    lines = [line for line in lines if not (skip and line.startswith(skip + ":"))]
    if cl:
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_udp_request_without_call_id_gets_400_that_echoes_via_and_cseq(phone: Phone) -> None:
    engine, _ = phone
    port = engine.ports["udp"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        request = raw_request(port, sock.getsockname()[1], "UDP", skip="Call-ID")
        sock.sendto(request, ("127.0.0.1", port))
        reply, source = sock.recvfrom(65535)
    assert source == ("127.0.0.1", port)  # from the phone's SIP socket
    text = reply.decode()
    assert text.startswith("SIP/2.0 400 ")
    via = next(line for line in request.decode().split("\r\n") if line.startswith("Via:"))
    assert via in text.split("\r\n")
    assert "CSeq: 7 OPTIONS" in text.split("\r\n")


def test_cseq_method_other_than_the_request_method_gets_400(phone: Phone) -> None:
    # Not with SIPp: it takes a response whose CSeq method is not the one it sent as unexpected.
    engine, _ = phone
    port = engine.ports["udp"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        sock.sendto(raw_request(port, sock.getsockname()[1], "UDP", cseq="1 INVITE"),
                    ("127.0.0.1", port))  # fmt: skip
        reply = sock.recv(65535).decode()
    assert reply.startswith("SIP/2.0 400 "), reply
    assert "CSeq: 1 INVITE" in reply.split("\r\n")


def test_tcp_request_without_content_length_gets_400_and_connection_stays(phone: Phone) -> None:
    engine, _ = phone
    port = engine.ports["tcp"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        local = sock.getsockname()[1]
        sock.sendall(raw_request(port, local, "TCP", cl=False))
        assert sock.recv(65535).decode().startswith("SIP/2.0 400 ")
        sock.sendall(raw_request(port, local, "TCP"))  # the same connection still serves
        assert sock.recv(65535).decode().startswith("SIP/2.0 200 ")


def test_conflicting_content_lengths_close_a_tcp_connection_but_not_udp(phone: Phone) -> None:
    # On a stream the framing after two different lengths is unknown: the connection goes.
    engine, _ = phone
    conflicting = "Content-Length: 5\r\nContent-Length: 0"
    port = engine.ports["tcp"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        local = sock.getsockname()[1]
        sock.sendall(raw_request(port, local, "TCP", cl=False).replace(
            b"\r\n\r\n", f"\r\n{conflicting}\r\n\r\nhello".encode()))  # fmt: skip
        received = b""
        while chunk := sock.recv(65535):  # until the phone closes the connection
            received += chunk
    assert received.decode().startswith("SIP/2.0 400 ")
    port = engine.ports["udp"]  # the UDP socket is the phone's own: it must stay
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        local = udp.getsockname()[1]
        bad = raw_request(port, local, "UDP", cl=False).replace(
            b"\r\n\r\n", f"\r\n{conflicting}\r\n\r\nhello".encode())  # fmt: skip
        udp.sendto(bad, ("127.0.0.1", port))
        assert udp.recv(65535).decode().startswith("SIP/2.0 400 ")
        udp.sendto(raw_request(port, local, "UDP"), ("127.0.0.1", port))
        assert udp.recv(65535).decode().startswith("SIP/2.0 200 ")


def test_phone_registers_and_calls_after_the_torture(
    phone: Phone,
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, events = phone
    for name, case in CASES.items():  # once more, back to back
        scenario = request_scenario(case.request, case.status, case.header, case.pattern)
        result = run_sipp(tmp_path / name, scenario, f"127.0.0.1:{engine.ports['udp']}", "udp")
        assert result.passed, f"{name}: {result.explain()}"
    assert engine.running and engine.calls_info() == []
    # A fresh registration (the account is re-created with new settings).
    mark = events.mark()
    changed = phone_config(
        kamailio_server, [account(kamailio_server, "1001", register_expires_s=120)]
    )
    engine.apply_config(changed)
    events.wait_for(
        lambda e: isinstance(e, RegistrationChanged) and e.registered and e.status_code == 200,
        timeout=15,
        start=mark,
    )
    with peer(kamailio_server, tmp_path, "1002") as far:
        confirmed = place_call(engine, events, "1002")
        far.wait_event("CALL_ESTABLISHED")
        mark = events.mark()
        engine.submit(Hangup(confirmed.call_id))
        events.wait_call_state(CallState.DISCONNECTED, confirmed.call_id, start=mark)
