"""Enrollment tokens: the shared secret a new phone presents the first time it asks for a config."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from provisioning.db import DbSession
from provisioning.models import EnrollmentToken, utcnow
from provisioning.operations import NotFound as OperationNotFound
from provisioning.operations import (
    OperationError,
    create_enrollment_token,
    revoke_enrollment_token,
)
from provisioning.web.actions import actor_for, done
from provisioning.web.core import Operator, Reader, WebRoute, render

router = APIRouter(route_class=WebRoute)
MAX_TTL_DAYS = 365


def _page(
    request: Request, db: Session, *, error: str = "", new_token: str = "", status: int = 200
) -> Response:
    tokens = list(db.scalars(select(EnrollmentToken).order_by(EnrollmentToken.id.desc())))
    return render(
        request,
        "tokens.html",
        {
            "title": "Enrollment tokens",
            "section": "tokens",
            "tokens": tokens,
            "now": utcnow(),
            "error": error,
            "new_token": new_token,
        },
        status_code=status,
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
    admin: Operator,
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
        plain, _token = create_enrollment_token(
            db,
            request.app.state.services.keys,
            actor_for(request, admin),
            name=name.strip(),
            ttl=timedelta(days=int(days)),
            max_uses=int(max_uses),
        )
    except OperationError as exc:
        db.rollback()
        return _page(request, db, error=str(exc), status=422)
    db.commit()
    # Shown once, in this response only: the server keeps just its hash and a sealed copy.
    return _page(request, db, new_token=plain)


@router.post("/tokens/{token_id}/revoke")
def token_revoke(
    request: Request,
    token_id: int,
    admin: Operator,
    db: DbSession,
) -> Response:
    try:
        revoke_enrollment_token(db, actor_for(request, admin), token_id)
    except OperationNotFound as exc:
        return done(request, "/tokens", str(exc), "error")
    db.commit()
    return done(request, "/tokens", "Token revoked.")
