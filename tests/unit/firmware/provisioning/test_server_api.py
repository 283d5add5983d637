"""ServerApi over the standard library: real HTTP(S) servers on loopback, throwaway CAs."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from offhook.firmware.provisioning.pinning import PinnedCA, sha256_fingerprint
from offhook.firmware.provisioning.server_api import (
    ProtocolError,
    Refused,
    ServerApi,
    ServerUnavailable,
    basic_auth,
)

pytestmark = pytest.mark.timeout(60)

NOW = datetime.datetime.now(datetime.UTC)


def test_importing_the_client_does_not_import_httpx() -> None:
    code = (
        "import sys, firmware.provisioning.client\n"
        "print(sorted(m for m in ('httpx', 'httpcore', 'rich', 'pygments', 'click')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"


class _Fleet(http.server.BaseHTTPRequestHandler):
    """Answers as the device API would; notes each request and the client port it came from."""

    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[tuple[int, str, str, dict[str, str], bytes]] = []
    close_after_each = False

    def _answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.close_after_each:
            self.close_connection = True

    def _note(self) -> bytes:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.seen.append(
            (self.client_address[1], self.command, self.path, dict(self.headers), body)
        )
        return body

    def do_GET(self) -> None:
        self._note()
        if self.path != "/base/api/v1/device/config":
            self._answer(404, {"code": "not_found", "detail": self.path})
        elif self.headers.get("If-None-Match") == '"r7"':
            self._answer(304, b"")
        else:
            self._answer(200, {"sip": {}}, {"ETag": '"r7"', "X-Config-Revision": "7"})

    def do_POST(self) -> None:
        payload = json.loads(self._note())
        if self.path.endswith("/enroll"):
            if payload.get("token") == "wait":
                self._answer(202, {"status": "pending"}, {"Retry-After": "12"})
            elif payload.get("token") == "bad":
                self._answer(403, {"code": "bad_token", "detail": "unknown token"})
            else:
                self._answer(200, {"status": "approved", "device_id": "d1", "secret": "s1"})
        elif self.path.endswith("/cdrs"):
            self._answer(200, {"accepted": [r["id"] for r in payload["records"]]})
        elif self.path.endswith("/events"):
            self._answer(503, b"busy", {"Retry-After": "30"})
        else:
            self._answer(200, [1, 2])  # not an object

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(tls: ssl.SSLContext | None = None, close_after_each: bool = False) -> Iterator[int]:
    handler = type("Handler", (_Fleet,), {"seen": [], "close_after_each": close_after_each})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    serving.seen = handler.seen  # type: ignore[attr-defined]
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_calls_share_one_connection_and_carry_json_auth_and_user_agent() -> None:
    with serving() as port, ServerApi(f"http://127.0.0.1:{port}/base/", None, "desk/1") as api:
        assert api.enroll({"token": "t"}).secret == "s1"
        api.auth = basic_auth("d1", "s1")
        reply = api.get_config(None)
        assert (reply.etag, reply.revision, reply.body) == ('"r7"', 7, {"sip": {}})
        assert api.get_config('"r7"').not_modified
        assert api.post("cdrs", {"records": [{"id": "a"}, {"id": "b"}]}) == ["a", "b"]
        seen = serving.seen  # type: ignore[attr-defined]
    assert len({client_port for client_port, *_ in seen}) == 1  # one persistent connection
    _, method, path, headers, body = seen[0]
    assert (method, path, json.loads(body)) == (
        "POST",
        "/base/api/v1/device/enroll",
        {"token": "t"},
    )
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "desk/1"
    assert "Authorization" not in headers
    assert seen[1][3]["Authorization"] == "Basic ZDE6czE="


def test_connection_closed_by_the_server_is_reopened() -> None:
    with (
        serving(close_after_each=True) as port,
        ServerApi(f"http://127.0.0.1:{port}/base", None, "desk/1") as api,
    ):
        for _ in range(3):
            assert api.get_config(None).revision == 7
        assert len({p for p, *_ in serving.seen}) == 3  # type: ignore[attr-defined]


def test_failures_map_to_the_protocol_errors() -> None:
    with serving() as port, ServerApi(f"http://127.0.0.1:{port}/base", None, "desk/1") as api:
        pending = api.enroll({"token": "wait"})
        assert (pending.status, pending.retry_after_s) == ("pending", 12.0)
        with pytest.raises(Refused) as refused:
            api.enroll({"token": "bad"})
        assert (refused.value.status, refused.value.code) == (403, "bad_token")
        with pytest.raises(ServerUnavailable) as busy:
            api.post("events", {"records": []})
        assert busy.value.retry_after_s == 30.0
        with pytest.raises(ProtocolError, match="not a JSON object"):
            api.post("status", {})
        assert api.get_config(None).revision == 7  # the connection still serves after errors
    with (
        ServerApi(f"http://127.0.0.1:{port}", None, "desk/1") as api,  # server gone
        pytest.raises(ServerUnavailable, match="unavailable"),
    ):
        api.get_config(None)
    with pytest.raises(ServerUnavailable, match="scheme"):
        ServerApi("ftp://127.0.0.1/", None, "desk/1")


def _pki(directory: Path, san: str, not_after: datetime.datetime) -> tuple[bytes, ssl.SSLContext]:
    """A CA (DER) and a server TLS context whose certificate names ``san`` until ``not_after``."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=30))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        name = x509.DNSName(san)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, san)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=10))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = directory / "chain.pem"
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path = directory / "key.pem"
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key_path)
    return ca.public_bytes(serialization.Encoding.DER), context


def test_https_with_the_pinned_ca_works(tmp_path: Path) -> None:
    ca, tls = _pki(tmp_path, "127.0.0.1", NOW + datetime.timedelta(days=1))
    pinned = PinnedCA(sha256_fingerprint(ca), tmp_path / "ca.der")
    with serving(tls) as port, ServerApi(f"https://127.0.0.1:{port}/base", pinned, "d") as api:
        assert api.get_config(None).revision == 7
        assert api.get_config(None).revision == 7
        assert len({p for p, *_ in serving.seen}) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("san", "not_after", "reason"),
    [
        ("provisioning.example", NOW + datetime.timedelta(days=1), "IP address mismatch"),
        ("127.0.0.1", NOW - datetime.timedelta(days=1), "certificate has expired"),
    ],
)
def test_https_checks_host_name_and_validity(
    tmp_path: Path, san: str, not_after: datetime.datetime, reason: str
) -> None:
    ca, tls = _pki(tmp_path, san, not_after)
    pinned = PinnedCA(sha256_fingerprint(ca), tmp_path / "ca.der")
    with serving(tls) as port, ServerApi(f"https://127.0.0.1:{port}/base", pinned, "d") as api:
        with pytest.raises(ServerUnavailable, match="CERTIFICATE_VERIFY_FAILED") as failed:
            api.get_config(None)
        assert reason in str(failed.value)
        assert serving.seen == []  # type: ignore[attr-defined]  # nothing was sent
