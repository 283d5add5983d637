"""Device API per docs/provisioning-protocol.md: enrol, config with ETag, idempotent reports."""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from offhook.contract.logs import kv
from offhook.provisioning import alert_engine, audit
from offhook.provisioning.api import replies
from offhook.provisioning.api.bodies import Count32, RequestBody, error_responses
from offhook.provisioning.api.config_path import config_reply
from offhook.provisioning.auth import (
    authenticate_device,
    check_serial,
    new_device_secret,
    normalise_mac,
    secret_digest,
)
from offhook.provisioning.crypto import sha256_hex
from offhook.provisioning.db import rowcount
from offhook.provisioning.deps import DbSession, Services, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import (
    DEVICE_PENDING,
    DEVICE_REJECTED,
    DEVICE_REVOKED,
    CallRecordRow,
    Device,
    DeviceEvent,
    EnrollmentToken,
    QualityRecord,
    StatusReport,
    utcnow,
)
from offhook.provisioning.rollouts import record_event, record_status
from offhook.provisioning.services.actors import commit_and_resync
from offhook.provisioning.settings import MAX_POLL_INTERVAL_S, MIN_POLL_INTERVAL_S

log = logging.getLogger(__name__)
router = APIRouter(tags=["device"], responses=error_responses(401, 403, 409, 413, 422, 503))

MAX_RECORDS = 1000
MAX_LINES = 32  # line status entries in one report (a phone has a handful of accounts)
RecordId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class _Body(RequestBody):
    model_config = ConfigDict(extra="ignore")


class EnrollRequest(_Body):
    mac: str
    serial: str
    model: Annotated[str, Field(max_length=64)] = ""
    firmware_version: Annotated[str, Field(max_length=64)] = ""
    enrollment_token: Annotated[str, Field(max_length=256)] = ""
    nonce: Annotated[str, Field(min_length=16, max_length=128)]

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        return normalise_mac(value)

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: str) -> str:
        return check_serial(value)


class LineStatus(_Body):
    account: Annotated[int, Field(ge=0, le=MAX_LINES)] = 0
    user: Annotated[str, Field(max_length=64)] = ""
    registered: bool = False
    status: Annotated[int, Field(ge=0, le=999)] = 0


class FirmwareStatus(_Body):
    """The update agent's view (docs/updates.md); ``compatible`` is the phone's RAUC board."""

    compatible: Annotated[str, Field(max_length=128)] = ""
    state: Annotated[str, Field(max_length=16)] = ""
    target: Annotated[str, Field(max_length=64)] = ""
    rollout: Annotated[str, Field(max_length=64)] = ""
    slot: Annotated[str, Field(max_length=8)] = ""
    progress_pct: Annotated[int, Field(ge=0, le=100)] = 0


class StatusBody(_Body):
    id: RecordId
    time: datetime
    firmware_version: Annotated[str, Field(max_length=64)] = ""
    ip: Annotated[str, Field(max_length=64)] = ""
    uptime_s: float = 0.0
    config_revision: Count32 | None = None
    sip_contact: Annotated[str, Field(max_length=128)] = ""
    poll_interval_s: Annotated[
        int | None, Field(ge=MIN_POLL_INTERVAL_S, le=MAX_POLL_INTERVAL_S)
    ] = None
    lines: Annotated[list[LineStatus], Field(max_length=MAX_LINES)] = Field(default_factory=list)
    firmware: FirmwareStatus | None = None


class CallRecordBody(_Body):
    id: RecordId
    direction: Literal["outgoing", "incoming"]
    account: Annotated[int, Field(ge=0, le=MAX_LINES)] = 0
    local_uri: Annotated[str, Field(max_length=255)] = ""
    remote_uri: Annotated[str, Field(max_length=255)] = ""
    remote_name: Annotated[str, Field(max_length=255)] = ""
    start: float
    answer: float | None = None
    end: float
    disposition: Literal["answered", "no_answer", "busy", "failed", "rejected", "missed"]
    status_code: Annotated[int, Field(ge=0, le=999)] = 0
    # Firmware before the call analytics sends no Call-ID: its records are kept, never joined.
    sip_call_id: Annotated[str, Field(max_length=128)] = ""


class QualityBody(_Body):
    id: RecordId
    call_record_id: Annotated[str, Field(max_length=64)] = ""
    time: datetime
    codec: Annotated[str, Field(max_length=32)] = ""
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rtt_ms: float = 0.0
    mos: Annotated[float, Field(ge=0, le=5)] = 0.0


