"""Admin identities: argon2 password hashes, roles, login-attempt log, lockout, API tokens.

Shared by the REST API (bearer tokens) and the web UI (password login + its own sessions):
- ``authenticate_password(db, username, password, ip)`` -> AdminUser, raises LoginError
- ``require_permission(action)`` FastAPI dependency (actions and roles: provisioning.permissions):
  bearer token, or the web session through ``app.state.session_user`` (a callable
  ``(request, db) -> AdminUser | None`` the web UI sets).
- API tokens: ``create_api_token`` (always expiring, within the role's maximum),
  ``list_api_tokens``, ``revoke_api_token``; a new password or a disabled account ends them all.
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
from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.provisioning import audit, password_history
from offhook.provisioning.crypto import sha256_hex
from offhook.provisioning.db import DbSession, rowcount
from offhook.provisioning.models import ROLES, AdminUser, ApiToken, LoginAttempt, utcnow
from offhook.provisioning.permissions import (
    DEFAULT_API_TOKEN_DAYS,
    MAX_API_TOKEN_DAYS,
    allowed,
    max_api_token_days,
    required_role,
    role_allows,
)
from offhook.provisioning.services import sessions as session_rows

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
# Verified against when the username is unknown, so timing does not reveal which names exist.
_DUMMY_HASH = _hasher.hash("offhook-no-such-user")
TOKEN_PREFIX = "ohk_"
MIN_PASSWORD_LENGTH = 10
DEFAULT_LOCKOUT_THRESHOLD = 5
DEFAULT_LOCKOUT_MINUTES = 15
MAX_DAYS_ANY_ROLE = max(MAX_API_TOKEN_DAYS.values())


class LoginError(OffhookError):
    """Password login refused. ``reason``: bad_credentials | locked | disabled."""

    def __init__(self, reason: str, locked_until: datetime | None = None) -> None:
        self.reason = reason
        self.locked_until = locked_until
        super().__init__(reason)


class AdminError(OffhookError, ValueError):
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


__all__ = ["role_allows"]  # re-exported: callers compare roles through the permission table


def require_allowed(user: AdminUser, action: str) -> None:
    """403 unless ``user``'s role may do ``action``."""
    if not allowed(user.role, action):
        raise HTTPException(
            403, detail=f"{action} needs the {required_role(action)} role; you are {user.role}"
        )


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


def set_password(
    db: Session,
    user: AdminUser,
    password: str,
    *,
    history: int = password_history.DEFAULT_DEPTH,
) -> None:
    """A new password, which may not repeat the current one or the ``history - 1`` before it
    (``OFFHOOK_PASSWORD_HISTORY``). Ends the user's sessions and API tokens."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if password_history.reused(db, user, password, history, verify_password):
        raise AdminError(
            f"that password was used recently: choose one not among the last {history}"
        )
    password_history.remember(db, user, user.password_hash, history)
    user.password_hash = hash_password(password)
    user.failed_attempts = 0
    user.locked_until = None
    # Whoever knew the old password may have minted tokens with it.
    revoke_user_api_tokens(db, user)
    session_rows.end_all(db, user, "new password")


def set_disabled(db: Session, user: AdminUser, disabled: bool) -> None:
    """Disable (its API tokens end for good, even if it is enabled again) or enable a user."""
    user.disabled = disabled
    if disabled:
        revoke_user_api_tokens(db, user)
        session_rows.end_all(db, user, "disabled")


def _log_attempt(db: Session, username: str, ip: str, success: bool, reason: str) -> None:
    db.add(LoginAttempt(username=username[:64], ip=ip[:64], success=success, reason=reason))
    log.info("admin login", extra=kv(user=username, ip=ip, success=success, reason=reason))


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

    At most ``threshold`` passwords are checked per lockout window however many attempts run at
    once, in this process or others: each check first claims an attempt from the account's
    counter (one conditional UPDATE, committed before the slow hash check so that every other
    request sees it) and an attempt that finds no attempt left is refused unchecked. Unknown
    users, locked accounts and wrong passwords all cost one hash check. Commits the session
    once (the claim); the caller commits the rest (the attempt log must persist on failure)."""
    user = db.scalar(select(AdminUser).where(AdminUser.username == username))
    now = utcnow()
    if user is None:
        verify_password(_DUMMY_HASH, password)
        during_lock, until = _unknown_user_lock(db, username[:64], now, threshold, lockout_minutes)
        _log_attempt(
            db, username, ip, False, "unknown_user_locked" if during_lock else "unknown_user"
        )
        if until is not None:
            raise LoginError("locked", until)
        raise LoginError("bad_credentials")
    claimed = db.execute(
        update(AdminUser)
        .where(
            AdminUser.id == user.id,
            AdminUser.failed_attempts < threshold,
            or_(AdminUser.locked_until.is_(None), AdminUser.locked_until <= now),
        )
        .values(failed_attempts=AdminUser.failed_attempts + 1)
        .returning(AdminUser.failed_attempts)
        .execution_options(synchronize_session=False)
    ).scalar()
    db.commit()
    if claimed is None:
        verify_password(_DUMMY_HASH, password)  # the same cost as a checked attempt
        until = _lock(db, user, now, lockout_minutes, only_if_saturated=threshold)
        _log_attempt(db, username, ip, False, "locked")
        raise LoginError("locked", until)
    if not verify_password(user.password_hash, password):
        if claimed < threshold:
            _log_attempt(db, username, ip, False, "bad_password")
            raise LoginError("bad_credentials")
        until = _lock(db, user, now, lockout_minutes)
        log.warning("admin locked out", extra=kv(user=username, until=until))
        _log_attempt(db, username, ip, False, "bad_password_locked")
        raise LoginError("locked", until)
    if user.disabled:
        _log_attempt(db, username, ip, False, "disabled")
        raise LoginError("disabled")
    user.failed_attempts = 0
    user.locked_until = None
    user.last_login_at = now
    _log_attempt(db, username, ip, True, "ok")
    return user


