"""NOTIFY check-sync: message format, signature, and a real UDP exchange on loopback."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading

import pytest

from offhook.provisioning.notify import (
    NotifyTarget,
    build_notify,
    parse_contact,
    parse_response,
    send_batch,
    sign,
)


def test_signature_matches_protocol() -> None:
    expected = hmac.new(b"s3cret", b"abc@host7", hashlib.sha256).hexdigest()
    assert sign("s3cret", "abc@host", 7) == expected


def test_contact_parsing() -> None:
    assert parse_contact("127.0.0.1:5070") == ("127.0.0.1", 5070)
    assert parse_contact("[::1]:5060") == ("::1", 5060)
    assert parse_contact("phone.local:5060") == ("phone.local", 5060)
    for bad in ("127.0.0.1", "host:0", "host:99999", "", "a b:5"):
        with pytest.raises(ValueError):
            parse_contact(bad)


def test_message_is_well_formed() -> None:
    target = NotifyTarget("dev-1", "127.0.0.1:5070", "secret")
    text = build_notify(target, "cid@x", 1, "127.0.0.1", 4000).decode()
    head, rest = text.split("\r\n", 1)
    assert head == "NOTIFY sip:dev-1@127.0.0.1:5070 SIP/2.0"
    assert text.endswith("\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in rest.strip().split("\r\n"))
    assert headers["Event"] == "check-sync"
    assert headers["CSeq"] == "1 NOTIFY"
    assert headers["Call-ID"] == "cid@x"
    assert headers["Content-Length"] == "0"
    assert headers["Via"].startswith("SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bK")
    assert headers["X-Offhook-Signature"] == sign("secret", "cid@x", 1)
    assert parse_response(b"SIP/2.0 200 OK\r\nCall-ID: cid@x\r\n\r\n") == (200, "cid@x")
    assert parse_response(b"NOTIFY sip:x SIP/2.0\r\n\r\n") is None


def test_send_batch_collects_answers_and_retransmits() -> None:
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.settimeout(5)
    received: list[bytes] = []

    def answer_once() -> None:
        data, peer = phone.recvfrom(65535)
        received.append(data)
        lines = data.decode().split("\r\n")
        keep = [
            line for line in lines if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")
        ]
        phone.sendto("\r\n".join(["SIP/2.0 200 OK", *keep, "", ""]).encode(), peer)

    thread = threading.Thread(target=answer_once)
    thread.start()
    try:
        result = send_batch(
            [
                NotifyTarget("answering", f"127.0.0.1:{phone.getsockname()[1]}", "k1"),
                NotifyTarget("silent", f"127.0.0.1:{silent.getsockname()[1]}", "k2"),
                NotifyTarget("broken", "no-port", "k3"),
            ],
            wait_s=0.5,
        )
        thread.join(timeout=5)
        assert result.answered == {"answering": 200}
        assert result.unanswered == ["silent"]
        assert result.invalid == ["broken"]
        # The silent phone got the NOTIFY twice (one retransmission), same Call-ID.
        first, second = silent.recv(65535), silent.recv(65535)
        call_id = [line for line in first.decode().split("\r\n") if line.startswith("Call-ID")]
        assert call_id and call_id[0] in second.decode()
        assert (
            b"X-Offhook-Signature: "
            + sign("k1", received[0].decode().split("Call-ID: ")[1].split("\r\n")[0], 1).encode()
            in received[0]
        )
    finally:
        phone.close()
        silent.close()


def test_ipv6_contact_is_notified() -> None:
    try:
        phone = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        phone.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    phone.settimeout(5)
    try:
        result = send_batch(
            [NotifyTarget("v6", f"[::1]:{phone.getsockname()[1]}", "k")], wait_s=0.2
        )
        data = phone.recv(65535).decode()
        assert data.startswith("NOTIFY sip:v6@[::1]:") and "Via: SIP/2.0/UDP [::1]:" in data
        assert result.unanswered == ["v6"] and result.invalid == []
    finally:
        phone.close()
