"""After a committed change: tell the affected phones (NOTIFY check-sync), best effort."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.crypto import CryptoError, KeyRing
from provisioning.models import DEVICE_APPROVED, Device
from provisioning.notify import Notifier, NotifyTarget

log = logging.getLogger(__name__)
CHUNK = 500


def notify_targets(db: Session, keys: KeyRing, device_ids: list[str]) -> list[NotifyTarget]:
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
            try:
                secret = keys.decrypt(secret_enc, "devices.secret")
            except CryptoError as exc:
                log.error("notify skipped device=%s error=%s", device_id, exc)
                continue
            targets.append(NotifyTarget(device_id, contact, secret))
    return targets


def resync(db: Session, keys: KeyRing, notifier: Notifier, device_ids: list[str]) -> int:
    """Queue NOTIFYs for ``device_ids`` (call after commit). Returns how many were queued."""
    targets = notify_targets(db, keys, device_ids)
    notifier.notify(targets)
    log.info("resync queued devices=%d notify_targets=%d", len(device_ids), len(targets))
    return len(targets)
