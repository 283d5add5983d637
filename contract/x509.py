"""Issuing a private CA and the certificates it signs (P-256 keys, SHA-256 signatures).

One place for the certificate profile of both the server's first-run TLS (``provisioning.tls``)
and the throwaway loopback certificates of the dev tools (``firmware.devtools.certs``).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

BACKDATE = dt.timedelta(minutes=5)  # tolerate a peer whose clock is a little behind


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, days: float
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def issue_ca(
    name: x509.Name, days: float, *, digital_signature: bool = False
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and its self-signed CA certificate (signs certificates only, no sub-CAs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    names: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: float,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and its end-entity certificate for ``names``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert
