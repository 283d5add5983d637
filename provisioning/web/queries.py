"""Read-side queries for the web pages (writes go through provisioning.operations)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offhook.provisioning.models import (
    DEVICE_APPROVED,
    DEVICE_PENDING,
    CallRecordRow,
    Device,
    Group,
    QualityRecord,
    StatusReport,
    utcnow,
)
from offhook.provisioning.render import (
    fleet_defaults,
    group_chain,
)
from offhook.provisioning.services.device_list import DeviceFilter, find_devices
from offhook.provisioning.services.setting_fields import flatten, settable_defaults
from offhook.provisioning.web.liveness import (
    DEFAULT_POLL_INTERVAL_S,
    device_not_seen_after,
    not_seen_after,
)

# A device that has not reported for this long counts as "not seen" unless the caller passes
# the threshold derived from the fleet's poll interval (provisioning.web.liveness).
STALE_AFTER = not_seen_after(DEFAULT_POLL_INTERVAL_S)
IN_CHUNK = 500  # ids per IN (...) list: well under every backend's bound-parameter limit


@dataclass(frozen=True)
class LineState:
    account: int
    user: str
    registered: bool
    status: int


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    group_name: str
    lines: list[LineState]
    online: bool

    @property
    def health(self) -> str:
        """ok | partial | down | unknown, from the device's latest status report."""
        if not self.lines:
            return "unknown"
        registered = sum(1 for line in self.lines if line.registered)
        if registered == len(self.lines):
            return "ok"
        return "partial" if registered else "down"


def latest_lines(db: Session, device_ids: list[str]) -> dict[str, list[LineState]]:
    """Each device's line states from its newest status report. A window function picks the
    newest row per device in one indexed pass (a max()-join is ~25x slower on SQLite)."""
    out: dict[str, list[LineState]] = {}
    for start in range(0, len(device_ids), IN_CHUNK):
        chunk = device_ids[start : start + IN_CHUNK]
        newest_first = (
            func.row_number()
            .over(partition_by=StatusReport.device_id, order_by=StatusReport.time.desc())
            .label("rank")
        )
        ranked = (
            select(StatusReport.device_id, StatusReport.lines, newest_first)
            .where(StatusReport.device_id.in_(chunk))
            .subquery()
        )
        for device_id, lines in db.execute(
            select(ranked.c.device_id, ranked.c.lines).where(ranked.c.rank == 1)
        ):
            out[device_id] = _line_states(lines)
    return out


def _line_states(lines: Any) -> list[LineState]:
    out = []
    for item in lines or []:
        if isinstance(item, dict):
            out.append(
                LineState(
                    account=int(item.get("account", 0) or 0),
                    user=str(item.get("user", "")),
                    registered=bool(item.get("registered")),
                    status=int(item.get("status", 0) or 0),
                )
            )
    return out


def is_online(
    device: Device, now: datetime | None = None, stale_after: timedelta = STALE_AFTER
) -> bool:
    """``stale_after``: the fleet's threshold, for phones that have not reported their interval."""
    now = now or utcnow()
    threshold = device_not_seen_after(device.poll_interval_s, stale_after)
    return device.last_seen is not None and now - device.last_seen <= threshold


def device_rows(
    db: Session,
    *,
    status: str = "",
    group_id: int | None = None,
    search: str = "",
    limit: int = 1000,
    offset: int = 0,
    stale_after: timedelta = STALE_AFTER,
    wanted: DeviceFilter | None = None,
) -> list[DeviceRow]:
    """Devices as the device list finds and sorts them (services.device_list; default: by
    name then MAC), each with its line states from its newest report (one window query over
    this page's ids only)."""
    wanted = wanted or DeviceFilter(q=search.strip(), status=status, group_id=group_id)
    devices = find_devices(db, wanted, limit=limit, offset=offset)
    return rows_of(db, devices, stale_after)


def rows_of(
    db: Session, devices: list[Device], stale_after: timedelta = STALE_AFTER
) -> list[DeviceRow]:
    groups = {gid: name for gid, name in db.execute(select(Group.id, Group.name))}
    lines = latest_lines(db, [d.id for d in devices])
    now = utcnow()
    return [
        DeviceRow(
            device=d,
            group_name=groups.get(d.group_id, "") if d.group_id is not None else "",
            lines=lines.get(d.id, []),
            online=is_online(d, now, stale_after),
        )
        for d in devices
    ]


def registration_health(db: Session, stale_after: timedelta = STALE_AFTER) -> dict[str, int]:
    """Enrolled approved devices by state of their latest report."""
    devices = list(
        db.scalars(
            select(Device).where(Device.status == DEVICE_APPROVED, Device.secret_hash.is_not(None))
        )
    )
    lines = latest_lines(db, [d.id for d in devices])
    now = utcnow()
    counts = {"ok": 0, "partial": 0, "down": 0, "unknown": 0, "offline": 0}
    for device in devices:
        if not is_online(device, now, stale_after):
            counts["offline"] += 1
            continue
        row = DeviceRow(device, "", lines.get(device.id, []), True)
        counts[row.health] += 1
    return counts


def pending_devices(db: Session) -> list[Device]:
    return list(
        db.scalars(
            select(Device).where(Device.status == DEVICE_PENDING).order_by(Device.created_at)
        )
    )


# --- settings provenance -------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingRow:
    key: str  # dotted
    value: Any
    source: str  # "default" or the layer that set it last


def settings_layers(db: Session, device: Device) -> list[tuple[str, dict[str, Any]]]:
    """(label, partial settings) in the order render.effective_settings applies them."""
    layers: list[tuple[str, dict[str, Any]]] = [("fleet", fleet_defaults(db).settings or {})]
    for group in group_chain(db, device.group_id):
        for template in group.templates:
            layers.append((f"template {template.name}", template.settings or {}))
        layers.append((f"{group.kind} {group.name}", group.settings or {}))
    if device.name:
        layers.append(("device name", {"device": {"name": device.name}}))
    layers.append(("device", device.settings or {}))
    return layers


def settings_provenance(db: Session, device: Device) -> list[SettingRow]:
    effective: dict[str, tuple[Any, str]] = {
        key: (value, "default") for key, value in settable_defaults().items()
    }
    for label, partial in settings_layers(db, device):
        for key, value in flatten(copy.deepcopy(partial)).items():
            effective[key] = (value, label)
    return [SettingRow(key, value, source) for key, (value, source) in sorted(effective.items())]


# --- calls ---------------------------------------------------------------------------------------


def recent_cdrs(db: Session, device_id: str, limit: int = 10) -> list[CallRecordRow]:
    return list(
        db.scalars(
            select(CallRecordRow)
            .where(CallRecordRow.device_id == device_id)
            .order_by(CallRecordRow.start.desc())
            .limit(limit)
        )
    )


def recent_quality(db: Session, device_id: str, limit: int = 10) -> list[QualityRecord]:
    return list(
        db.scalars(
            select(QualityRecord)
            .where(QualityRecord.device_id == device_id)
            .order_by(QualityRecord.time.desc())
            .limit(limit)
        )
    )


def device_labels(db: Session, device_ids: set[str]) -> dict[str, str]:
    if not device_ids:
        return {}
    rows = db.execute(select(Device.id, Device.name, Device.mac).where(Device.id.in_(device_ids)))
    return {device_id: name or mac for device_id, name, mac in rows}
