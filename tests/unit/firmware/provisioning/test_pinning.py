"""CA pinning against a real HTTPS server (stdlib http.server + ssl) with throwaway CAs."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from offhook.firmware.provisioning.pinning import (
    PinnedCA,
    PinningError,
    fetch_presented_chain,
    sha256_fingerprint,
)


@dataclass(frozen=True)
class ThrowawayPki:
    ca_cert: Path
    cert: Path  # server certificate for 127.0.0.1, signed by the CA
    key: Path


def _cert(subject: str, issuer: str, key, signer, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if not ca:
        san = [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_certificates(directory: Path, name: str = "offhook test fleet CA") -> ThrowawayPki:
    """A throwaway CA and a 127.0.0.1 server certificate it signed, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    pki = ThrowawayPki(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    pem = serialization.Encoding.PEM
    pki.ca_cert.write_bytes(_cert(name, name, ca_key, ca_key, True).public_bytes(pem))
    pki.cert.write_bytes(_cert("127.0.0.1", name, key, ca_key, False).public_bytes(pem))
    pki.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def der_of(pem_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"hello": "pinned"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def https_server(chain_pem: Path, key_pem: Path) -> Iterator[int]:
    """A real HTTPS server on 127.0.0.1 presenting ``chain_pem`` (leaf first)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_pem, key_pem)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def full_chain(certs: ThrowawayPki, directory: Path, ca: Path | None = None) -> Path:
    path = directory / "chain.pem"
    path.write_bytes(certs.cert.read_bytes() + (ca or certs.ca_cert).read_bytes())
    return path


@pytest.fixture(scope="module")
def fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPki:
    return make_certificates(tmp_path_factory.mktemp("fleet"))


def test_right_pin_connects_and_caches_the_ca(fleet_ca: ThrowawayPki, tmp_path: Path) -> None:
    pin = sha256_fingerprint(der_of(fleet_ca.ca_cert))
    cache = tmp_path / "pinned-ca.der"
    with https_server(full_chain(fleet_ca, tmp_path), fleet_ca.key) as port:
        chain = fetch_presented_chain("127.0.0.1", port)
        assert [sha256_fingerprint(d) for d in chain][-1] == pin
        context = PinnedCA(pin.upper(), cache).ssl_context("127.0.0.1", port)
        with httpx.Client(verify=context) as client:
            assert client.get(f"https://127.0.0.1:{port}/").json() == {"hello": "pinned"}
    assert cache.read_bytes() == der_of(fleet_ca.ca_cert)


def test_wrong_pin_is_refused(fleet_ca: ThrowawayPki, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other")
    wrong = sha256_fingerprint(der_of(other.ca_cert))
    with (
        https_server(full_chain(fleet_ca, tmp_path), fleet_ca.key) as port,
        pytest.raises(PinningError, match="lacks the pinned CA"),
    ):
        PinnedCA(wrong, tmp_path / "ca.der").ssl_context("127.0.0.1", port)
    assert not (tmp_path / "ca.der").exists()


def test_pin_of_a_leaf_certificate_is_refused(fleet_ca: ThrowawayPki, tmp_path: Path) -> None:
    leaf_pin = sha256_fingerprint(der_of(fleet_ca.cert))
    with (
        https_server(full_chain(fleet_ca, tmp_path), fleet_ca.key) as port,
        pytest.raises(PinningError, match="not a CA"),
    ):
        PinnedCA(leaf_pin, tmp_path / "ca.der").ssl_context("127.0.0.1", port)


def test_impostor_presenting_the_pinned_ca_cert_fails_verification(
    fleet_ca: ThrowawayPki, tmp_path: Path
) -> None:
    """The CA certificate is public: appending it to a chain must not make a foreign leaf pass."""
    impostor = make_certificates(tmp_path / "impostor")
    chain = full_chain(impostor, tmp_path, ca=fleet_ca.ca_cert)
    pin = sha256_fingerprint(der_of(fleet_ca.ca_cert))
    with https_server(chain, impostor.key) as port:
        context = PinnedCA(pin, tmp_path / "ca.der").ssl_context("127.0.0.1", port)
        with httpx.Client(verify=context) as client, pytest.raises(httpx.ConnectError) as err:
            client.get(f"https://127.0.0.1:{port}/")
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


def test_cached_ca_for_another_pin_is_discarded(fleet_ca: ThrowawayPki, tmp_path: Path) -> None:
    cache = tmp_path / "pinned-ca.der"
    cache.write_bytes(der_of(make_certificates(tmp_path / "old").ca_cert))
    pin = sha256_fingerprint(der_of(fleet_ca.ca_cert))
    with https_server(full_chain(fleet_ca, tmp_path), fleet_ca.key) as port:
        PinnedCA(pin, cache).ssl_context("127.0.0.1", port)
    assert sha256_fingerprint(cache.read_bytes()) == pin


def test_malformed_pin_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        PinnedCA("abc", tmp_path / "ca.der")
