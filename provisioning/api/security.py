"""Admin sign-in security over the REST API, through the web UI's service functions
(``provisioning.mfa``, ``provisioning.services.sessions``, ``provisioning.sign_in``,
``provisioning.services.admin_users``). One's own: ``account.security`` (every role); another
admin's second factor or sessions: ``admin_user.manage``. API tokens are not sign-ins: they need
no second factor and are not in the session list (``/api-tokens`` lists them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from offhook.provisioning import mfa, sign_in, webauthn_keys
from offhook.provisioning.admin_auth import AdminError, client_ip, require_permission
from offhook.provisioning.api.bodies import Id32, RequestBody, error_responses
from offhook.provisioning.deps import DbSession, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import AdminSession, AdminUser
from offhook.provisioning.permissions import allowed
from offhook.provisioning.services import admin_users
from offhook.provisioning.services import sessions as session_rows
from offhook.provisioning.services.actors import admin_actor

router = APIRouter(tags=["account security"], responses=error_responses(401, 403, 404, 409, 422))
AccountOwner = Annotated[AdminUser, Depends(require_permission("account.security"))]
UserManager = Annotated[AdminUser, Depends(require_permission("admin_user.manage"))]
NO_STORE = {"cache-control": "no-store"}


class MfaStatus(BaseModel):
    username: str
    enabled: bool
    enabled_at: str | None
    enrolment_pending: bool
    required_for_role: bool = Field(description="OFFHOOK_MFA_REQUIRED_ROLES names the role")
    recovery_codes_left: int
    security_keys: int = Field(description="WebAuthn security keys registered (web UI)")


class SecurityKeyOut(BaseModel):
    id: int
    name: str
    transports: list[str] = Field(description="as the browser reported them: usb, internal...")
    sign_count: int
    created_at: str
    last_used_at: str | None


class MfaEnrolment(BaseModel):
    secret: str = Field(description="base32 TOTP secret (RFC 6238: 30 s, 6 digits, SHA-1)")
    uri: str = Field(description="otpauth:// URI for an authenticator app")


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="each works once; shown only in this answer")


class SessionOut(BaseModel):
    id: int
    user_id: int
    ip: str
    user_agent: str
    second_factor: str
    created_at: str | None
    ended_at: str | None
    end_reason: str


class NetworkOut(BaseModel):
    network: str
    first_ip: str
    first_seen: str
    last_seen: str


class CodeBody(RequestBody):
    code: Annotated[str, Field(min_length=1, max_length=32)]


class PasswordBody(RequestBody):
    current: Annotated[str, Field(min_length=1, max_length=1024)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


def _refused(exc: mfa.MfaError | AdminError | session_rows.SessionNotFound) -> ApiError:
    status = getattr(exc, "status", 422)
    code = {404: "not_found", 409: "conflict"}.get(status, "invalid")
    return ApiError(status if status != 400 else 422, code, str(exc))


def _status(db: Session, services: ServicesDep, user: AdminUser) -> dict[str, Any]:
    return mfa.status(db, services.settings, user)


@router.get("/me/mfa", response_model=MfaStatus)
def my_mfa(db: DbSession, services: ServicesDep, user: AccountOwner) -> dict[str, Any]:
    return _status(db, services, user)


@router.post("/me/mfa/enrol", response_model=MfaEnrolment)
def start_enrolment(db: DbSession, services: ServicesDep, user: AccountOwner) -> Any:
    """A new TOTP secret, in force once ``/me/mfa/confirm`` gets a code made with it."""
    try:
        enrolment = mfa.start_enrolment(db, services.keys, user)
    except mfa.MfaError as exc:
        raise _refused(exc) from None
    db.commit()
    return JSONResponse({"secret": enrolment.secret, "uri": enrolment.uri}, headers=NO_STORE)


@router.post("/me/mfa/confirm", response_model=RecoveryCodes)
def confirm_enrolment(
    body: CodeBody, request: Request, db: DbSession, services: ServicesDep, user: AccountOwner
) -> Any:
    """The first code turns the second factor on; the answer holds the recovery codes."""
    actor = admin_actor(user, client_ip(request))
    try:
        codes = mfa.confirm_enrolment(db, services.keys, actor, user, body.code)
    except mfa.MfaError as exc:
        raise _refused(exc) from None
    db.commit()
    return JSONResponse({"recovery_codes": codes}, headers=NO_STORE)


@router.post("/me/mfa/recovery-codes", response_model=RecoveryCodes)
def new_recovery_codes(request: Request, db: DbSession, user: AccountOwner) -> Any:
    try:
        codes = mfa.regenerate_recovery_codes(db, admin_actor(user, client_ip(request)), user)
    except mfa.MfaError as exc:
        raise _refused(exc) from None
    db.commit()
    return JSONResponse({"recovery_codes": codes}, headers=NO_STORE)


@router.delete("/me/mfa", response_model=MfaStatus)
def turn_off_my_mfa(
    request: Request, db: DbSession, services: ServicesDep, user: AccountOwner
) -> dict[str, Any]:
    """Refused (409) when the role requires a second factor."""
    try:
        mfa.remove(db, services.settings, admin_actor(user, client_ip(request)), user, user)
    except mfa.MfaError as exc:
        raise _refused(exc) from None
    db.commit()
    return _status(db, services, user)


@router.delete("/users/{ref}/mfa", response_model=MfaStatus)
def reset_mfa(
    ref: str, request: Request, db: DbSession, services: ServicesDep, user: UserManager
) -> dict[str, Any]:
    """Another admin's lost phone: their second factor goes; a role that requires one sends
    them to enrol again at their next sign-in."""
    try:
        target = admin_users.get_admin_user(db, ref)
        mfa.remove(db, services.settings, admin_actor(user, client_ip(request)), target, user)
    except (mfa.MfaError, AdminError) as exc:
        raise _refused(exc) from None
    db.commit()
    return _status(db, services, target)


def _keys_out(db: Session, user: AdminUser) -> list[dict[str, Any]]:
    return [
        {
            "id": key.id,
            "name": key.name,
            "transports": [t for t in key.transports.split(",") if t],
            "sign_count": key.sign_count,
            "created_at": key.created_at.isoformat(),
            "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        }
        for key in webauthn_keys.list_keys(db, user)
    ]


@router.get("/me/security-keys", response_model=list[SecurityKeyOut])
def my_security_keys(db: DbSession, user: AccountOwner) -> list[dict[str, Any]]:
    """One's WebAuthn security keys (registered in the web UI, where the browser holds them)."""
    return _keys_out(db, user)


