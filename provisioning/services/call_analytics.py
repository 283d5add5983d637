"""Call analytics from the CDRs and quality reports phones send: one service for the web UI's
Analytics, Calls-joined and Quality pages, ``GET /api/v1/admin/analytics/...`` and ``offhook
fleet calls ...``.

- **Joined calls.** When two phones of the fleet call each other, each reports its own leg with
  the same SIP Call-ID (firmware since the call analytics; older records carry none and stay
  calls of one leg). Legs sharing a Call-ID are one call: the outgoing leg is the caller, the
  incoming leg the callee, each leg's MOS is the mean of its quality samples.
- **Days and hours in the admin's zone.** A range ``from``..``to`` (dates, both included) is
  midnight to midnight in the zone, so a day across a DST change has 23 or 25 hours; the
  busy-hour heat map buckets each call by its start's local weekday and hour.
- **Answered and missed.** A call is answered when any leg was; it is missed when it rang a
  fleet phone (incoming or internal) and nobody answered. The answer rate is over every call,
  the miss rate over the calls that rang a fleet phone; the average duration is over answered
  calls, from answer to end.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from offhook.provisioning.models import CallRecordRow, Device, Group, QualityRecord
from offhook.provisioning.operations import OperationError, get_device, get_group
from offhook.provisioning.render import subtree_group_ids

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
POOR_MOS = (
    3.6  # below this a call sounds poor to most listeners (ITU-T G.107's "some dissatisfied")
)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CSV_COLUMNS = (
    "call",
    "start_local",
    "start_utc",
    "time_zone",
    "duration_s",
    "caller",
    "caller_name",
    "caller_device",
    "callee",
    "callee_name",
    "callee_device",
    "direction",
    "disposition",
)


@dataclass(frozen=True)
class Scope:
    """Which calls: a date range in a zone, optionally one group's subtree, one device, one
    extension (a leg's own line)."""

    since: date
    until: date  # included
    zone: ZoneInfo
    group_id: int | None = None
    group_name: str = ""
    device_id: str = ""
    extension: str = ""

    @property
    def start_ts(self) -> float:
        return datetime.combine(self.since, time(0), self.zone).timestamp()

    @property
    def end_ts(self) -> float:
        return datetime.combine(self.until + timedelta(days=1), time(0), self.zone).timestamp()

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range((self.until - self.since).days + 1)]

    def as_filters(self) -> dict[str, object]:
        return {
            "from": self.since.isoformat(),
            "to": self.until.isoformat(),
            "tz": self.zone.key,
            "group": self.group_name,
            "device": self.device_id,
            "extension": self.extension,
        }


def _date(text: str, name: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise OperationError(f"{name}: {text!r} is not a date like 2026-01-31") from None


def parse_scope(
    db: Session,
    zone: ZoneInfo,
    *,
    since: str = "",
    until: str = "",
    group: str = "",
    device: str = "",
    extension: str = "",
    today: date | None = None,
) -> Scope:
    """Front-end text into a Scope; refusals say what was wrong (422), an unknown group or
    device is 404. Without dates: the last DEFAULT_RANGE_DAYS days up to today in the zone."""
    end = _date(until, "to") or today or datetime.now(zone).date()
    start = _date(since, "from") or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise OperationError(f"from {start} is after to {end}")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise OperationError(
            f"{(end - start).days + 1} days from {start} to {end}; at most {MAX_RANGE_DAYS}"
        )
    group_row = get_group(db, group.strip()) if group.strip() else None
    device_id = get_device(db, device.strip()).id if device.strip() else ""
    ext = extension.strip()
    if ext and not all(c.isalnum() or c in "+*#._-" for c in ext):
        raise OperationError(f"extension {ext!r}: letters, digits and + * # . _ - only")
    return Scope(
        start,
        end,
        zone,
        group_row.id if group_row else None,
        group_row.name if group_row else "",
        device_id,
        ext,
    )


# --- joined calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    uri: str
    name: str = ""
    device_id: str = ""  # a fleet phone's leg
    device_name: str = ""

    @property
    def number(self) -> str:
        user = self.uri.split(":", 1)[-1]
        return user.split("@", 1)[0] if user else ""


@dataclass(frozen=True)
class Call:
    key: str  # the SIP Call-ID, or the one leg's record id
    start: float
    answer: float | None
    end: float
    direction: str  # "internal" (fleet to fleet) | "outgoing" | "incoming"
    disposition: str
    caller: Party
    callee: Party
    caller_mos: float | None = None
    callee_mos: float | None = None
    legs: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        return self.disposition == "answered"

    @property
    def missed(self) -> bool:
        return self.direction != "outgoing" and not self.answered

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end - self.answer) if self.answer is not None else 0.0


