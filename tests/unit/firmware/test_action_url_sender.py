"""The action URL sender against a real loopback HTTP server: order, bounded retries, timeouts."""

from __future__ import annotations

import ssl
from pathlib import Path

from offhook.firmware.action_url_sender import ActionUrlSender
from offhook.firmware.devtools.certs import make_certificates
from offhook.firmware.events import ActionUrl
from tests.fixtures.http_recorder import http_recorder
from tests.fixtures.waiting import wait_until


def sender() -> ActionUrlSender:
    s = ActionUrlSender(sleep=lambda _s: False)  # no pauses between attempts in tests
    s.start()
    return s


def test_fetches_in_order() -> None:
    with http_recorder() as http:
        s = sender()
        try:
            for event in ("incoming", "answered", "ended"):
                s.submit(ActionUrl(event, f"{http.base}/{event}?caller=1002"))
            wait_until(lambda: s.sent == 3, "three fetches")
            assert http.paths() == [f"/{e}?caller=1002" for e in ("incoming", "answered", "ended")]
        finally:
            s.stop()


def test_a_5xx_is_tried_again_at_most_retries_times() -> None:
    with http_recorder() as http:
        http.statuses["/busy"] = [503, 503, 503, 503]
        http.statuses["/flaky"] = [500]
        s = sender()
        try:
            s.submit(ActionUrl("incoming", f"{http.base}/busy", retries=2))
            s.submit(ActionUrl("incoming", f"{http.base}/flaky", retries=2))
            wait_until(lambda: s.failed == 1 and s.sent == 1, "one given up, one sent")
            assert http.paths() == ["/busy"] * 3 + ["/flaky"] * 2
        finally:
            s.stop()


def test_a_4xx_is_final() -> None:
    with http_recorder() as http:
        http.statuses["/gone"] = [404]
        s = sender()
        try:
            s.submit(ActionUrl("missed", f"{http.base}/gone", retries=3))
            wait_until(lambda: s.failed == 1, "given up")
            assert http.paths() == ["/gone"]
        finally:
            s.stop()


def test_a_slow_server_costs_at_most_the_timeout_per_attempt() -> None:
    with http_recorder() as http:
        http.delay_s = 6.0
        s = sender()
        try:
            s.submit(ActionUrl("incoming", f"{http.base}/slow", timeout_s=0.3, retries=1))
            # given up after two short attempts, long before the server would have answered one
            wait_until(lambda: s.failed == 1, "given up", timeout=4)
            assert http.paths() == ["/slow", "/slow"]
        finally:
            s.stop()


def test_an_unreachable_server_does_not_block_submit_and_the_queue_is_bounded() -> None:
    s = ActionUrlSender(sleep=lambda _s: False, limit=3)  # not started: nothing drains
    for i in range(5):
        s.submit(ActionUrl("incoming", f"http://127.0.0.1:9/{i}"))
    assert s.pending() == 3 and s.dropped == 2


def test_https_with_the_servers_ca_and_a_refused_unknown_ca(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.cert, certs.key)
    trusting = ssl.create_default_context(cafile=str(certs.ca_cert))
    with http_recorder(server) as https:
        good = ActionUrlSender(ssl_context=trusting, sleep=lambda _s: False)
        strict = ActionUrlSender(sleep=lambda _s: False)  # the system's CAs only
        good.start()
        strict.start()
        try:
            good.submit(ActionUrl("incoming", f"{https.base}/in?caller=1002"))
            wait_until(lambda: good.sent == 1, "sent over HTTPS")
            assert https.paths() == ["/in?caller=1002"]
            strict.submit(ActionUrl("incoming", f"{https.base}/in?caller=1003", retries=0))
            wait_until(lambda: strict.failed == 1, "refused: the CA is not trusted")
            assert https.paths() == ["/in?caller=1002"]
        finally:
            good.stop()
            strict.stop()
