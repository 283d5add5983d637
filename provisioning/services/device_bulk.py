"""Bulk device actions (approve, reject, revoke, reset, move to a group, resync, delete) for
the web UI's device table, ``POST /api/v1/admin/devices/bulk`` and ``offhook fleet bulk``.

Each device goes through the same operation as its single-device form (so each gets its own
audit row, e.g. ``device.approve``); a resync is one ``resync`` row with the count, as
``operations.request_resync`` writes it. A device the action does not fit (approving an
approved phone) is reported, not fatal: the others still change. The permission is the single
action's (``BULK_ACTIONS``), checked here for the callers that act as a user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from offhook.provisioning import operations
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import Actor, OperationError
from offhook.provisioning.permissions import allowed, required_role

# action -> (the permission it needs, the past tense the answers use)
BULK_ACTIONS: dict[str, tuple[str, str]] = {
    "approve": ("device.status", "approved"),
    "reject": ("device.status", "rejected"),
    "revoke": ("device.status", "revoked"),
    "reset": ("device.status", "reset"),
    "move": ("device.write", "moved"),
    "resync": ("device.resync", "asked to resync"),
    "delete": ("device.delete", "deleted"),
}
MAX_BULK = 5000


class BulkRefused(OperationError):
    """The caller's role may not do the action (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 403)


@dataclass
class BulkResult:
    action: str
    done: list[str] = field(default_factory=list)  # device ids
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (device label, why)
    changed: list[str] = field(default_factory=list)  # ids to resync after the commit

    @property
    def summary(self) -> str:
        verb = BULK_ACTIONS[self.action][1]
        text = f"{len(self.done)} device{'' if len(self.done) == 1 else 's'} {verb}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text


def check_bulk(action: str, user: AdminUser | None, count: int) -> None:
    """Refuse an unknown action, an empty or oversized selection, or a role below the
    action's (``user`` None: the CLI, the server's owner)."""
    if action not in BULK_ACTIONS:
        raise OperationError(
            f"unknown bulk action {action!r}; use one of {', '.join(BULK_ACTIONS)}"
        )
    if count == 0:
        raise OperationError("choose at least one device")
    if count > MAX_BULK:
        raise OperationError(f"{count} devices chosen; at most {MAX_BULK} at once")
    permission = BULK_ACTIONS[action][0]
    if user is not None and not allowed(user.role, permission):
        raise BulkRefused(
            f"{permission} needs the {required_role(permission)} role; you are {user.role}"
        )


def run_bulk(
    db: Session,
    actor: Actor,
    action: str,
    refs: list[str],
    *,
    user: AdminUser | None = None,
    group: str | int | None = None,
) -> BulkResult:
    """Do ``action`` to every device of ``refs`` (ids or MACs). ``move`` takes ``group`` (empty:
    out of any group). Flushes; the caller commits, then resyncs ``result.changed``."""
    unique = list(dict.fromkeys(r.strip() for r in refs if r.strip()))
    check_bulk(action, user, len(unique))
    result = BulkResult(action)
    if action == "move" and group not in (None, ""):
        group = operations.get_group(db, group).id  # an unknown group refuses the whole move
    if action == "resync":
        ids = operations.request_resync(db, actor, devices=unique)
        result.done, result.changed = ids, ids
        return result
    for ref in unique:
        label = ref
        try:
            with db.begin_nested():
                device = operations.get_device(db, ref)
                label = device.name or device.mac
                if action == "move":
                    result.changed += operations.update_device(
                        db, actor, device.id, group=group or None, clear_group=not group
                    )
                elif action == "delete":
                    operations.delete_device(db, actor, device.id)
                else:
                    operations.set_device_status(db, actor, device.id, action)
                result.done.append(device.id)
        except OperationError as exc:
            result.skipped.append((label, str(exc)))
    return result
