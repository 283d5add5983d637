"""Web UI sessions, CSRF tokens and flash messages, all in signed cookies.

A session cookie names a random session id and, once logged in, the admin user id plus a short
fingerprint of the user's password hash (a password change ends every session of that user).
The admin row is reloaded on every request, so disabling a user or changing a role takes effect
at once. The CSRF token is a MAC of the session id: a synchronizer token bound to the session
that any app process can check without shared storage.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request
from starlette.responses import Response

from offhook.provisioning.web.signing import Signer

SESSION_COOKIE = "offhook_session"
FLASH_COOKIE = "offhook_flash"
FORM_COOKIE = "offhook_form"
SESSION_MAX_AGE_S = 8 * 3600
FLASH_MAX_AGE_S = 120
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
FLASH_KINDS = ("ok", "error", "info")


@dataclass(frozen=True)
class WebSession:
    sid: str
    admin_id: int | None = None
    pw_fp: str = ""  # fingerprint of the password hash the session was issued under

    @property
    def logged_in(self) -> bool:
        return self.admin_id is not None


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


def _keys(request: Request) -> list[bytes]:
    ring = request.app.state.services.keys
    return [ring.keys[ring.current]] + [k for kid, k in ring.keys.items() if kid != ring.current]


def session_signer(request: Request) -> Signer:
    return Signer(_keys(request), "web.session")


def _csrf_signer(request: Request) -> Signer:
    return Signer(_keys(request), "web.csrf")


def _flash_signer(request: Request) -> Signer:
    return Signer(_keys(request), "web.flash")


def _form_signer(request: Request) -> Signer:
    return Signer(_keys(request), "web.form")


def read_session(request: Request) -> WebSession | None:
    """The request's session if its cookie is genuine and fresh; memoised per request."""
    if hasattr(request.state, "web_session"):
        return request.state.web_session
    session = None
    raw = request.cookies.get(SESSION_COOKIE, "")
    payload = session_signer(request).loads(raw, SESSION_MAX_AGE_S) if raw else None
    if payload is not None and isinstance(payload.get("sid"), str):
        admin_id = payload.get("aid")
        session = WebSession(
            sid=payload["sid"],
            admin_id=admin_id if isinstance(admin_id, int) else None,
            pw_fp=str(payload.get("pw", "")),
        )
    request.state.web_session = session
    return session


def new_session(admin_id: int | None = None, password_hash: str = "") -> WebSession:
    """A fresh session id: issued at login so a pre-login id can never become a logged-in one."""
    return WebSession(
        sid=secrets.token_urlsafe(18),
        admin_id=admin_id,
        pw_fp=password_fingerprint(password_hash) if password_hash else "",
    )


def ensure_session(request: Request) -> WebSession:
    """The current session, or a new anonymous one (the login form needs a CSRF token too)."""
    session = read_session(request)
    if session is None:
        session = new_session()
        request.state.web_session = session
        request.state.web_session_new = True
    return session


def _cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def write_session(request: Request, response: Response, session: WebSession) -> None:
    payload: dict[str, object] = {"sid": session.sid}
    if session.admin_id is not None:
        payload["aid"] = session.admin_id
        payload["pw"] = session.pw_fp
    response.set_cookie(
        SESSION_COOKIE,
        session_signer(request).dumps(payload),
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_cookie_secure(request)
    )


def csrf_token(request: Request, session: WebSession) -> str:
    return _csrf_signer(request).mac(session.sid)


def csrf_valid(request: Request, session: WebSession | None, submitted: str) -> bool:
    if session is None or not submitted:
        return False
    return _csrf_signer(request).verify(session.sid, submitted)


# --- flash messages: one short-lived cookie, read once by the next page ------------------------


def add_flash(request: Request, response: Response, kind: str, text: str) -> None:
    if kind not in FLASH_KINDS:
        raise ValueError(f"flash kind {kind!r} not one of {FLASH_KINDS}")
    pending: list[list[str]] = getattr(request.state, "flash_out", [])
    pending.append([kind, text[:500]])
    request.state.flash_out = pending
    response.set_cookie(
        FLASH_COOKIE,
        _flash_signer(request).dumps({"m": pending}),
        max_age=FLASH_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )


def read_flashes(request: Request) -> list[tuple[str, str]]:
    """Pending messages; the caller shows them and then calls ``clear_flashes``."""
    raw = request.cookies.get(FLASH_COOKIE, "")
    if not raw:
        return []
    payload = _flash_signer(request).loads(raw, FLASH_MAX_AGE_S)
    if payload is None or not isinstance(payload.get("m"), list):
        return []
    out = []
    for item in payload["m"]:
        if isinstance(item, list) and len(item) == 2 and item[0] in FLASH_KINDS:
            out.append((str(item[0]), str(item[1])))
    return out


def clear_flashes(request: Request, response: Response) -> None:
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")


# --- one-shot form state: what a POST hands to the page it redirects to -------------------------
# Post/Redirect/Get: a POST never renders a page (a reload would repeat it). A refused form
# redirects back with its error and values; a created enrollment token redirects with its id.
# The cookie is signed, bound to the session and to the page it is for, and read once.

FORM_MAX_AGE_S = 120
FORM_VALUE_LIMIT = 2000  # keeps the cookie under the browsers' 4 KB limit


def stash_form(
    request: Request, response: Response, page: str, data: Mapping[str, str | int]
) -> None:
    session = read_session(request)
    values = {k: v[:FORM_VALUE_LIMIT] if isinstance(v, str) else v for k, v in data.items()}
    payload = {"page": page, "sid": session.sid if session else "", "data": values}
    response.set_cookie(
        FORM_COOKIE,
        _form_signer(request).dumps(payload),
        max_age=FORM_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )


def take_form(request: Request, page: str) -> dict[str, object]:
    """The state a POST left for ``page`` in this session, or {}. ``render`` deletes the cookie,
    so a reload shows the plain page."""
    raw = request.cookies.get(FORM_COOKIE, "")
    payload = _form_signer(request).loads(raw, FORM_MAX_AGE_S) if raw else None
    session = read_session(request)
    if (
        payload is None
        or session is None
        or payload.get("page") != page
        or payload.get("sid") != session.sid
        or not isinstance(payload.get("data"), dict)
    ):
        return {}
    request.state.form_taken = True
    return payload["data"]


def clear_form(request: Request, response: Response) -> None:
    if FORM_COOKIE in request.cookies:
        response.delete_cookie(FORM_COOKIE, path="/")
