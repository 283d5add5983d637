"""Login and logout."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from offhook.contract.logs import kv
from offhook.provisioning import sign_in
from offhook.provisioning.admin_auth import LoginError, authenticate_password, client_ip
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import utcnow
from offhook.provisioning.services import sessions as session_rows
from offhook.provisioning.web import sign_in_flow
from offhook.provisioning.web.actions import back_with_form
from offhook.provisioning.web.core import WebRoute, redirect, render, session_admin
from offhook.provisioning.web.sessions import (
    clear_session,
    read_session,
    take_form,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=WebRoute)

# Unknown usernames get these same answers (they lock like accounts do: admin_auth).
LOGIN_MESSAGES = {
    "bad_credentials": "Wrong username or password.",
    "locked": "Too many failed attempts: this account is locked. Try again later.",
    "disabled": "This account is disabled.",
}


def _safe_next(target: str) -> str:
    """Only same-site paths: an open redirect after login would help phishing."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login")
def login_form(request: Request, db: DbSession, next: str = "/") -> Response:
    if session_admin(request, db) is not None:
        return redirect(_safe_next(next))
    form = take_form(request, "/login")  # a refused attempt: its message and username, once
    context = {
        "title": "Sign in",
        "next": next,
        "username": form.get("username", ""),
        "error": form.get("error", ""),
    }
    return render(request, "login.html", context)


@router.post("/login")
def login(
    request: Request,
    db: DbSession,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    settings = request.app.state.services.settings
    try:
        sign_in.check_throttle(db, settings, client_ip(request), utcnow())
    except sign_in.Throttled as exc:
        return throttled(request, exc, next, username)
    try:
        user = authenticate_password(
            db,
            username.strip(),
            password,
            client_ip(request),
            threshold=settings.lockout_threshold,
            lockout_minutes=settings.lockout_minutes,
        )
    except LoginError as exc:
        # The handler returns normally so the attempt log and lockout counters are committed.
        # Back to the form (Post/Redirect/Get): a reload never re-sends the password.
        target = "/login" if next in ("", "/") else "/login?next=" + quote(next, safe="")
        error = LOGIN_MESSAGES.get(exc.reason, "Login refused.")
        return back_with_form(request, target, {"error": error, "username": username[:64]})
    if sign_in_flow.code_needed(db, request, user):
        return sign_in_flow.ask_for_code(request, user, next)
    return sign_in_flow.finish(request, db, user, next)


def throttled(request: Request, exc: sign_in.Throttled, next: str, username: str) -> Response:
    """429 on the sign-in page itself: the message says how long to wait."""
    context = {"title": "Sign in", "next": next, "username": username[:64], "error": str(exc)}
    response = render(request, "login.html", context, status_code=429)
    response.headers["retry-after"] = str(exc.retry_after_s)
    return response


@router.post("/logout")
def logout(request: Request, db: DbSession) -> Response:
    """Ends the session on the server too: a copy of the cookie is refused from now on."""
    user = session_admin(request, db)
    session = read_session(request)
    response = redirect("/login")
    clear_session(request, response)
    if user is not None and session is not None:
        session_rows.end_own_session(db, user, session.sid, client_ip(request))
        db.commit()  # before the browser moves on: the copy must be dead by then
        log.info("admin logout", extra=kv(user=user.username, ip=client_ip(request)))
    return response
