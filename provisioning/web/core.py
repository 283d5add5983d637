"""Shared web UI plumbing: page rendering, the login/role guard, and the CSRF check.

Every route of the web UI uses ``WebRoute``: it refuses any POST whose CSRF token does not
match the session (403) before the view runs, and turns ``LoginRequired`` / ``Forbidden`` raised
by guards into a redirect to the login page or a 403 page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from sqlalchemy.orm import Session
from starlette.responses import HTMLResponse, RedirectResponse, Response

from offhook.contract.logs import kv
from offhook.provisioning import mfa
from offhook.provisioning.admin_auth import client_ip
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser
from offhook.provisioning.permissions import allowed, required_role
from offhook.provisioning.services.time_zones import admin_zone
from offhook.provisioning.settings import ServerSettings
from offhook.provisioning.web.queries import STALE_AFTER
from offhook.provisioning.web.revocation import session_revoked
from offhook.provisioning.web.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    WebSession,
    clear_flashes,
    clear_form,
    csrf_token,
    csrf_valid,
    ensure_session,
    password_fingerprint,
    read_flashes,
    read_session,
    write_session,
)

log = logging.getLogger(__name__)

MFA_ENROL_PAGE = "/security/mfa"
TEMPLATES_DIR = Path(__file__).parent / "templates"

# (href, label, section key, the action the page needs: provisioning.permissions)
NAV: list[tuple[str, str, str, str]] = [
    ("/", "Dashboard", "dashboard", "fleet.read"),
    ("/alerts", "Alerts", "alerts", "fleet.read"),
    ("/devices", "Devices", "devices", "fleet.read"),
    ("/approvals", "Approvals", "approvals", "fleet.read"),
    ("/groups", "Groups", "groups", "fleet.read"),
    ("/templates", "Templates", "templates", "fleet.read"),
    ("/tokens", "Enrollment", "tokens", "fleet.read"),
    ("/firmware", "Firmware", "firmware", "fleet.read"),
    ("/cdrs", "Calls", "cdrs", "fleet.read"),
    ("/quality", "Quality", "quality", "fleet.read"),
    ("/analytics", "Analytics", "analytics", "fleet.read"),
    ("/audit", "Audit log", "audit", "fleet.read"),
    ("/api-tokens", "API tokens", "api-tokens", "api_token.own"),
    ("/security", "Security", "security", "account.security"),
    ("/preferences", "Preferences", "preferences", "account.security"),
    ("/privacy", "Privacy", "privacy", "privacy.export"),
    ("/admins", "Admins", "admins", "admin_user.manage"),
]


# Pages use only same-origin CSS and script, are never framed (clickjacking on the buttons), and
# forms post only back here.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class LoginRequired(Exception):
    """No valid logged-in session: the browser goes to the login page."""


class Forbidden(Exception):
    """Logged in, but the role does not allow this."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class EnrolmentRequired(Exception):
    """The admin's role must have a second factor and they have none: enrol first."""


class NotFound(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def fmt_time(value: Any, zone: tzinfo = UTC) -> str:
    """A time (datetime or epoch seconds) in ``zone``, with the zone's abbreviation (CEST)."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    return str(value)


@pass_context
def _fmt_time_filter(context: Context, value: Any) -> str:
    """``{{ t | fmt_time }}``: in the signed-in admin's zone (``admin_zone``, set by render)."""
    zone = context.get("admin_zone")
    return fmt_time(value, zone if isinstance(zone, tzinfo) else UTC)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _build_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt_time"] = _fmt_time_filter
    env.filters["fmt_duration"] = fmt_duration
    return env


TEMPLATES = _build_env()


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    admin: AdminUser | None = None,
    fragment: bool = False,
) -> HTMLResponse:
    """Render a page with the layout's context (admin, nav, CSRF token, pending flashes).
    A ``fragment`` (live-refresh rows) leaves pending flashes for the next full page."""
    admin = admin if admin is not None else getattr(request.state, "web_admin", None)
    session = ensure_session(request)
    flashes = [] if fragment else read_flashes(request)

    def can(action: str) -> bool:
        return admin is not None and allowed(admin.role, action)

    nav = [(href, label, key) for href, label, key, action in NAV if can(action)]
    values: dict[str, Any] = {
        "request": request,
        "admin": admin,
        "nav": nav,
        "csrf_token": csrf_token(request, session),
        "flashes": flashes,
        # Templates ask the permission table: can("device.delete"). ``can_operate`` is for the
        # shared settings editor; the page including it sets it from its own action.
        "can": can,
        "can_operate": can("device.write"),
        # every time on the page in the admin's own zone (the fmt_time filter)
        "admin_zone": admin_zone(admin),
    }
    values.update(context)
    body = TEMPLATES.get_template(template).render(**values)
    response = HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)
    response.headers["cache-control"] = "no-store"
    if not fragment:
        clear_flashes(request, response)
        clear_form(request, response)
    if getattr(request.state, "web_session_new", False):
        write_session(request, response, session)
    return response


