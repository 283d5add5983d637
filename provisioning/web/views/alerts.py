"""Alerts: the list with state and kind filters, acknowledge one or the ticked ones after a
confirmation page (``provisioning.services.alerts``, the REST API's functions and rules)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.alert_rules import KINDS
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services import alerts
from offhook.provisioning.web import confirm
from offhook.provisioning.web.actions import actor_for, done
from offhook.provisioning.web.core import Reader, WebRoute, permitted, render
from offhook.provisioning.web.paging import Paging, page_url, parse_paging
from offhook.provisioning.web.sessions import add_flash

router = APIRouter(route_class=WebRoute)

Acker = Annotated[AdminUser, permitted("alert.ack")]


def _back(text: str) -> str:
    return text if text.startswith("/alerts") and "//" not in text else "/alerts"


@router.get("/alerts")
def alerts_page(request: Request, admin: Reader, db: DbSession) -> Response:
    params = request.query_params
    state, kind = params.get("state", "active"), params.get("kind", "")
    error = ""
    try:
        wanted = alerts.parse_filter(state, kind)
    except OperationError as exc:
        error, wanted = str(exc), alerts.AlertFilter()
    paging = parse_paging(params.get("page", ""), params.get("per", ""))
    rows = alerts.list_alerts(db, wanted, paging.size + 1, paging.offset)
    paging = Paging(paging.number, paging.size, len(rows) > paging.size)
    rows = rows[: paging.size]
    back = request.url.path + ("?" + request.url.query if request.url.query else "")
    return render(
        request,
        "alerts.html",
        {
            "title": "Alerts",
            "section": "alerts",
            "rows": rows,
            "notifications": alerts.notifications_of(db, [a.id for a in rows]),
            "counts": alerts.counts(db),
            "filters": wanted,
            "filter_error": error,
            "states": alerts.STATE_FILTERS,
            "kinds": KINDS,
            "paging": paging,
            "prev_url": page_url(request, paging.number - 1),
            "next_url": page_url(request, paging.number + 1),
            "back": back,
        },
    )


def _labels(db: Session, ids: list[int]) -> list[str]:
    found = alerts.alerts_by_id(db, ids)
    return [
        f"#{i} {found[i].subject_name}: {found[i].message}" if i in found else f"#{i}" for i in ids
    ]


def ack_confirmation(db: Session, ids: list[int], back: str) -> confirm.Confirmation:
    labels = _labels(db, ids[:20])
    noun = f"{len(ids)} alert{'' if len(ids) == 1 else 's'}"
    shown = labels + ([f"and {len(ids) - 20} more"] if len(ids) > 20 else [])
    return confirm.Confirmation(
        title=f"Acknowledge {noun}?",
        question=f"Acknowledge {noun}?",
        action="/alerts/ack",
        button=f"Acknowledge {noun}",
        cancel_url=back,
        consequences=[
            *shown,
            "Acknowledged alerts stay listed as active with your name until their condition "
            "clears; they resolve by themselves.",
        ],
        fields=[("back", back)] + [("alert", str(i)) for i in ids],
    )


@router.post("/alerts/ack")
async def alerts_ack(request: Request, admin: Acker, db: DbSession) -> Response:
    """The ticked alerts (``alert`` repeats) or one row's button: first the confirmation page,
    then, with confirm=yes, the acknowledgement."""
    form = await request.form()
    back = _back(str(form.get("back", "/alerts")))
    raw = [str(v) for v in form.getlist("alert")]
    ids = [int(v) for v in raw if v.isdigit()]
    if not ids or len(ids) != len(raw):
        return done(request, back, "Nothing done: tick at least one alert.", "error")
    if not confirm.confirmed(str(form.get("confirm", ""))):
        return confirm.show(request, ack_confirmation(db, ids, back), "alerts")
    try:
        result = alerts.acknowledge(db, actor_for(request, admin), ids)
    except OperationError as exc:
        db.rollback()
        return done(request, back, f"Nothing done: {exc}.", "error")
    db.commit()
    response = done(request, back, result.summary + ".", "info" if result.skipped else "ok")
    for alert_id, why in result.skipped[:10]:
        add_flash(request, response, "error", f"Alert {alert_id}: {why}")
    return response


__all__ = ["router"]
