"""SIP over TCP: framing by Content-Length, and the BLF watcher against a loopback TCP server
that answers with what cannot be framed (the watcher must log why, drop the connection, report
the lamp unknown and connect again, never hang or crash)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from offhook.contract.config import PhoneConfig
from offhook.firmware.events import ExtensionState
from offhook.firmware.sip.dialog_watch import DialogWatcher
from offhook.firmware.sip.sip_stream import MAX_BODY_BYTES, StreamClosed, StreamFramer
from tests.fixtures.waiting import wait_until

NOTIFY_HEAD = b"NOTIFY sip:a SIP/2.0\r\nCall-ID: x\r\nContent-Length: 5\r\n\r\n"


def test_messages_are_cut_by_content_length_across_reads_and_keepalives_skipped() -> None:
    framer = StreamFramer()
    data = b"\r\n\r\n" + NOTIFY_HEAD + b"hello" + b"\r\n" + b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n"
    out: list[bytes] = []
    for i in range(0, len(data), 7):  # any split of the stream gives the same messages
        out += framer.feed(data[i : i + 7])
    assert out == [NOTIFY_HEAD + b"hello", b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n"]
    # two messages in one read
    assert len(StreamFramer().feed((NOTIFY_HEAD + b"hello") * 2)) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", "without Content-Length"),
        (b"SIP/2.0 200 OK\r\nContent-Length: ten\r\n\r\n", "not a number"),
        (b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\n", "differing Content-Lengths"),
        (
            b"SIP/2.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
            "over the 65536 byte limit",
        ),
        (b"SIP/2.0 200 OK\r\nX: " + b"a" * 20_000, "no end of headers within 16384 bytes"),
        (b"SIP/2.0 200 OK\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", "over the 16384 limit"),
    ],
)
def test_what_cannot_be_framed_closes_the_stream_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(StreamClosed, match=reason):
        StreamFramer().feed(data)


class HostileServer:
    """A TCP listener that answers each SUBSCRIBE it reads with ``reply`` and counts the
    connections it got."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    if b"SUBSCRIBE" in conn.recv(65_536):
                        conn.sendall(self.reply)
                        conn.recv(1)  # until the watcher hangs up
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)
        self._sock.close()


@pytest.fixture
def watcher_events() -> Iterator[tuple[list[ExtensionState], list[DialogWatcher]]]:
    seen: list[ExtensionState] = []
    made: list[DialogWatcher] = []
    yield seen, made
    for watcher in made:
        watcher.stop()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SIP/2.0 200 OK\r\nContent-Length: 99999999\r\n\r\n", "over the 65536 byte limit"),
        (b"SIP/2.0 200 OK\r\nCSeq: 1 SUBSCRIBE\r\n\r\n", "without Content-Length"),
        (b"SIP/2.0 200 OK\r\n" + b"X-Junk: " + b"z" * 40_000, "no end of headers"),
    ],
)
def test_a_server_that_sends_what_cannot_be_framed_is_dropped_and_tried_again(
    reply: bytes,
    reason: str,
    watcher_events: tuple[list[ExtensionState], list[DialogWatcher]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, made = watcher_events
    server = HostileServer(reply)
    try:
        config = PhoneConfig.model_validate(
            {
                "accounts": [
                    {"user": "1001", "domain": f"127.0.0.1:{server.port}", "transport": "tcp"}
                ],
            }
        )
        caplog.set_level(logging.WARNING, "offhook.firmware.sip.dialog_watch")
        watcher = DialogWatcher(seen.append, "127.0.0.1")
        made.append(watcher)
        watcher.start()
        watcher.watch(config, ((0, "1002"),))
        wait_until(lambda: seen, "the lamp reported")
        assert seen[0] == ExtensionState("1002", (), False)
        lost = [r for r in caplog.records if r.getMessage() == "blf connection lost"]
        assert reason in str(getattr(lost[0], "fields", {}).get("reason")), lost
        # connected again after the 1 s backoff: the watcher neither hung nor died
        wait_until(lambda: server.connections >= 2, "a second connection", timeout=5)
        watcher.stop(timeout=3)
        assert not watcher._thread.is_alive()
    finally:
        server.close()
