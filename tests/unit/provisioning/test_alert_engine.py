"""Alert evaluation on a real migrated database (SQLite, and PostgreSQL from
tests/fixtures/postgres.py): the engine turns the stored reports
into alerts, one active alert per (kind, subject), refreshed while the condition holds and
resolved when it clears; notifications queued per channel; acknowledgements audited."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from offhook.provisioning import alert_engine as engine
from offhook.provisioning import operations as ops
from offhook.provisioning.alert_settings import AlertSettings, WebhookChannel
from offhook.provisioning.db import Database
from offhook.provisioning.models import (
    Alert,
    AlertNotification,
    AuditEntry,
    Device,
    DeviceEvent,
    QualityRecord,
    StatusReport,
    utcnow,
)
from offhook.provisioning.services import alerts
from offhook.provisioning.settings import ServerSettings
from tests.fixtures.postgres import postgres_cluster  # noqa: F401

ACTOR = ops.Actor("test:alerts")
WEBHOOK = WebhookChannel("https://hooks.example/alerts")
SETTINGS = ServerSettings(alerts=AlertSettings(webhook=WEBHOOK, not_seen_minutes=30))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_cluster").create_database()
    database = Database(url)
    database.migrate()
    with database.session() as session:
        yield session
    database.dispose()


def phone(db: Session, name: str = "Reception", group: str | None = None) -> Device:
    mac = "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
    device = ops.add_device(db, ACTOR, mac, name=name, group=group)
    device.status = "approved"
    device.last_seen = utcnow()
    db.flush()
    return device


def status(db: Session, device: Device, *registered: bool, minutes_ago: float = 0) -> None:
    when = utcnow() - timedelta(minutes=minutes_ago)
    lines = [
        {"account": n, "user": f"10{n:02d}", "registered": ok, "status": 200 if ok else 403}
        for n, ok in enumerate(registered)
    ]
    db.add(StatusReport(id=secrets.token_hex(8), device_id=device.id, time=when, lines=lines))
    device.last_seen = when
    db.flush()


def active(db: Session, kind: str) -> list[Alert]:
    return list(db.scalars(select(Alert).where(Alert.kind == kind, Alert.active_key.is_not(None))))


def notifications(db: Session, alert: Alert) -> list[tuple[str, str]]:
    rows = db.scalars(select(AlertNotification).where(AlertNotification.alert_id == alert.id))
    return [(n.event, n.channel) for n in rows]


def test_a_line_down_opens_once_refreshes_and_resolves_when_it_registers(db: Session) -> None:
    device = phone(db)
    status(db, device, True, False)
    outcome = engine.after_status(db, SETTINGS, device)
    (alert,) = active(db, "line_unregistered")
    assert outcome.opened == [alert.id]
    assert alert.subject_name == "Reception" and alert.state == "open"
    assert alert.message == "1 of 2 lines not registered: 1001 (SIP 403)"
    assert notifications(db, alert) == [("opened", "webhook")]
    first_seen = alert.first_seen

    status(db, device, False, False)  # worse: the same alert, now critical
    assert not engine.after_status(db, SETTINGS, device).changed
    (again,) = active(db, "line_unregistered")
    assert again.id == alert.id and again.severity == "critical"
    assert again.first_seen == first_seen and again.last_seen >= first_seen
    assert notifications(db, alert) == [("opened", "webhook")]  # no second notification

    status(db, device, True, True)
    assert engine.after_status(db, SETTINGS, device).resolved == [alert.id]
    assert active(db, "line_unregistered") == []
    db.refresh(alert)
    assert alert.state == "resolved" and alert.resolved_at is not None
    assert notifications(db, alert) == [("opened", "webhook"), ("resolved", "webhook")]

    status(db, device, False, True)  # it comes back: a new alert, the old one stays resolved
    reopened = engine.after_status(db, SETTINGS, device)
    (new,) = active(db, "line_unregistered")
    assert reopened.opened == [new.id] and new.id != alert.id
    db.refresh(alert)
    assert alert.state == "resolved"


def test_one_active_alert_per_kind_and_subject_is_enforced_by_the_database(db: Session) -> None:
    device = phone(db)
    status(db, device, False)
    engine.after_status(db, SETTINGS, device)
    (alert,) = active(db, "line_unregistered")
    twin = Alert(
        kind=alert.kind,
        severity=alert.severity,
        subject_type="device",
        subject_id=device.id,
        message="copy",
        active_key=alert.active_key,
    )
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(twin)
        db.flush()


def test_config_rejected_until_a_later_config_is_applied(db: Session) -> None:
    device = phone(db)
    base = utcnow()
    db.add(
        DeviceEvent(
            id="e1",
            device_id=device.id,
            time=base,
            type="config_rejected",
            config_revision=5,
            detail="accounts[0]: no tls transport",
        )
    )
    db.flush()
    engine.after_events(db, SETTINGS, device)
    (alert,) = active(db, "config_rejected")
    assert alert.message == "revision 5 rejected by the phone: accounts[0]: no tls transport"
    db.add(
        DeviceEvent(
            id="e2",
            device_id=device.id,
            time=base + timedelta(seconds=5),
            type="config_applied",
            config_revision=6,
        )
    )
    db.flush()
    assert engine.after_events(db, SETTINGS, device).resolved == [alert.id]


def test_sweep_finds_phones_not_seen_and_a_report_resolves_it(db: Session) -> None:
    quiet = phone(db, "Lobby")
    quiet.last_seen = utcnow() - timedelta(minutes=45)
    fresh = phone(db, "Desk")
    never = phone(db, "Boxed")
    never.last_seen = None
    db.flush()
    outcome = engine.sweep(db, SETTINGS)
    (alert,) = active(db, "not_seen")
    assert outcome.opened == [alert.id] and alert.subject_id == quiet.id
    assert alert.message == "not seen for 45 min (threshold 30 min)"
    assert fresh.id != alert.subject_id and never.id != alert.subject_id
    assert not engine.sweep(db, SETTINGS).changed  # the same alert, refreshed
    status(db, quiet, True)
    assert engine.after_status(db, SETTINGS, quiet).resolved == [alert.id]


def test_without_a_setting_the_phones_own_poll_interval_decides(db: Session) -> None:
    settings = dataclasses.replace(SETTINGS, alerts=AlertSettings())
    device = phone(db)
    device.poll_interval_s = 600  # not seen after 2 x 1.2 x 600 s = 24 min
    device.last_seen = utcnow() - timedelta(minutes=20)
    db.flush()
    assert active(db, "not_seen") == [] and not engine.sweep(db, settings).changed
    device.last_seen = utcnow() - timedelta(minutes=25)
    db.flush()
    assert len(engine.sweep(db, settings).opened) == 1


def test_alerts_of_a_revoked_or_deleted_phone_resolve_in_the_sweep(db: Session) -> None:
    device = phone(db)
    status(db, device, False)
    engine.after_status(db, SETTINGS, device)
    (alert,) = active(db, "line_unregistered")
    device.status = "revoked"
    db.flush()
    assert engine.sweep(db, SETTINGS).resolved == [alert.id]


def test_poor_quality_per_group_from_recent_calls(db: Session) -> None:
    ops.create_group(db, ACTOR, "Sales")
    a, b = phone(db, "S1", group="Sales"), phone(db, "S2", group="Sales")
    now = utcnow()
    for n, (device, mos) in enumerate([(a, 2.1), (b, 2.6), (a, 3.1), (b, 0.0)]):
        db.add(QualityRecord(id=f"q{n}", device_id=device.id, time=now, mos=mos))
    db.add(QualityRecord(id="old", device_id=a.id, time=now - timedelta(hours=3), mos=1.0))
    db.flush()
    engine.after_quality(db, SETTINGS, a)
    (alert,) = active(db, "poor_quality")
    assert alert.subject_type == "group" and alert.subject_name == "Sales"
    assert alert.message == "mean MOS 2.60 over 3 recent calls (threshold 3.5)"
    for n in range(4):
        db.add(QualityRecord(id=f"good{n}", device_id=b.id, time=now, mos=4.4))
    db.flush()
    assert engine.after_quality(db, SETTINGS, b).resolved == [alert.id]


def test_acknowledge_audits_skips_and_the_alert_still_resolves(db: Session) -> None:
    device = phone(db)
    status(db, device, False)
    engine.after_status(db, SETTINGS, device)
    (alert,) = active(db, "line_unregistered")
    with pytest.raises(ops.NotFound):
        alerts.acknowledge(db, ACTOR, [alert.id, 999])
    with pytest.raises(ops.OperationError, match="alert ids are 1-2147483647"):
        alerts.acknowledge(db, ACTOR, [alert.id, 2**40])  # beyond the column: no database error
    assert alert.state == "open"
    result = alerts.acknowledge(db, ACTOR, [alert.id])
    assert result.acknowledged == [alert.id]
    assert alert.state == "acknowledged" and alert.acknowledged_by == "test:alerts"
    again = alerts.acknowledge(db, ACTOR, [alert.id])
    assert again.skipped == [(alert.id, "already acknowledged by test:alerts")]
    audits = db.scalars(select(AuditEntry).where(AuditEntry.action == "alert.ack")).all()
    assert [(e.target_id, e.before, e.after["state"]) for e in audits] == [
        (str(alert.id), {"state": "open"}, "acknowledged")
    ]
    counts = alerts.counts(db)
    assert (counts.open, counts.acknowledged) == (0, 1)
    status(db, device, True)
    assert engine.after_status(db, SETTINGS, device).resolved == [alert.id]
    assert alerts.list_alerts(db, alerts.parse_filter("resolved"))[0].id == alert.id
    with pytest.raises(ops.OperationError):
        alerts.parse_filter("closed")


def test_no_channel_no_notification_rows(db: Session) -> None:
    settings = dataclasses.replace(SETTINGS, alerts=AlertSettings())
    device = phone(db)
    status(db, device, False)
    engine.after_status(db, settings, device)
    assert db.scalar(select(func.count()).select_from(AlertNotification)) == 0
