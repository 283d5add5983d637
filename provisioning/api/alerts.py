"""Alerts over the admin REST API (``provisioning.services.alerts``): list and read with
``fleet.read``, acknowledge with ``alert.ack``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from offhook.provisioning.admin_auth import client_ip, require_permission
from offhook.provisioning.api import replies
from offhook.provisioning.api.bodies import RequestBody, error_responses
from offhook.provisioning.deps import DbSession, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services import alerts
from offhook.provisioning.services.actors import admin_actor

router = APIRouter(tags=["alerts"], responses=error_responses(401, 403, 404, 422))

Reader = Annotated[AdminUser, Depends(require_permission("fleet.read"))]
Acker = Annotated[AdminUser, Depends(require_permission("alert.ack"))]
AlertId = Annotated[int, Path(ge=1, le=alerts.MAX_ALERT_ID)]


class AckBody(RequestBody):
    ids: Annotated[
        list[Annotated[int, Field(ge=1, le=alerts.MAX_ALERT_ID)]],
        Field(min_length=1, max_length=alerts.MAX_ACK),
    ]


def _refusal(exc: OperationError) -> ApiError:
    return ApiError(exc.status, {404: "not_found"}.get(exc.status, "invalid"), str(exc))


@router.get("/alerts", response_model=replies.AlertListOut)
def get_alerts(
    _user: Reader,
    db: DbSession,
    services: ServicesDep,
    state: Annotated[
        str, Query(description="active (default) | open | acknowledged | resolved | all")
    ] = "active",
    kind: Annotated[str, Query(max_length=32)] = "",
    device: Annotated[
        str, Query(max_length=64, description="only alerts about this device id")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Alerts newest first, with the counts of active ones and of failed notifications."""
    try:
        wanted = alerts.parse_filter(state, kind, device)
    except OperationError as exc:
        raise _refusal(exc) from None
    found = alerts.list_alerts(db, wanted, limit, offset)
    sent = alerts.notifications_of(db, [a.id for a in found])
    public_url = services.settings.alerts.public_url
    return {
        "alerts": [alerts.alert_snapshot(a, public_url, sent[a.id]) for a in found],
        "counts": asdict(alerts.counts(db)),
    }


@router.get("/alerts/{alert_id}", response_model=replies.AlertOut)
def get_alert(
    alert_id: AlertId,
    _user: Reader,
    db: DbSession,
    services: ServicesDep,
) -> dict[str, Any]:
    try:
        alert = alerts.get_alert(db, alert_id)
    except OperationError as exc:
        raise _refusal(exc) from None
    sent = alerts.notifications_of(db, [alert.id])[alert.id]
    return alerts.alert_snapshot(alert, services.settings.alerts.public_url, sent)


def _ack(request: Request, user: AdminUser, db: DbSession, ids: list[int]) -> dict[str, Any]:
    try:
        result = alerts.acknowledge(db, admin_actor(user, client_ip(request)), ids)
    except OperationError as exc:
        raise _refusal(exc) from None
    db.commit()
    return {
        "acknowledged": result.acknowledged,
        "skipped": [{"id": i, "reason": why} for i, why in result.skipped],
    }


@router.post("/alerts/{alert_id}/ack", response_model=replies.AlertAckOut)
def post_ack(
    alert_id: AlertId,
    request: Request,
    user: Acker,
    db: DbSession,
) -> dict[str, Any]:
    """Acknowledge an open alert (audited as ``alert.ack``); it still resolves by itself."""
    return _ack(request, user, db, [alert_id])


@router.post("/alerts/ack", response_model=replies.AlertAckOut)
def post_bulk_ack(body: AckBody, request: Request, user: Acker, db: DbSession) -> dict[str, Any]:
    """Acknowledge many open alerts at once; ones already acknowledged or resolved are listed
    in ``skipped``, an unknown id refuses the request."""
    return _ack(request, user, db, body.ids)
