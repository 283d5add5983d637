"""Admin users: creation with its audit entry, for the REST API, the CLI and the web UI."""

from __future__ import annotations

from sqlalchemy.orm import Session

from offhook.provisioning import audit
from offhook.provisioning.admin_auth import create_admin
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import Actor


def admin_user_snapshot(user: AdminUser) -> dict[str, object]:
    """What audit entries about an admin user record (never the password hash)."""
    return {"username": user.username, "role": user.role, "disabled": user.disabled}


def create_admin_user(
    db: Session, actor: Actor, username: str, password: str, role: str = "admin"
) -> AdminUser:
    """A new admin user plus its ``admin_user.create`` audit entry (flushed; the caller
    commits). Bad input raises admin_auth.AdminError with a specific message, nothing written."""
    user = create_admin(db, username, password, role)
    audit.record(
        db,
        actor.name,
        "admin_user.create",
        "admin_user",
        user.id,
        None,
        admin_user_snapshot(user),
        actor.ip,
    )
    return user
