"""Check-sync listener over real UDP on 127.0.0.1: signatures, SIP responses, malformed input."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offhook.firmware.provisioning.checksync import (
    CheckSyncListener,
    SipParseError,
    parse_request,
    signature,
)

SECRET = "q1Ay0dQq3f6Wl8K1j2Vt8b2yq0xYzmNnEo5b0cR3sT4"


def notify(
    call_id: str = "a84b4c76e66710@pbx",
    cseq: int = 7,
    sig: str | None = None,
    event: str = "check-sync",
    method: str = "NOTIFY",
    compact: bool = False,
) -> bytes:
    sig = signature(SECRET, call_id, cseq) if sig is None else sig
    names = ("v", "f", "t", "i", "o") if compact else ("Via", "From", "To", "Call-ID", "Event")
    lines = [
        f"{method} sip:phone@127.0.0.1 SIP/2.0",
        f"{names[0]}: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        f"{names[1]}: <sip:provisioning@127.0.0.1>;tag=1928301774",
        f"{names[2]}: <sip:phone@127.0.0.1>",
        f"{names[3]}: {call_id}",
        f"CSeq: {cseq} {method}",
        f"{names[4]}: {event}",
        f"X-Offhook-Signature: {sig}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


class Listener:
    def __init__(self) -> None:
        self.triggered = threading.Semaphore(0)
        self.secret: str | None = SECRET
        self.listener = CheckSyncListener(
            0, lambda: self.secret, self.triggered.release, host="127.0.0.1"
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)

    def exchange(self, data: bytes) -> str:
        self.sock.sendto(data, ("127.0.0.1", self.listener.port))
        return self.sock.recv(65535).decode()


@pytest.fixture
def listener() -> Iterator[Listener]:
    harness = Listener()
    harness.listener.start()
    yield harness
    harness.listener.stop()
    harness.sock.close()


def status_line(response: str) -> str:
    return response.split("\r\n", 1)[0]


def test_signed_notify_gets_200_and_triggers_resync(listener: Listener) -> None:
    response = listener.exchange(notify())
    assert status_line(response) == "SIP/2.0 200 OK"
    assert listener.triggered.acquire(timeout=5)
    headers = response.split("\r\n")
    assert "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport" in headers
    assert "Call-ID: a84b4c76e66710@pbx" in headers
    assert "CSeq: 7 NOTIFY" in headers
    assert "From: <sip:provisioning@127.0.0.1>;tag=1928301774" in headers
    assert any(h.startswith("To: <sip:phone@127.0.0.1>;tag=") for h in headers)
    assert response.endswith("Content-Length: 0\r\n\r\n")


def test_retransmission_is_answered_but_fetches_once(listener: Listener) -> None:
    assert status_line(listener.exchange(notify(call_id="r1"))) == "SIP/2.0 200 OK"
    assert status_line(listener.exchange(notify(call_id="r1"))) == "SIP/2.0 200 OK"
    assert listener.listener.accepted == 1


def test_compact_headers_are_understood(listener: Listener) -> None:
    assert status_line(listener.exchange(notify(compact=True))) == "SIP/2.0 200 OK"


@pytest.mark.parametrize(
    "bad_sig",
    ["", "00" * 32, signature("another-secret", "a84b4c76e66710@pbx", 7)],
)
def test_wrong_signature_gets_403_and_no_resync(listener: Listener, bad_sig: str) -> None:
    assert status_line(listener.exchange(notify(sig=bad_sig))) == "SIP/2.0 403 Forbidden"
    assert listener.listener.accepted == 0


def test_signature_covers_the_cseq_number(listener: Listener) -> None:
    replayed = notify(cseq=8, sig=signature(SECRET, "a84b4c76e66710@pbx", 7))
    assert status_line(listener.exchange(replayed)) == "SIP/2.0 403 Forbidden"


def test_not_enrolled_refuses_everything(listener: Listener) -> None:
    listener.secret = None
    assert status_line(listener.exchange(notify())) == "SIP/2.0 403 Forbidden"


def test_other_methods_and_events(listener: Listener) -> None:
    assert status_line(listener.exchange(notify(method="INVITE"))).startswith("SIP/2.0 405")
    assert status_line(listener.exchange(notify(event="presence"))) == "SIP/2.0 489 Bad Event"


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello",
        b"\xff\xfe\x00garbage\r\n\r\n",
        b"NOTIFY sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n",  # missing headers
        notify().replace(b"CSeq: 7 NOTIFY", b"CSeq: seven NOTIFY"),
        notify().replace(b"Content-Length: 0", b"Content-Length: 99"),
        notify().replace(b"Call-ID", b"Call ID"),
    ],
)
def test_malformed_message_gets_400_and_listener_survives(
    listener: Listener, garbage: bytes
) -> None:
    assert status_line(listener.exchange(garbage)) == "SIP/2.0 400 Bad Request"
    assert status_line(listener.exchange(notify())) == "SIP/2.0 200 OK"


def test_400_is_addressed_with_the_headers_it_could_read(listener: Listener) -> None:
    response = listener.exchange(notify().replace(b"CSeq: 7 NOTIFY", b"CSeq: 7"))
    assert status_line(response) == "SIP/2.0 400 Bad Request"
    assert "Call-ID: a84b4c76e66710@pbx" in response


def test_keepalive_and_stray_responses_get_no_answer() -> None:
    harness = Listener()
    try:
        assert harness.listener.handle(b"\r\n\r\n", ("127.0.0.1", 1)) is None
        assert harness.listener.handle(b"SIP/2.0 200 OK\r\n\r\n", ("127.0.0.1", 1)) is None
    finally:
        harness.listener.stop()
        harness.sock.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parser_never_fails_with_anything_but_sip_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_request(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_handler_answers_any_bytes_without_raising(data: bytes) -> None:
    harness = Listener()
    try:
        for datagram in (notify()[:40] + data, data, notify() + data):
            answer = harness.listener.handle(datagram, ("127.0.0.1", 9))
            assert answer is None or answer.startswith(b"SIP/2.0 ")
    finally:
        harness.listener.stop()
        harness.sock.close()
