"""Firmware over HTTP: releases for admins (upload, list) and bundle downloads for phones.

``POST /api/v1/admin/firmware`` takes the raw ``.raucb`` as the request body; it is streamed to
a scratch file, verified with the real ``rauc`` against the server's keyring and only then
becomes a release (``provisioning.firmware_releases``). ``GET /api/v1/device/firmware/
<sha256>.raucb`` serves a release to a phone with its device credential, only when the phone is
targeted with it (rollout or pin), with ``Range``/``If-Range`` so an interrupted download
resumes (docs/updates.md).
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from offhook.provisioning.admin_auth import client_ip, require_permission
from offhook.provisioning.api import replies
from offhook.provisioning.api.bodies import error_responses
from offhook.provisioning.auth import authenticate_device
from offhook.provisioning.deps import DbSession, Services, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.firmware_releases import (
    BundleReceiver,
    FirmwareError,
    ReceivedBundle,
    bundle_path,
    get_release,
    list_releases,
    register_release,
    release_snapshot,
    withdraw_release,
)
from offhook.provisioning.limits import parse_length
from offhook.provisioning.models import AdminUser, DeviceFirmware, FirmwareRelease
from offhook.provisioning.operations import Actor
from offhook.provisioning.services.actors import admin_actor, commit_and_resync

admin_router = APIRouter(tags=["firmware"], responses=error_responses(401, 403, 404, 409, 422))
device_router = APIRouter(tags=["device"], responses=error_responses(401, 403, 404, 503))

Reader = Annotated[AdminUser, Depends(require_permission("fleet.read"))]
Uploader = Annotated[AdminUser, Depends(require_permission("firmware.upload"))]

BUNDLE_NAME = re.compile(r"^([0-9a-f]{64})\.raucb$")


def firmware_error(exc: FirmwareError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc))


def _store(services: Services, actor: Actor, received: ReceivedBundle) -> dict[str, Any]:
    with services.database.session() as db:
        try:
            release = register_release(db, actor, services.settings, received)
        except FirmwareError as exc:
            raise firmware_error(exc) from None
        db.flush()
        return release_snapshot(release)


@admin_router.post(
    "/firmware",
    status_code=201,
    response_model=replies.FirmwareReleaseOut,
    responses={413: {"description": "bundle larger than OFFHOOK_FIRMWARE_MAX_BYTES"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def upload_firmware(
    request: Request, user: Uploader, db: DbSession, services: ServicesDep
) -> dict[str, Any]:
    """Upload a RAUC bundle (the raw ``.raucb`` as the body). 201: the new release (board
    ``compatible`` and ``version`` from the bundle's manifest); 422 ``bad_signature`` when it
    is not signed by a certificate of the server's keyring, ``bad_payload`` when its content
    does not match its signature; 409 when that version of that board exists already."""
    actor = admin_actor(user, client_ip(request))
    # The permission check opened a write transaction (SQLite: the write lock). Streaming a
    # bundle takes a while; nobody else must wait for it.
    db.commit()
    declared = request.headers.get("content-length")
    limit = services.settings.firmware_max_bytes
    if declared is not None and parse_length(declared.encode()) > limit:
        raise ApiError(
            413,
            "too_large",
            f"bundle too large: at most {limit} bytes (OFFHOOK_FIRMWARE_MAX_BYTES)",
        )
    try:
        receiver = await asyncio.to_thread(BundleReceiver, services.settings)
        try:
            async for chunk in request.stream():
                receiver.write(chunk)
        except BaseException:
            receiver.discard()
            raise
        received = await asyncio.to_thread(receiver.finish)
    except FirmwareError as exc:
        raise firmware_error(exc) from None
    return await asyncio.to_thread(_store, services, actor, received)


@admin_router.get("/firmware", response_model=list[replies.FirmwareReleaseOut])
def get_firmware_releases(_user: Reader, db: DbSession) -> list[dict[str, Any]]:
    """Every release, newest first per board."""
    return [release_snapshot(r) for r in list_releases(db)]


@admin_router.get("/firmware/{ref}", response_model=replies.FirmwareReleaseOut)
def get_firmware_release(ref: str, _user: Reader, db: DbSession) -> dict[str, Any]:
    """One release by id, sha256, ``version`` or ``compatible:version``."""
    try:
        return release_snapshot(get_release(db, ref))
    except FirmwareError as exc:
        raise firmware_error(exc) from None


@admin_router.post("/firmware/{ref}/withdraw", response_model=replies.FirmwareReleaseOut)
def post_withdraw_release(
    ref: str, request: Request, user: Uploader, db: DbSession, services: ServicesDep
) -> dict[str, Any]:
    """Withdraw a release: no longer offered to new rollouts or pins; phones running it are
    left alone. 409 ``in_use`` while a running or paused rollout, or a pin, uses it."""
    try:
        release, changed = withdraw_release(db, admin_actor(user, client_ip(request)), ref)
    except FirmwareError as exc:
        raise firmware_error(exc) from None
    snapshot = release_snapshot(release)
    commit_and_resync(db, services.keys, services.notifier, changed)
    return snapshot


# --- phones -------------------------------------------------------------------------------------


class DownloadSlots:
    """Bundle downloads in flight in this process. They last minutes, so they are kept out of
    the device API's in-flight cap (polls and reports must not wait behind them) and have a
    cap of their own: past it, 503 + Retry-After and the phone resumes later."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()  # taken in the thread pool, released on the event loop

    def take(self) -> bool:
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.count -= 1


def _download_slots(request: Request, services: Services) -> DownloadSlots:
    slots: DownloadSlots | None = getattr(request.app.state, "firmware_downloads", None)
    if slots is None:
        slots = DownloadSlots(services.settings.firmware_max_downloads)
        request.app.state.firmware_downloads = slots
    return slots


class _CountedFile(FileResponse):
    """A FileResponse that frees its download slot once the body is sent (or the phone
    went away)."""

    def __init__(self, slots: DownloadSlots, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


@device_router.get(
    "/firmware/{name}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the whole bundle"},
        206: {
            "content": {"application/octet-stream": {}},
            "description": "the part the Range asked for (resuming a download)",
        },
        416: {"description": "the Range lies beyond the bundle"},
    },
)
def download_bundle(
    name: str,
    request: Request,
    db: DbSession,
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
) -> FileResponse:
    """The bundle ``<sha256>.raucb`` this phone is asked to install (its config's
    ``firmware.url``). ``Range: bytes=N-`` with ``If-Range: <etag>`` resumes (206)."""
    device = authenticate_device(db, authorization)
    match = BUNDLE_NAME.match(name)
    not_offered = ApiError(404, "not_found", "no such firmware bundle for this device")
    if match is None:
        raise not_offered
    release = db.scalar(
        select(FirmwareRelease)
        .join(DeviceFirmware, DeviceFirmware.release_id == FirmwareRelease.id)
        .where(DeviceFirmware.device_id == device.id, FirmwareRelease.sha256 == match.group(1))
    )
    if release is None:
        raise not_offered
    path = bundle_path(services.settings, release)
    if not path.is_file():
        raise ApiError(404, "not_found", "the release's bundle file is missing on the server")
    slots = _download_slots(request, services)
    if not slots.take():
        raise ApiError(
            503,
            "overloaded",
            "too many firmware downloads in progress, retry later",
            {"Retry-After": str(services.settings.retry_after_s)},
        )
    return _CountedFile(
        slots,
        path,
        media_type="application/octet-stream",
        headers={"etag": f'"{release.sha256}"', "cache-control": "private, no-transform"},
    )
