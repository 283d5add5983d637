"""Who did it and what follows a committed change: the same for every front end."""

from __future__ import annotations

from sqlalchemy.orm import Session

from offhook.provisioning.crypto import KeyRing
from offhook.provisioning.models import AdminUser
from offhook.provisioning.notify import Notifier
from offhook.provisioning.operations import Actor
from offhook.provisioning.resync import resync


def admin_actor(user: AdminUser, ip: str = "") -> Actor:
    """An admin acting over HTTP (REST API or web UI): audit entries name it ``admin:<user>``."""
    return Actor(f"admin:{user.username}", ip)


def cli_actor(login: str) -> Actor:
    """Someone running ``offhook fleet`` on the server: ``cli:<login>``."""
    return Actor(f"cli:{login}")


def commit_and_resync(db: Session, keys: KeyRing, notifier: Notifier, device_ids: list[str]) -> int:
    """Commit first (phones told to resync must fetch the new revision, not the old one), then
    queue the NOTIFYs; returns how many were queued."""
    db.commit()
    if not device_ids:
        return 0
    return resync(db, keys, notifier, device_ids)