def _scoped_devices(db: Session, scope: Scope) -> list[str] | None:
    """The device ids the scope allows, or None for the whole fleet."""
    if scope.device_id:
        return [scope.device_id]
    if scope.group_id is None:
        return None
    groups = subtree_group_ids(db, scope.group_id)
    return list(db.scalars(select(Device.id).where(Device.group_id.in_(groups))))


def _leg_query(db: Session, scope: Scope) -> Select[CallRecordRow]:
    query = select(CallRecordRow).where(
        CallRecordRow.start >= scope.start_ts, CallRecordRow.start < scope.end_ts
    )
    devices = _scoped_devices(db, scope)
    if devices is not None:
        query = query.where(CallRecordRow.device_id.in_(devices))
    if scope.extension:
        query = query.where(CallRecordRow.local_uri.like(f"sip:{scope.extension}@%"))
    return query


def _legs(db: Session, scope: Scope) -> list[CallRecordRow]:
    """The scope's legs and, for joined calls, the other phone's leg (wherever it is)."""
    legs = {r.id: r for r in db.scalars(_leg_query(db, scope))}
    call_ids = sorted({r.sip_call_id for r in legs.values() if r.sip_call_id})
    for chunk in (call_ids[i : i + 500] for i in range(0, len(call_ids), 500)):
        partners = select(CallRecordRow).where(CallRecordRow.sip_call_id.in_(chunk))
        legs.update((r.id, r) for r in db.scalars(partners))
    return list(legs.values())


def _mos_by_leg(db: Session, leg_ids: Sequence[str]) -> dict[str, float]:
    samples: dict[str, list[float]] = defaultdict(list)
    for chunk in (leg_ids[i : i + 500] for i in range(0, len(leg_ids), 500)):
        rows = db.execute(
            select(QualityRecord.call_record_id, QualityRecord.mos).where(
                QualityRecord.call_record_id.in_(chunk), QualityRecord.mos > 0
            )
        )
        for leg_id, mos in rows:
            samples[leg_id].append(mos)
    return {k: sum(v) / len(v) for k, v in samples.items()}


def _device_names(db: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(ids))
    rows = db.execute(select(Device.id, Device.name, Device.mac).where(Device.id.in_(wanted)))
    return {i: name or mac for i, name, mac in rows}


def join_legs(
    legs: Iterable[CallRecordRow],
    mos: dict[str, float] | None = None,
    names: dict[str, str] | None = None,
) -> list[Call]:
    """Legs with the same Call-ID become one Call (oldest first); others stay calls of one leg."""
    mos, names = mos or {}, names or {}
    groups: dict[str, list[CallRecordRow]] = defaultdict(list)
    for leg in legs:
        groups[leg.sip_call_id or f"record:{leg.id}"].append(leg)
    calls = [_call(key, sorted(g, key=lambda r: r.start), mos, names) for key, g in groups.items()]
    return sorted(calls, key=lambda c: (c.start, c.key))


def _own(leg: CallRecordRow, names: dict[str, str]) -> Party:
    return Party(leg.local_uri, "", leg.device_id, names.get(leg.device_id, ""))


def _far(leg: CallRecordRow) -> Party:
    return Party(leg.remote_uri, leg.remote_name)


def _call(
    key: str, legs: list[CallRecordRow], mos: dict[str, float], names: dict[str, str]
) -> Call:
    out = next((leg for leg in legs if leg.direction == "outgoing"), None)
    ins = [leg for leg in legs if leg.direction == "incoming"]
    # The callee's leg: the one that answered (a call forked to several phones), else the first.
    inc = next((leg for leg in ins if leg.disposition == "answered"), ins[0] if ins else None)
    if out is not None and inc is not None:
        direction = "internal"
        caller, callee = _own(out, names), _own(inc, names)
        caller = Party(caller.uri, inc.remote_name, caller.device_id, caller.device_name)
        callee = Party(callee.uri, out.remote_name, callee.device_id, callee.device_name)
        disposition = inc.disposition  # unanswered: the callee's view (missed, rejected, busy)
    elif out is not None:
        direction, caller, callee = "outgoing", _own(out, names), _far(out)
        disposition = out.disposition
    else:
        assert inc is not None  # every leg is outgoing or incoming (the device API's Literal)
        direction, caller, callee = "incoming", _far(inc), _own(inc, names)
        disposition = inc.disposition
    answers = [leg.answer for leg in legs if leg.answer is not None]
    return Call(
        key=key.removeprefix("record:"),
        start=min(leg.start for leg in legs),
        answer=min(answers) if answers else None,
        end=max(leg.end for leg in legs),
        direction=direction,
        disposition="answered" if answers else disposition,
        caller=caller,
        callee=callee,
        caller_mos=mos.get(out.id) if out is not None else None,
        callee_mos=mos.get(inc.id) if inc is not None else None,
        legs=tuple(leg.id for leg in legs),
    )


