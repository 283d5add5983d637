"""The signed-in user's API tokens (admins: everyone's): create, list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.admin_auth import (
    AdminError,
    issue_api_token,
    list_api_tokens,
    revoke_api_token,
)
from offhook.provisioning.crypto import CryptoError
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser, utcnow
from offhook.provisioning.permissions import DEFAULT_API_TOKEN_DAYS, allowed, max_api_token_days
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import WebRoute, permitted, render
from offhook.provisioning.web.sessions import add_flash, take_form

router = APIRouter(route_class=WebRoute)
TokenOwner = Annotated[AdminUser, permitted("api_token.own")]
# The new token crosses the redirect sealed with the server's key (the form cookie is only
# signed), and is shown by the page it lands on, once.
SEAL_PURPOSE = "web.new_api_token"


def _page(request: Request, db: Session, admin: AdminUser) -> Response:
    form = take_form(request, "/api-tokens")
    everyone = allowed(admin.role, "api_token.any")
    sealed = form.pop("sealed", "")
    new_token = ""
    if isinstance(sealed, str) and sealed:
        try:
            new_token = request.app.state.services.keys.decrypt(sealed, SEAL_PURPOSE)
        except CryptoError:
            new_token = ""
    return render(
        request,
        "api_tokens.html",
        {
            "title": "API tokens",
            "section": "api-tokens",
            "tokens": list_api_tokens(db, None if everyone else admin),
            "everyone": everyone,
            "now": utcnow(),
            "max_days": max_api_token_days(admin.role),
            "error": form.get("error", ""),
            "form": {"name": "", "days": str(DEFAULT_API_TOKEN_DAYS), **form},
            "new_token": new_token,
        },
    )


@router.get("/api-tokens")
def api_tokens_page(request: Request, admin: TokenOwner, db: DbSession) -> Response:
    return _page(request, db, admin)


@router.post("/api-tokens")
def api_token_create(
    request: Request,
    admin: TokenOwner,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    days: Annotated[str, Form()] = "",
) -> Response:
    actor = actor_for(request, admin)
    try:
        text = days.strip() or str(DEFAULT_API_TOKEN_DAYS)
        if not text.isdigit():
            raise AdminError("valid for: a whole number of days")
        plain, row = issue_api_token(db, actor.name, actor.ip, admin, name.strip(), int(text))
    except AdminError as exc:
        db.rollback()
        return back_with_form(
            request, "/api-tokens", {"error": str(exc), "name": name, "days": days}
        )
    db.commit()
    sealed = request.app.state.services.keys.encrypt(plain, SEAL_PURPOSE)
    response = back_with_form(request, "/api-tokens", {"sealed": sealed})
    add_flash(request, response, "ok", f"API token {row.name or row.prefix} created.")
    return response


@router.post("/api-tokens/{token_id}/revoke")
def api_token_revoke(request: Request, token_id: int, admin: TokenOwner, db: DbSession) -> Response:
    actor = actor_for(request, admin)
    try:
        row = revoke_api_token(db, actor.name, actor.ip, admin, token_id)
    except AdminError as exc:
        return done(request, "/api-tokens", str(exc), "error")
    db.commit()
    return done(request, "/api-tokens", f"API token {row.name or row.prefix} revoked.")
