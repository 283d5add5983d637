"""Devices waiting for an admin's approval."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import Group
from offhook.provisioning.web.core import Reader, WebRoute, render
from offhook.provisioning.web.queries import pending_devices

router = APIRouter(route_class=WebRoute)


@router.get("/approvals")
def approvals(
    request: Request,
    admin: Reader,
    db: DbSession,
) -> Response:
    return render(
        request,
        "approvals.html",
        {
            "title": "Pending approvals",
            "section": "approvals",
            "pending": pending_devices(db),
            "groups": list(db.scalars(select(Group).order_by(Group.name))),
        },
    )