def calls_in(db: Session, scope: Scope) -> list[Call]:
    """The scope's calls, both legs joined, oldest first; a call counts in the range by its
    first leg's start."""
    legs = _legs(db, scope)
    mos = _mos_by_leg(db, [leg.id for leg in legs])
    calls = join_legs(legs, mos, _device_names(db, (leg.device_id for leg in legs)))
    return [c for c in calls if scope.start_ts <= c.start < scope.end_ts]


# --- aggregates ---------------------------------------------------------------------------------


@dataclass
class DayPoint:
    day: date
    calls: int = 0
    answered: int = 0
    missed: int = 0
    mos_sum: float = 0.0
    mos_samples: int = 0

    @property
    def mos(self) -> float | None:
        return self.mos_sum / self.mos_samples if self.mos_samples else None


@dataclass
class Breakdown:
    """One device's (or group's) share of the scope's calls."""

    key: str
    label: str
    calls: int = 0
    answered: int = 0
    missed: int = 0
    talk_s: float = 0.0

    @property
    def average_duration_s(self) -> float | None:
        return self.talk_s / self.answered if self.answered else None


@dataclass
class CallStats:
    scope: Scope
    calls: int = 0
    answered: int = 0
    missed: int = 0
    rang_fleet: int = 0  # calls that rang a fleet phone (the miss rate's base)
    talk_s: float = 0.0
    heat: list[list[int]] = field(default_factory=lambda: [[0] * 24 for _ in WEEKDAYS])
    days: list[DayPoint] = field(default_factory=list)
    devices: list[Breakdown] = field(default_factory=list)

    @property
    def average_duration_s(self) -> float | None:
        return self.talk_s / self.answered if self.answered else None

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.calls if self.calls else None

    @property
    def miss_rate(self) -> float | None:
        return self.missed / self.rang_fleet if self.rang_fleet else None

    @property
    def busiest(self) -> tuple[str, int, int] | None:
        """(weekday, hour, calls) of the busiest heat-map cell, None without calls."""
        cells = ((n, d, h) for d, row in enumerate(self.heat) for h, n in enumerate(row))
        # the earliest of equally busy cells (Monday morning before Tuesday afternoon)
        best = max(cells, key=lambda c: (c[0], -c[1], -c[2]), default=None)
        return (WEEKDAYS[best[1]], best[2], best[0]) if best and best[0] else None


def aggregate(calls: Iterable[Call], scope: Scope) -> CallStats:
    """Volume, busy hours, rates, duration and per-day trend of ``calls`` in the scope's zone."""
    stats = CallStats(scope, days=[DayPoint(d) for d in scope.days])
    by_day = {p.day: p for p in stats.days}
    by_device: dict[str, Breakdown] = {}
    for call in calls:
        local = datetime.fromtimestamp(call.start, scope.zone)
        point = by_day.get(local.date())
        if point is None:  # outside the range (the caller filters; kept safe here)
            continue
        stats.calls += 1
        point.calls += 1
        stats.heat[local.weekday()][local.hour] += 1
        if call.direction != "outgoing":
            stats.rang_fleet += 1
        if call.answered:
            stats.answered += 1
            point.answered += 1
            stats.talk_s += call.duration_s
        if call.missed:
            stats.missed += 1
            point.missed += 1
        for mos in (call.caller_mos, call.callee_mos):
            if mos is not None:
                point.mos_sum += mos
                point.mos_samples += 1
        for party in {p.device_id: p for p in (call.caller, call.callee) if p.device_id}.values():
            row = by_device.setdefault(
                party.device_id, Breakdown(party.device_id, party.device_name or party.device_id)
            )
            row.calls += 1
            row.answered += call.answered
            row.missed += call.missed
            row.talk_s += call.duration_s
    stats.devices = sorted(by_device.values(), key=lambda b: (-b.calls, b.label))
    return stats


