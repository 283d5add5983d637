"""Call detail records (filterable, one row per phone's leg) and call quality (trends per day,
device and group, and the samples worst first)."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning import privacy
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import CallRecordRow, Device, QualityRecord
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services import call_analytics as ca
from offhook.provisioning.services.time_zones import admin_zone
from offhook.provisioning.web import svg_charts
from offhook.provisioning.web.actions import actor_for
from offhook.provisioning.web.core import Reader, WebRoute, render
from offhook.provisioning.web.paging import fetch_page, page_url, parse_paging
from offhook.provisioning.web.queries import device_labels
from offhook.provisioning.web.views.analytics import group_choices, read_scope

router = APIRouter(route_class=WebRoute)
DIRECTIONS = ("incoming", "outgoing")
DISPOSITIONS = ("answered", "no_answer", "busy", "failed", "rejected", "missed")


def _day(text: str, field: str, errors: list[str], zone: tzinfo) -> datetime | None:
    """Local midnight of the day in the admin's zone (``+ timedelta(days=1)`` is the next one:
    aware arithmetic on a ZoneInfo time is wall-clock, so a DST day keeps its 23 or 25 hours)."""
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=zone)
    except ValueError:
        errors.append(f"{field}: use a date like 2026-01-31")
        return None


def _device_ids(db: Session, device: str) -> list[str]:
    like = f"%{device.strip().lower()}%"
    return list(
        db.scalars(
            select(Device.id).where(
                func.lower(Device.mac).like(like)
                | func.lower(Device.name).like(like)
                | (Device.id == device.strip())
            )
        )
    )


@router.get("/cdrs")
def cdrs_page(
    request: Request,
    admin: Reader,
    db: DbSession,
    device: str = "",
    extension: str = "",
    direction: str = "",
    disposition: str = "",
    since: str = "",
    until: str = "",
    page: str = "",
    per: str = "",
) -> Response:
    errors: list[str] = []
    paging = parse_paging(page, per)
    query = select(CallRecordRow).order_by(CallRecordRow.start.desc(), CallRecordRow.id)
    if device:
        query = query.where(CallRecordRow.device_id.in_(_device_ids(db, device)))
    if extension:
        like = f"%{extension.strip()}%"
        query = query.where(
            CallRecordRow.local_uri.like(like) | CallRecordRow.remote_uri.like(like)
        )
    if direction:
        if direction not in DIRECTIONS:
            errors.append(f"direction: one of {', '.join(DIRECTIONS)}")
        query = query.where(CallRecordRow.direction == direction)
    if disposition:
        if disposition not in DISPOSITIONS:
            errors.append(f"result: one of {', '.join(DISPOSITIONS)}")
        query = query.where(CallRecordRow.disposition == disposition)
    zone = admin_zone(admin)
    start = _day(since, "from", errors, zone)
    end = _day(until, "to", errors, zone)
    if start is not None:
        query = query.where(CallRecordRow.start >= start.timestamp())
    if end is not None:
        query = query.where(CallRecordRow.start < (end + timedelta(days=1)).timestamp())
    cdrs: list[CallRecordRow] = []
    if not errors:
        cdrs, paging = fetch_page(db, query, paging)
        filters: dict[str, object] = {"device": device, "extension": extension}
        filters |= {"since": since, "until": until, "direction": direction}
        filters |= {"disposition": disposition, "page": paging.number}
        actor = actor_for(request, admin)
        privacy.audit_cdr_read(request.app.state.database, actor, "web", filters, len(cdrs))
    return render(
        request,
        "cdrs.html",
        {
            "title": "Calls",
            "section": "cdrs",
            "cdrs": cdrs,
            "device_labels": device_labels(db, {c.device_id for c in cdrs}),
            "filters": {
                "device": device,
                "extension": extension,
                "direction": direction,
                "disposition": disposition,
                "since": since,
                "until": until,
            },
            "directions": DIRECTIONS,
            "dispositions": DISPOSITIONS,
            "errors": errors,
            "paging": paging,
            "prev_url": page_url(request, paging.number - 1),
            "next_url": page_url(request, paging.number + 1),
        },
        status_code=422 if errors else 200,
    )


@router.get("/quality")
def quality_page(
    request: Request,
    admin: Reader,
    db: DbSession,
    device: str = "",
    since: str = "",
    until: str = "",
    group: str = "",
    extension: str = "",
    threshold: str = "",
    poor_only: str = "",
    page: str = "",
    per: str = "",
) -> Response:
    """The trend per day, per device and per group (each figure with its sample count), and the
    samples themselves worst first; ``poor_only`` keeps the samples below the threshold."""
    paging = parse_paging(page, per)
    values = {"since": since, "until": until, "group": group, "device": device}
    values = {k: v.strip() for k, v in {**values, "extension": extension}.items()}
    scope, errors = read_scope(db, admin, values)
    only = poor_only not in ("", "0")
    try:
        limit = ca.parse_threshold(threshold)
    except OperationError as exc:
        errors.append(str(exc))
        limit = ca.POOR_MOS
    trend = ca.quality_trend(db, scope, limit, only) if scope is not None and not errors else None
    rows: list[QualityRecord] = []
    if trend is not None and scope is not None:
        # Worst first: lowest MOS, then the highest loss and jitter break ties (the id makes the
        # order total, so pages neither overlap nor skip rows).
        query = ca.quality_query(db, scope, limit, only).order_by(
            QualityRecord.mos.asc(),
            QualityRecord.loss_pct.desc(),
            QualityRecord.jitter_ms.desc(),
            QualityRecord.id,
        )
        rows, paging = fetch_page(db, query, paging)
    chart = None
    if trend is not None:
        zone = trend.scope.zone.key
        chart = svg_charts.line_chart(
            "chart-quality",
            "Mean MOS per day" + (" of poor calls" if only else ""),
            f"{trend.samples} samples from {trend.scope.since} to {trend.scope.until} ({zone})"
            + (f", only those below MOS {limit:g}" if only else "")
            + "; days without a sample are gaps.",
            [p.day.strftime("%m-%d") for p in trend.days],
            [p.mos for p in trend.days],
            x_label=f"Day ({zone})",
            y_label="MOS (1-5)",
            y_range=(1.0, 5.0),
            notes=[f"{p.mos_samples} samples" if p.mos_samples else "" for p in trend.days],
        )
    extra = {"threshold": threshold, "poor_only": "1" if only else ""}
    return render(
        request,
        "quality.html",
        {
            "title": "Call quality",
            "section": "quality",
            "quality_rows": rows,
            "device_labels": device_labels(db, {q.device_id for q in rows}),
            "filters": values,
            "poor": {"threshold": f"{limit:g}", "only": only},
            "groups": group_choices(db),
            "errors": errors,
            "trend": trend,
            "chart": chart,
            "query": urlencode({k: v for k, v in {**values, **extra}.items() if v}),
            "paging": paging,
            "prev_url": page_url(request, paging.number - 1),
            "next_url": page_url(request, paging.number + 1),
        },
        status_code=422 if errors else 200,
    )