def not_seen_threshold(request: Request) -> timedelta:
    """How long a phone may stay silent before the UI calls it "not seen" (set by setup())."""
    value = getattr(request.app.state, "web_not_seen_after", None)
    return value if isinstance(value, timedelta) else STALE_AFTER


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def session_admin(request: Request, db: Session) -> AdminUser | None:
    """The logged-in admin of this request's session cookie, or None (memoised per request)."""
    if hasattr(request.state, "web_session_admin"):
        return request.state.web_session_admin
    user = _load_session_admin(request, db)
    request.state.web_session_admin = user
    return user


def _load_session_admin(request: Request, db: Session) -> AdminUser | None:
    session = read_session(request)
    if session is None or session.admin_id is None:
        return None
    user = db.get(AdminUser, session.admin_id)
    if user is None or user.disabled:
        return None
    if password_fingerprint(user.password_hash) != session.pw_fp:
        return None
    if session_revoked(db, user.username, session.sid):
        return None
    return user


def api_session_user(request: Request, db: Session) -> AdminUser | None:
    """Resolver for the admin REST API (``app.state.session_user``): the web session counts only
    for safe methods, or with the session's CSRF token in ``X-CSRF-Token``, so a cookie alone
    never authorises a change."""
    user = session_admin(request, db)
    if user is None:
        return None
    if mfa.enrolment_required(db, server_settings(request), user):
        return None  # nothing before the second factor is set up, the API included
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return user
    session = read_session(request)
    return user if csrf_valid(request, session, request.headers.get(CSRF_HEADER, "")) else None


def server_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.services.settings
    return settings


def require(action: str, *, before_enrolment: bool = False) -> Callable[..., AdminUser]:
    """Dependency: the logged-in admin whose role may do ``action`` (provisioning.permissions),
    else the login page / a 403 page. An admin whose role requires a second factor they have
    not set up is sent to enrol first, except on the pages that do it (``before_enrolment``)."""
    needed = required_role(action)  # an unknown action fails at import

    def dependency(request: Request, db: DbSession) -> AdminUser:
        user = session_admin(request, db)
        if user is None:
            raise LoginRequired()
        request.state.web_admin = user
        if not before_enrolment and mfa.enrolment_required(db, server_settings(request), user):
            raise EnrolmentRequired()
        if not allowed(user.role, action):
            log.warning(
                "web forbidden",
                extra=kv(
                    user=user.username,
                    role=user.role,
                    action=action,
                    needed=needed,
                    path=request.url.path,
                ),
            )
            raise Forbidden(f"This needs the {needed} role; you are {user.role}.")
        return user

    return dependency


def permitted(action: str, *, before_enrolment: bool = False) -> Any:
    """The dependency marker of a view parameter type, spelt as a module-level alias
    ``Deleter = Annotated[AdminUser, permitted("device.delete")]`` (an alias mypy can read: a
    type returned by a call is not one)."""
    return Depends(require(action, before_enrolment=before_enrolment))


Reader = Annotated[AdminUser, permitted("fleet.read")]


# POST paths whose view reads a file form as it streams (web.streamed_upload) and checks the
# CSRF field itself before it keeps a byte of the file: the guard must not parse (spool) the
# whole body first.
STREAMED_FORMS: set[str] = set()


async def _csrf_ok(request: Request) -> bool:
    session: WebSession | None = read_session(request)
    submitted = request.headers.get(CSRF_HEADER, "")
    if not submitted:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # cached on the request; the view's Form() reads it again
            value = form.get(CSRF_FIELD, "")
            submitted = value if isinstance(value, str) else ""
    return csrf_valid(request, session, submitted)


class WebRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            streamed = request.url.path in STREAMED_FORMS
            if request.method == "POST" and not streamed and not await _csrf_ok(request):
                log.warning(
                    "web csrf rejected", extra=kv(path=request.url.path, ip=client_ip(request))
                )
                return render(
                    request,
                    "error.html",
                    {
                        "title": "Request refused",
                        "message": "The form's security token is missing or stale. "
                        "Reload the page and try again.",
                    },
                    status_code=403,
                )
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                next_part = "" if target == "/" else "?next=" + quote(target, safe="")
                return redirect("/login" + next_part)
            except Forbidden as exc:
                return render(
                    request,
                    "error.html",
                    {"title": "Not allowed", "message": exc.message},
                    status_code=403,
                )
            except EnrolmentRequired:
                return redirect(MFA_ENROL_PAGE)
            except NotFound as exc:
                return render(
                    request,
                    "error.html",
                    {"title": "Not found", "message": exc.message},
                    status_code=404,
                )

        return guarded
