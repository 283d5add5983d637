"""Firmware: releases, the versions the fleet runs, and rollouts with their progress.

Starting, pausing, resuming and aborting a rollout call the same service functions as the REST
API and the CLI (``provisioning.rollouts``) with the same permission (``rollout.group``, or
``rollout.fleet`` for a rollout to the whole fleet). A bundle uploaded with the page's file form
is streamed (``web.streamed_upload``) into the same ``BundleReceiver`` and ``register_release``
as the REST upload's body; withdrawing a release calls ``withdraw_release``, as the REST API
does (both ``firmware.upload``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from starlette.responses import Response

from offhook.provisioning.db import Database, DbSession
from offhook.provisioning.firmware_releases import (
    BundleReceiver,
    FirmwareError,
    ReceivedBundle,
    list_releases,
    register_release,
    release_snapshot,
    withdraw_release,
)
from offhook.provisioning.limits import parse_length
from offhook.provisioning.models import AdminUser, Group
from offhook.provisioning.operations import Actor, OperationError
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
from offhook.provisioning.settings import ServerSettings
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done
from offhook.provisioning.web.core import (
    STREAMED_FORMS,
    Forbidden,
    Reader,
    WebRoute,
    permitted,
    render,
    server_settings,
)
from offhook.provisioning.web.sessions import CSRF_FIELD, csrf_valid, read_session, take_form
from offhook.provisioning.web.streamed_upload import UploadFormError, read_file_form

router = APIRouter(route_class=WebRoute)
PAGE = "/firmware"
UPLOAD = "/firmware/upload"
STREAMED_FORMS.add(UPLOAD)
Uploader = Annotated[AdminUser, permitted("firmware.upload")]


class StaleToken(Exception):
    """The upload form's CSRF token is missing, stale or sent after the file."""


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
            "upload_error": form.get("upload_error", ""),
            "form": {
                "stages": "5,25,50,100",
                "threshold": "10",
                "window": "",
                "stage_minutes": "0",
                **form,
            },
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
    stage_minutes: Annotated[str, Form()] = "0",
) -> Response:
    _check(admin.role, rollout_action(group or None))
    typed = {
        "release": release,
        "group": group,
        "stages": stages,
        "threshold": threshold,
        "stage_minutes": stage_minutes,
    }
    try:
        try:
            percentages = [int(s) for s in stages.split(",") if s.strip()]
            pct = float(threshold)
            limit_s = round(float(stage_minutes or "0") * 60)
        except ValueError:
            raise OperationError(
                "stages: comma-separated percentages; threshold: a percentage; stage time"
                " limit: minutes"
            ) from None
        rollout, changed = start_rollout(
            db,
            actor_for(request, admin),
            release,
            group=group or None,
            stages=percentages,
            failure_threshold_pct=pct,
            maintenance_window=window.strip(),
            stage_timeout_s=limit_s,
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


def _register(
    database: Database, settings: ServerSettings, actor: Actor, received: ReceivedBundle
) -> str:
    with database.session() as db:
        release = register_release(db, actor, settings, received)
        return f"Release {release.id} stored: {release.compatible} {release.version}."


@router.post(UPLOAD)
async def firmware_upload(request: Request, admin: Uploader, db: DbSession) -> Response:
    """The page's file form, streamed to the same service functions as the REST upload."""
    actor = actor_for(request, admin)
    db.commit()  # the permission check's transaction: nobody waits while the bundle streams
    services = request.app.state.services
    settings = server_settings(request)
    declared = request.headers.get("content-length")

    def check_token(fields: dict[str, str]) -> None:
        if not csrf_valid(request, read_session(request), fields.get(CSRF_FIELD, "")):
            raise StaleToken()

    try:
        if declared is not None and parse_length(declared.encode()) > settings.firmware_max_bytes:
            raise FirmwareError(
                f"bundle too large: at most {settings.firmware_max_bytes} bytes"
                " (OFFHOOK_FIRMWARE_MAX_BYTES)",
                413,
                "too_large",
            )
        receiver = await asyncio.to_thread(BundleReceiver, settings)
        try:
            await read_file_form(request, "bundle", check_token, receiver.write)
        except BaseException:
            receiver.discard()
            raise
        received = await asyncio.to_thread(receiver.finish)
        message = await asyncio.to_thread(_register, services.database, settings, actor, received)
    except StaleToken:
        return render(
            request,
            "error.html",
            {
                "title": "Request refused",
                "message": "The form's security token is missing or stale. "
                "Reload the page and try again.",
            },
            status_code=403,
        )
    except (FirmwareError, UploadFormError) as exc:
        return back_with_form(request, PAGE, {"upload_error": str(exc)})
    return done(request, PAGE, message)


@router.post("/firmware/{ref}/withdraw")
def firmware_withdraw(request: Request, ref: str, admin: Uploader, db: DbSession) -> Response:
    try:
        release, changed = withdraw_release(db, actor_for(request, admin), ref)
    except FirmwareError as exc:
        db.rollback()
        return done(request, PAGE, str(exc), "error")
    text = f"Release {release.id} ({release.compatible} {release.version}) withdrawn."
    commit_and_resync(request, db, changed)
    return done(request, PAGE, text)
