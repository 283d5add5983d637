"""Web sign-in sessions: recorded when a sign-in completes, listed to their admin, revocable.

The signed cookie stays the credential (``provisioning.web.sessions``); a row here names it by
the digest of its id (never the id itself). Ending one writes the login-log row that every
request already checks (``provisioning.web.revocation``), so a revoked session stops working at
once in every app process. A new password or a disabled account ends all of a user's sessions
through the cookie's password fingerprint or the account check; their rows are closed here.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.provisioning import audit
from offhook.provisioning.models import AdminSession, AdminUser, LoginAttempt, utcnow
from offhook.provisioning.operations import Actor
from offhook.provisioning.permissions import allowed

log = logging.getLogger(__name__)

LOGOUT_REASON_PREFIX = "logout:"
_DIGEST_CHARS = 24  # 96 bits; prefix + digest fits the login log's 32-character reason
SESSION_LIFETIME = timedelta(hours=8)  # the cookie's max age (web.sessions.SESSION_MAX_AGE_S)


class SessionNotFound(OffhookError, ValueError):
    status = 404


def session_digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]


def logout_reason(sid_digest: str) -> str:
    """The login-log reason that revokes the session with this digest."""
    return LOGOUT_REASON_PREFIX + sid_digest


def record_sign_in(
    db: Session, user: AdminUser, sid: str, ip: str, user_agent: str, second_factor: str = ""
) -> AdminSession:
    row = AdminSession(
        user_id=user.id,
        sid_digest=session_digest(sid),
        ip=ip[:64],
        user_agent=user_agent[:255],
        second_factor=second_factor,
    )
    db.add(row)
    db.flush()
    return row


def current_session(db: Session, sid: str) -> AdminSession | None:
    return db.scalar(select(AdminSession).where(AdminSession.sid_digest == session_digest(sid)))


def list_sessions(db: Session, user: AdminUser | None = None) -> list[AdminSession]:
    """Live sessions (not ended, younger than the cookie's lifetime), newest first; one user's
    or everyone's (None)."""
    query = (
        select(AdminSession)
        .where(
            AdminSession.ended_at.is_(None),
            AdminSession.created_at > utcnow() - SESSION_LIFETIME,
        )
        .order_by(AdminSession.created_at.desc(), AdminSession.id.desc())
        .limit(500)
    )
    if user is not None:
        query = query.where(AdminSession.user_id == user.id)
    return list(db.scalars(query))


def _end(db: Session, row: AdminSession, username: str, ip: str, reason: str) -> None:
    row.ended_at = utcnow()
    row.end_reason = reason[:32]
    db.add(
        LoginAttempt(
            username=username[:64], ip=ip[:64], success=True, reason=logout_reason(row.sid_digest)
        )
    )
    db.flush()


def end_own_session(db: Session, user: AdminUser, sid: str, ip: str) -> None:
    """Sign-out: the session's row is closed and its cookie refused from now on."""
    row = current_session(db, sid)
    if row is None:  # signed in before sessions were recorded: revoke it all the same
        db.add(
            LoginAttempt(
                username=user.username[:64],
                ip=ip[:64],
                success=True,
                reason=logout_reason(session_digest(sid)),
            )
        )
        db.flush()
        return
    _end(db, row, user.username, ip, "signed out")
    log.info("web session ended", extra=kv(user=user.username, ip=ip))


def session_snapshot(row: AdminSession) -> dict[str, object]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "second_factor": row.second_factor,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "end_reason": row.end_reason,
    }


def revoke(db: Session, actor: Actor, caller: AdminUser | None, session_id: int) -> AdminSession:
    """End one session: the caller's own, or anyone's with ``admin_user.manage`` (``caller``
    None: the CLI). Someone else's the caller may not touch reads as not found."""
    row = db.get(AdminSession, session_id)
    if row is None or (
        caller is not None
        and row.user_id != caller.id
        and not allowed(caller.role, "admin_user.manage")
    ):
        raise SessionNotFound(f"session {session_id} not found")
    if row.ended_at is not None:
        raise SessionNotFound(f"session {session_id} has ended already")
    owner = db.get(AdminUser, row.user_id)
    before = session_snapshot(row)
    _end(db, row, owner.username if owner else "", actor.ip, "revoked")
    audit.record(
        db,
        actor.name,
        "admin_session.revoke",
        "admin_session",
        row.id,
        before,
        session_snapshot(row),
        actor.ip,
    )
    log.info("web session revoked", extra=kv(session=row.id, by=actor.name))
    return row


def end_all(db: Session, user: AdminUser, reason: str) -> int:
    """Close every open row of ``user`` (their cookies already fail: new password, disabled)."""
    result = db.execute(
        update(AdminSession)
        .where(AdminSession.user_id == user.id, AdminSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason[:32])
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)
