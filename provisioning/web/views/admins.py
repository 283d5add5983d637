"""Admin users (admin role only): create, change role, disable/enable, unlock; login history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.admin_auth import AdminError
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import ROLES, AdminUser, LoginAttempt, utcnow
from offhook.provisioning.services.admin_users import (
    change_admin_role,
    change_admin_state,
    create_admin_user,
    reset_admin_password,
)
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import NotFound, WebRoute, permitted, render
from offhook.provisioning.web.sessions import take_form

router = APIRouter(route_class=WebRoute)
UserManager = Annotated[AdminUser, permitted("admin_user.manage")]


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


def _sentence(exc: Exception) -> str:
    """A service refusal as the page shows it: "You cannot disable yourself." """
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


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
    _load(db, user_id)
    try:
        user = change_admin_role(db, actor_for(request, admin), user_id, role, admin)
    except AdminError as exc:
        db.rollback()
        return done(request, "/admins", _sentence(exc), "error")
    db.commit()
    return done(request, "/admins", f"{user.username} is now {role}.")


@router.post("/admins/{user_id}/state")
def admin_state(
    request: Request,
    user_id: int,
    admin: UserManager,
    db: DbSession,
    action: Annotated[str, Form()] = "",
) -> Response:
    _load(db, user_id)
    try:
        user = change_admin_state(db, actor_for(request, admin), user_id, action, admin)
    except AdminError as exc:
        db.rollback()
        return done(request, "/admins", _sentence(exc), "error")
    db.commit()
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
    _load(db, user_id)
    try:
        user = reset_admin_password(db, actor_for(request, admin), user_id, password)
    except AdminError as exc:
        db.rollback()
        return done(request, "/admins", _sentence(exc), "error")
    db.commit()
    return done(request, "/admins", f"New password set for {user.username}; their sessions ended.")
