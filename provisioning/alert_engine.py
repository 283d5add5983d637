"""Alerts from what the server already stores: facts in, ``alert_rules`` conditions, alerts out.

Two ways in, one reconciliation:
- **On ingestion** (``provisioning.api.device``): a phone's status, events or quality batch
  re-evaluates the rules that batch can change, for that phone (or its group), inside the
  report's own transaction: a handful of indexed queries.
- **The sweep** (``provisioning.alert_tasks``, every ``OFFHOOK_ALERT_SWEEP_INTERVAL_S``): the
  rules that change with time alone (a phone not seen, a quality window moving on, paused
  rollouts) for the whole fleet, and alerts whose phone was deleted, revoked or rejected.

For each scope evaluated, a condition that holds opens the one active alert of its kind and
subject (or refreshes its last-seen time and message); an active alert in that scope whose
condition no longer holds is resolved. Opening and resolving queue one notification per
configured channel in the same transaction (``AlertNotification``); the sender delivers them
after the commit. Callers commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from offhook.contract.logs import kv
from offhook.provisioning import alert_rules as rules
from offhook.provisioning.liveness import device_not_seen_after, not_seen_after
from offhook.provisioning.models import (
    ALERT_OPEN,
    ALERT_RESOLVED,
    DEVICE_APPROVED,
    ROLLOUT_PAUSED,
    ROLLOUT_RUNNING,
    Alert,
    AlertNotification,
    Device,
    DeviceEvent,
    DeviceFirmware,
    FirmwareRelease,
    Group,
    QualityRecord,
    Rollout,
    StatusReport,
    utcnow,
)
from offhook.provisioning.settings import ServerSettings

log = logging.getLogger(__name__)

IN_CHUNK = 500  # ids per IN (...) list
CONFIG_EVENT_TYPES = ("config_applied", *rules.CONFIG_FAILURES)
FLEET_SUBJECT = rules.Subject("fleet", "", "devices without a group")


@dataclass
class Outcome:
    """Alert ids opened and resolved by one evaluation (the sender is woken when any were)."""

    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)

    def add(self, other: Outcome) -> Outcome:
        self.opened += other.opened
        self.resolved += other.resolved
        return self

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.resolved)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start : start + IN_CHUNK]


def device_subject(device: Device) -> rules.Subject:
    return rules.Subject("device", device.id, device.name or device.mac)


def _not_seen_after(settings: ServerSettings, device: Device) -> timedelta:
    if settings.alerts.not_seen_minutes:
        return timedelta(minutes=settings.alerts.not_seen_minutes)
    fleet = not_seen_after(settings.poll_interval_s)
    return device_not_seen_after(device.poll_interval_s, fleet)


# --- facts --------------------------------------------------------------------------------------


def _newest_lines(db: Session, ids: list[str]) -> dict[str, list[dict[str, object]]]:
    newest_first = (
        func.row_number()
        .over(partition_by=StatusReport.device_id, order_by=StatusReport.time.desc())
        .label("rank")
    )
    ranked = (
        select(StatusReport.device_id, StatusReport.lines, newest_first)
        .where(StatusReport.device_id.in_(ids))
        .subquery()
    )
    rows = db.execute(select(ranked.c.device_id, ranked.c.lines).where(ranked.c.rank == 1))
    return {device_id: [x for x in lines or [] if isinstance(x, dict)] for device_id, lines in rows}


def _newest_config_events(db: Session, ids: list[str]) -> dict[str, rules.ConfigEvent]:
    newest_first = (
        func.row_number()
        .over(
            partition_by=DeviceEvent.device_id,
            order_by=(DeviceEvent.time.desc(), DeviceEvent.received_at.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(
            DeviceEvent.device_id,
            DeviceEvent.type,
            DeviceEvent.config_revision,
            DeviceEvent.detail,
            newest_first,
        )
        .where(DeviceEvent.device_id.in_(ids), DeviceEvent.type.in_(CONFIG_EVENT_TYPES))
        .subquery()
    )
    rows = db.execute(
        select(ranked.c.device_id, ranked.c.type, ranked.c.config_revision, ranked.c.detail).where(
            ranked.c.rank == 1
        )
    )
    return {d: rules.ConfigEvent(t, rev, detail or "") for d, t, rev, detail in rows}


def _firmware_states(db: Session, ids: list[str]) -> dict[str, tuple[DeviceFirmware, str]]:
    rows = db.execute(
        select(DeviceFirmware, FirmwareRelease.version)
        .outerjoin(FirmwareRelease, FirmwareRelease.id == DeviceFirmware.release_id)
        .where(DeviceFirmware.device_id.in_(ids))
    )
    return {row.device_id: (row, version or "") for row, version in rows}


def device_facts(
    db: Session, settings: ServerSettings, devices: list[Device]
) -> list[rules.DeviceFacts]:
    """The facts of approved phones (others have no alerts: their active ones resolve)."""
    approved = [d for d in devices if d.status == DEVICE_APPROVED]
    ids = [d.id for d in approved]
    lines = _newest_lines(db, ids) if ids else {}
    events = _newest_config_events(db, ids) if ids else {}
    firmware = _firmware_states(db, ids) if ids else {}
    out = []
    for device in approved:
        fw, version = firmware.get(device.id, (None, ""))
        if fw is not None and fw.release_id is None:
            fw = None  # the target was taken away (rollout aborted): its failure is history
        out.append(
            rules.DeviceFacts(
                subject=device_subject(device),
                last_seen=device.last_seen,
                not_seen_after=_not_seen_after(settings, device),
                lines=lines.get(device.id),
                last_config_event=events.get(device.id),
                firmware_state=fw.state if fw is not None else "",
                firmware_version=version,
                firmware_reason=fw.reason if fw is not None else "",
                firmware_detail=fw.detail if fw is not None else "",
            )
        )
    return out


def group_quality(
    db: Session, settings: ServerSettings, now: datetime, group_ids: Collection[int | None] | None
) -> list[rules.GroupQuality]:
    """Mean MOS per group (a phone's own group) of calls in the window; calls without a MOS
    (0: the phone measured none) do not count. ``group_ids`` None: every group."""
    since = now - timedelta(minutes=settings.alerts.quality_window_minutes)
    query = (
        select(Device.group_id, func.count(QualityRecord.id), func.avg(QualityRecord.mos))
        .join(Device, Device.id == QualityRecord.device_id)
        .where(QualityRecord.time >= since, QualityRecord.mos > 0)
        .group_by(Device.group_id)
    )
    found = {gid: (int(n), float(mean or 0.0)) for gid, n, mean in db.execute(query)}
    wanted = set(found) if group_ids is None else set(group_ids) & set(found)
    named = [g for g in wanted if g is not None]
    names: dict[int, str] = {}
    if named:
        names = {
            gid: name
            for gid, name in db.execute(select(Group.id, Group.name).where(Group.id.in_(named)))
        }
    out = []
    for gid in wanted:
        calls, mean = found[gid]
        subject = (
            FLEET_SUBJECT
            if gid is None
            else rules.Subject("group", str(gid), names.get(gid, f"group {gid}"))
        )
        out.append(rules.GroupQuality(subject, calls, mean))
    return out


def _quality_subjects(group_ids: Collection[int | None]) -> tuple[list[str], bool]:
    return [str(g) for g in group_ids if g is not None], None in group_ids


# --- reconciliation -----------------------------------------------------------------------------


def _queue(db: Session, settings: ServerSettings, alert: Alert, event: str) -> None:
    for channel in settings.alerts.channels:
        db.add(AlertNotification(alert_id=alert.id, event=event, channel=channel))


def _open(
    db: Session, settings: ServerSettings, condition: rules.Condition, now: datetime
) -> Alert | None:
    alert = Alert(
        kind=condition.kind,
        severity=condition.severity,
        subject_type=condition.subject.type,
        subject_id=condition.subject.id,
        subject_name=condition.subject.name[:255],
        message=condition.message,
        state=ALERT_OPEN,
        active_key=condition.key,
        first_seen=now,
        last_seen=now,
    )
    try:
        with db.begin_nested():
            db.add(alert)
            db.flush()
    except IntegrityError:  # another process opened it a moment ago: refresh that one
        return None
    _queue(db, settings, alert, "opened")
    log.warning(
        "alert opened",
        extra=kv(
            alert=alert.id,
            kind=alert.kind,
            severity=alert.severity,
            subject=condition.key,
            message=alert.message,
        ),
    )
    return alert


def _refresh(alert: Alert, condition: rules.Condition, now: datetime) -> None:
    alert.last_seen = now
    if alert.message != condition.message:
        alert.message = condition.message
    if alert.severity != condition.severity:
        alert.severity = condition.severity
    if alert.subject_name != condition.subject.name[:255]:
        alert.subject_name = condition.subject.name[:255]


def resolve(db: Session, settings: ServerSettings, alert: Alert, now: datetime, why: str) -> None:
    alert.state = ALERT_RESOLVED
    alert.active_key = None
    alert.resolved_at = now
    _queue(db, settings, alert, "resolved")
    log.info(
        "alert resolved",
        extra=kv(alert=alert.id, kind=alert.kind, subject=alert.subject_id, why=why),
    )


def reconcile(
    db: Session,
    settings: ServerSettings,
    conditions: list[rules.Condition],
    kinds: Collection[str],
    subject_type: str,
    subject_ids: Collection[str] | None,
    now: datetime,
) -> Outcome:
    """Make the active alerts of ``kinds`` about these subjects (``None``: every subject of
    that type) match ``conditions``."""
    query = select(Alert).where(
        Alert.active_key.is_not(None),
        Alert.kind.in_(list(kinds)),
        Alert.subject_type == subject_type,
    )
    if subject_ids is not None:
        query = query.where(Alert.subject_id.in_(list(subject_ids)))
    active = {a.active_key: a for a in db.scalars(query)}
    outcome = Outcome()
    for condition in conditions:
        alert = active.pop(condition.key, None)
        if alert is None:
            opened = _open(db, settings, condition, now)
            if opened is not None:
                outcome.opened.append(opened.id)
                continue
            alert = db.scalar(select(Alert).where(Alert.active_key == condition.key))
            if alert is None:
                continue
        _refresh(alert, condition, now)
    for alert in active.values():
        resolve(db, settings, alert, now, "condition cleared")
        outcome.resolved.append(alert.id)
    db.flush()
    return outcome


# --- entry points -------------------------------------------------------------------------------


def evaluate_devices(
    db: Session,
    settings: ServerSettings,
    device_ids: list[str],
    kinds: Collection[str] = rules.DEVICE_KINDS,
    now: datetime | None = None,
) -> Outcome:
    """The device rules of ``kinds`` for these phones (a report's phone, or a page of them)."""
    now = now or utcnow()
    outcome = Outcome()
    for chunk in _chunks(list(dict.fromkeys(device_ids))):
        devices = list(db.scalars(select(Device).where(Device.id.in_(chunk))))
        conditions = [
            c
            for facts in device_facts(db, settings, devices)
            for c in rules.device_conditions(facts, now, list(kinds))
        ]
        outcome.add(reconcile(db, settings, conditions, kinds, "device", chunk, now))
    return outcome


def evaluate_quality(
    db: Session,
    settings: ServerSettings,
    group_ids: Collection[int | None] | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Poor call quality for these groups (``None`` among them: phones without a group;
    ``group_ids`` None: every group)."""
    now = now or utcnow()
    alerts = settings.alerts
    conditions = [
        c
        for q in group_quality(db, settings, now, group_ids)
        if (c := rules.quality_rule(q, alerts.mos_threshold, alerts.quality_min_calls))
    ]
    kinds = (rules.POOR_QUALITY,)
    if group_ids is None:
        group_conditions = [c for c in conditions if c.subject.type == "group"]
        fleet_conditions = [c for c in conditions if c.subject.type == "fleet"]
        outcome = reconcile(db, settings, group_conditions, kinds, "group", None, now)
        return outcome.add(reconcile(db, settings, fleet_conditions, kinds, "fleet", None, now))
    ids, fleet = _quality_subjects(group_ids)
    outcome = reconcile(
        db, settings, [c for c in conditions if c.subject.type == "group"], kinds, "group", ids, now
    )
    if fleet:
        fleet_conditions = [c for c in conditions if c.subject.type == "fleet"]
        outcome.add(reconcile(db, settings, fleet_conditions, kinds, "fleet", [""], now))
    return outcome


def evaluate_rollouts(
    db: Session, settings: ServerSettings, now: datetime | None = None
) -> Outcome:
    """Rollouts the failure threshold paused (a few rows: every active rollout)."""
    now = now or utcnow()
    conditions = []
    active = db.scalars(
        select(Rollout).where(Rollout.status.in_((ROLLOUT_RUNNING, ROLLOUT_PAUSED)))
    )
    for rollout in active:
        release = rollout.release
        scope = rollout.group.name if rollout.group is not None else "the fleet"
        name = f"rollout {rollout.id} of {release.compatible} {release.version} to {scope}"
        facts = rules.RolloutFacts(
            rules.Subject("rollout", str(rollout.id), name), rollout.status, rollout.pause_reason
        )
        if (condition := rules.rollout_rule(facts)) is not None:
            conditions.append(condition)
    return reconcile(db, settings, conditions, (rules.ROLLOUT_PAUSED,), "rollout", None, now)


def _resolve_orphans(db: Session, settings: ServerSettings, now: datetime) -> Outcome:
    """Active alerts about phones that are gone or no longer approved."""
    outcome = Outcome()
    approved = select(Device.id).where(Device.status == DEVICE_APPROVED)
    orphans = db.scalars(
        select(Alert).where(
            Alert.active_key.is_not(None),
            Alert.subject_type == "device",
            Alert.subject_id.not_in(approved),
        )
    )
    for alert in orphans:
        resolve(db, settings, alert, now, "device deleted or no longer approved")
        outcome.resolved.append(alert.id)
    return outcome


def sweep(db: Session, settings: ServerSettings, now: datetime | None = None) -> Outcome:
    """The time-based rules for the whole fleet: phones not seen (the devices table alone, no
    report is read), quality windows, paused rollouts; and alerts of phones that left."""
    now = now or utcnow()
    outcome = _resolve_orphans(db, settings, now)
    devices = list(
        db.scalars(
            select(Device).where(Device.status == DEVICE_APPROVED, Device.last_seen.is_not(None))
        )
    )
    conditions = []
    for device in devices:
        facts = rules.DeviceFacts(
            subject=device_subject(device),
            last_seen=device.last_seen,
            not_seen_after=_not_seen_after(settings, device),
            lines=None,
            last_config_event=None,
        )
        if (condition := rules.not_seen_rule(facts, now)) is not None:
            conditions.append(condition)
    outcome.add(reconcile(db, settings, conditions, (rules.NOT_SEEN,), "device", None, now))
    outcome.add(evaluate_quality(db, settings, None, now))
    return outcome.add(evaluate_rollouts(db, settings, now))


# --- on ingestion -------------------------------------------------------------------------------

# What each kind of report can change.
STATUS_KINDS = (rules.LINE_UNREGISTERED, rules.NOT_SEEN, rules.FIRMWARE_FAILED)
EVENT_KINDS = (rules.CONFIG_REJECTED, rules.FIRMWARE_FAILED)


def _guarded(db: Session, what: str, evaluate: Callable[[], Outcome]) -> Outcome:
    """A phone's report is stored whatever the alert rules do: an evaluation that fails is
    logged and rolled back to its savepoint (the next report or sweep tries again). Database
    outages still fail the request (503), so the phone re-sends."""
    try:
        with db.begin_nested():
            return evaluate()
    except OperationalError:
        raise
    except Exception:
        log.exception("alert evaluation failed", extra=kv(what=what))
        return Outcome()


def after_status(db: Session, settings: ServerSettings, device: Device) -> Outcome:
    def evaluate() -> Outcome:
        outcome = evaluate_devices(db, settings, [device.id], STATUS_KINDS)
        return outcome.add(evaluate_rollouts(db, settings))

    return _guarded(db, "status", evaluate)


def after_events(db: Session, settings: ServerSettings, device: Device) -> Outcome:
    def evaluate() -> Outcome:
        outcome = evaluate_devices(db, settings, [device.id], EVENT_KINDS)
        return outcome.add(evaluate_rollouts(db, settings))

    return _guarded(db, "events", evaluate)


def after_quality(db: Session, settings: ServerSettings, device: Device) -> Outcome:
    return _guarded(db, "quality", lambda: evaluate_quality(db, settings, {device.group_id}))
