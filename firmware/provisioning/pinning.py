"""CA pinning for the provisioning server's TLS.

The phone knows only the SHA-256 fingerprint of its fleet CA (DER encoding). The first connection
reads the chain the server presents (without trusting it), picks the certificate whose fingerprint
equals the pin, and caches it. From then on every connection is verified by OpenSSL with that CA as
the *only* trust anchor, so a server certificate not issued by the pinned CA is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
from pathlib import Path

from offhook.contract.atomic import atomic_write_bytes
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

_DER = 2  # _ssl.ENCODING_DER


class PinningError(OffhookError, ConnectionError):
    """The server did not present the pinned CA, or its certificate is not signed by it."""


def sha256_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def normalise_fingerprint(value: str) -> str:
    hexdigits = value.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexdigits):
        raise ValueError(f"CA fingerprint {value!r} is not 64 hex digits (SHA-256)")
    return hexdigits


def fetch_presented_chain(host: str, port: int, timeout_s: float = 10.0) -> list[bytes]:
    """The DER certificates the server sends in its handshake, leaf first, NOT verified."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout_s) as raw,
        probe.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return _unverified_chain(tls)


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    public = getattr(tls, "get_unverified_chain", None)  # Python >= 3.13
    if public is not None:
        return [bytes(c) for c in public()]
    # Python 3.10-3.12 have the same call on the C-level object only
    certs = tls._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
    return [c.public_bytes(_DER) for c in certs or []]


def select_pinned_ca(chain: list[bytes], pin: str) -> bytes:
    """Return the certificate of ``chain`` matching ``pin``; it must be a CA certificate."""
    # imported here: only first contact (no cached CA) parses certificates, and cryptography
    # would otherwise stay in the phone's memory (about 10 MB) for nothing
    from cryptography import x509

    pin = normalise_fingerprint(pin)
    for der in chain:
        if sha256_fingerprint(der) != pin:
            continue
        cert = x509.load_der_x509_certificate(der)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise PinningError(f"pinned certificate {pin[:16]}… is not a CA certificate")
        return der
    seen = ", ".join(sha256_fingerprint(d)[:16] + "…" for d in chain) or "none"
    raise PinningError(f"server chain lacks the pinned CA {pin[:16]}… (presented: {seen})")


def context_for_ca(ca_der: bytes) -> ssl.SSLContext:
    """A client context that trusts exactly one CA and checks the host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.load_verify_locations(cadata=ca_der)
    return context


class PinnedCA:
    """Builds verified TLS contexts for one server from a pinned fingerprint, caching the CA."""

    def __init__(self, pin: str, cache_path: Path) -> None:
        self.pin = normalise_fingerprint(pin)
        self.cache_path = cache_path

    def _cached_ca(self) -> bytes | None:
        try:
            der = self.cache_path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256_fingerprint(der) != self.pin:
            # pin changed in local config (CA rotation): the cache is for the old CA
            log.warning(
                "cached CA does not match the pin; discarded", extra=kv(path=str(self.cache_path))
            )
            self.cache_path.unlink(missing_ok=True)
            return None
        return der

    def ssl_context(self, host: str, port: int) -> ssl.SSLContext:
        der = self._cached_ca()
        if der is None:
            try:
                chain = fetch_presented_chain(host, port)
            except (OSError, ssl.SSLError) as exc:
                raise ConnectionError(f"cannot reach {host}:{port} for TLS: {exc}") from exc
            der = select_pinned_ca(chain, self.pin)
            atomic_write_bytes(self.cache_path, der, mode=0o644)
            log.info("pinned CA found in server chain", extra=kv(host=host, pin=self.pin[:16]))
        return context_for_ca(der)