def _unknown_user_lock(
    db: Session, username: str, now: datetime, threshold: int, lockout_minutes: int
) -> tuple[bool, datetime | None]:
    """An unknown username answers like an account would: "locked" after ``threshold``
    failures, for ``lockout_minutes``; otherwise "locked" would tell which usernames exist.
    Replays this name's logged attempts (the last two windows) through the account's rule:
    attempts during a lock do not count, the ``threshold``-th failure locks. Returns whether
    this attempt falls in a lock (it does not count either) and the lock's end, None when not
    locked. No password is at stake, so no claim is needed."""
    window = timedelta(minutes=lockout_minutes)
    rows = db.scalars(
        select(LoginAttempt.time)
        .where(
            LoginAttempt.username == username,
            LoginAttempt.reason == "unknown_user",
            LoginAttempt.time > now - 2 * window,
        )
        .order_by(LoginAttempt.time)
        .limit(10_000)
    )
    failures, locked_until = 0, None
    for at in (*rows, now):  # this attempt last
        during_lock = locked_until is not None and at < locked_until
        if during_lock:
            continue
        failures += 1
        if failures >= threshold:
            failures, locked_until = 0, at + window
    locked = locked_until is not None and locked_until > now
    return during_lock, locked_until if locked else None


def _lock(
    db: Session,
    user: AdminUser,
    now: datetime,
    lockout_minutes: int,
    only_if_saturated: int | None = None,
) -> datetime | None:
    """Start the lockout window (the counter starts again from zero when it ends). With
    ``only_if_saturated``: only when every attempt is claimed and no window is running, i.e.
    the attempt that claimed the last one has not locked yet (still checking, or it died)."""
    until = now + timedelta(minutes=lockout_minutes)
    query = update(AdminUser).where(AdminUser.id == user.id)
    if only_if_saturated is not None:
        query = query.where(
            AdminUser.failed_attempts >= only_if_saturated,
            or_(AdminUser.locked_until.is_(None), AdminUser.locked_until <= now),
        )
    db.execute(
        query.values(locked_until=until, failed_attempts=0).execution_options(
            synchronize_session=False
        )
    )
    db.refresh(user, ["locked_until", "failed_attempts"])
    return user.locked_until


def _token_expiry(user: AdminUser, expires_at: datetime | None) -> datetime:
    """The default lifetime when none is asked for; never longer than the role may have."""
    now = utcnow()
    if expires_at is None:
        return now + timedelta(days=min(DEFAULT_API_TOKEN_DAYS, max_api_token_days(user.role)))
    longest = max_api_token_days(user.role)
    if expires_at > now + timedelta(days=longest, minutes=1):
        raise AdminError(f"an API token of a {user.role} may last at most {longest} days")
    return expires_at


