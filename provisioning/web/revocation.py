"""Server-side logout for signed-cookie sessions, without a session table.

Logging out writes a row to the login log (``login_attempts``, which every process shares):
reason ``logout:<digest of the session id>``. A session whose digest has such a row is dead, so
a copy of the cookie taken before the logout stops working everywhere at once. The check is one
indexed lookup (by username) per request. Sessions last 8 hours and the login log is kept for
days (``RetentionDays.security``), so a revocation outlives the session it ends.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.contract.logs import kv
from offhook.provisioning.models import LoginAttempt
from offhook.provisioning.services import sessions as session_rows
from offhook.provisioning.services.sessions import LOGOUT_REASON_PREFIX

log = logging.getLogger(__name__)

__all__ = ["LOGOUT_REASON_PREFIX", "logout_reason", "revoke_session", "session_revoked"]


def logout_reason(sid: str) -> str:
    """The login-log reason that revokes session ``sid`` (the id itself is never stored); the
    session list (``provisioning.services.sessions``) ends sessions with the same row."""
    return session_rows.logout_reason(session_rows.session_digest(sid))


def revoke_session(db: Session, username: str, sid: str, ip: str) -> None:
    db.add(
        LoginAttempt(username=username[:64], ip=ip[:64], success=True, reason=logout_reason(sid))
    )
    log.info("web session revoked", extra=kv(user=username, ip=ip))


def session_revoked(db: Session, username: str, sid: str) -> bool:
    query = (
        select(LoginAttempt.id)
        .where(LoginAttempt.username == username[:64], LoginAttempt.reason == logout_reason(sid))
        .limit(1)
    )
    return db.scalar(query) is not None
