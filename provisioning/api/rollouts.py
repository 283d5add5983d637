"""Rollouts and per-device firmware over the admin REST API (``provisioning.rollouts``).

A rollout to a group needs ``rollout.group`` (operator), one to the whole fleet
``rollout.fleet`` (admin); pausing, resuming, aborting and the threshold need the same as the
rollout itself. Pin and exclude need ``firmware.device``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from sqlalchemy.orm import Session

from offhook.provisioning.admin_auth import client_ip, require_allowed, require_permission
from offhook.provisioning.api import replies
from offhook.provisioning.api.bodies import RequestBody, error_responses
from offhook.provisioning.api.firmware import firmware_error
from offhook.provisioning.deps import DbSession, Services, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.firmware_releases import FirmwareError
from offhook.provisioning.models import AdminUser, Rollout
from offhook.provisioning.operations import OperationError, get_device
from offhook.provisioning.rollouts import (
    DEFAULT_STAGES,
    MAX_STAGE_TIMEOUT_S,
    abort_rollout,
    device_firmware_snapshot,
    exclude_device,
    fleet_versions,
    get_rollout,
    list_rollouts,
    pause_rollout,
    pin_device,
    resume_rollout,
    rollout_action,
    rollout_snapshot,
    set_threshold,
    start_rollout,
)
from offhook.provisioning.services.actors import admin_actor, commit_and_resync

router = APIRouter(tags=["firmware"], responses=error_responses(401, 403, 404, 409, 422))

Reader = Annotated[AdminUser, Depends(require_permission("fleet.read"))]
DeviceFirmwareWriter = Annotated[AdminUser, Depends(require_permission("firmware.device"))]


class RolloutBody(RequestBody):
    release: Annotated[str, Field(min_length=1, max_length=200)]
    group: Annotated[str | None, Field(max_length=128)] = None
    stages: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1, max_length=20)
    ] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    failure_threshold_pct: Annotated[float, Field(ge=0, le=100)] = 10.0
    maintenance_window: Annotated[str, Field(max_length=11)] = ""
    stage_timeout_s: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_STAGE_TIMEOUT_S,
            description="a stage not finished this long after it began pauses the rollout"
            " (0: no limit)",
        ),
    ] = 0


class RolloutPatch(RequestBody):
    failure_threshold_pct: Annotated[float, Field(ge=0, le=100)]


class DeviceFirmwareBody(RequestBody):
    """``pin``: a release ref to hold the phone on, ``""`` to unpin, absent: unchanged."""

    pin: Annotated[str | None, Field(max_length=200)] = None
    excluded: bool | None = None


def _done(db: Session, services: Services, changed: list[str]) -> None:
    commit_and_resync(db, services.keys, services.notifier, changed)


def _refusal(exc: FirmwareError | OperationError) -> ApiError:
    if isinstance(exc, FirmwareError):
        return firmware_error(exc)
    status = getattr(exc, "status", 422)
    return ApiError(status, {404: "not_found", 409: "conflict"}.get(status, "invalid"), str(exc))


def _steerable(db: Session, user: AdminUser, ref: str) -> Rollout:
    try:
        rollout = get_rollout(db, ref)
    except FirmwareError as exc:
        raise firmware_error(exc) from None
    require_allowed(user, rollout_action(rollout.group_id))
    return rollout


@router.get("/firmware-versions", response_model=list[replies.FleetVersionRow])
def get_fleet_versions(_user: Reader, db: DbSession) -> list[dict[str, Any]]:
    """Approved phones per board and running version, and how many are mid-update."""
    return fleet_versions(db)


@router.get("/rollouts", response_model=list[replies.RolloutOut])
def get_rollouts(_user: Reader, db: DbSession) -> list[dict[str, Any]]:
    return [rollout_snapshot(db, r) for r in list_rollouts(db)]


@router.post("/rollouts", status_code=201, response_model=replies.RolloutOut)
def post_rollout(
    body: RolloutBody, request: Request, user: Reader, db: DbSession, services: ServicesDep
) -> dict[str, Any]:
    """Start a rollout: the first stage (the canary share) is asked at once."""
    require_allowed(user, rollout_action(body.group))
    try:
        rollout, changed = start_rollout(
            db,
            admin_actor(user, client_ip(request)),
            body.release,
            group=body.group,
            stages=body.stages,
            failure_threshold_pct=body.failure_threshold_pct,
            maintenance_window=body.maintenance_window,
            stage_timeout_s=body.stage_timeout_s,
        )
    except (FirmwareError, OperationError) as exc:
        raise _refusal(exc) from None
    rollout_id = rollout.id
    _done(db, services, changed)
    return rollout_snapshot(db, get_rollout(db, rollout_id))


@router.get("/rollouts/{ref}", response_model=replies.RolloutOut)
def get_one_rollout(ref: str, _user: Reader, db: DbSession) -> dict[str, Any]:
    try:
        return rollout_snapshot(db, get_rollout(db, ref))
    except FirmwareError as exc:
        raise firmware_error(exc) from None


@router.patch("/rollouts/{ref}", response_model=replies.RolloutOut)
def patch_rollout(
    ref: str, body: RolloutPatch, request: Request, user: Reader, db: DbSession
) -> dict[str, Any]:
    """Change the failure threshold (e.g. before resuming a rollout that paused itself)."""
    rollout = _steerable(db, user, ref)
    try:
        set_threshold(
            db, admin_actor(user, client_ip(request)), rollout.id, body.failure_threshold_pct
        )
    except FirmwareError as exc:
        raise firmware_error(exc) from None
    db.flush()
    return rollout_snapshot(db, rollout)


def _steer_route(action: str) -> Any:
    steer = {"pause": pause_rollout, "resume": resume_rollout, "abort": abort_rollout}[action]

    def route(
        ref: str, request: Request, user: Reader, db: DbSession, services: ServicesDep
    ) -> dict[str, Any]:
        rollout = _steerable(db, user, ref)
        try:
            _, changed = steer(db, admin_actor(user, client_ip(request)), rollout.id)
        except FirmwareError as exc:
            raise firmware_error(exc) from None
        rollout_id = rollout.id
        _done(db, services, changed)
        return rollout_snapshot(db, get_rollout(db, rollout_id))

    route.__name__ = f"{action}_rollout"
    route.__doc__ = {
        "pause": "No more phones are asked; those asked carry on.",
        "resume": "Run again (and move on when the current stage has finished).",
        "abort": "Stop for good: phones not yet running the release lose the target.",
    }[action]
    return route


for _action in ("pause", "resume", "abort"):
    router.add_api_route(
        f"/rollouts/{{ref}}/{_action}",
        _steer_route(_action),
        methods=["POST"],
        response_model=replies.RolloutOut,
    )


@router.get("/devices/{ref}/firmware", response_model=replies.DeviceFirmwareOut)
def get_device_firmware(ref: str, _user: Reader, db: DbSession) -> dict[str, Any]:
    """The phone's running version, target, pin, exclusion and last update step."""
    try:
        return device_firmware_snapshot(db, get_device(db, ref))
    except OperationError as exc:
        raise _refusal(exc) from None


@router.put("/devices/{ref}/firmware", response_model=replies.DeviceFirmwareOut)
def put_device_firmware(
    ref: str,
    body: DeviceFirmwareBody,
    request: Request,
    user: DeviceFirmwareWriter,
    db: DbSession,
    services: ServicesDep,
) -> dict[str, Any]:
    """Pin the phone to a release (``"pin": "<release>"``, ``""`` unpins) and/or leave it out
    of rollouts (``"excluded": true``)."""
    actor = admin_actor(user, client_ip(request))
    changed: list[str] = []
    try:
        device = get_device(db, ref)
        device_id = device.id
        if body.excluded is not None:
            changed += exclude_device(db, actor, device_id, body.excluded)
        if body.pin is not None:
            changed += pin_device(db, actor, device_id, body.pin or None)
    except (FirmwareError, OperationError) as exc:
        raise _refusal(exc) from None
    _done(db, services, changed)
    return device_firmware_snapshot(db, get_device(db, device_id))
