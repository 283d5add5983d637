"""Secrets at rest: AES-256-GCM with a key ring, key id stored in every ciphertext.

Ciphertext text form: ``v1:<key id>:<base64url(nonce || ciphertext+tag)>``. The ``purpose`` (e.g.
``lines.password``) is bound as associated data, so a ciphertext copied into another column does
not decrypt. Key ring source, first found: OFFHOOK_SECRET_KEY (env), the key file. Key file and
env var hold one ``<key id> <base64url 32 bytes>`` per line; the LAST line is the current key
(rotation appends a line, older keys stay for reading until everything is re-encrypted).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from offhook.contract.atomic import atomic_write_text
from offhook.contract.errors import OffhookError

PREFIX = "v1"
KEY_ENV = "OFFHOOK_SECRET_KEY"


class CryptoError(OffhookError, ValueError):
    """A key ring or ciphertext that cannot be used."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_key_line() -> str:
    key = secrets.token_bytes(32)
    kid = hashlib.sha256(key).hexdigest()[:8]
    return f"{kid} {b64e(key)}"


@dataclass
class KeyRing:
    keys: dict[str, bytes]
    current: str
    # Key file this ring came from: re-read when a ciphertext names an unknown key, so running
    # servers keep working while `offhook fleet rotate-key` re-encrypts with a new key.
    source: Path | None = None

    @classmethod
    def parse(cls, text: str, source: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        current = ""
        for number, raw in enumerate(text.replace(";", "\n").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) == 1:  # a bare key: id derived from it
                parts = [hashlib.sha256(_decode_key(parts[0], source, number)).hexdigest()[:8]]
                parts.append(line)
            if len(parts) != 2 or not parts[0].isalnum():
                raise CryptoError(f"{source}:{number}: expected '<key id> <base64url key>'")
            keys[parts[0]] = _decode_key(parts[1], source, number)
            current = parts[0]
        if not keys:
            raise CryptoError(f"{source}: no key found")
        return cls(keys, current)

    def serialise(self) -> str:
        order = [k for k in self.keys if k != self.current] + [self.current]
        return "".join(f"{kid} {b64e(self.keys[kid])}\n" for kid in order)

    def encrypt(self, plaintext: str, purpose: str) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[self.current]).encrypt(
            nonce, plaintext.encode("utf-8"), purpose.encode("utf-8")
        )
        return f"{PREFIX}:{self.current}:{b64e(nonce + sealed)}"

    def decrypt(self, ciphertext: str, purpose: str) -> str:
        try:
            prefix, kid, body = ciphertext.split(":", 2)
        except ValueError:
            raise CryptoError("not an offhook ciphertext") from None
        if prefix != PREFIX:
            raise CryptoError(f"unknown ciphertext version {prefix!r}")
        if kid not in self.keys and self.source is not None and self.source.exists():
            fresh = KeyRing.parse(self.source.read_text(encoding="utf-8"), str(self.source))
            self.keys.update(fresh.keys)
        if kid not in self.keys:
            raise CryptoError(f"ciphertext uses key {kid!r}, which is not in the key ring")
        raw = b64d(body)
        try:
            plain = AESGCM(self.keys[kid]).decrypt(raw[:12], raw[12:], purpose.encode("utf-8"))
        except InvalidTag:
            raise CryptoError(f"ciphertext for {purpose} failed authentication") from None
        return plain.decode("utf-8")

    def key_id_of(self, ciphertext: str) -> str:
        return ciphertext.split(":", 2)[1]

    def needs_rotation(self, ciphertext: str) -> bool:
        return bool(ciphertext) and self.key_id_of(ciphertext) != self.current


def _decode_key(text: str, source: str, number: int) -> bytes:
    try:
        key = b64d(text)
    except ValueError:
        raise CryptoError(f"{source}:{number}: key is not base64url") from None
    if len(key) != 32:
        raise CryptoError(f"{source}:{number}: key must be 32 bytes (AES-256), got {len(key)}")
    return key


def load_key_ring(key_file: Path, create: bool = False) -> KeyRing:
    """Env var wins; else the key file, generated (mode 0600) when ``create`` and missing."""
    env_value = os.environ.get(KEY_ENV, "").strip()
    if env_value:
        return KeyRing.parse(env_value, KEY_ENV)
    if not key_file.exists():
        if not create:
            raise CryptoError(f"{key_file}: key file not found (and {KEY_ENV} is not set)")
        atomic_write_text(key_file, new_key_line() + "\n", mode=0o600)
    ring = KeyRing.parse(key_file.read_text(encoding="utf-8"), str(key_file))
    ring.source = key_file
    return ring


def add_key(key_file: Path) -> KeyRing:
    """Append a fresh key to the key file and make it current (rotation step 1)."""
    ring = KeyRing.parse(key_file.read_text(encoding="utf-8"), str(key_file))
    kid, key = new_key_line().split()
    ring.keys[kid] = b64d(key)
    ring.current = kid
    atomic_write_text(key_file, ring.serialise(), mode=0o600)
    return ring


def write_key_ring(key_file: Path, ring: KeyRing) -> None:
    atomic_write_text(key_file, ring.serialise(), mode=0o600)
