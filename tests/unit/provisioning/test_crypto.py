"""AES-GCM key ring: round trip, purpose binding, key ids, rotation, bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from offhook.provisioning.crypto import (
    KEY_ENV,
    CryptoError,
    KeyRing,
    add_key,
    load_key_ring,
    new_key_line,
)


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_round_trip_and_purpose_binding(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path / "secret.key", create=True)
    assert oct((tmp_path / "secret.key").stat().st_mode & 0o777) == "0o600"
    sealed = ring.encrypt("hunter2-sip", "lines.password")
    assert "hunter2" not in sealed
    assert sealed.split(":")[1] == ring.current
    assert ring.decrypt(sealed, "lines.password") == "hunter2-sip"
    assert ring.encrypt("hunter2-sip", "lines.password") != sealed  # fresh nonce each time
    with pytest.raises(CryptoError, match="failed authentication"):
        ring.decrypt(sealed, "devices.secret")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(CryptoError):
        ring.decrypt(tampered, "lines.password")


def test_missing_file_and_bad_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CryptoError, match="key file not found"):
        load_key_ring(tmp_path / "absent.key")
    with pytest.raises(CryptoError, match="32 bytes"):
        KeyRing.parse("k1 c2hvcnQ", "test")
    with pytest.raises(CryptoError, match="no key"):
        KeyRing.parse("# only a comment\n", "test")
    line = new_key_line()
    monkeypatch.setenv(KEY_ENV, line)
    ring = load_key_ring(tmp_path / "ignored.key")
    assert ring.current == line.split()[0]
    assert not (tmp_path / "ignored.key").exists()


def test_rotation_keeps_old_ciphertexts_readable(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    server_ring = load_key_ring(key_file, create=True)  # a running server's ring
    old = server_ring.encrypt("old-secret", "devices.secret")
    rotated = add_key(key_file)
    assert rotated.current != server_ring.current and len(rotated.keys) == 2
    assert rotated.needs_rotation(old)
    new = rotated.encrypt("new-secret", "devices.secret")
    assert not rotated.needs_rotation(new)
    assert rotated.decrypt(old, "devices.secret") == "old-secret"
    # The running server reloads the key file when it meets the new key id.
    assert server_ring.decrypt(new, "devices.secret") == "new-secret"
    unknown = new.replace(rotated.current, "deadbeef", 1)
    with pytest.raises(CryptoError, match="not in the key ring"):
        server_ring.decrypt(unknown, "devices.secret")
