"""Admin users (admin role only): create, change role, disable/enable, unlock; login history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning import audit
from offhook.provisioning.admin_auth import (
    AdminError,
    check_role,
    set_disabled,
    set_password,
)
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import ROLE_ADMIN, ROLES, AdminUser, LoginAttempt, utcnow
from offhook.provisioning.services.admin_users import admin_user_snapshot, create_admin_user
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import NotFound, WebRoute, permitted, render
from offhook.provisioning.web.sessions import take_form

router = APIRouter(route_class=WebRoute)
UserManager = Annotated[AdminUser, permitted("admin_user.manage")]
USER_ACTIONS = ("disable", "enable", "unlock")


_snapshot = admin_user_snapshot


def _page(request: Request, db: Session) -> Response:
    form = take_form(request, "/admins")
    return render(
        request,
        "admins.html",
        {
            "title": "Admin users",
            "section": "admins",
            "users": list(db.scalars(select(AdminUser).order_by(AdminUser.username))),
            "attempts": list(
                db.scalars(select(LoginAttempt).order_by(LoginAttempt.id.desc()).limit(25))
            ),
            "roles": ROLES,
            "now": utcnow(),
            "error": form.get("error", ""),
            "form": {"username": "", "role": "read-only", **form},
        },
    )


def _load(db: Session, user_id: int) -> AdminUser:
    user = db.get(AdminUser, user_id)
    if user is None:
        raise NotFound(f"No admin user {user_id}.")
    return user


def _commit_audited(
    request: Request,
    db: Session,
    admin: AdminUser,
    user: AdminUser,
    action: str,
    before: dict[str, object] | None,
    after: dict[str, object],
) -> None:
    """Record ``admin``'s change to ``user`` as ``admin_user.<action>`` and commit both."""
    actor = actor_for(request, admin)
    audit.record(
        db, actor.name, f"admin_user.{action}", "admin_user", user.id, before, after, actor.ip
    )
    db.commit()


@router.get("/admins")
def admins_page(
    request: Request,
    admin: UserManager,
    db: DbSession,
) -> Response:
    return _page(request, db)


@router.post("/admins")
def admin_create(
    request: Request,
    admin: UserManager,
    db: DbSession,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "read-only",
) -> Response:
    try:
        user = create_admin_user(db, actor_for(request, admin), username, password, role)
    except AdminError as exc:
        db.rollback()
        form = {"error": str(exc), "username": username, "role": role}
        return back_with_form(request, "/admins", form)
    db.commit()
    return done(request, "/admins", f"Admin user {user.username} created ({user.role}).")


@router.post("/admins/{user_id}/role")
def admin_role(
    request: Request,
    user_id: int,
    admin: UserManager,
    db: DbSession,
    role: Annotated[str, Form()] = "",
) -> Response:
    user = _load(db, user_id)
    try:
        check_role(role)
    except AdminError as exc:
        return done(request, "/admins", str(exc), "error")
    if user.id == admin.id and role != ROLE_ADMIN:
        return done(request, "/admins", "You cannot lower your own role.", "error")
    before = _snapshot(user)
    user.role = role
    _commit_audited(request, db, admin, user, "role", before, _snapshot(user))
    return done(request, "/admins", f"{user.username} is now {role}.")


@router.post("/admins/{user_id}/state")
def admin_state(
    request: Request,
    user_id: int,
    admin: UserManager,
    db: DbSession,
    action: Annotated[str, Form()] = "",
) -> Response:
    user = _load(db, user_id)
    if action not in USER_ACTIONS:
        return done(request, "/admins", f"Unknown action {action!r}.", "error")
    if user.id == admin.id and action == "disable":
        return done(request, "/admins", "You cannot disable yourself.", "error")
    before = _snapshot(user) | {"locked_until": user.locked_until and user.locked_until.isoformat()}
    if action == "unlock":
        user.locked_until = None
        user.failed_attempts = 0
    else:
        set_disabled(db, user, action == "disable")  # disabling ends the user's API tokens
    after = _snapshot(user) | {"locked_until": user.locked_until and user.locked_until.isoformat()}
    _commit_audited(request, db, admin, user, action, before, after)
    return done(request, "/admins", f"{user.username}: {action}d.")


@router.post("/admins/{user_id}/password")
def admin_password(
    request: Request,
    user_id: int,
    admin: UserManager,
    db: DbSession,
    password: Annotated[str, Form()] = "",
) -> Response:
    """Set a new password (ends the user's sessions and any lockout)."""
    user = _load(db, user_id)
    try:
        set_password(db, user, password)
    except AdminError as exc:
        return done(request, "/admins", str(exc), "error")
    # The audit entry says that it changed, never what it is.
    before: dict[str, object] = {"username": user.username}
    _commit_audited(
        request, db, admin, user, "password", before, {**before, "password_changed": True}
    )
    return done(request, "/admins", f"New password set for {user.username}; their sessions ended.")
