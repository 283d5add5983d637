"""After a committed change: tell the affected phones (NOTIFY check-sync), best effort."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.contract.logs import kv
from offhook.provisioning.crypto import CryptoError, KeyRing
from offhook.provisioning.models import DEVICE_APPROVED, Device
from offhook.provisioning.notify import Notifier, NotifyTarget

log = logging.getLogger(__name__)
CHUNK = 1000  # ids per IN (...) query: well under SQLite's bound-parameter limit


class SecretCache:
    """Decrypted device secrets (the NOTIFY HMAC keys) in this process's memory only, keyed by
    device id and checked against the stored ciphertext: a re-enrolment or a key rotation
    writes a new ciphertext, so a stale secret is never used. A fleet-wide change then costs
    one AES-GCM decryption per phone once per process, not once per change."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._items: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def secret(self, keys: KeyRing, device_id: str, secret_enc: str) -> str:
        with self._lock:
            held = self._items.get(device_id)
        if held is not None and held[0] == secret_enc:
            return held[1]
        secret = keys.decrypt(secret_enc, "devices.secret")  # raises CryptoError
        with self._lock:
            if len(self._items) >= self.capacity:
                self._items.clear()  # rare (fleets beyond capacity): start over, stay bounded
            self._items[device_id] = (secret_enc, secret)
        return secret

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


SECRETS = SecretCache()


def notify_targets(
    db: Session, keys: KeyRing, device_ids: list[str], cache: SecretCache = SECRETS
) -> list[NotifyTarget]:
    targets: list[NotifyTarget] = []
    for start in range(0, len(device_ids), CHUNK):
        rows = db.execute(
            select(Device.id, Device.sip_contact, Device.secret_enc).where(
                Device.id.in_(device_ids[start : start + CHUNK]),
                Device.status == DEVICE_APPROVED,
                Device.sip_contact != "",
                Device.secret_enc.is_not(None),
            )
        )
        for device_id, contact, secret_enc in rows:
            if secret_enc is None:  # the query asks for is_not(None); the column is nullable
                raise ValueError(f"device {device_id}: no stored secret")
            try:
                secret = cache.secret(keys, device_id, secret_enc)
            except CryptoError as exc:
                log.error("notify skipped", extra=kv(device=device_id, error=exc))
                continue
            targets.append(NotifyTarget(device_id, contact, secret))
    return targets


def resync(db: Session, keys: KeyRing, notifier: Notifier, device_ids: list[str]) -> int:
    """Queue NOTIFYs for ``device_ids`` (call after commit). Returns how many were queued."""
    targets = notify_targets(db, keys, device_ids)
    notifier.notify(targets)
    log.info("resync queued", extra=kv(devices=len(device_ids), notify_targets=len(targets)))
    return len(targets)
