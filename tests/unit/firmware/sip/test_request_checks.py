"""The 400 built for requests pjsip could not parse, and option-tag parsing."""

from __future__ import annotations

from offhook.firmware.sip.request_checks import bad_request_reply, option_tags


def request(*lines: str, first: str = "OPTIONS sip:1001@127.0.0.1:5070 SIP/2.0") -> bytes:
    return ("\r\n".join([first, *lines]) + "\r\n\r\n").encode()


VIA = "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKx1;rport"


def test_reply_copies_via_from_to_callid_cseq_and_tags_to() -> None:
    reply = bad_request_reply(
        request(
            VIA,
            "From: <sip:a@127.0.0.1>;tag=1",
            "To: <sip:b@127.0.0.1>",
            "CSeq: x OPTIONS",
            "Call-ID: abc",
            "Max-Forwards: 70",
        )
    )
    assert reply is not None
    lines = reply.text.decode().split("\r\n")
    assert lines[0] == "SIP/2.0 400 Bad Request"
    assert VIA in lines and "Call-ID: abc" in lines and "CSeq: x OPTIONS" in lines
    to = next(line for line in lines if line.startswith("To: "))
    assert to.startswith("To: <sip:b@127.0.0.1>;tag=")
    assert not any(line.startswith("Max-Forwards") for line in lines)
    assert reply.text.endswith(b"Content-Length: 0\r\n\r\n")
    assert (reply.transport, reply.host, reply.port) == ("UDP", "127.0.0.1", 40000)


def test_compact_and_folded_headers_and_default_port() -> None:
    raw = request("v: SIP/2.0/TCP 10.0.0.9\r\n ;branch=z9hG4bKy", "i: id1", "t: <sip:b@h>;tag=9")
    reply = bad_request_reply(raw)
    assert reply is not None
    lines = reply.text.decode().split("\r\n")
    assert "Via: SIP/2.0/TCP 10.0.0.9 ;branch=z9hG4bKy" in lines
    assert "Call-ID: id1" in lines and "To: <sip:b@h>;tag=9" in lines
    assert (reply.transport, reply.port) == ("TCP", 5060)


def test_other_sip_version_gets_505() -> None:
    reply = bad_request_reply(request(VIA, first="OPTIONS sip:x@127.0.0.1 SIP/3.0"))
    assert reply is not None and reply.text.startswith(b"SIP/2.0 505 Version Not Supported\r\n")


def test_nothing_is_sent_when_it_cannot_be_answered() -> None:
    assert bad_request_reply(request(VIA, "CSeq: 1 ACK", first="ACK sip:x@h SIP/2.0")) is None
    assert bad_request_reply(request("CSeq: 1 OPTIONS")) is None  # no Via
    host_name_via = "Via: SIP/2.0/UDP phone.example;branch=z9hG4bKz"
    assert bad_request_reply(request(host_name_via)) is None  # would need a DNS lookup
    assert bad_request_reply(request(VIA, first="SIP/2.0 200 OK")) is None  # a response
    assert bad_request_reply(b"hello world\r\n\r\n") is None


def test_option_tags() -> None:
    assert option_tags("Require: 100rel, X-Foo ,timer") == ["100rel", "x-foo", "timer"]
    assert option_tags("Supported:") == []
