"""Dashboard: open alerts, fleet counts, registration health, latest changes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AuditEntry
from offhook.provisioning.operations import fleet_summary
from offhook.provisioning.services import alerts
from offhook.provisioning.web.core import Reader, WebRoute, not_seen_threshold, render
from offhook.provisioning.web.liveness import describe
from offhook.provisioning.web.queries import registration_health
from offhook.provisioning.web.target_names import audit_targets

router = APIRouter(route_class=WebRoute)


@router.get("/")
def dashboard(
    request: Request,
    admin: Reader,
    db: DbSession,
) -> Response:
    threshold = not_seen_threshold(request)
    recent = list(db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(8)))
    active = alerts.list_alerts(db, alerts.AlertFilter("active"), limit=10)
    return render(
        request,
        "dashboard.html",
        {
            "title": "Dashboard",
            "section": "dashboard",
            "summary": fleet_summary(db),
            "alert_counts": alerts.counts(db),
            "active_alerts": active,
            "health": registration_health(db, threshold),
            "not_seen_text": describe(threshold),
            "recent": recent,
            "targets": audit_targets(db, recent),
        },
    )
