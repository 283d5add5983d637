"""Call analytics over the REST API: statistics, quality trends, the joined calls and their
billing CSV, and the admin's own display time zone. Everything comes from
``provisioning.services.call_analytics``, as the web UI's pages and ``offhook fleet calls`` do;
reading calls (the list and the export) is audited as ``cdr.read`` like every CDR read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field
from sqlalchemy.orm import Session

from offhook.provisioning import privacy
from offhook.provisioning.admin_auth import client_ip, require_permission
from offhook.provisioning.api import replies
from offhook.provisioning.api.bodies import RequestBody, error_responses
from offhook.provisioning.deps import DbSession
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services import call_analytics as analytics
from offhook.provisioning.services.actors import admin_actor
from offhook.provisioning.services.time_zones import admin_zone, parse_zone, set_time_zone

router = APIRouter(tags=["analytics"], responses=error_responses(401, 403, 404, 422))
Reader = Annotated[AdminUser, Depends(require_permission("fleet.read"))]
OwnAccount = Annotated[AdminUser, Depends(require_permission("account.security"))]
Text = Annotated[str, Query(max_length=128)]
From = Annotated[str, Query(alias="from", max_length=32, description="first day, YYYY-MM-DD")]
To = Annotated[str, Query(max_length=32, description="last day (included), YYYY-MM-DD")]
Tz = Annotated[str, Query(max_length=64, description="zoneinfo name; default: the admin's")]


def _fail(exc: OperationError) -> ApiError:
    return ApiError(exc.status, "not_found" if exc.status == 404 else "invalid", str(exc))


def _scope(
    db: Session,
    user: AdminUser,
    since: str,
    until: str,
    tz: str,
    *,
    group: str,
    device: str,
    extension: str,
) -> analytics.Scope:
    try:
        zone: ZoneInfo = parse_zone(tz) if tz else admin_zone(user)
        return analytics.parse_scope(
            db, zone, since=since, until=until, group=group, device=device, extension=extension
        )
    except OperationError as exc:
        raise _fail(exc) from None


@router.get("/analytics/calls", response_model=replies.CallStatsOut)
def call_statistics(
    db: DbSession,
    user: Reader,
    since: From = "",
    to: To = "",
    tz: Tz = "",
    group: Text = "",
    device: Text = "",
    extension: Text = "",
) -> dict[str, Any]:
    """Volume, busy hours (weekday x local hour), answer and miss rates, average duration and the
    per-day trend, both legs of a fleet-internal call counted once."""
    scope = _scope(db, user, since, to, tz, group=group, device=device, extension=extension)
    return analytics.stats_dict(analytics.call_stats(db, scope))


@router.get("/analytics/quality", response_model=replies.QualityTrendOut)
def quality_trend(
    db: DbSession,
    user: Reader,
    since: From = "",
    to: To = "",
    tz: Tz = "",
    group: Text = "",
    device: Text = "",
    extension: Text = "",
    threshold: Annotated[str, Query(max_length=16, description="poor below this MOS")] = "",
    poor_only: bool = False,
) -> dict[str, Any]:
    """MOS per day, per device and per group; each figure says how many samples it rests on."""
    scope = _scope(db, user, since, to, tz, group=group, device=device, extension=extension)
    try:
        limit = analytics.parse_threshold(threshold)
    except OperationError as exc:
        raise _fail(exc) from None
    return analytics.trend_dict(analytics.quality_trend(db, scope, limit, poor_only))


def _calls(
    request: Request, db: Session, user: AdminUser, scope: analytics.Scope, where: str
) -> list[analytics.Call]:
    calls = analytics.calls_in(db, scope)
    actor = admin_actor(user, client_ip(request))
    privacy.audit_cdr_read(request.app.state.database, actor, where, scope.as_filters(), len(calls))
    return calls


@router.get("/calls", response_model=list[replies.JoinedCallOut])
def joined_calls(
    request: Request,
    db: DbSession,
    user: Reader,
    since: From = "",
    to: To = "",
    tz: Tz = "",
    group: Text = "",
    device: Text = "",
    extension: Text = "",
) -> list[dict[str, Any]]:
    """Calls with both legs joined (oldest first); audited as ``cdr.read``."""
    scope = _scope(db, user, since, to, tz, group=group, device=device, extension=extension)
    return [analytics.call_dict(c, scope.zone) for c in _calls(request, db, user, scope, "rest")]


@router.get(
    "/calls/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per call"}},
)
def export_calls(
    request: Request,
    db: DbSession,
    user: Reader,
    since: From = "",
    to: To = "",
    tz: Tz = "",
    group: Text = "",
    device: Text = "",
    extension: Text = "",
) -> StreamingResponse:
    """The billing CSV: one row per call, start in the zone and in UTC; audited as ``cdr.read``."""
    scope = _scope(db, user, since, to, tz, group=group, device=device, extension=extension)
    calls = _calls(request, db, user, scope, "rest-export")
    rows: Iterator[str] = analytics.csv_lines(calls, scope.zone)
    name = f"calls-{scope.since}-{scope.until}.csv"
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


class TimeZoneBody(RequestBody):
    time_zone: Annotated[str, Field(min_length=1, max_length=64, examples=["Europe/Berlin"])]


@router.get("/me/time-zone", response_model=replies.TimeZoneOut)
def my_time_zone(user: OwnAccount) -> dict[str, Any]:
    return {"username": user.username, "time_zone": admin_zone(user).key}


@router.put("/me/time-zone", response_model=replies.TimeZoneOut)
def set_my_time_zone(
    body: TimeZoneBody, request: Request, db: DbSession, user: OwnAccount
) -> dict[str, Any]:
    """Every time shown to this admin, and the analytics' days and busy hours, use this zone."""
    try:
        set_time_zone(db, admin_actor(user, client_ip(request)), user, body.time_zone)
    except OperationError as exc:
        raise _fail(exc) from None
    return {"username": user.username, "time_zone": user.time_zone}
