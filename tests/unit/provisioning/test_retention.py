"""Retention purge: each data class goes after its own period, fresh data stays, purge audited."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offhook.provisioning import operations as ops
from offhook.provisioning.db import Database
from offhook.provisioning.models import (
    AuditEntry,
    CallRecordRow,
    Device,
    DeviceEvent,
    LoginAttempt,
    QualityRecord,
    StatusReport,
    utcnow,
)
from offhook.provisioning.retention import purge_session
from offhook.provisioning.settings import RetentionDays

ACTOR = ops.Actor("test:retention")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    database.migrate()
    with database.session() as session:
        yield session
    database.dispose()


def _count(db: Session, model: type) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


def test_purge_by_data_class(db: Session) -> None:
    now = utcnow()
    old, fresh = now - timedelta(days=40), now - timedelta(days=1)
    device = ops.add_device(db, ACTOR, "b8:27:eb:00:00:01")
    device.last_seen, device.last_ip, device.sip_contact = old, "10.1.1.1", "10.1.1.1:5060"
    gone = ops.add_device(db, ACTOR, "b8:27:eb:00:00:02")
    gone.status = "revoked"
    db.flush()
    for i, when in enumerate((old, fresh)):
        db.add(StatusReport(id=f"s{i}", device_id=device.id, time=when, received_at=when))
        db.add(
            CallRecordRow(
                id=f"c{i}",
                device_id=device.id,
                direction="outgoing",
                start=when.timestamp(),
                end=when.timestamp() + 1,
                disposition="answered",
            )
        )
        db.add(QualityRecord(id=f"q{i}", device_id=device.id, time=when))
        db.add(DeviceEvent(id=f"e{i}", device_id=device.id, time=when, type="config_applied"))
        db.add(LoginAttempt(username="x", success=False, time=when))
    db.flush()
    db.query(Device).filter(Device.id == gone.id).update({"updated_at": old})
    audit_before = _count(db, AuditEntry)

    counts = purge_session(
        db, RetentionDays(identity=30, network=30, cdr=30, quality=30, security=30), "test"
    )
    assert counts["status_reports"] == 1 and counts["call_records"] == 1
    assert counts["quality_records"] == 1 and counts["device_events"] == 1
    assert counts["login_attempts"] == 1 and counts["devices"] == 1
    assert counts["device_network"] == 1
    for model in (StatusReport, CallRecordRow, QualityRecord, DeviceEvent, LoginAttempt):
        assert _count(db, model) == 1
    assert db.get(Device, gone.id) is None
    kept = db.get(Device, device.id)
    assert kept.last_ip == "" and kept.sip_contact == ""
    purge_audit = db.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge"))
    assert [e.after["call_records"] for e in purge_audit] == [1]
    assert _count(db, AuditEntry) == audit_before + 1  # recent audit entries are kept


def test_zero_days_keeps_forever(db: Session) -> None:
    device = ops.add_device(db, ACTOR, "b8:27:eb:00:00:03")
    db.add(
        CallRecordRow(
            id="ancient",
            device_id=device.id,
            direction="incoming",
            start=time.time() - 10 * 365 * 86400,
            end=0,
            disposition="missed",
        )
    )
    db.flush()
    counts = purge_session(
        db, RetentionDays(identity=0, network=0, cdr=0, quality=0, security=0), "test"
    )
    assert "call_records" not in counts and _count(db, CallRecordRow) == 1