class EventBody(_Body):
    id: RecordId
    time: datetime
    type: Literal[
        "config_rejected",
        "config_rolled_back",
        "config_applied",
        "firmware_downloading",
        "firmware_installed",
        "firmware_rebooting",
        "firmware_running",
        "firmware_failed",
        "firmware_rolled_back",
    ]
    config_revision: Count32 | None = None
    detail: Annotated[str, Field(max_length=4000)] = ""
    # firmware_* events (docs/updates.md): the update they are about and why one failed.
    firmware_version: Annotated[str, Field(max_length=64)] = ""
    from_version: Annotated[str, Field(max_length=64)] = ""
    rollout: Annotated[str, Field(max_length=64)] = ""
    slot: Annotated[str, Field(max_length=8)] = ""
    reason: Annotated[str, Field(max_length=32)] = ""


class CdrBatch(_Body):
    records: Annotated[list[CallRecordBody], Field(max_length=MAX_RECORDS)]


class QualityBatch(_Body):
    records: Annotated[list[QualityBody], Field(max_length=MAX_RECORDS)]


class EventBatch(_Body):
    records: Annotated[list[EventBody], Field(max_length=MAX_RECORDS)]


class Accepted(BaseModel):
    accepted: list[str]


def current_device(db: DbSession, authorization: Annotated[str, Header()] = "") -> Device:
    return authenticate_device(db, authorization)


CurrentDevice = Annotated[Device, Depends(current_device)]


# --- enrollment ---------------------------------------------------------------------------------


def _usable_token(db: Session, plain: str, device: Device | None) -> EnrollmentToken:
    bad = ApiError(403, "bad_token", "invalid, expired or exhausted enrollment token")
    if not plain:
        raise bad
    token = db.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == sha256_hex(plain))
    )
    if token is None or token.revoked or token.expires_at <= utcnow():
        raise bad
    already_counted = device is not None and device.enrollment_token_id == token.id
    if token.uses >= token.max_uses and not already_counted:
        raise bad
    return token


def _consume(db: Session, token: EnrollmentToken) -> None:
    """Count one use atomically: concurrent enrolments cannot exceed max_uses."""
    result = db.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == token.id, EnrollmentToken.uses < EnrollmentToken.max_uses)
        .values(uses=EnrollmentToken.uses + 1)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise ApiError(403, "bad_token", "invalid, expired or exhausted enrollment token")


def nonce_digest(nonce: str) -> str:
    """What is stored of an enrollment nonce: its SHA-256, like the secret itself. The nonce
    lets a phone fetch its secret again after a lost response, so it is a credential."""
    return sha256_hex("enroll-nonce:" + nonce)


def _issue_secret(services: Services, device: Device, nonce: str) -> dict[str, str]:
    secret = new_device_secret()
    device.secret_hash = secret_digest(secret)
    device.secret_enc = services.keys.encrypt(secret, "devices.secret")
    device.enroll_nonce = nonce_digest(nonce)
    device.enrolled_at = utcnow()
    return {"status": "approved", "device_id": device.id, "secret": secret}


def _refuse_enrollment(
    db: Session, device: Device, ip: str, code: str, detail: str, reported: dict[str, str]
) -> ApiError:
    """Audit a refused enrolment of a known device (who tried what), then the error to raise."""
    audit.record(
        db,
        f"device:{device.mac}",
        "device.enroll_refused",
        "device",
        device.id,
        None,
        {"reason": code, **reported},
        ip,
    )
    db.commit()  # the refusal is raised: the request's own commit would roll it back
    log.warning("enrollment refused", extra=kv(device=device.id, mac=device.mac, reason=code))
    return ApiError(409 if code == "already_enrolled" else 403, code, detail)


