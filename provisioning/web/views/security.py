"""The signed-in admin's sign-in security (``/security``): second factor (enrol with a QR
code drawn on the server, confirm, recovery codes shown once, turn off), sessions (list, end),
the networks they signed in from, recent attempts, and a new password. Plus the second step
of the sign-in, ``/login/code``. Every change goes through the service functions the REST API
and the CLI use (``provisioning.mfa``, ``provisioning.services.sessions``,
``provisioning.services.admin_users``)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning import mfa, sign_in, webauthn_keys
from offhook.provisioning.admin_auth import AdminError, client_ip, verify_password
from offhook.provisioning.crypto import CryptoError
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser, utcnow
from offhook.provisioning.permissions import allowed
from offhook.provisioning.services import admin_users
from offhook.provisioning.services import sessions as session_rows
from offhook.provisioning.web import sign_in_flow
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import (
    MFA_ENROL_PAGE,
    WebRoute,
    permitted,
    redirect,
    render,
    server_settings,
)
from offhook.provisioning.web.sessions import add_flash, read_session, take_form
from offhook.provisioning.web.views.login import throttled

router = APIRouter(route_class=WebRoute)
# Reachable before enrolment: this is where an admin of an enforced role is sent.
AccountOwner = Annotated[AdminUser, permitted("account.security", before_enrolment=True)]
CODES_SEAL = "web.recovery_codes"


def _sealed_codes(request: Request, form: dict[str, object]) -> list[str]:
    sealed = form.pop("codes", "")
    if not isinstance(sealed, str) or not sealed:
        return []
    try:
        return list(json.loads(request.app.state.services.keys.decrypt(sealed, CODES_SEAL)))
    except (CryptoError, ValueError):
        return []


def _show_codes(request: Request, url: str, codes: list[str], message: str) -> Response:
    """The codes cross the redirect sealed (the form cookie is only signed), shown once."""
    sealed = request.app.state.services.keys.encrypt(json.dumps(codes), CODES_SEAL)
    response = back_with_form(request, url, {"codes": sealed})
    add_flash(request, response, "ok", message)
    return response


@router.get("/security")
def security_page(request: Request, admin: AccountOwner, db: DbSession) -> Response:
    form = take_form(request, "/security")
    everyone = allowed(admin.role, "admin_user.manage")
    session = read_session(request)
    current = session_rows.current_session(db, session.sid) if session else None
    names = {u.id: u.username for u in admin_users.list_admin_users(db)} if everyone else {}
    settings = server_settings(request)
    return render(
        request,
        "security.html",
        {
            "title": "Security",
            "section": "security",
            "mfa": mfa.status(db, settings, admin),
            "prompt": settings.mfa_prompt,
            "sessions": session_rows.list_sessions(db, None if everyone else admin),
            "current_session": current.id if current else None,
            "everyone": everyone,
            "names": names,
            "networks": sign_in.known_networks(db, admin),
            "attempts": sign_in.recent_attempts(db, admin),
            "history": settings.password_history,
            "error": form.get("error", ""),
        },
    )


@router.get("/security/mfa")
def mfa_page(request: Request, admin: AccountOwner, db: DbSession) -> Response:
    form = take_form(request, MFA_ENROL_PAGE)
    settings = server_settings(request)
    return render(
        request,
        "security_mfa.html",
        {
            "title": "Second factor",
            "section": "security",
            "mfa": mfa.status(db, settings, admin),
            "enrolment": mfa.pending_enrolment(db, request.app.state.services.keys, admin),
            "codes": _sealed_codes(request, form),
            "error": form.get("error", ""),
            "keys": webauthn_keys.list_keys(db, admin),
            "keys_available": webauthn_keys.available(settings),
            "key_error": form.get("key_error", ""),
            "key_name": form.get("key_name", ""),
        },
    )


@router.post("/security/mfa/start")
def mfa_start(request: Request, admin: AccountOwner, db: DbSession) -> Response:
    try:
        mfa.start_enrolment(db, request.app.state.services.keys, admin)
    except mfa.MfaError as exc:
        db.rollback()
        return back_with_form(request, MFA_ENROL_PAGE, {"error": str(exc)})
    db.commit()
    return redirect(MFA_ENROL_PAGE)


@router.post("/security/mfa/confirm")
def mfa_confirm(
    request: Request, admin: AccountOwner, db: DbSession, code: Annotated[str, Form()] = ""
) -> Response:
    keys = request.app.state.services.keys
    try:
        codes = mfa.confirm_enrolment(db, keys, actor_for(request, admin), admin, code)
    except mfa.MfaError as exc:
        db.rollback()
        return back_with_form(request, MFA_ENROL_PAGE, {"error": str(exc)})
    db.commit()
    return _show_codes(
        request, MFA_ENROL_PAGE, codes, "Second factor on: sign-in now asks for a code."
    )


@router.post("/security/mfa/recovery-codes")
def mfa_recovery_codes(request: Request, admin: AccountOwner, db: DbSession) -> Response:
    try:
        codes = mfa.regenerate_recovery_codes(db, actor_for(request, admin), admin)
    except mfa.MfaError as exc:
        db.rollback()
        return back_with_form(request, MFA_ENROL_PAGE, {"error": str(exc)})
    db.commit()
    return _show_codes(request, MFA_ENROL_PAGE, codes, "New recovery codes; the old ones ended.")


@router.post("/security/mfa/disable")
def mfa_disable(
    request: Request,
    admin: AccountOwner,
    db: DbSession,
    password: Annotated[str, Form()] = "",
) -> Response:
    if not verify_password(admin.password_hash, password):
        return back_with_form(request, MFA_ENROL_PAGE, {"error": "the password is wrong"})
    try:
        mfa.remove(db, server_settings(request), actor_for(request, admin), admin, admin)
    except mfa.MfaError as exc:
        db.rollback()
        return back_with_form(request, MFA_ENROL_PAGE, {"error": str(exc)})
    db.commit()
    return done(request, MFA_ENROL_PAGE, "Second factor turned off.")


@router.post("/security/sessions/{session_id}/revoke")
def session_revoke(
    request: Request, session_id: int, admin: AccountOwner, db: DbSession
) -> Response:
    try:
        session_rows.revoke(db, actor_for(request, admin), admin, session_id)
    except session_rows.SessionNotFound as exc:
        return done(request, "/security", str(exc), "error")
    db.commit()
    return done(request, "/security", f"Session {session_id} ended.")


@router.post("/security/password")
def password_change(
    request: Request,
    admin: AccountOwner,
    db: DbSession,
    current: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    again: Annotated[str, Form()] = "",
) -> Response:
    if password != again:
        return back_with_form(request, "/security", {"error": "the new passwords differ"})
    try:
        admin_users.change_own_password(
            db,
            actor_for(request, admin),
            admin,
            current,
            password,
            history=server_settings(request).password_history,
        )
    except AdminError as exc:
        db.rollback()
        return back_with_form(request, "/security", {"error": str(exc)})
    db.commit()
    # Every session ended with the old password, this one too: sign in again.
    return done(request, "/login", "Password changed: sign in with the new one.")


# --- the sign-in's second step ------------------------------------------------------------------


@router.get("/login/code")
def code_form(request: Request, db: DbSession) -> Response:
    waiting = sign_in_flow.pending(request, db)
    if waiting is None:
        return done(request, "/login", "Sign in again: the code step has expired.", "info")
    form = take_form(request, "/login/code")
    keys = webauthn_keys.available(server_settings(request)) and bool(
        webauthn_keys.key_count(db, waiting.user)
    )
    context = {
        "title": "Second factor",
        "username": waiting.user.username,
        "totp": mfa.mfa_enabled(db, waiting.user),
        "keys": keys,
        **form,
    }
    return render(request, "login_code.html", context)


def code_refused(request: Request, db: Session, user: AdminUser) -> Response | None:
    """Too many failures: of this account (its lockout threshold and window), or from this
    address across accounts (the sign-in throttle)."""
    settings = server_settings(request)
    now = utcnow()
    try:
        sign_in.check_throttle(db, settings, client_ip(request), now)
    except sign_in.Throttled as exc:
        return throttled(request, exc, "/", user.username)
    failures = sign_in.recent_code_failures(db, user, settings.lockout_minutes, now)
    if failures >= settings.lockout_threshold:
        gone = done(
            request,
            "/login",
            f"Too many wrong codes: try again in {settings.lockout_minutes} minutes.",
            "error",
        )
        sign_in_flow.clear_pending(request, gone)
        return gone
    return None


@router.post("/login/code")
def code_check(request: Request, db: DbSession, code: Annotated[str, Form()] = "") -> Response:
    waiting = sign_in_flow.pending(request, db)
    if waiting is None:
        return done(request, "/login", "Sign in again: the code step has expired.", "info")
    refused = code_refused(request, db, waiting.user)
    if refused is not None:
        return refused
    factor = mfa.verify(db, request.app.state.services.keys, waiting.user, code.strip())
    if factor is None:
        # The handler returns normally, so the failure is logged (and counts).
        sign_in.log_code_failure(db, waiting.user, client_ip(request))
        return back_with_form(
            request, "/login/code", {"error": "That code is not right (or was used already)."}
        )
    return sign_in_flow.finish(request, db, waiting.user, waiting.next, factor)
