"""First-run TLS: a private CA and a server certificate signed by it, kept in the data dir.

Phones pin the CA (SHA-256 of its DER), not the server certificate, so the server certificate can
be re-issued (new names, expiry) without re-seeding the fleet.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from offhook.contract.atomic import atomic_write_bytes
from offhook.contract.logs import kv
from offhook.contract.x509 import issue_ca, issue_leaf

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path  # server certificate followed by the CA certificate (chain)
    key: Path
    ca_fingerprint: str  # colon-separated upper-case hex SHA-256 of the CA's DER


def fingerprint_of(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _names(extra: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys(["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]):
        if not name or name in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


def _issue_server(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hostnames: list[str]
) -> tuple[bytes, bytes]:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offhook provisioning")])
    key, cert = issue_leaf(
        ca_key, ca_cert, subject, _names(hostnames), [ExtendedKeyUsageOID.SERVER_AUTH], SERVER_DAYS
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    return chain, _key_pem(key)


def ensure_tls(data_dir: Path, hostnames: list[str] | None = None) -> TlsFiles:
    """Create the CA and server certificate when missing; reuse them otherwise."""
    tls_dir = data_dir / "tls"
    ca_cert_path, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server.key"
    if not ca_cert_path.exists() or not ca_key_path.exists():
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offhook provisioning CA")])
        ca_key, ca_cert = issue_ca(name, CA_DAYS)
        atomic_write_bytes(ca_key_path, _key_pem(ca_key), mode=0o600)
        atomic_write_bytes(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        cert_path.unlink(missing_ok=True)
        log.info("created CA", extra=kv(cert=ca_cert_path))
    if not cert_path.exists() or not key_path.exists():
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path}: expected an EC private key")
        ca_key = loaded
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        chain, key_pem = _issue_server(ca_key, ca_cert, hostnames or [])
        atomic_write_bytes(key_path, key_pem, mode=0o600)
        atomic_write_bytes(cert_path, chain, mode=0o644)
        log.info("issued server certificate", extra=kv(cert=cert_path))
    return TlsFiles(ca_cert_path, cert_path, key_path, fingerprint_of(ca_cert_path.read_bytes()))