def call_stats(db: Session, scope: Scope) -> CallStats:
    return aggregate(calls_in(db, scope), scope)


# --- quality trends -----------------------------------------------------------------------------


@dataclass
class QualityRow:
    """Quality samples of one device or group: a figure rests on ``samples`` calls."""

    key: str
    label: str
    samples: int = 0
    mos_sum: float = 0.0
    worst: float | None = None
    poor: int = 0
    loss_sum: float = 0.0
    jitter_sum: float = 0.0

    @property
    def mos(self) -> float | None:
        return self.mos_sum / self.samples if self.samples else None

    @property
    def loss_pct(self) -> float | None:
        return self.loss_sum / self.samples if self.samples else None

    @property
    def jitter_ms(self) -> float | None:
        return self.jitter_sum / self.samples if self.samples else None

    def add(self, sample: QualityRecord, threshold: float) -> None:
        self.samples += 1
        self.mos_sum += sample.mos
        self.loss_sum += sample.loss_pct
        self.jitter_sum += sample.jitter_ms
        self.worst = sample.mos if self.worst is None else min(self.worst, sample.mos)
        self.poor += sample.mos < threshold


@dataclass
class QualityTrend:
    scope: Scope
    threshold: float
    poor_only: bool
    days: list[DayPoint] = field(default_factory=list)
    devices: list[QualityRow] = field(default_factory=list)
    groups: list[QualityRow] = field(default_factory=list)
    samples: int = 0


def parse_threshold(text: str) -> float:
    if not str(text).strip():
        return POOR_MOS
    try:
        value = float(text)
    except ValueError:
        raise OperationError(f"threshold: {text!r} is not a MOS like 3.6") from None
    if not 1.0 <= value <= 5.0:
        raise OperationError(f"threshold: {value} is outside MOS 1.0-5.0")
    return value


def quality_query(
    db: Session, scope: Scope, threshold: float = POOR_MOS, poor_only: bool = False
) -> Select[QualityRecord]:
    """The scope's quality samples with a MOS (0 means the phone measured none), unordered."""
    start = datetime.fromtimestamp(scope.start_ts, UTC)
    end = datetime.fromtimestamp(scope.end_ts, UTC)
    query = select(QualityRecord).where(
        QualityRecord.time >= start, QualityRecord.time < end, QualityRecord.mos > 0
    )
    devices = _scoped_devices(db, scope)
    if devices is not None:
        query = query.where(QualityRecord.device_id.in_(devices))
    if scope.extension:
        legs = select(CallRecordRow.id).where(
            CallRecordRow.local_uri.like(f"sip:{scope.extension}@%")
        )
        query = query.where(QualityRecord.call_record_id.in_(legs))
    if poor_only:
        query = query.where(QualityRecord.mos < threshold)
    return query


def quality_samples(
    db: Session, scope: Scope, threshold: float = POOR_MOS, poor_only: bool = False
) -> list[QualityRecord]:
    query = quality_query(db, scope, threshold, poor_only)
    return list(db.scalars(query.order_by(QualityRecord.time, QualityRecord.id)))


def quality_trend(
    db: Session, scope: Scope, threshold: float = POOR_MOS, poor_only: bool = False
) -> QualityTrend:
    samples = quality_samples(db, scope, threshold, poor_only)
    trend = QualityTrend(scope, threshold, poor_only, days=[DayPoint(d) for d in scope.days])
    by_day = {p.day: p for p in trend.days}
    device_rows = db.execute(
        select(Device.id, Device.name, Device.mac, Group.id, Group.name)
        .outerjoin(Group, Group.id == Device.group_id)
        .where(Device.id.in_(sorted({s.device_id for s in samples})))
    )
    info = {
        d: (name or mac, str(g or ""), gname or "(no group)")
        for d, name, mac, g, gname in device_rows
    }
    per_device: dict[str, QualityRow] = {}
    per_group: dict[str, QualityRow] = {}
    for sample in samples:
        point = by_day.get(sample.time.astimezone(scope.zone).date())
        if point is None:
            continue
        trend.samples += 1
        point.calls += 1
        point.mos_sum += sample.mos
        point.mos_samples += 1
        label, group_key, group_label = info.get(sample.device_id, (sample.device_id, "", "?"))
        per_device.setdefault(sample.device_id, QualityRow(sample.device_id, label)).add(
            sample, threshold
        )
        per_group.setdefault(group_key, QualityRow(group_key, group_label)).add(sample, threshold)
    trend.devices = sorted(per_device.values(), key=lambda r: (r.mos or 0.0, r.label))
    trend.groups = sorted(per_group.values(), key=lambda r: (r.mos or 0.0, r.label))
    return trend


