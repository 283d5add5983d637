"""Enrollment tokens: the shared secret a new phone presents the first time it asks for a config."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser, EnrollmentToken, utcnow
from offhook.provisioning.operations import NotFound as OperationNotFound
from offhook.provisioning.operations import (
    OperationError,
    create_enrollment_token,
    revoke_enrollment_token,
)
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import Reader, WebRoute, permitted, render
from offhook.provisioning.web.sessions import add_flash, take_form

router = APIRouter(route_class=WebRoute)
TokenWriter = Annotated[AdminUser, permitted("enrollment_token.write")]
MAX_TTL_DAYS = 365
TOKEN_PURPOSE = "enrollment_tokens.token"  # the sealing purpose operations uses


def _revealed_token(request: Request, db: Session, token_id: object) -> str:
    """The plain value of a token created a moment ago, from the server's sealed copy."""
    token = db.get(EnrollmentToken, token_id) if isinstance(token_id, int) else None
    if token is None:
        return ""
    return request.app.state.services.keys.decrypt(token.token_enc, TOKEN_PURPOSE)


def _page(request: Request, db: Session) -> Response:
    form = take_form(request, "/tokens")
    tokens = list(db.scalars(select(EnrollmentToken).order_by(EnrollmentToken.id.desc())))
    return render(
        request,
        "tokens.html",
        {
            "title": "Enrollment tokens",
            "section": "tokens",
            "tokens": tokens,
            "now": utcnow(),
            "error": form.get("error", ""),
            "form": {"name": "", "days": "7", "max_uses": "1", **form},
            "new_token": _revealed_token(request, db, form.get("new_token_id")),
        },
    )


@router.get("/tokens")
def tokens_page(
    request: Request,
    admin: Reader,
    db: DbSession,
) -> Response:
    return _page(request, db)


@router.post("/tokens")
def token_create(
    request: Request,
    admin: TokenWriter,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    days: Annotated[str, Form()] = "7",
    max_uses: Annotated[str, Form()] = "1",
) -> Response:
    try:
        if not days.strip().isdigit() or not 1 <= int(days) <= MAX_TTL_DAYS:
            raise OperationError(f"valid for: a whole number of days, 1-{MAX_TTL_DAYS}")
        if not max_uses.strip().isdigit():
            raise OperationError("uses: a whole number, at least 1")
        _plain, token = create_enrollment_token(
            db,
            request.app.state.services.keys,
            actor_for(request, admin),
            name=name.strip(),
            ttl=timedelta(days=int(days)),
            max_uses=int(max_uses),
        )
    except OperationError as exc:
        db.rollback()
        form = {"error": str(exc), "name": name, "days": days, "max_uses": max_uses}
        return back_with_form(request, "/tokens", form)
    db.commit()
    # Shown once, on the page this redirects to: the one-shot state names the token and the
    # page reads the server's sealed copy; a reload (or any later visit) shows it no more.
    response = back_with_form(request, "/tokens", {"new_token_id": token.id})
    add_flash(request, response, "ok", f"Token {token.name or token.id} created.")
    return response


@router.post("/tokens/{token_id}/revoke")
def token_revoke(
    request: Request,
    token_id: int,
    admin: TokenWriter,
    db: DbSession,
) -> Response:
    try:
        revoke_enrollment_token(db, actor_for(request, admin), token_id)
    except OperationNotFound as exc:
        return done(request, "/tokens", str(exc), "error")
    db.commit()
    return done(request, "/tokens", "Token revoked.")
