"""Devices: live list, detail with effective settings, and device actions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.contract.config import ConfigError
from offhook.provisioning import audit
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import (
    AdminUser,
    Device,
    DeviceEvent,
    Group,
    Line,
)
from offhook.provisioning.operations import (
    TRANSPORTS,
    OperationError,
    add_device,
    add_line,
    approve_device,
    delete_device,
    delete_line,
    get_device,
    import_devices_csv,
    request_resync,
    set_device_status,
    update_device,
    update_line,
)
from offhook.provisioning.operations import NotFound as OperationNotFound
from offhook.provisioning.render import render_device
from offhook.provisioning.web import confirm
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done
from offhook.provisioning.web.core import (
    NotFound,
    Reader,
    WebRoute,
    not_seen_threshold,
    permitted,
    redirect,
    render,
)
from offhook.provisioning.web.queries import (
    device_rows,
    recent_cdrs,
    recent_quality,
    settable_defaults,
    settings_provenance,
)
from offhook.provisioning.web.sessions import add_flash, take_form
from offhook.provisioning.web.settings_form import (
    device_effective,
    save_section,
    scoped_change,
    settings_editor,
)
from offhook.provisioning.web.views import device_list
from offhook.provisioning.web.views.changes import apply_change, apply_setting_form

router = APIRouter(route_class=WebRoute)
# The list, its rows, CSV and bulk actions first: /devices/rows before /devices/{device_id}.
router.include_router(device_list.router)
DeviceWriter = Annotated[AdminUser, permitted("device.write")]
DeviceStatus = Annotated[AdminUser, permitted("device.status")]
DeviceResync = Annotated[AdminUser, permitted("device.resync")]
DeviceDeleter = Annotated[AdminUser, permitted("device.delete")]
DeviceSettings = Annotated[AdminUser, permitted("settings.device")]
LineWriter = Annotated[AdminUser, permitted("line.write")]
DEVICE_ACTIONS = {
    "approve": "approved",
    "reject": "rejected",
    "revoke": "revoked",
    "reset": "reset (it may enrol again)",
}


def _load(db: Session, device_id: str) -> Device:
    try:
        return get_device(db, device_id)
    except OperationNotFound:
        raise NotFound(f"No device {device_id!r}.") from None


MAX_IMPORT_BYTES = 2_000_000


@router.post("/devices")
def device_add(
    request: Request,
    admin: DeviceWriter,
    db: DbSession,
    mac: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    serial: Annotated[str, Form()] = "",
    group: Annotated[str, Form()] = "",
) -> Response:
    """Pre-register a phone: it is approved as soon as it enrols with a valid token."""
    try:
        device = add_device(
            db,
            actor_for(request, admin),
            mac,
            serial=serial.strip(),
            name=name.strip(),
            group=group or None,
        )
    except OperationError as exc:
        db.rollback()
        return done(request, "/devices", f"Device not added: {exc}", "error")
    db.commit()
    return done(request, f"/devices/{device.id}", f"Device {device.mac} pre-registered.")


@router.post("/devices/import")
def device_import(
    request: Request,
    admin: DeviceWriter,
    db: DbSession,
    csv_text: Annotated[str, Form()] = "",
    csv_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    text = csv_text
    if csv_file is not None and csv_file.filename:
        raw = csv_file.file.read(MAX_IMPORT_BYTES + 1)  # sync handler: runs in the threadpool
        if len(raw) > MAX_IMPORT_BYTES:
            return done(request, "/devices", "CSV file is larger than 2 MB.", "error")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return done(request, "/devices", "CSV file is not UTF-8 text.", "error")
    try:
        result = import_devices_csv(db, actor_for(request, admin), text)
    except OperationError as exc:
        db.rollback()
        return done(request, "/devices", f"Import refused: {exc}", "error")
    changed = list(result.updated)
    commit_and_resync(request, db, changed)
    response = done(
        request,
        "/devices",
        f"Imported: {len(result.created)} new, {len(result.updated)} updated, "
        f"{len(result.errors)} skipped.",
        "ok" if not result.errors else "info",
    )
    for problem in result.errors[:10]:
        add_flash(request, response, "error", problem)
    return response


@router.post("/devices/{device_id}/name")
def device_rename(
    request: Request,
    device_id: str,
    admin: DeviceWriter,
    db: DbSession,
    name: Annotated[str, Form()] = "",
) -> Response:
    device = _load(db, device_id)
    return _update(request, db, admin, device, "Name saved.", name=name.strip())


def _update(
    request: Request, db: Session, admin: AdminUser, device: Device, saved: str, **fields: Any
) -> Response:
    """A one-field edit of the device page; the flash says when nothing changed."""
    actor = actor_for(request, admin)
    return apply_change(
        request,
        db,
        f"/devices/{device.id}",
        lambda: update_device(db, actor, device.id, **fields),
        lambda changed: saved if changed else "No change.",
    )


@router.get("/devices/{device_id}")
def device_detail(
    request: Request,
    device_id: str,
    admin: Reader,
    db: DbSession,
) -> Response:
    return _detail(request, db, device_id)


def _detail(request: Request, db: Session, device_id: str) -> Response:
    device = _load(db, device_id)
    form = take_form(request, f"/devices/{device.id}")
    events = list(
        db.scalars(
            select(DeviceEvent)
            .where(DeviceEvent.device_id == device.id)
            .order_by(DeviceEvent.time.desc())
            .limit(10)
        )
    )
    row = device_rows(db, search=device.mac, stale_after=not_seen_threshold(request))
    rendered, render_error = _rendered_preview(request, db, device)
    return render(
        request,
        "device.html",
        {
            "title": device.name or device.mac,
            "section": "devices",
            "device": device,
            "row": row[0] if row else None,
            "settings": settings_provenance(db, device),
            "setting_keys": sorted(settable_defaults()),
            "cdrs": recent_cdrs(db, device.id),
            "quality": recent_quality(db, device.id),
            "events": events,
            "groups": list(db.scalars(select(Group).order_by(Group.name))),
            "form_error": form.get("error", ""),
            "form_key": form.get("key", ""),
            "form_value": form.get("value", ""),
            "line_error": form.get("line_error", ""),
            "line_id": form.get("line_id"),
            "delete_error": form.get("delete_error", ""),
            "rendered": rendered,
            "render_error": render_error,
            "transports": TRANSPORTS,
            **settings_editor(device.settings or {}, device_effective(db, device), form),
            "form_action": f"/devices/{device.id}/settings/section",
            "section_error": form.get("section_error", ""),
            "section_name": form.get("section_name", ""),
        },
    )


def _rendered_preview(request: Request, db: Session, device: Device) -> tuple[str, str]:
    """(the config the phone would receive, SIP passwords masked; or the reason it is invalid)."""
    try:
        result = render_device(db, device, request.app.state.services.keys)
    except ConfigError as exc:
        return "", str(exc)
    return json.dumps(audit.mask_secrets(json.loads(result.body)), indent=2, sort_keys=True), ""


@router.post("/devices/{device_id}/status")
def device_status(
    request: Request,
    device_id: str,
    action: Annotated[str, Form()],
    admin: DeviceStatus,
    db: DbSession,
    back: Annotated[str, Form()] = "",
    group: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    """Approve (optionally naming it and putting it straight into a group), reject, revoke or
    reset a device."""
    device = _load(db, device_id)
    target = "/approvals" if back == "approvals" else f"/devices/{device.id}"
    if action not in DEVICE_ACTIONS:
        return done(request, target, f"Unknown action {action!r}.", "error")
    actor = actor_for(request, admin)
    changed: list[str] = []
    try:
        if action == "approve":
            _device, changed = approve_device(db, actor, device.id, name=name, group=group)
        else:
            set_device_status(db, actor, device.id, action)
    except OperationError as exc:
        db.rollback()
        return done(request, target, str(exc), "error")
    commit_and_resync(request, db, changed)
    label = device.name or device.mac
    where = f" into {device.group.name}" if group and device.group else ""
    return done(request, target, f"Device {label} {DEVICE_ACTIONS[action]}{where}.")


@router.post("/devices/{device_id}/resync")
def device_resync(
    request: Request,
    device_id: str,
    admin: DeviceResync,
    db: DbSession,
) -> Response:
    device = _load(db, device_id)
    ids = request_resync(db, actor_for(request, admin), devices=[device.id])  # audited there
    queued = commit_and_resync(request, db, ids)
    if queued:
        message = "Resync requested: the phone was notified and will fetch its config now."
        return done(request, f"/devices/{device.id}", message)
    message = (
        "Resync noted, but the phone has no reachable contact yet; it updates on its next poll."
    )
    return done(request, f"/devices/{device.id}", message, "info")


@router.post("/devices/{device_id}/group")
def device_group(
    request: Request,
    device_id: str,
    admin: DeviceWriter,
    db: DbSession,
    group: Annotated[str, Form()] = "",
) -> Response:
    device = _load(db, device_id)
    return _update(
        request, db, admin, device, "Group changed.", group=group or None, clear_group=not group
    )


@router.post("/devices/{device_id}/settings")
def device_setting(
    request: Request,
    device_id: str,
    admin: DeviceSettings,
    db: DbSession,
    key: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    unset: Annotated[str, Form()] = "",
) -> Response:
    device = _load(db, device_id)
    what = f"{unset} now inherited" if unset else f"{key} set"
    return apply_setting_form(
        request,
        db,
        admin,
        "device",
        device.id,
        f"/devices/{device.id}",
        lambda changed: f"{what}." if changed else "No change.",
        key=key,
        value=value,
        unset=unset,
    )


@router.post("/devices/{device_id}/settings/section")
async def device_setting_section(
    request: Request, device_id: str, admin: DeviceSettings, db: DbSession
) -> Response:
    """One section of the generated settings editor (services.setting_fields)."""
    device = _load(db, device_id)
    form = {k: str(v) for k, v in (await request.form()).items()}
    apply = scoped_change(request, db, admin, "device", device.id)
    return save_section(
        request, db, admin, f"/devices/{device.id}", form, device.settings or {}, apply
    )


@router.post("/devices/{device_id}/lines")
def line_add(
    request: Request,
    device_id: str,
    admin: LineWriter,
    db: DbSession,
    extension: Annotated[str, Form()] = "",
    registrar: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    transport: Annotated[str, Form()] = "udp",
) -> Response:
    device = _load(db, device_id)
    try:
        _line, changed = add_line(
            db,
            request.app.state.services.keys,
            actor_for(request, admin),
            device.id,
            extension=extension.strip(),
            registrar=registrar.strip(),
            password=password,
            display_name=display_name.strip(),
            transport=transport,
        )
    except OperationError as exc:
        db.rollback()
        return done(request, f"/devices/{device.id}#lines", f"Line not added: {exc}", "error")
    commit_and_resync(request, db, changed)
    return done(request, f"/devices/{device.id}#lines", f"Line {extension.strip()} added.")


def _line(db: Session, device: Device, line_id: int) -> Line:
    line = db.get(Line, line_id)
    if line is None or line.device_id != device.id:
        raise NotFound(f"No line {line_id} on this device.")
    return line


@router.get("/devices/{device_id}/lines/{line_id}/delete")
def line_delete_confirm(
    request: Request, device_id: str, line_id: int, admin: LineWriter, db: DbSession
) -> Response:
    device = _load(db, device_id)
    return confirm.show(
        request, confirm.line_removal(device, _line(db, device, line_id)), "devices"
    )


@router.post("/devices/{device_id}/lines/{line_id}/delete")
def line_delete(
    request: Request,
    device_id: str,
    line_id: int,
    admin: LineWriter,
    db: DbSession,
    confirmation: Annotated[str, Form(alias="confirm")] = "",
) -> Response:
    device = _load(db, device_id)
    line = _line(db, device, line_id)
    if not confirm.confirmed(confirmation):
        return redirect(f"/devices/{device.id}/lines/{line.id}/delete")
    changed = delete_line(db, actor_for(request, admin), line.id)
    commit_and_resync(request, db, changed)
    return done(request, f"/devices/{device.id}#lines", "Line removed.")


@router.post("/devices/{device_id}/lines/{line_id}")
def line_edit(
    request: Request,
    device_id: str,
    line_id: int,
    admin: LineWriter,
    db: DbSession,
    extension: Annotated[str, Form()] = "",
    registrar: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    transport: Annotated[str, Form()] = "udp",
    password: Annotated[str, Form()] = "",
    clear_password: Annotated[str, Form()] = "",
) -> Response:
    """Edit a line. The password field starts empty: left empty it keeps the stored password
    (never sent to the browser); ``clear_password`` removes it."""
    device = _load(db, device_id)
    line = db.get(Line, line_id)
    if line is None or line.device_id != device.id:
        raise NotFound(f"No line {line_id} on this device.")
    new_password = "" if clear_password else (password or None)
    try:
        changed = update_line(
            db,
            request.app.state.services.keys,
            actor_for(request, admin),
            line.id,
            extension=extension.strip(),
            registrar=registrar.strip(),
            display_name=display_name.strip(),
            transport=transport,
            password=new_password,
        )
    except OperationError as exc:
        db.rollback()
        form: dict[str, str | int] = {"line_error": f"Line not saved: {exc}", "line_id": line_id}
        return back_with_form(request, f"/devices/{device.id}#lines", form)
    commit_and_resync(request, db, changed)
    return done(request, f"/devices/{device.id}#lines", f"Line {extension.strip()} saved.")


@router.post("/devices/{device_id}/delete")
def device_delete(
    request: Request,
    device_id: str,
    admin: DeviceDeleter,
    db: DbSession,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Delete a device and everything stored about it (lines, reports, calls). Admins only, and
    only with its MAC typed again: there is no undo."""
    device = _load(db, device_id)
    if confirm.strip().lower() != device.mac.lower():
        form = {"delete_error": f"To delete, type the MAC {device.mac} in the confirmation box."}
        return back_with_form(request, f"/devices/{device.id}#delete", form)
    label = device.name or device.mac
    delete_device(db, actor_for(request, admin), device.id)
    db.commit()
    return done(request, "/devices", f"Device {label} deleted.")
