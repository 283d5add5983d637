"""The media relay on loopback, driven through the rtpproxy control protocol as Kamailio does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from offhook.firmware.devtools.impairment import Impairment, ImpairmentChannel
from offhook.firmware.devtools.media_relay import HOST, MediaRelay

PACKETS = 400


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(2.0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # read only after sending
    return sock


def control(relay: MediaRelay, command: str) -> str:
    with udp() as sock:
        sock.sendto(f"c00kie {command}".encode(), relay.control_address)
        reply = sock.recv(1024).decode()
    cookie, _, answer = reply.strip().partition(" ")
    assert cookie == "c00kie"
    return answer


class Call:
    """Two parties whose SDP the relay has rewritten: each sends to the face it was told."""

    def __init__(self, relay: MediaRelay, call_id: str = "call-1@host") -> None:
        self.caller, self.callee = udp(), udp()
        caller_port, callee_port = self.caller.getsockname()[1], self.callee.getsockname()[1]
        # the offer carries the caller's address; the callee is told to send to the answer port
        port, host = control(relay, f"U {call_id} {HOST} {caller_port} fromtag").split()
        self.callee_sends_to = (host, int(port))
        port, host = control(relay, f"L {call_id} {HOST} {callee_port} fromtag totag").split()
        self.caller_sends_to = (host, int(port))

    def close(self) -> None:
        self.caller.close()
        self.callee.close()


@pytest.fixture
def relay() -> Iterator[MediaRelay]:
    with MediaRelay() as running:
        yield running


def receive_all(sock: socket.socket, quiet_s: float = 0.3) -> list[tuple[int, tuple[str, int]]]:
    sock.settimeout(quiet_s)
    got = []
    while True:
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            return got
        got.append((int.from_bytes(data[:4], "big"), source))


def send_numbered(sock: socket.socket, target: tuple[str, int], n: int, gap_s: float = 0) -> None:
    for index in range(n):
        sock.sendto(index.to_bytes(4, "big") + bytes(156), target)
        if gap_s:
            time.sleep(gap_s)


def test_version_and_capabilities(relay: MediaRelay) -> None:
    assert control(relay, "V") == "20040107"
    assert control(relay, "VF 20050322") == "1"
    assert control(relay, "VF 20090810") == "0"  # recording: not offered
    assert control(relay, "X what") == "E1"
    assert control(relay, "L unknown-call 127.0.0.1 4000 a b") == "E8"


def test_clean_relay_forwards_both_ways_from_the_advertised_faces(relay: MediaRelay) -> None:
    call = Call(relay)
    try:
        send_numbered(call.caller, call.caller_sends_to, 50)
        send_numbered(call.callee, call.callee_sends_to, 50)
        to_callee, to_caller = receive_all(call.callee), receive_all(call.caller)
    finally:
        call.close()
    assert [i for i, _ in to_callee] == list(range(50))
    assert [i for i, _ in to_caller] == list(range(50))
    # each side hears its peer from the address the rewritten SDP gave it (symmetric RTP)
    assert {s for _, s in to_callee} == {call.callee_sends_to}
    assert {s for _, s in to_caller} == {call.caller_sends_to}
    (report,) = relay.sessions()
    assert report.to_answerer.received == report.to_answerer.sent == 50
    assert report.to_offerer.sent == 50


def test_losses_are_the_seeded_channels_decisions(relay: MediaRelay) -> None:
    impairment = Impairment(loss_pct=10, duplicate_pct=2)
    relay.configure(impairment, seed="unit")
    call = Call(relay)
    try:
        send_numbered(call.caller, call.caller_sends_to, PACKETS, gap_s=0.001)
        got = sorted(i for i, _ in receive_all(call.callee))
    finally:
        call.close()
    model = ImpairmentChannel(impairment, "unit/0/to-answerer")
    expected = sorted(i for i in range(PACKETS) for _ in model.decide())
    assert got == expected
    (report,) = relay.sessions()
    decided = report.to_answerer.decisions
    assert decided.lost == model.stats.lost and decided.duplicated == model.stats.duplicated
    assert report.to_answerer.sent == len(expected)


def test_jitter_reorders_and_the_relay_counts_it(relay: MediaRelay) -> None:
    relay.configure(Impairment(jitter_ms=60), seed=3)
    call = Call(relay)
    try:
        send_numbered(call.caller, call.caller_sends_to, 100, gap_s=0.005)
        order = [i for i, _ in receive_all(call.callee)]
    finally:
        call.close()
    assert sorted(order) == list(range(100))
    overtaken = sum(1 for k, i in enumerate(order) if i < max(order[: k + 1]))
    assert overtaken > 10  # 60 ms of jitter over 5 ms spacing
    assert relay.sessions()[0].to_answerer.overtaken == overtaken


def test_delete_ends_the_session_and_keeps_its_figures(relay: MediaRelay) -> None:
    call = Call(relay, "gone@host")
    try:
        send_numbered(call.caller, call.caller_sends_to, 5)
        assert len(receive_all(call.callee)) == 5
        assert control(relay, "D gone@host fromtag totag") == "0"
        send_numbered(call.caller, call.caller_sends_to, 5)
        assert receive_all(call.callee) == []
    finally:
        call.close()
    assert [r.call_id for r in relay.sessions()] == ["gone@host"]
    relay.configure(Impairment(), seed=0)
    assert relay.sessions() == []


def test_port_range_is_respected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        base = probe.getsockname()[1] & ~1
    if base + 9 > 65535:
        base -= 10
    with MediaRelay(port_range=(base, base + 9)) as relay:
        call = Call(relay)
        call.close()
        ports = [relay.control_address[1], call.caller_sends_to[1], call.callee_sends_to[1]]
    assert all(base <= p <= base + 9 for p in ports)
    assert call.caller_sends_to[1] % 2 == 0 and call.callee_sends_to[1] % 2 == 0