# --- billing export -----------------------------------------------------------------------------


def _iso(ts: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="seconds")


def _cell(text: str) -> str:
    """A spreadsheet runs a cell starting with = + - @ as a formula: keep it text."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(calls: Iterable[Call], zone: ZoneInfo) -> Iterator[str]:
    """One CSV row per call (both legs joined), header first, one string per row: streamed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Sequence[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(CSV_COLUMNS)
    for c in calls:
        yield line(
            [
                c.key,
                _iso(c.start, zone),
                _iso(c.start, UTC).replace("+00:00", "Z"),
                zone.key,
                round(c.duration_s),
                _cell(c.caller.number or c.caller.uri),
                _cell(c.caller.name),
                _cell(c.caller.device_name),
                _cell(c.callee.number or c.callee.uri),
                _cell(c.callee.name),
                _cell(c.callee.device_name),
                c.direction,
                c.disposition,
            ]
        )


# --- replies (REST and the CLI's --json print the same) ----------------------------------------


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def scope_dict(scope: Scope) -> dict[str, object]:
    return {
        "from": scope.since.isoformat(),
        "to": scope.until.isoformat(),
        "time_zone": scope.zone.key,
        "group": scope.group_name,
        "device": scope.device_id,
        "extension": scope.extension,
    }


def stats_dict(stats: CallStats) -> dict[str, object]:
    return {
        "scope": scope_dict(stats.scope),
        "calls": stats.calls,
        "answered": stats.answered,
        "missed": stats.missed,
        "rang_fleet": stats.rang_fleet,
        "answer_rate": _round(stats.answer_rate),
        "miss_rate": _round(stats.miss_rate),
        "average_duration_s": _round(stats.average_duration_s, 1),
        "busy_hours": stats.heat,
        "days": [
            {
                "day": p.day.isoformat(),
                "calls": p.calls,
                "answered": p.answered,
                "missed": p.missed,
                "mos": _round(p.mos, 2),
                "mos_samples": p.mos_samples,
            }
            for p in stats.days
        ],
        "devices": [
            {
                "device_id": b.key,
                "device": b.label,
                "calls": b.calls,
                "answered": b.answered,
                "missed": b.missed,
                "average_duration_s": _round(b.average_duration_s, 1),
            }
            for b in stats.devices
        ],
    }


def _utc_iso(ts: float | None) -> str | None:
    return None if ts is None else _iso(ts, ZoneInfo("UTC")).replace("+00:00", "Z")


def _party(p: Party) -> dict[str, str]:
    return {
        "uri": p.uri,
        "number": p.number,
        "name": p.name,
        "device_id": p.device_id,
        "device": p.device_name,
    }


def call_dict(call: Call, zone: ZoneInfo) -> dict[str, object]:
    return {
        "call": call.key,
        "start": _utc_iso(call.start),
        "start_local": _iso(call.start, zone),
        "answer": _utc_iso(call.answer),
        "end": _utc_iso(call.end),
        "duration_s": round(call.duration_s, 1),
        "direction": call.direction,
        "disposition": call.disposition,
        "caller": _party(call.caller),
        "callee": _party(call.callee),
        "caller_mos": _round(call.caller_mos, 2),
        "callee_mos": _round(call.callee_mos, 2),
        "legs": list(call.legs),
    }


def _quality_row(row: QualityRow) -> dict[str, object]:
    return {
        "key": row.key,
        "label": row.label,
        "samples": row.samples,
        "mos": _round(row.mos, 2),
        "worst_mos": _round(row.worst, 2),
        "poor": row.poor,
        "loss_pct": _round(row.loss_pct, 2),
        "jitter_ms": _round(row.jitter_ms, 1),
    }


def trend_dict(trend: QualityTrend) -> dict[str, object]:
    return {
        "scope": scope_dict(trend.scope),
        "threshold": trend.threshold,
        "poor_only": trend.poor_only,
        "samples": trend.samples,
        "days": [
            {"day": p.day.isoformat(), "mos": _round(p.mos, 2), "samples": p.mos_samples}
            for p in trend.days
        ],
        "devices": [_quality_row(r) for r in trend.devices],
        "groups": [_quality_row(r) for r in trend.groups],
    }
