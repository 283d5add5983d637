"""Names and links for what audit entries point at, so pages show "Reception (device)" with a
link instead of a UUID. Deleted targets fall back to the name their last snapshot recorded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.provisioning.models import AdminUser, AuditEntry, Device, Group, Line, Template


@dataclass(frozen=True)
class Target:
    label: str
    url: str = ""  # empty: nothing to link to (gone, or no page)


def _ints(values: Iterable[str]) -> list[int]:
    return [int(v) for v in values if v.isascii() and v.isdigit() and len(v) <= 10]


def _snapshot_name(entry: AuditEntry) -> str:
    for side in (entry.before, entry.after):
        if isinstance(side, dict):
            for key in ("name", "username", "mac", "extension"):
                if side.get(key):
                    return str(side[key])
    return ""


def _names(db: Session, key: Any, name: Any, ids: set[str]) -> dict[int, str]:
    """id -> name for the numeric ids among ``ids`` (a Result is not a mapping: no dict())."""
    return {
        row_id: text for row_id, text in db.execute(select(key, name).where(key.in_(_ints(ids))))
    }


def audit_targets(db: Session, entries: list[AuditEntry]) -> dict[int, Target]:
    """entry id -> its target's name and page."""
    wanted: dict[str, set[str]] = {}
    for e in entries:
        wanted.setdefault(e.target_type, set()).add(e.target_id)
    devices = {
        d_id: (name or mac)
        for d_id, name, mac in db.execute(
            select(Device.id, Device.name, Device.mac).where(
                Device.id.in_(wanted.get("device", set()))
            )
        )
    }
    groups = _names(db, Group.id, Group.name, wanted.get("group", set()))
    templates = _names(db, Template.id, Template.name, wanted.get("template", set()))
    users = _names(db, AdminUser.id, AdminUser.username, wanted.get("admin_user", set()))
    lines = {
        line_id: (extension, device_id)
        for line_id, extension, device_id in db.execute(
            select(Line.id, Line.extension, Line.device_id).where(
                Line.id.in_(_ints(wanted.get("line", set())))
            )
        )
    }
    out: dict[int, Target] = {}
    for e in entries:
        tid = e.target_id
        number = int(tid) if tid.isascii() and tid.isdigit() and len(tid) <= 10 else None
        if e.target_type == "device" and tid in devices:
            out[e.id] = Target(devices[tid], f"/devices/{tid}")
        elif e.target_type == "group" and number in groups:
            out[e.id] = Target(groups[number], f"/groups/{number}")
        elif e.target_type == "template" and number in templates:
            out[e.id] = Target(templates[number], f"/templates/{number}")
        elif e.target_type == "admin_user" and number in users:
            out[e.id] = Target(users[number], "/admins")
        elif e.target_type == "line" and number in lines:
            extension, device_id = lines[number]
            out[e.id] = Target(f"line {extension}", f"/devices/{device_id}#lines")
        elif tid:
            name = _snapshot_name(e)
            out[e.id] = Target(f"{name} (gone)" if name else tid)
        else:
            out[e.id] = Target("")
    return out
