"""Enrollment state on disk: persistent nonce, credential written 0600, discard."""

from __future__ import annotations

from pathlib import Path

from offhook.firmware.provisioning.enroll import Credential, EnrollmentStore, enroll_request
from offhook.firmware.provisioning.identity import DeviceIdentity


def test_nonce_survives_restarts_until_enrolled(tmp_path: Path) -> None:
    nonce = EnrollmentStore(tmp_path).nonce()
    assert len(nonce) == 43  # 32 random bytes, base64url without padding
    assert EnrollmentStore(tmp_path).nonce() == nonce  # same request after a reboot
    store = EnrollmentStore(tmp_path)
    store.save_credential(Credential("dev-1", "s" * 43))
    assert (tmp_path / "credential.json").stat().st_mode & 0o777 == 0o600
    assert EnrollmentStore(tmp_path).credential() == Credential("dev-1", "s" * 43)
    assert store.nonce() != nonce  # a fresh enrollment gets a fresh nonce


def test_discarded_credential_is_gone(tmp_path: Path) -> None:
    store = EnrollmentStore(tmp_path)
    store.save_credential(Credential("dev-1", "secret"))
    store.discard_credential()
    assert store.credential() is None and not (tmp_path / "credential.json").exists()


def test_corrupt_credential_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / "credential.json").write_text("{not json")
    assert EnrollmentStore(tmp_path).credential() is None


def test_enroll_request_carries_the_identity() -> None:
    identity = DeviceIdentity(mac="B8-27-EB-00-00-09", serial="abcd1234", model="offhook-pi4")
    body = enroll_request(identity, "tok", "n" * 43)
    assert body["mac"] == "b8:27:eb:00:00:09" and body["serial"] == "abcd1234"
    assert body["enrollment_token"] == "tok" and body["nonce"] == "n" * 43
    assert body["firmware_version"] and body["model"] == "offhook-pi4"
