"""Admin users: creation, role, disable/enable/unlock and password reset, each with its audit
entry, for the REST API, the CLI and the web UI.

The rules live here, not in a front end: nobody lowers their own role or disables themselves
(``acting_user`` is the signed-in admin; the CLI, acting as the server's owner, passes None).
Every function flushes; the caller commits. Bad input raises AdminError with a specific
message and writes nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.provisioning import audit, password_history
from offhook.provisioning.admin_auth import (
    AdminError,
    check_role,
    create_admin,
    set_disabled,
    set_password,
    verify_password,
)
from offhook.provisioning.models import ROLE_ADMIN, AdminUser
from offhook.provisioning.operations import Actor

# disable | enable | unlock: the account's state changes, audited as admin_user.<action>.
STATE_ACTIONS = ("disable", "enable", "unlock")


class AdminUserNotFound(AdminError):
    status = 404


class AdminUserRefused(AdminError):
    """A change the rules forbid (e.g. lowering one's own role): 409 in the REST API."""

    status = 409


def admin_user_snapshot(user: AdminUser) -> dict[str, object]:
    """What audit entries about an admin user record (never the password hash)."""
    return {"username": user.username, "role": user.role, "disabled": user.disabled}


def _state_snapshot(user: AdminUser) -> dict[str, object]:
    locked = user.locked_until.isoformat() if user.locked_until else None
    return admin_user_snapshot(user) | {"locked_until": locked}


def _record(
    db: Session,
    actor: Actor,
    user: AdminUser,
    action: str,
    before: dict[str, object] | None,
    after: dict[str, object],
) -> None:
    audit.record(
        db, actor.name, f"admin_user.{action}", "admin_user", user.id, before, after, actor.ip
    )
    db.flush()


def get_admin_user(db: Session, ref: int | str) -> AdminUser:
    """By numeric id or username."""
    user = None
    text = str(ref)
    if text.isascii() and text.isdigit() and len(text) <= 10:
        user = db.get(AdminUser, int(text))
    if user is None:
        user = db.scalar(select(AdminUser).where(AdminUser.username == text))
    if user is None:
        raise AdminUserNotFound(f"admin user {ref!r} not found")
    return user


def list_admin_users(db: Session) -> list[AdminUser]:
    return list(db.scalars(select(AdminUser).order_by(AdminUser.username)))


def create_admin_user(
    db: Session, actor: Actor, username: str, password: str, role: str = "admin"
) -> AdminUser:
    """A new admin user plus its ``admin_user.create`` audit entry."""
    user = create_admin(db, username, password, role)
    _record(db, actor, user, "create", None, admin_user_snapshot(user))
    return user


def change_admin_role(
    db: Session,
    actor: Actor,
    ref: int | str,
    role: str,
    acting_user: AdminUser | None = None,
) -> AdminUser:
    """``admin_user.role``; an admin cannot lower their own role (the last way back in)."""
    user = get_admin_user(db, ref)
    check_role(role)
    if acting_user is not None and user.id == acting_user.id and role != ROLE_ADMIN:
        raise AdminUserRefused("you cannot lower your own role")
    before = admin_user_snapshot(user)
    user.role = role
    _record(db, actor, user, "role", before, admin_user_snapshot(user))
    return user


def change_admin_state(
    db: Session,
    actor: Actor,
    ref: int | str,
    action: str,
    acting_user: AdminUser | None = None,
) -> AdminUser:
    """disable (ends the user's API tokens for good), enable, or unlock (ends a lockout)."""
    user = get_admin_user(db, ref)
    if action not in STATE_ACTIONS:
        raise AdminError(f"unknown action {action!r}; use one of {', '.join(STATE_ACTIONS)}")
    if acting_user is not None and user.id == acting_user.id and action == "disable":
        raise AdminUserRefused("you cannot disable yourself")
    before = _state_snapshot(user)
    if action == "unlock":
        user.locked_until = None
        user.failed_attempts = 0
    else:
        set_disabled(db, user, action == "disable")
    _record(db, actor, user, action, before, _state_snapshot(user))
    return user


def reset_admin_password(
    db: Session,
    actor: Actor,
    ref: int | str,
    password: str,
    *,
    history: int = password_history.DEFAULT_DEPTH,
) -> AdminUser:
    """A new password: ends the user's sessions, API tokens and any lockout. The audit entry
    says that it changed, never what it is. It may not repeat the last ``history``."""
    user = get_admin_user(db, ref)
    set_password(db, user, password, history=history)
    before: dict[str, object] = {"username": user.username}
    _record(db, actor, user, "password", before, {**before, "password_changed": True})
    return user


def change_own_password(
    db: Session,
    actor: Actor,
    user: AdminUser,
    current: str,
    password: str,
    *,
    history: int = password_history.DEFAULT_DEPTH,
) -> AdminUser:
    """An admin's own new password, proven with the current one (a session left open on a
    desk must not be enough). Audited as ``admin_user.password`` like a reset."""
    if not verify_password(user.password_hash, current):
        raise AdminError("the current password is wrong")
    return reset_admin_password(db, actor, user.id, password, history=history)
