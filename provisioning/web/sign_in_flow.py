"""The web sign-in after the password: the pending second-factor step and the finish.

A password that checks out either finishes the sign-in at once or, when the admin has a
second factor and the server asks for it (always, or from a new network), leaves a short-lived
signed cookie naming the admin, bound to the browser's anonymous session and to the admin's
password hash, and sends the browser to ``/login/code``. Only a right code there finishes it.
Finishing: a fresh session id (no fixation), the network remembered (a new one is audited and
flashed), the session recorded for the Security page's list, and an admin whose role requires
a second factor they have not set up sent to enrol first.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning import mfa, sign_in
from offhook.provisioning.admin_auth import client_ip
from offhook.provisioning.models import AdminUser
from offhook.provisioning.services import sessions as session_rows
from offhook.provisioning.services.actors import admin_actor
from offhook.provisioning.web.core import MFA_ENROL_PAGE, redirect, server_settings
from offhook.provisioning.web.sessions import (
    _cookie_secure,
    _keys,
    add_flash,
    ensure_session,
    new_session,
    password_fingerprint,
    read_session,
    write_session,
)
from offhook.provisioning.web.signing import Signer

PENDING_COOKIE = "offhook_2fa"
PENDING_MAX_AGE_S = 300


def safe_next(target: str) -> str:
    """Only same-site paths: an open redirect after login would help phishing."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _signer(request: Request) -> Signer:
    return Signer(_keys(request), "web.second_factor")


@dataclass(frozen=True)
class Pending:
    user: AdminUser
    next: str


def code_needed(db: Session, request: Request, user: AdminUser) -> bool:
    """Does this sign-in need the second factor (the admin has one; the prompt setting)?"""
    if not mfa.has_second_factor(db, user):
        return False
    if server_settings(request).mfa_prompt == "always":
        return True
    return sign_in.is_new_network(db, user, client_ip(request))


def ask_for_code(request: Request, user: AdminUser, next_url: str) -> Response:
    session = ensure_session(request)  # the anonymous session the pending step is bound to
    response = redirect("/login/code")
    payload = {
        "aid": user.id,
        "pw": password_fingerprint(user.password_hash),
        "sid": session.sid,
        "next": safe_next(next_url),
    }
    response.set_cookie(
        PENDING_COOKIE,
        _signer(request).dumps(payload),
        max_age=PENDING_MAX_AGE_S,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )
    if getattr(request.state, "web_session_new", False):
        write_session(request, response, session)
    return response


def pending(request: Request, db: Session) -> Pending | None:
    """The sign-in waiting for its code in this browser, or None (expired, forged, another
    session's, the password changed since, the account disabled)."""
    raw = request.cookies.get(PENDING_COOKIE, "")
    payload = _signer(request).loads(raw, PENDING_MAX_AGE_S) if raw else None
    session = read_session(request)
    if payload is None or session is None or payload.get("sid") != session.sid:
        return None
    aid = payload.get("aid")
    user = db.get(AdminUser, aid) if isinstance(aid, int) else None
    if user is None or user.disabled:
        return None
    if password_fingerprint(user.password_hash) != payload.get("pw"):
        return None
    return Pending(user, safe_next(str(payload.get("next", "/"))))


def clear_pending(request: Request, response: Response) -> None:
    if PENDING_COOKIE in request.cookies:
        response.delete_cookie(PENDING_COOKIE, path="/login")


def finish(
    request: Request, db: Session, user: AdminUser, next_url: str, second_factor: str = ""
) -> Response:
    ip = client_ip(request)
    session = new_session(user.id, user.password_hash)
    new_network = sign_in.remember_network(db, admin_actor(user, ip), user, ip)
    session_rows.record_sign_in(
        db, user, session.sid, ip, request.headers.get("user-agent", ""), second_factor
    )
    must_enrol = mfa.enrolment_required(db, server_settings(request), user)
    response = redirect(MFA_ENROL_PAGE if must_enrol else safe_next(next_url))
    clear_pending(request, response)
    write_session(request, response, session)
    add_flash(request, response, "ok", f"Signed in as {user.username}.")
    if new_network:
        add_flash(
            request,
            response,
            "info",
            f"First sign-in from network {sign_in.network_of(ip)} ({ip}). If this was not "
            "you, change your password and end the other sessions on the Security page.",
        )
    if second_factor == "recovery":
        left = mfa.recovery_codes_left(db, user)
        add_flash(request, response, "info", f"Recovery code used: {left} left.")
    if must_enrol:
        add_flash(
            request,
            response,
            "info",
            f"The {user.role} role requires a second factor: set one up before anything else.",
        )
    return response
