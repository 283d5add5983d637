"""Retention: purge each class of stored client data after its period; per-subject export/erase.

Data classes (periods in settings.RetentionDays):
- network:  status reports (IP, SIP contact, uptime); devices' last IP/contact when not seen since
- cdr:      call records
- quality:  quality records and device events
- security: admin login attempts, the audit log, admins' sessions and sign-in networks
- identity: rejected/revoked devices (MAC, serial, lines) not seen or changed since
A subject is a device (id or MAC) or a line's extension. Every export and erase is audited.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from offhook.contract.logs import kv
from offhook.provisioning import audit
from offhook.provisioning.db import Database, rowcount
from offhook.provisioning.models import (
    DEVICE_REJECTED,
    DEVICE_REVOKED,
    AdminKnownNetwork,
    AdminSession,
    AuditEntry,
    CallRecordRow,
    Device,
    DeviceEvent,
    Line,
    LoginAttempt,
    QualityRecord,
    StatusReport,
    utcnow,
)
from offhook.provisioning.operations import Actor, OperationError, get_device
from offhook.provisioning.render import bump_devices
from offhook.provisioning.settings import RetentionDays

log = logging.getLogger(__name__)


def _delete_before(db: Session, column: Any, cutoff: Any) -> int:
    """Delete the rows of ``column``'s table whose ``column`` is older than ``cutoff``."""
    return rowcount(db.execute(delete(column.class_).where(column < cutoff)))


def purge_session(db: Session, retention: RetentionDays, actor: str) -> dict[str, int]:
    now = utcnow()
    counts: dict[str, int] = {}

    def cutoff(days: int) -> datetime:
        return now - timedelta(days=days)

    if retention.network:
        c = cutoff(retention.network)
        counts["status_reports"] = _delete_before(db, StatusReport.received_at, c)
        counts["device_network"] = rowcount(
            db.execute(
                update(Device)
                .where(Device.last_seen < c, or_(Device.last_ip != "", Device.sip_contact != ""))
                .values(last_ip="", sip_contact="")
            )
        )
    if retention.cdr:
        c_epoch = time.time() - retention.cdr * 86400  # call records keep epoch seconds
        counts["call_records"] = _delete_before(db, CallRecordRow.start, c_epoch)
    if retention.quality:
        c = cutoff(retention.quality)
        counts["quality_records"] = _delete_before(db, QualityRecord.time, c)
        counts["device_events"] = _delete_before(db, DeviceEvent.time, c)
    if retention.security:
        c = cutoff(retention.security)
        counts["login_attempts"] = _delete_before(db, LoginAttempt.time, c)
        counts["audit_log"] = _delete_before(db, AuditEntry.time, c)
        counts["admin_sessions"] = _delete_before(db, AdminSession.created_at, c)
        counts["admin_known_networks"] = _delete_before(db, AdminKnownNetwork.last_seen, c)
    if retention.identity:
        c = cutoff(retention.identity)
        stale = list(
            db.scalars(
                select(Device.id).where(
                    Device.status.in_((DEVICE_REJECTED, DEVICE_REVOKED)),
                    Device.updated_at < c,
                    or_(Device.last_seen.is_(None), Device.last_seen < c),
                )
            )
        )
        for device_id in stale:
            db.delete(db.get(Device, device_id))
        counts["devices"] = len(stale)
    db.flush()
    audit.record(db, actor, "retention.purge", "retention", "", None, counts)
    return counts


def purge_expired(database: Database, retention: RetentionDays, actor: str) -> dict[str, int]:
    with database.session() as db:
        return purge_session(db, retention, actor)


# --- per-subject export / erase -----------------------------------------------------------------