@router.delete("/me/security-keys/{key_id}", response_model=list[SecurityKeyOut])
def remove_my_security_key(
    key_id: int, request: Request, db: DbSession, services: ServicesDep, user: AccountOwner
) -> list[dict[str, Any]]:
    """Refused (409) for the last factor a role requires; the keys left."""
    actor = admin_actor(user, client_ip(request))
    try:
        mfa.remove_security_key(db, services.settings, actor, user, key_id)
    except AdminError as exc:
        raise _refused(exc) from None
    db.commit()
    return _keys_out(db, user)


def _session_out(row: AdminSession) -> dict[str, Any]:
    return session_rows.session_snapshot(row)


@router.get("/me/sessions", response_model=list[SessionOut])
def my_sessions(db: DbSession, user: AccountOwner, all: bool = False) -> list[dict[str, Any]]:
    """Live web sessions: one's own, or with ``all=true`` every admin's (``admin_user.manage``)."""
    if all and not allowed(user.role, "admin_user.manage"):
        raise ApiError(403, "forbidden", "all=true needs the admin role")
    return [_session_out(r) for r in session_rows.list_sessions(db, None if all else user)]


@router.delete("/sessions/{session_id}", response_model=SessionOut)
def end_session(
    session_id: Id32, request: Request, db: DbSession, user: AccountOwner
) -> dict[str, Any]:
    try:
        row = session_rows.revoke(db, admin_actor(user, client_ip(request)), user, session_id)
    except session_rows.SessionNotFound as exc:
        raise _refused(exc) from None
    db.commit()
    return _session_out(row)


@router.get("/me/networks", response_model=list[NetworkOut])
def my_networks(db: DbSession, user: AccountOwner) -> list[dict[str, Any]]:
    return [
        {
            "network": n.network,
            "first_ip": n.first_ip,
            "first_seen": n.first_seen.isoformat(),
            "last_seen": n.last_seen.isoformat(),
        }
        for n in sign_in.known_networks(db, user)
    ]


@router.post("/me/password", status_code=204)
def change_my_password(
    body: PasswordBody, request: Request, db: DbSession, services: ServicesDep, user: AccountOwner
) -> None:
    """Proven with the current password; may not repeat the last OFFHOOK_PASSWORD_HISTORY.
    Ends every session and API token of the user, the one calling included."""
    try:
        admin_users.change_own_password(
            db,
            admin_actor(user, client_ip(request)),
            user,
            body.current,
            body.password,
            history=services.settings.password_history,
        )
    except AdminError as exc:
        raise _refused(exc) from None
    db.commit()
