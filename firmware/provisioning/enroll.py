"""Enrollment state on disk: the per-device credential and the nonce of the pending request.

The nonce is kept until enrollment completes so a retried request (lost response, reboot while
pending) is the *same* request to the server and gets the same secret. The credential is written
atomically with mode 0600 and is the only thing used to authenticate once it exists.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.atomic import atomic_write_text
from offhook.contract.logs import kv
from offhook.firmware.provisioning.identity import DeviceIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credential:
    device_id: str
    secret: str


class EnrollmentStore:
    def __init__(self, state_dir: Path) -> None:
        self.credential_path = Path(state_dir) / "credential.json"
        self.nonce_path = Path(state_dir) / "enroll-nonce.json"

    def credential(self) -> Credential | None:
        try:
            raw = json.loads(self.credential_path.read_text(encoding="utf-8"))
            return Credential(str(raw["device_id"]), str(raw["secret"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "credential file unusable", extra=kv(path=str(self.credential_path), error=exc)
            )
            return None

    def save_credential(self, credential: Credential) -> None:
        text = json.dumps({"device_id": credential.device_id, "secret": credential.secret})
        atomic_write_text(self.credential_path, text, mode=0o600)
        self.nonce_path.unlink(missing_ok=True)

    def discard_credential(self) -> None:
        self.credential_path.unlink(missing_ok=True)
        self.nonce_path.unlink(missing_ok=True)

    def nonce(self) -> str:
        """The nonce of the current enrollment attempt, created and persisted on first use."""
        try:
            return json.loads(self.nonce_path.read_text(encoding="utf-8"))["nonce"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            nonce = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
            atomic_write_text(self.nonce_path, json.dumps({"nonce": nonce}), mode=0o600)
            return nonce


def enroll_request(identity: DeviceIdentity, token: str, nonce: str) -> dict[str, str]:
    return {
        "mac": identity.mac,
        "serial": identity.serial,
        "model": identity.model,
        "firmware_version": identity.firmware_version,
        "enrollment_token": token,
        "nonce": nonce,
    }
