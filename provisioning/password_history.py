"""Password history: a new admin password may not repeat the current one or the last N
(``OFFHOOK_PASSWORD_HISTORY``, default 5; 0 turns the check off). Earlier hashes are kept as
they were (argon2); checking a new password costs one hash verification per kept password."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from offhook.provisioning.models import AdminPasswordHistory, AdminUser

DEFAULT_DEPTH = 5


def earlier_hashes(db: Session, user: AdminUser, depth: int) -> list[str]:
    """The current hash and the newest ``depth - 1`` earlier ones: ``depth`` passwords."""
    if depth <= 0 or user.id is None:
        return []
    older = db.scalars(
        select(AdminPasswordHistory.password_hash)
        .where(AdminPasswordHistory.user_id == user.id)
        .order_by(AdminPasswordHistory.id.desc())
        .limit(max(depth - 1, 0))
    )
    return [user.password_hash, *older]


def reused(
    db: Session,
    user: AdminUser,
    password: str,
    depth: int,
    verify: Callable[[str, str], bool],
) -> bool:
    return any(verify(h, password) for h in earlier_hashes(db, user, depth))


def remember(db: Session, user: AdminUser, old_hash: str, depth: int) -> None:
    """Keep ``old_hash`` (being replaced) and drop what falls out of the window."""
    if depth <= 1:
        db.execute(delete(AdminPasswordHistory).where(AdminPasswordHistory.user_id == user.id))
        return
    db.add(AdminPasswordHistory(user_id=user.id, password_hash=old_hash))
    db.flush()
    keep = select(AdminPasswordHistory.id).where(AdminPasswordHistory.user_id == user.id)
    keep = keep.order_by(AdminPasswordHistory.id.desc()).limit(depth - 1)
    db.execute(
        delete(AdminPasswordHistory).where(
            AdminPasswordHistory.user_id == user.id,
            AdminPasswordHistory.id.not_in(keep),
        )
    )