def _row(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for column in obj.__table__.columns:
        if column.key in skip:
            continue
        value = getattr(obj, column.key)
        out[column.key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


DEVICE_SECRET_COLUMNS = ("secret_hash", "secret_enc", "enroll_nonce")


def _lines_for_extension(db: Session, extension: str) -> list[Line]:
    lines = list(db.scalars(select(Line).where(Line.extension == extension)))
    if not lines:
        raise OperationError(f"no line with extension {extension!r}", 404)
    return lines


def _extension_cdrs(db: Session, lines: list[Line]) -> list[CallRecordRow]:
    rows: list[CallRecordRow] = []
    for line in lines:
        rows.extend(
            db.scalars(
                select(CallRecordRow).where(
                    CallRecordRow.device_id == line.device_id,
                    CallRecordRow.account == line.position,
                )
            )
        )
    return rows


def export_subject(
    db: Session, actor: Actor, *, device: str | None = None, extension: str | None = None
) -> dict[str, Any]:
    if bool(device) == bool(extension):
        raise OperationError("name exactly one subject: a device (id or MAC) or an extension")
    if device:
        row = get_device(db, device)
        data: dict[str, Any] = {
            "subject": {"device": row.id},
            "device": _row(row, DEVICE_SECRET_COLUMNS),
            "lines": [_row(line, ("password_enc",)) for line in row.lines],
            "status_reports": [
                _row(r)
                for r in db.scalars(select(StatusReport).where(StatusReport.device_id == row.id))
            ],
            "call_records": [
                _row(r)
                for r in db.scalars(select(CallRecordRow).where(CallRecordRow.device_id == row.id))
            ],
            "quality_records": [
                _row(r)
                for r in db.scalars(select(QualityRecord).where(QualityRecord.device_id == row.id))
            ],
            "device_events": [
                _row(r)
                for r in db.scalars(select(DeviceEvent).where(DeviceEvent.device_id == row.id))
            ],
        }
        target = ("device", row.id)
    else:
        lines = _lines_for_extension(db, extension or "")
        cdrs = _extension_cdrs(db, lines)
        cdr_ids = [c.id for c in cdrs]
        quality = (
            list(db.scalars(select(QualityRecord).where(QualityRecord.call_record_id.in_(cdr_ids))))
            if cdr_ids
            else []
        )
        data = {
            "subject": {"extension": extension},
            "lines": [_row(line, ("password_enc",)) for line in lines],
            "call_records": [_row(c) for c in cdrs],
            "quality_records": [_row(q) for q in quality],
        }
        target = ("extension", extension or "")
    data["exported_at"] = utcnow().isoformat()
    audit.record(
        db,
        actor.name,
        "privacy.export",
        target[0],
        target[1],
        None,
        {k: len(v) for k, v in data.items() if isinstance(v, list)},
        actor.ip,
    )
    return data


def erase_subject(
    db: Session, actor: Actor, *, device: str | None = None, extension: str | None = None
) -> dict[str, int]:
    """Device: the device row and everything it reported (cascade). Extension: its lines, their
    call records and quality records. Audit entries stay (security log, own retention)."""
    if bool(device) == bool(extension):
        raise OperationError("name exactly one subject: a device (id or MAC) or an extension")
    counts: dict[str, int] = {}
    if device:
        row = get_device(db, device)
        for model in (StatusReport, CallRecordRow, QualityRecord, DeviceEvent):
            counts[model.__tablename__] = rowcount(
                db.execute(delete(model).where(model.device_id == row.id))
            )
        counts["lines"] = len(row.lines)
        target = ("device", row.id)
        db.delete(row)
        counts["devices"] = 1
    else:
        lines = _lines_for_extension(db, extension or "")
        cdrs = _extension_cdrs(db, lines)
        cdr_ids = [c.id for c in cdrs]
        counts["quality_records"] = (
            rowcount(
                db.execute(delete(QualityRecord).where(QualityRecord.call_record_id.in_(cdr_ids)))
            )
            if cdr_ids
            else 0
        )
        counts["call_records"] = (
            rowcount(db.execute(delete(CallRecordRow).where(CallRecordRow.id.in_(cdr_ids))))
            if cdr_ids
            else 0
        )

        bump_devices(db, list({line.device_id for line in lines}))
        for line in lines:
            db.delete(line)
        counts["lines"] = len(lines)
        target = ("extension", extension or "")
    db.flush()
    audit.record(db, actor.name, "privacy.erase", target[0], target[1], None, counts, actor.ip)
    log.info("privacy erase", extra=kv(**{target[0]: target[1]}, **counts))
    return counts
