"""Admin identities: argon2 password hashes, roles, login-attempt log, lockout, API tokens.

Shared by the REST API (bearer tokens) and the web UI (password login + its own sessions):
- ``authenticate_password(db, username, password, ip)`` -> AdminUser, raises LoginError
- ``role_allows(role, required)`` / ``require_role(user, required)``
- ``require_admin(required_role)`` FastAPI dependency: bearer token, or the web session through
  ``app.state.session_user`` (a callable ``(request, db) -> AdminUser | None`` the web UI sets).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import HTTPException, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from provisioning.crypto import sha256_hex
from provisioning.db import DbSession
from provisioning.models import ROLES, AdminUser, ApiToken, LoginAttempt, utcnow

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
# Verified against when the username is unknown, so timing does not reveal which names exist.
_DUMMY_HASH = _hasher.hash("offhook-no-such-user")
TOKEN_PREFIX = "ohk_"
MIN_PASSWORD_LENGTH = 10
DEFAULT_LOCKOUT_THRESHOLD = 5
DEFAULT_LOCKOUT_MINUTES = 15


class LoginError(Exception):
    """Password login refused. ``reason``: bad_credentials | locked | disabled."""

    def __init__(self, reason: str, locked_until: datetime | None = None) -> None:
        self.reason = reason
        self.locked_until = locked_until
        super().__init__(reason)


class AdminError(ValueError):
    """Bad input for an admin-account operation (message says what is wrong)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AdminError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role


def role_allows(role: str, required: str) -> bool:
    """read-only < operator < admin."""
    if role not in ROLES or required not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(required)


def require_role(user: AdminUser, required: str) -> None:
    if not role_allows(user.role, required):
        raise HTTPException(403, detail=f"role {required} required", headers=None)


def create_admin(db: Session, username: str, password: str, role: str = "admin") -> AdminUser:
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise AdminError("username must be 1-64 characters without spaces")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    check_role(role)
    if db.scalar(select(AdminUser).where(AdminUser.username == username)):
        raise AdminError(f"admin user {username!r} already exists")
    user = AdminUser(username=username, password_hash=hash_password(password), role=role)
    db.add(user)
    db.flush()
    return user


def set_password(db: Session, user: AdminUser, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)
    user.failed_attempts = 0
    user.locked_until = None


def _log_attempt(db: Session, username: str, ip: str, success: bool, reason: str) -> None:
    db.add(LoginAttempt(username=username[:64], ip=ip[:64], success=success, reason=reason))
    log.info("admin login user=%s ip=%s success=%s reason=%s", username, ip, success, reason)


def authenticate_password(
    db: Session,
    username: str,
    password: str,
    ip: str,
    *,
    threshold: int = DEFAULT_LOCKOUT_THRESHOLD,
    lockout_minutes: int = DEFAULT_LOCKOUT_MINUTES,
) -> AdminUser:
    """Check a password login; every attempt is logged. ``threshold`` consecutive failures lock
    the account for ``lockout_minutes`` (a correct password during the lock is refused too).
    The caller commits the session (the attempt log and counters must persist on failure)."""
    user = db.scalar(select(AdminUser).where(AdminUser.username == username))
    now = utcnow()
    if user is None:
        verify_password(_DUMMY_HASH, password)
        _log_attempt(db, username, ip, False, "unknown_user")
        raise LoginError("bad_credentials")
    if user.locked_until is not None and user.locked_until > now:
        _log_attempt(db, username, ip, False, "locked")
        raise LoginError("locked", user.locked_until)
    if not verify_password(user.password_hash, password):
        # Atomic increment: parallel guesses must not overwrite each other's count.
        db.execute(
            update(AdminUser)
            .where(AdminUser.id == user.id)
            .values(failed_attempts=AdminUser.failed_attempts + 1)
            .execution_options(synchronize_session=False)
        )
        db.refresh(user, ["failed_attempts"])
        reason = "bad_password"
        if user.failed_attempts >= threshold:
            user.locked_until = now + timedelta(minutes=lockout_minutes)
            user.failed_attempts = 0
            reason = "bad_password_locked"
            log.warning("admin locked out user=%s until=%s", username, user.locked_until)
        _log_attempt(db, username, ip, False, reason)
        raise LoginError(
            "locked" if user.locked_until and user.locked_until > now else "bad_credentials",
            user.locked_until,
        )
    if user.disabled:
        _log_attempt(db, username, ip, False, "disabled")
        raise LoginError("disabled")
    user.failed_attempts = 0
    user.locked_until = None
    user.last_login_at = now
    _log_attempt(db, username, ip, True, "ok")
    return user


def create_api_token(
    db: Session, user: AdminUser, name: str = "", expires_at: datetime | None = None
) -> tuple[str, ApiToken]:
    """Returns (plaintext token shown once, row). Only the SHA-256 is stored."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=sha256_hex(plain),
        prefix=plain[:10],
        expires_at=expires_at,
    )
    db.add(row)
    db.flush()
    return plain, row


def authenticate_token(db: Session, token: str) -> AdminUser | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = sha256_hex(token)
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked:
        return None
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.user.disabled:
        return None
    # Coarse last-use stamp: avoid a write on every API call.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5):
        row.last_used_at = now
    return row.user


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def current_admin(request: Request, db: Session) -> AdminUser | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return authenticate_token(db, auth[7:].strip())
    resolver: Callable[[Request, Session], AdminUser | None] | None = getattr(
        request.app.state, "session_user", None
    )
    if resolver is not None:
        user = resolver(request, db)
        if user is not None and not user.disabled:
            return user
    return None


def require_admin(required_role: str = "read-only") -> Callable[..., AdminUser]:
    """FastAPI dependency factory: the authenticated admin with at least ``required_role``."""
    check_role(required_role)

    def dependency(request: Request, db: DbSession) -> AdminUser:
        user = current_admin(request, db)
        if user is None:
            raise HTTPException(
                401,
                detail="admin authentication required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        require_role(user, required_role)
        request.state.admin = user
        return user

    return dependency
