"""A throwaway certificate authority and a certificate for 127.0.0.1 and localhost.

For loopback TLS listeners in the demo and the tests (Kamailio, SIP over TLS); never for a real
deployment: the CA key is thrown away and the certificates live for days.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from offhook.contract.x509 import issue_ca, issue_leaf


@dataclass(frozen=True)
class CertificateSet:
    ca_cert: Path
    cert: Path  # server/client certificate for 127.0.0.1 and localhost, signed by the CA
    key: Path
    combined: Path  # certificate followed by its key, for tools that want one file (baresip)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "offhook dev tools"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_certificates(directory: Path, valid_days: int = 2) -> CertificateSet:
    """Write ca.pem, cert.pem, key.pem and combined.pem into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = issue_ca(_name("offhook dev CA"), valid_days, digital_signature=True)
    key, cert = issue_leaf(
        ca_key,
        ca_cert,
        _name("127.0.0.1"),
        [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        valid_days,
    )
    certs = CertificateSet(
        ca_cert=directory / "ca.pem",
        cert=directory / "cert.pem",
        key=directory / "key.pem",
        combined=directory / "combined.pem",
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    certs.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert_pem)
    certs.key.write_bytes(_pem_key(key))
    certs.combined.write_bytes(cert_pem + _pem_key(key))
    for path in (certs.key, certs.combined):
        path.chmod(0o600)
    return certs