@router.post(
    "/enroll",
    response_model=replies.EnrollReply,
    response_model_exclude_none=True,
    responses={
        202: {"model": replies.EnrollReply, "description": "pending approval"},
        403: {},
        409: {},
        422: {},
    },
)
def enroll(
    body: EnrollRequest,
    request: Request,
    response: Response,
    db: DbSession,
    services: ServicesDep,
) -> dict[str, str]:
    response.headers["Cache-Control"] = "no-store"  # the approved answer carries the secret
    device = db.scalar(select(Device).where(Device.mac == body.mac))
    token = _usable_token(db, body.enrollment_token, device)
    ip = request.client.host if request.client else ""

    if device is None:
        device = Device(
            mac=body.mac,
            serial=body.serial,
            model=body.model,
            firmware_version=body.firmware_version,
            status=DEVICE_PENDING,
            enrollment_token_id=token.id,
            last_ip=ip,
        )
        _consume(db, token)
        db.add(device)
        try:
            db.flush()
        except IntegrityError:  # the same MAC enrolling twice at once: the other one won
            db.rollback()
            raise ApiError(409, "conflict", "enrollment already in progress, retry") from None
        audit.record(
            db,
            f"device:{body.mac}",
            "device.enroll_request",
            "device",
            device.id,
            after=audit.device_snapshot(device),
            ip=ip,
        )
        log.info("enrollment queued", extra=kv(mac=body.mac, device=device.id))

    if device.status == DEVICE_REJECTED:
        raise ApiError(403, "rejected", "enrollment rejected by an administrator")
    if device.status == DEVICE_REVOKED:
        raise ApiError(403, "revoked", "this device has been revoked")
    if device.status == DEVICE_PENDING:
        response.status_code = 202
        response.headers["Retry-After"] = str(services.settings.enroll_retry_after_s)
        return {"status": "pending"}

    reported = {"serial": body.serial, "model": body.model}
    # Approved (by an admin, or pre-registered). A serial the admin registered must match (a
    # MAC alone is easy to copy), and so must the serial of the enrolment a nonce replays.
    check_serial = device.pre_registered or device.secret_hash is not None
    if check_serial and device.serial and not hmac.compare_digest(device.serial, body.serial):
        raise _refuse_enrollment(
            db,
            device,
            ip,
            "serial_mismatch",
            "the serial number does not match the one registered for this MAC",
            reported,
        )
    if device.secret_hash is not None:
        # A retry after a lost response: the same nonce gets the same secret back, and changes
        # nothing (a replay must not rewrite the device's identity).
        if device.enroll_nonce and hmac.compare_digest(
            device.enroll_nonce, nonce_digest(body.nonce)
        ):
            secret = services.keys.decrypt(device.secret_enc or "", "devices.secret")
            return {"status": "approved", "device_id": device.id, "secret": secret}
        raise _refuse_enrollment(
            db,
            device,
            ip,
            "already_enrolled",
            "device already enrolled; an admin must reset it",
            reported,
        )
    if device.enrollment_token_id != token.id:
        _consume(db, token)  # a pre-registered device claimed with this token
        device.enrollment_token_id = token.id
    before = audit.device_snapshot(device)
    device.serial = body.serial or device.serial
    device.model = body.model or device.model
    device.firmware_version = body.firmware_version or device.firmware_version
    result = _issue_secret(services, device, body.nonce)
    audit.record(
        db,
        f"device:{device.mac}",
        "device.enrolled",
        "device",
        device.id,
        before,
        audit.device_snapshot(device),
        ip,
    )
    log.info("device enrolled", extra=kv(device=device.id, mac=device.mac))
    return result


# --- configuration ------------------------------------------------------------------------------


@router.get(
    "/config",
    responses={
        200: {"model": replies.DeviceConfig, "description": "the rendered config"},
        304: {},
        401: {},
        403: {},
        503: {},
    },
)
async def get_config(
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
    if_none_match: Annotated[str, Header()] = "",
) -> Response:
    """The device's rendered config (ETag / If-None-Match -> 304). Served by
    provisioning.api.config_path.ConfigFastPath ahead of routing; same logic here."""
    status, headers, body = await config_reply(services, authorization, if_none_match)
    return Response(body, status_code=status, headers=headers)


# --- reports ------------------------------------------------------------------------------------


def _store_idempotent(
    db: Session,
    device: Device,
    model: type[StatusReport] | type[CallRecordRow] | type[QualityRecord] | type[DeviceEvent],
    rows: list[dict[str, Any]],
) -> list[str]:
    """Insert the records whose ids are new; return every id now held for this device."""
    ids = [r["id"] for r in rows]
    for attempt in range(2):
        existing = dict(
            db.execute(select(model.id, model.device_id).where(model.id.in_(ids))).all()
        )
        fresh = {r["id"]: r for r in rows if r["id"] not in existing}
        try:
            with db.begin_nested():
                for row in fresh.values():
                    db.add(model(device_id=device.id, **row))
            break
        except IntegrityError:  # a concurrent retry of the same batch stored them first
            if attempt:
                raise
    existing = dict(db.execute(select(model.id, model.device_id).where(model.id.in_(ids))).all())
    return [i for i in dict.fromkeys(ids) if existing.get(i) == device.id]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.post("/status", response_model=Accepted)
