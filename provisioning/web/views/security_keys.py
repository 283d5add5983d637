"""Security keys (WebAuthn) in the web UI: register, list and remove one's own on the second
factor page, and the sign-in's key step beside the code (``/login/code``). The ceremonies'
options are JSON for ``static/webauthn.js``; the answers come back as ordinary form posts
(Post/Redirect/Get). Every change goes through ``provisioning.webauthn_keys`` and
``provisioning.mfa``; each challenge is bound to this browser's session id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from offhook.provisioning import mfa, sign_in, webauthn_keys
from offhook.provisioning.admin_auth import AdminError, client_ip
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser
from offhook.provisioning.web import sign_in_flow
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import MFA_ENROL_PAGE, WebRoute, permitted, server_settings
from offhook.provisioning.web.sessions import read_session
from offhook.provisioning.web.views.security import code_refused

router = APIRouter(route_class=WebRoute)
AccountOwner = Annotated[AdminUser, permitted("account.security", before_enrolment=True)]
NO_STORE = {"cache-control": "no-store"}


def _sid(request: Request) -> str:
    session = read_session(request)
    return session.sid if session is not None else ""


def _options_reply(body: str) -> Response:
    return Response(body, media_type="application/json", headers=NO_STORE)


def _options_refused(exc: AdminError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=409, headers=NO_STORE)


@router.post("/security/keys/options")
def key_options(request: Request, admin: AccountOwner, db: DbSession) -> Response:
    try:
        rp = webauthn_keys.RelyingParty.from_settings(server_settings(request))
        body = webauthn_keys.registration_options(db, rp, admin, _sid(request))
    except webauthn_keys.WebauthnError as exc:
        db.rollback()
        return _options_refused(exc)
    db.commit()
    return _options_reply(body)


@router.post("/security/keys")
def key_add(
    request: Request,
    admin: AccountOwner,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    credential: Annotated[str, Form()] = "",
) -> Response:
    try:
        rp = webauthn_keys.RelyingParty.from_settings(server_settings(request))
        key = webauthn_keys.finish_registration(
            db, rp, actor_for(request, admin), admin, _sid(request), name, credential
        )
    except webauthn_keys.WebauthnError as exc:
        # The challenge is used up even so: commit its removal, keep the typed name.
        db.commit()
        return back_with_form(request, MFA_ENROL_PAGE, {"key_error": str(exc), "key_name": name})
    db.commit()
    return done(request, MFA_ENROL_PAGE, f"Security key {key.name!r} added.")


@router.post("/security/keys/{key_id}/remove")
def key_remove(request: Request, key_id: int, admin: AccountOwner, db: DbSession) -> Response:
    try:
        name = mfa.remove_security_key(
            db, server_settings(request), actor_for(request, admin), admin, key_id
        )
    except AdminError as exc:
        db.rollback()
        return back_with_form(request, MFA_ENROL_PAGE, {"key_error": str(exc)})
    db.commit()
    return done(request, MFA_ENROL_PAGE, f"Security key {name!r} removed.")


# --- the sign-in's key step ---------------------------------------------------------------------


@router.post("/login/key/options")
def sign_in_options(request: Request, db: DbSession) -> Response:
    waiting = sign_in_flow.pending(request, db)
    if waiting is None:
        return JSONResponse(
            {"error": "the sign-in step expired: start again"}, status_code=409, headers=NO_STORE
        )
    try:
        rp = webauthn_keys.RelyingParty.from_settings(server_settings(request))
        body = webauthn_keys.authentication_options(db, rp, waiting.user, _sid(request))
    except webauthn_keys.WebauthnError as exc:
        db.rollback()
        return _options_refused(exc)
    db.commit()
    return _options_reply(body)


@router.post("/login/key")
def sign_in_key(
    request: Request, db: DbSession, credential: Annotated[str, Form()] = ""
) -> Response:
    waiting = sign_in_flow.pending(request, db)
    if waiting is None:
        return done(request, "/login", "Sign in again: the code step has expired.", "info")
    refused = code_refused(request, db, waiting.user)
    if refused is not None:
        return refused
    try:
        rp = webauthn_keys.RelyingParty.from_settings(server_settings(request))
        webauthn_keys.verify_sign_in(db, rp, waiting.user, _sid(request), credential)
    except webauthn_keys.WebauthnError as exc:
        # Counts toward the lockout like a wrong code; the used challenge stays deleted.
        sign_in.log_code_failure(db, waiting.user, client_ip(request))
        db.commit()
        return back_with_form(request, "/login/code", {"key_error": str(exc)})
    return sign_in_flow.finish(request, db, waiting.user, waiting.next, "key")
