"""Alerts for every front end: list with filters, counts, acknowledge (one or many).

Reading is ``fleet.read``, acknowledging ``alert.ack`` (``provisioning.permissions``); the REST
API, the web UI and ``offhook fleet alerts`` call these functions and check the same action.
An acknowledgement says someone is on it: the alert stays active (it still resolves by
itself when its condition clears) and records who and when, with an ``alert.ack`` audit row
per alert. The rules that open and resolve alerts are in ``provisioning.alert_engine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offhook.provisioning import audit
from offhook.provisioning.alert_notify import FAILED, alert_document
from offhook.provisioning.alert_rules import KINDS
from offhook.provisioning.models import (
    ALERT_ACKNOWLEDGED,
    ALERT_OPEN,
    ALERT_RESOLVED,
    ALERT_STATES,
    Alert,
    AlertNotification,
    utcnow,
)
from offhook.provisioning.operations import Actor, NotFound, OperationError

# The state filter: one state, "active" (open or acknowledged: still wrong) or "all".
STATE_FILTERS = ("active", *ALERT_STATES, "all")
ACTIVE = (ALERT_OPEN, ALERT_ACKNOWLEDGED)
SEVERITY_ORDER = {"critical": 0, "warning": 1}
MAX_ACK = 1000  # alerts in one acknowledgement
MAX_ALERT_ID = 2**31 - 1  # the INTEGER column's range: a larger id names no alert


@dataclass(frozen=True)
class AlertFilter:
    state: str = "active"
    kind: str = ""
    subject_id: str = ""


def parse_filter(state: str = "active", kind: str = "", subject_id: str = "") -> AlertFilter:
    state = state or "active"
    if state not in STATE_FILTERS:
        raise OperationError(f"state {state!r}: use one of {', '.join(STATE_FILTERS)}")
    if kind and kind not in KINDS:
        raise OperationError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    return AlertFilter(state, kind, subject_id)


def _states(state: str) -> Sequence[str]:
    if state == "active":
        return ACTIVE
    if state == "all":
        return ALERT_STATES
    return (state,)


def list_alerts(db: Session, wanted: AlertFilter, limit: int = 100, offset: int = 0) -> list[Alert]:
    """Newest first (by when last seen), ids breaking ties, so pages neither skip nor repeat."""
    query = select(Alert).where(Alert.state.in_(_states(wanted.state)))
    if wanted.kind:
        query = query.where(Alert.kind == wanted.kind)
    if wanted.subject_id:
        query = query.where(Alert.subject_id == wanted.subject_id)
    query = query.order_by(Alert.last_seen.desc(), Alert.id.desc()).limit(limit).offset(offset)
    return list(db.scalars(query))


def alerts_by_id(db: Session, alert_ids: Sequence[int]) -> dict[int, Alert]:
    return {a.id: a for a in db.scalars(select(Alert).where(Alert.id.in_(list(alert_ids))))}


def get_alert(db: Session, alert_id: int) -> Alert:
    alert = db.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id}")
    return alert


@dataclass
class AlertCounts:
    open: int = 0
    acknowledged: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)  # active alerts
    failed_notifications: int = 0


def counts(db: Session) -> AlertCounts:
    result = AlertCounts()
    rows = db.execute(
        select(Alert.state, Alert.severity, func.count())
        .where(Alert.state.in_(ACTIVE))
        .group_by(Alert.state, Alert.severity)
    )
    for state, severity, n in rows:
        if state == ALERT_OPEN:
            result.open += n
        else:
            result.acknowledged += n
        result.by_severity[severity] = result.by_severity.get(severity, 0) + n
    result.failed_notifications = (
        db.scalar(
            select(func.count())
            .select_from(AlertNotification)
            .where(AlertNotification.status == FAILED)
        )
        or 0
    )
    return result


def notifications_of(db: Session, alert_ids: list[int]) -> dict[int, list[AlertNotification]]:
    out: dict[int, list[AlertNotification]] = {i: [] for i in alert_ids}
    if not alert_ids:
        return out
    for n in db.scalars(
        select(AlertNotification)
        .where(AlertNotification.alert_id.in_(alert_ids))
        .order_by(AlertNotification.id)
    ):
        out[n.alert_id].append(n)
    return out


def notification_snapshot(n: AlertNotification) -> dict[str, Any]:
    return {
        "event": n.event,
        "channel": n.channel,
        "status": n.status,
        "attempts": n.attempts,
        "error": n.error,
        "sent_at": n.sent_at.isoformat() if n.sent_at else None,
    }


def alert_snapshot(
    alert: Alert, public_url: str = "", notifications: list[AlertNotification] | None = None
) -> dict[str, Any]:
    document = alert_document(alert, public_url)
    document["notifications"] = [notification_snapshot(n) for n in notifications or []]
    return document


@dataclass
class AckResult:
    acknowledged: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (id, why)

    @property
    def summary(self) -> str:
        done = len(self.acknowledged)
        text = f"Acknowledged {done} alert{'' if done == 1 else 's'}"
        if self.skipped:
            text += f"; {len(self.skipped)} left as they were"
        return text


def acknowledge(db: Session, actor: Actor, alert_ids: Sequence[int]) -> AckResult:
    """Acknowledge open alerts; acknowledged and resolved ones are reported, not changed.
    An unknown id refuses the whole request (404) so nothing is half done by a typo."""
    ids = list(dict.fromkeys(alert_ids))
    if not ids:
        raise OperationError("name at least one alert")
    if len(ids) > MAX_ACK:
        raise OperationError(f"at most {MAX_ACK} alerts at once")
    if any(not 1 <= i <= MAX_ALERT_ID for i in ids):
        raise OperationError(f"alert ids are 1-{MAX_ALERT_ID}")
    found = {a.id: a for a in db.scalars(select(Alert).where(Alert.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("alert " + ", ".join(str(i) for i in missing))
    result = AckResult()
    now = utcnow()
    for alert_id in ids:
        alert = found[alert_id]
        if alert.state == ALERT_RESOLVED:
            result.skipped.append((alert_id, "already resolved"))
            continue
        if alert.state == ALERT_ACKNOWLEDGED:
            result.skipped.append((alert_id, f"already acknowledged by {alert.acknowledged_by}"))
            continue
        before = {"state": alert.state}
        alert.state = ALERT_ACKNOWLEDGED
        alert.acknowledged_by = actor.name
        alert.acknowledged_at = now
        audit.record(
            db,
            actor.name,
            "alert.ack",
            "alert",
            alert.id,
            before,
            {"state": alert.state, "kind": alert.kind, "subject": alert.subject_name},
            actor.ip,
        )
        result.acknowledged.append(alert_id)
    db.flush()
    return result