def post_status(
    body: StatusBody,
    request: Request,
    device: CurrentDevice,
    db: DbSession,
    services: ServicesDep,
) -> Accepted:
    # poll_interval_s and firmware are held on the device, not per report
    row = body.model_dump(exclude={"poll_interval_s", "firmware"})
    # A phone's clock can be wrong: a report dated in the future would hold last_seen there
    # and every later report would look older than it. Server time is the ceiling.
    row["time"] = min(_utc(body.time), utcnow())
    row["lines"] = [line.model_dump() for line in body.lines]
    accepted = _store_idempotent(db, device, StatusReport, [row])
    if device.last_seen is None or row["time"] >= device.last_seen:
        device.last_seen = row["time"]
        device.firmware_version = body.firmware_version or device.firmware_version
        device.last_ip = body.ip or (request.client.host if request.client else "")
        device.sip_contact = body.sip_contact
        device.reported_revision = body.config_revision
        if body.poll_interval_s is not None:
            device.poll_interval_s = body.poll_interval_s
        compatible = body.firmware.compatible if body.firmware is not None else ""
        admitted = record_status(db, device, body.firmware_version, compatible)
        alerts = alert_engine.after_status(db, services.settings, device)
        commit_and_resync(db, services.keys, services.notifier, admitted)
        services.alert_wakeup.after(alerts)
    return Accepted(accepted=accepted)


@router.post("/cdrs", response_model=Accepted)
def post_cdrs(body: CdrBatch, device: CurrentDevice, db: DbSession) -> Accepted:
    rows = [r.model_dump() for r in body.records]
    return Accepted(accepted=_store_idempotent(db, device, CallRecordRow, rows))


@router.post("/quality", response_model=Accepted)
def post_quality(
    body: QualityBatch, device: CurrentDevice, db: DbSession, services: ServicesDep
) -> Accepted:
    rows = [{**r.model_dump(), "time": _utc(r.time)} for r in body.records]
    accepted = _store_idempotent(db, device, QualityRecord, rows)
    alerts = alert_engine.after_quality(db, services.settings, device)
    db.commit()  # before the sender is woken: it must find what this report queued
    services.alert_wakeup.after(alerts)
    return Accepted(accepted=accepted)


FIRMWARE_FIELDS = ("firmware_version", "from_version", "rollout", "slot", "reason")


def _event_row(r: EventBody) -> dict[str, Any]:
    row = {**r.model_dump(exclude=set(FIRMWARE_FIELDS)), "time": _utc(r.time)}
    if r.type.startswith("firmware_"):  # the update's facts, kept with the event's text
        facts = " ".join(f"{k}={getattr(r, k)}" for k in FIRMWARE_FIELDS if getattr(r, k))
        row["detail"] = f"{facts}: {r.detail}"[:4000] if r.detail else facts
    return row


@router.post("/events", response_model=Accepted)
def post_events(
    body: EventBatch, device: CurrentDevice, db: DbSession, services: ServicesDep
) -> Accepted:
    rows = [_event_row(r) for r in body.records]
    ids = [r.id for r in body.records]
    held = set(db.scalars(select(DeviceEvent.id).where(DeviceEvent.id.in_(ids))))
    accepted = _store_idempotent(db, device, DeviceEvent, rows)
    # Only events new to the server move the update state: a re-sent batch must not take a
    # phone back to an earlier step.
    admitted: list[str] = []
    for r in sorted(body.records, key=lambda r: _utc(r.time)):
        if r.type.startswith("firmware_") and r.id not in held and r.id in accepted:
            admitted += record_event(db, device, r.type, r.firmware_version, r.reason, r.detail)
    alerts = alert_engine.after_events(db, services.settings, device)
    commit_and_resync(db, services.keys, services.notifier, admitted)
    services.alert_wakeup.after(alerts)
    for r in body.records:
        if r.type in ("firmware_failed", "firmware_rolled_back"):
            log.warning(
                "device firmware update failed",
                extra=kv(
                    device=device.id,
                    type=r.type,
                    version=r.firmware_version,
                    reason=r.reason,
                    detail=r.detail,
                ),
            )
        elif r.type.startswith("config_") and r.type != "config_applied":
            log.warning(
                "device config event",
                extra=kv(
                    device=device.id, type=r.type, revision=r.config_revision, detail=r.detail
                ),
            )
    return Accepted(accepted=accepted)
