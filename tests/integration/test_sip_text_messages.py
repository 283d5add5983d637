"""Sending text messages on the real engine (pjsua2, Kamailio): the engine stops while a MESSAGE
waits for its answer. pjsua2 looks the account up when the MESSAGE's transaction ends and aborts
the process if the account is gone, so the engine waits for the answer (bounded) before it
shuts the account down. The far end is a UDP socket in the test that answers 200 after 2 s."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from offhook.firmware.events import MessageStatus, SendMessage
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import account, phone_config, running_engine
from tests.fixtures.tls import tls_certificates  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SLOW_PORT = 42050
ANSWER_AFTER_S = 2.0


def answer_slowly(sock: socket.socket, received: list[bytes]) -> None:
    """Read one MESSAGE, wait, answer it 200 with its own Via, From, To, Call-ID and CSeq."""
    data, sender = sock.recvfrom(65535)
    received.append(data)
    time.sleep(ANSWER_AFTER_S)
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    keep = [
        line
        for line in head.split("\r\n")[1:]
        if re.match(r"(Via|From|To|Call-ID|CSeq):", line, re.IGNORECASE)
    ]
    reply = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""])
    sock.sendto(reply.encode(), sender)


def test_the_engine_stops_cleanly_while_a_message_waits_for_its_answer(
    kamailio_server: KamailioServer,  # noqa: F811
) -> None:
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")])
    received: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far_end:
        far_end.bind(("127.0.0.1", SLOW_PORT))
        worker = threading.Thread(target=answer_slowly, args=(far_end, received), daemon=True)
        worker.start()
        with running_engine(config) as (engine, events):
            engine.submit(SendMessage(7, 0, f"sip:nobody@127.0.0.1:{SLOW_PORT}", "hello?"))
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                time.sleep(0.02)
            assert received and received[0].startswith(b"MESSAGE sip:nobody@")
        # stop() returned (no abort) and the answer that came during it was reported
        worker.join(5)
        statuses = [e for e in events.events if isinstance(e, MessageStatus)]
        assert [(s.request, s.status_code) for s in statuses] == [(7, 200)]
