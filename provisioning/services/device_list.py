"""The device list: search, combinable filters, sorting and CSV export, the same for the web
UI's device table, ``GET /api/v1/admin/devices`` and ``offhook fleet devices``.

Search matches name, MAC, serial, last IP or a line's extension (case-insensitive substring);
filters (status, group with or without its subgroups, firmware version) combine with AND.
Every sort ends on the device id, so pages never overlap.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from offhook.provisioning.models import DEVICE_STATUSES, Device, Group, Line
from offhook.provisioning.operations import OperationError, get_group
from offhook.provisioning.render import subtree_group_ids

# sort key -> what it orders by (names first, then the tie-breakers)
SORTS = ("name", "mac", "group", "status", "last_seen", "firmware", "ip", "revision", "created")
CSV_COLUMNS = (
    "name",
    "mac",
    "serial",
    "model",
    "group",
    "status",
    "extensions",
    "last_seen",
    "firmware",
    "ip",
    "config_revision",
    "reported_revision",
    "id",
)


@dataclass(frozen=True)
class DeviceFilter:
    q: str = ""
    status: str = ""
    group_id: int | None = None
    subgroups: bool = False  # the group and every group below it
    firmware: str = ""
    sort: str = "name"
    descending: bool = False


def parse_filter(
    *,
    q: str = "",
    status: str = "",
    group: int | str | None = None,
    subgroups: bool = False,
    firmware: str = "",
    sort: str = "",
    db: Session | None = None,
) -> DeviceFilter:
    """Front-end text into a filter; bad values are refused with what is allowed. ``sort``
    is a key of SORTS, ``-key`` for descending; ``group`` an id, or with ``db`` an id or a
    name that must exist."""
    if status and status not in DEVICE_STATUSES:
        raise OperationError(f"status must be one of {', '.join(DEVICE_STATUSES)}")
    key = (sort or "name").strip()
    descending = key.startswith("-")
    key = key.lstrip("-")
    if key not in SORTS:
        raise OperationError(f"sort must be one of {', '.join(SORTS)} (prefix - for descending)")
    group_id: int | None = None
    if group not in (None, ""):
        text = str(group)
        if db is not None:  # id or name, and it must exist (404 otherwise)
            group_id = get_group(db, text).id
        elif text.isascii() and text.isdigit() and len(text) <= 10:
            group_id = int(text)
        else:
            raise OperationError(f"group {group!r}: give its id")
    return DeviceFilter(
        q=q.strip(),
        status=status,
        group_id=group_id,
        subgroups=subgroups,
        firmware=firmware.strip(),
        sort=key,
        descending=descending,
    )


def _order(query: Select[Device], sort: str, descending: bool) -> Select[Device]:
    columns: dict[str, Any] = {
        "name": Device.name,
        "mac": Device.mac,
        "group": Group.name,
        "status": Device.status,
        "last_seen": Device.last_seen,
        "firmware": Device.firmware_version,
        "ip": Device.last_ip,
        "revision": Device.reported_revision,
        "created": Device.created_at,
    }
    if sort == "group":
        query = query.outerjoin(Group, Group.id == Device.group_id)
    column = columns[sort]
    first = column.desc() if descending else column.asc()
    # NULLs (never seen, no group) last in both directions, the same on SQLite and PostgreSQL
    nulls_last = column.is_(None)
    return query.order_by(nulls_last, first, Device.mac, Device.id)


def device_query(db: Session, wanted: DeviceFilter) -> Select[Device]:
    query: Select[Device] = select(Device)
    if wanted.status:
        query = query.where(Device.status == wanted.status)
    if wanted.group_id is not None:
        if wanted.subgroups:
            query = query.where(Device.group_id.in_(subtree_group_ids(db, wanted.group_id)))
        else:
            query = query.where(Device.group_id == wanted.group_id)
    if wanted.firmware:
        query = query.where(Device.firmware_version == wanted.firmware)
    if wanted.q:
        like = f"%{wanted.q.lower()}%"
        with_extension = select(Line.device_id).where(func.lower(Line.extension).like(like))
        query = query.where(
            func.lower(Device.name).like(like)
            | func.lower(Device.mac).like(like)
            | func.lower(Device.serial).like(like)
            | func.lower(Device.last_ip).like(like)
            | Device.id.in_(with_extension)
        )
    return _order(query, wanted.sort, wanted.descending)


def find_devices(
    db: Session, wanted: DeviceFilter, *, limit: int = 1000, offset: int = 0
) -> list[Device]:
    return list(db.scalars(device_query(db, wanted).offset(offset).limit(limit)))


def count_devices(db: Session, wanted: DeviceFilter) -> int:
    inner = device_query(db, wanted).order_by(None).subquery()
    return int(db.scalar(select(func.count()).select_from(inner)) or 0)


def firmware_versions(db: Session) -> list[str]:
    """The versions phones report, for the filter's choices."""
    rows = db.scalars(
        select(Device.firmware_version)
        .where(Device.firmware_version != "")
        .distinct()
        .order_by(Device.firmware_version)
    )
    return list(rows)


def extensions_by_device(db: Session, device_ids: Iterable[str]) -> dict[str, list[str]]:
    ids = list(device_ids)
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), 500):
        rows = db.execute(
            select(Line.device_id, Line.extension)
            .where(Line.device_id.in_(ids[start : start + 500]))
            .order_by(Line.device_id, Line.position)
        )
        for device_id, extension in rows:
            out.setdefault(device_id, []).append(extension)
    return out


def devices_csv(db: Session, devices: list[Device]) -> str:
    """The listed devices as CSV (one header row, CSV_COLUMNS), in the list's order. Cells that
    a spreadsheet would run as a formula (= + - @ first) get a leading apostrophe."""
    groups = {gid: name for gid, name in db.execute(select(Group.id, Group.name))}
    extensions = extensions_by_device(db, [d.id for d in devices])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for d in devices:
        writer.writerow(
            [
                _cell(value)
                for value in (
                    d.name,
                    d.mac,
                    d.serial,
                    d.model,
                    groups.get(d.group_id, "") if d.group_id is not None else "",
                    d.status,
                    " ".join(extensions.get(d.id, [])),
                    d.last_seen.isoformat(timespec="seconds") if d.last_seen else "",
                    d.firmware_version,
                    d.last_ip,
                    d.revision,
                    "" if d.reported_revision is None else d.reported_revision,
                    d.id,
                )
            ]
        )
    return out.getvalue()


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
