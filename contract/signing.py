"""Firmware bundle signing keys: the pair ``rauc bundle`` signs with and the certificate that
phones (``/etc/rauc/keyring.pem``) and the server (its upload keyring) verify against.

Production builds pass their own pair (``offhook image build --signing-key/--signing-cert``).
Without one the build makes a development pair once and reuses it: its common name says
DEVELOPMENT so that no one mistakes a card or bundle signed with it for a release.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from offhook.contract.atomic import atomic_write_bytes
from offhook.contract.errors import OffhookError
from offhook.contract.x509 import issue_ca

DEVELOPMENT_CN = "offhook DEVELOPMENT firmware signing - not for production"
KEY_NAME = "signing.key.pem"
CERT_NAME = "signing.cert.pem"
VALID_DAYS = 10 * 365


class SigningKeyError(OffhookError, ValueError):
    """A signing key or certificate that is missing or unusable."""


@dataclass(frozen=True)
class SigningPair:
    key: Path
    cert: Path

    @property
    def development(self) -> bool:
        return common_name(self.cert) == DEVELOPMENT_CN


def common_name(cert: Path) -> str:
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def make_signing_pair(directory: Path, common: str) -> SigningPair:
    """A new P-256 key and its self-signed certificate (the keyring is that certificate)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, cert = issue_ca(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]),
        VALID_DAYS,
        digital_signature=True,
    )
    pair = SigningPair(directory / KEY_NAME, directory / CERT_NAME)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write_bytes(pair.key, key_pem, mode=0o600)
    atomic_write_bytes(pair.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return pair


def development_pair(directory: Path) -> SigningPair:
    """The development pair in ``directory``, made on first use."""
    pair = SigningPair(directory / KEY_NAME, directory / CERT_NAME)
    if pair.key.is_file() and pair.cert.is_file():
        return pair
    return make_signing_pair(directory, DEVELOPMENT_CN)


def given_pair(key: Path | None, cert: Path | None) -> SigningPair | None:
    """``--signing-key``/``--signing-cert``: both or neither; each must be a readable PEM."""
    if key is None and cert is None:
        return None
    if key is None or cert is None:
        raise SigningKeyError("--signing-key and --signing-cert go together: give both or neither")
    for what, path in (("--signing-key", key), ("--signing-cert", cert)):
        if not path.is_file() or not os.access(path, os.R_OK):
            raise SigningKeyError(f"{what} {path}: file not found or not readable")
    try:
        x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError as exc:
        raise SigningKeyError(f"--signing-cert {cert}: not a PEM certificate ({exc})") from None
    try:
        serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"--signing-key {key}: not an unencrypted PEM key ({exc})") from None
    return SigningPair(key, cert)
