"""Call analytics pages: statistics with server-drawn charts, the joined calls, their billing CSV,
and the admin's display time zone (Preferences). All figures come from
``provisioning.services.call_analytics``, as the REST API's and the CLI's do."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response, StreamingResponse

from offhook.provisioning import privacy
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser, Group
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services import call_analytics as ca
from offhook.provisioning.services.time_zones import admin_zone, set_time_zone, zone_names
from offhook.provisioning.web import svg_charts
from offhook.provisioning.web.actions import actor_for, back_with_form, done
from offhook.provisioning.web.core import Reader, WebRoute, permitted, render
from offhook.provisioning.web.paging import parse_paging
from offhook.provisioning.web.sessions import take_form

router = APIRouter(route_class=WebRoute)
OwnAccount = Annotated[AdminUser, permitted("account.security")]
FILTERS = ("since", "until", "group", "device", "extension")


def group_choices(db: Session) -> list[tuple[int, str]]:
    return [(g.id, g.name) for g in db.scalars(select(Group).order_by(Group.name))]


def read_scope(
    db: Session, admin: AdminUser, values: dict[str, str]
) -> tuple[ca.Scope | None, list[str]]:
    """The page's filters as a Scope in the admin's zone, or the refusal to show."""
    try:
        scope = ca.parse_scope(
            db,
            admin_zone(admin),
            since=values["since"],
            until=values["until"],
            group=values["group"],
            device=values["device"],
            extension=values["extension"],
        )
    except OperationError as exc:
        return None, [str(exc)]
    return scope, []


def _query(values: dict[str, str]) -> str:
    return urlencode({k: v for k, v in values.items() if v})


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def _charts(stats: ca.CallStats) -> dict[str, Any]:
    days = [p.day.strftime("%m-%d") for p in stats.days]
    zone = stats.scope.zone.key
    span = f"{stats.scope.since} to {stats.scope.until} ({zone})"
    mos_days = [p for p in stats.days if p.mos is not None]
    return {
        "volume": svg_charts.bar_chart(
            "chart-volume",
            "Calls per day",
            f"{stats.calls} calls from {span}; each bar is one day's calls, both legs of an "
            "internal call counted once.",
            days,
            [p.calls for p in stats.days],
            x_label=f"Day ({zone})",
            y_label="Calls",
        ),
        "mos": svg_charts.line_chart(
            "chart-mos",
            "Call quality per day (mean MOS)",
            f"Mean MOS of the call legs with a measurement, {span}; "
            f"{sum(p.mos_samples for p in stats.days)} samples on {len(mos_days)} days. "
            "Days without a sample are gaps.",
            days,
            [p.mos for p in stats.days],
            x_label=f"Day ({zone})",
            y_label="MOS (1-5)",
            y_range=(1.0, 5.0),
            notes=[f"{p.mos_samples} samples" if p.mos_samples else "" for p in stats.days],
        ),
        "heat": svg_charts.heat_map(
            "chart-busy",
            "Busy hours",
            f"Calls per weekday and hour of the day in {zone}, {span}; darker is busier"
            + (
                f"; busiest {stats.busiest[0]} {stats.busiest[1]:02d}:00 with {stats.busiest[2]}"
                if stats.busiest
                else ""
            )
            + ".",
            ca.WEEKDAYS,
            [f"{h:02d}" for h in range(24)],
            stats.heat,
            x_label=f"Hour of the day ({zone})",
            y_label="Weekday",
        ),
    }


def _values(**given: str) -> dict[str, str]:
    return {k: given.get(k, "").strip() for k in FILTERS}


@router.get("/analytics")
def analytics_page(
    request: Request,
    admin: Reader,
    db: DbSession,
    since: str = "",
    until: str = "",
    group: str = "",
    device: str = "",
    extension: str = "",
) -> Response:
    values = _values(since=since, until=until, group=group, device=device, extension=extension)
    scope, errors = read_scope(db, admin, values)
    stats = ca.call_stats(db, scope) if scope is not None else None
    return render(
        request,
        "analytics.html",
        {
            "title": "Call analytics",
            "section": "analytics",
            "filters": values,
            "scope": scope,
            "errors": errors,
            "stats": stats,
            "charts": _charts(stats) if stats is not None else {},
            "pct": _pct,
            "groups": group_choices(db),
            "query": _query(values),
        },
        status_code=422 if errors else 200,
    )


@router.get("/analytics/calls")
def joined_calls_page(
    request: Request,
    admin: Reader,
    db: DbSession,
    since: str = "",
    until: str = "",
    group: str = "",
    device: str = "",
    extension: str = "",
    page: str = "",
    per: str = "",
) -> Response:
    """One row per call, both legs joined, newest first; a read of call records (audited)."""
    values = _values(since=since, until=until, group=group, device=device, extension=extension)
    scope, errors = read_scope(db, admin, values)
    paging = parse_paging(page, per)
    calls: list[ca.Call] = []
    more = False
    if scope is not None:
        every = ca.calls_in(db, scope)
        every.reverse()
        first = (paging.number - 1) * paging.size
        calls = every[first : first + paging.size]
        more = len(every) > first + paging.size
        filters: dict[str, object] = {**scope.as_filters(), "page": paging.number}
        privacy.audit_cdr_read(
            request.app.state.database, actor_for(request, admin), "web", filters, len(calls)
        )
    base = {**values, "per": str(paging.size) if per else ""}
    return render(
        request,
        "joined_calls.html",
        {
            "title": "Calls, both legs joined",
            "section": "analytics",
            "filters": values,
            "errors": errors,
            "calls": calls,
            "groups": group_choices(db),
            "query": _query(values),
            "page": paging.number,
            "prev_url": f"/analytics/calls?{_query({**base, 'page': str(paging.number - 1)})}"
            if paging.number > 1
            else "",
            "next_url": f"/analytics/calls?{_query({**base, 'page': str(paging.number + 1)})}"
            if more
            else "",
        },
        status_code=422 if errors else 200,
    )


@router.get("/analytics/export.csv")
def export_csv(
    request: Request,
    admin: Reader,
    db: DbSession,
    since: str = "",
    until: str = "",
    group: str = "",
    device: str = "",
    extension: str = "",
) -> Response:
    """The billing CSV of the filtered calls, streamed; audited as ``cdr.read``."""
    values = _values(since=since, until=until, group=group, device=device, extension=extension)
    scope, errors = read_scope(db, admin, values)
    if scope is None:
        return done(request, f"/analytics?{_query(values)}", errors[0], "error")
    calls = ca.calls_in(db, scope)
    privacy.audit_cdr_read(
        request.app.state.database,
        actor_for(request, admin),
        "web-export",
        scope.as_filters(),
        len(calls),
    )
    return StreamingResponse(
        ca.csv_lines(calls, scope.zone),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="calls-{scope.since}-{scope.until}.csv"',
            "cache-control": "no-store",
        },
    )


@router.get("/preferences")
def preferences_page(request: Request, admin: OwnAccount) -> Response:
    form = take_form(request, "/preferences")
    return render(
        request,
        "preferences.html",
        {
            "title": "Preferences",
            "section": "preferences",
            "zones": zone_names(),
            "current": admin_zone(admin).key,
            "error": form.get("error", ""),
            "typed": form.get("time_zone", ""),
        },
    )


@router.post("/preferences")
def preferences_save(
    request: Request,
    admin: OwnAccount,
    db: DbSession,
    time_zone: Annotated[str, Form()] = "",
) -> Response:
    try:
        set_time_zone(db, actor_for(request, admin), admin, time_zone)
    except OperationError as exc:
        db.rollback()
        return back_with_form(request, "/preferences", {"error": str(exc), "time_zone": time_zone})
    db.commit()
    return done(request, "/preferences", f"Times are now shown in {admin.time_zone}.")
