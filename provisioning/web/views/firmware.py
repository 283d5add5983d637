"""Firmware: releases, the versions the fleet runs, and rollouts with their progress.

Starting, pausing, resuming and aborting a rollout call the same service functions as the REST
API and the CLI (``provisioning.rollouts``) with the same permission (``rollout.group``, or
``rollout.fleet`` for a rollout to the whole fleet). Bundles are uploaded through the REST API
or ``offhook fleet firmware upload`` (a web form would put a large file through the form
parser).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.firmware_releases import FirmwareError, list_releases, release_snapshot
from offhook.provisioning.models import Group
from offhook.provisioning.operations import OperationError
from offhook.provisioning.permissions import allowed, required_role
from offhook.provisioning.rollouts import (
    abort_rollout,
    fleet_versions,
    get_rollout,
    list_rollouts,
    pause_rollout,
    resume_rollout,
    rollout_action,
    rollout_snapshot,
    start_rollout,
)
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done
from offhook.provisioning.web.core import Forbidden, Reader, WebRoute, render
from offhook.provisioning.web.sessions import take_form

router = APIRouter(route_class=WebRoute)
PAGE = "/firmware"


def _check(role: str, action: str) -> None:
    if not allowed(role, action):
        raise Forbidden(f"This needs the {required_role(action)} role; you are {role}.")


@router.get(PAGE)
def firmware_page(request: Request, admin: Reader, db: DbSession) -> Response:
    form = take_form(request, PAGE)
    return render(
        request,
        "firmware.html",
        {
            "title": "Firmware",
            "section": "firmware",
            "releases": [release_snapshot(r) for r in list_releases(db)],
            "versions": fleet_versions(db),
            "rollouts": [rollout_snapshot(db, r) for r in list_rollouts(db)],
            "groups": list(db.scalars(select(Group.name).order_by(Group.name))),
            "error": form.get("error", ""),
            "form": {"stages": "5,25,50,100", "threshold": "10", "window": "", **form},
        },
    )


@router.post("/rollouts")
def rollout_start(
    request: Request,
    admin: Reader,
    db: DbSession,
    release: Annotated[str, Form()] = "",
    group: Annotated[str, Form()] = "",
    stages: Annotated[str, Form()] = "5,25,50,100",
    threshold: Annotated[str, Form()] = "10",
    window: Annotated[str, Form()] = "",
) -> Response:
    _check(admin.role, rollout_action(group or None))
    typed = {"release": release, "group": group, "stages": stages, "threshold": threshold}
    try:
        try:
            percentages = [int(s) for s in stages.split(",") if s.strip()]
            pct = float(threshold)
        except ValueError:
            raise OperationError(
                "stages: comma-separated percentages; threshold: a percentage"
            ) from None
        rollout, changed = start_rollout(
            db,
            actor_for(request, admin),
            release,
            group=group or None,
            stages=percentages,
            failure_threshold_pct=pct,
            maintenance_window=window.strip(),
        )
    except (FirmwareError, OperationError) as exc:
        db.rollback()
        return back_with_form(request, PAGE, {**typed, "window": window, "error": str(exc)})
    rollout_id = rollout.id
    told = commit_and_resync(request, db, changed)
    return done(request, PAGE, f"Rollout {rollout_id} started: {told} phone(s) told now.")


@router.post("/rollouts/{ref}/{action}")
def rollout_steer(
    request: Request, ref: str, action: str, admin: Reader, db: DbSession
) -> Response:
    steer = {"pause": pause_rollout, "resume": resume_rollout, "abort": abort_rollout}.get(action)
    try:
        if steer is None:
            raise OperationError(f"{action!r}: pause, resume or abort")
        rollout = get_rollout(db, ref)
        _check(admin.role, rollout_action(rollout.group_id))
        _, changed = steer(db, actor_for(request, admin), rollout.id)
    except (FirmwareError, OperationError) as exc:
        db.rollback()
        return done(request, PAGE, str(exc), "error")
    commit_and_resync(request, db, changed)
    return done(request, PAGE, f"Rollout {ref}: {action} done.")