def create_api_token(
    db: Session, user: AdminUser, name: str = "", expires_at: datetime | None = None
) -> tuple[str, ApiToken]:
    """Returns (plaintext token shown once, row). Only the SHA-256 is stored. Every token
    expires: by default after DEFAULT_API_TOKEN_DAYS, at most after the role's maximum."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=name[:128],
        token_hash=sha256_hex(plain),
        prefix=plain[:10],
        expires_at=_token_expiry(user, expires_at),
    )
    db.add(row)
    db.flush()
    return plain, row


def token_snapshot(row: ApiToken) -> dict[str, object]:
    """What may be shown or audited about a token (never its hash)."""
    return {
        "id": row.id,
        "user": row.user.username,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked": row.revoked,
    }


def issue_api_token(
    db: Session,
    actor: str,
    ip: str,
    user: AdminUser,
    name: str = "",
    ttl_days: float | None = None,
) -> tuple[str, ApiToken]:
    """create_api_token for ``user`` with an audit entry (REST, web UI and CLI)."""
    if ttl_days is not None and ttl_days <= 0:
        raise AdminError("an API token must last more than 0 days")
    expires = utcnow() + timedelta(days=ttl_days) if ttl_days is not None else None
    plain, row = create_api_token(db, user, name, expires)
    audit.record(db, actor, "api_token.create", "api_token", row.id, None, token_snapshot(row), ip)
    return plain, row


def list_api_tokens(db: Session, user: AdminUser | None = None) -> list[ApiToken]:
    """``user``'s tokens, or every user's (None), newest first."""
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return list(db.scalars(query))


def revoke_api_token(
    db: Session, actor: str, ip: str, caller: AdminUser | None, token_id: int
) -> ApiToken:
    """Revoke one token: the caller's own, or anyone's when the caller may ``api_token.any``
    (``caller`` None: the CLI, which has the database itself). Someone else's token the caller
    may not touch is reported as not found, like a missing one."""
    row = db.get(ApiToken, token_id)
    if row is None or (
        caller is not None
        and row.user_id != caller.id
        and not allowed(caller.role, "api_token.any")
    ):
        raise AdminError(f"API token {token_id} not found")
    before = token_snapshot(row)
    row.revoked = True
    after = token_snapshot(row)
    audit.record(db, actor, "api_token.revoke", "api_token", row.id, before, after, ip)
    return row


def revoke_user_api_tokens(db: Session, user: AdminUser) -> int:
    """End every live token of ``user`` (new password, disabled account)."""
    result = db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked.is_(False))
        .values(revoked=True)
        .execution_options(synchronize_session="fetch")
    )
    count = rowcount(result)
    if count:
        log.info("api tokens revoked", extra=kv(user=user.username, count=count))
    return count


def authenticate_token(db: Session, token: str) -> AdminUser | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = sha256_hex(token)
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked:
        return None
    now = utcnow()
    # Rows from before tokens always expired have none: they last the longest a token may.
    expires_at = row.expires_at or row.created_at + timedelta(days=max(MAX_DAYS_ANY_ROLE, 1))
    if expires_at <= now:
        return None
    if row.user.disabled:
        return None
    # Coarse last-use stamp: avoid a write on every API call.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5):
        _stamp_last_use(db, row.id, now)
    return row.user


def _stamp_last_use(db: Session, token_id: int, now: datetime) -> None:
    """Best effort, in a savepoint: a GET runs in a read transaction, and on SQLite turning it
    into a write fails at once ("database is locked") when another writer committed meanwhile.
    The request must not fail (503) for a statistic; the next use stamps it."""
    try:
        with db.begin_nested():
            db.execute(
                update(ApiToken)
                .where(ApiToken.id == token_id)
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
    except OperationalError as exc:
        log.info("api token last use not stamped", extra=kv(token=token_id, error=exc.orig))


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


def require_permission(action: str) -> Callable[..., AdminUser]:
    """FastAPI dependency factory: the authenticated admin whose role may do ``action``."""
    required_role(action)  # an unknown action fails at import, not on the first request

    def dependency(request: Request, db: DbSession) -> AdminUser:
        user = current_admin(request, db)
        if user is None:
            raise HTTPException(
                401,
                detail="admin authentication required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        require_allowed(user, action)
        request.state.admin = user
        return user

    return dependency
