"""Admin REST API (/api/v1/admin). Bearer API token or the web UI session.

Each route names its action from ``provisioning.permissions.PERMISSIONS`` (the one table of who
may do what, shared with the web UI): e.g. read-only may GET, operators change devices, lines,
groups and device/group settings, admins also fleet defaults, device deletion, privacy requests
and admin users. A role below the action's gets 403.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.contract.config import ConfigError
from offhook.provisioning import audit, operations, privacy, retention
from offhook.provisioning.admin_auth import (
    AdminError,
    client_ip,
    issue_api_token,
    list_api_tokens,
    require_allowed,
    require_permission,
    revoke_api_token,
    token_snapshot,
)
from offhook.provisioning.api import replies
from offhook.provisioning.api.bodies import (
    INT32_MAX,
    Count32,
    Id32,
    RequestBody,
    error_responses,
)
from offhook.provisioning.deps import DbSession, Services, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import (
    AdminUser,
    AuditEntry,
    CallRecordRow,
    Device,
    DeviceEvent,
    EnrollmentToken,
    Group,
    Line,
    QualityRecord,
    StatusReport,
    Template,
)
from offhook.provisioning.operations import Actor, OperationError
from offhook.provisioning.render import fleet_defaults, render_device
from offhook.provisioning.services import setting_fields
from offhook.provisioning.services.actors import admin_actor, commit_and_resync
from offhook.provisioning.services.admin_users import (
    change_admin_role,
    change_admin_state,
    create_admin_user,
    list_admin_users,
    reset_admin_password,
)
from offhook.provisioning.services.device_bulk import BulkRefused, run_bulk
from offhook.provisioning.services.device_list import (
    SORTS,
    DeviceFilter,
    devices_csv,
    find_devices,
    parse_filter,
)
from offhook.provisioning.services.group_tree import GroupNode, group_tree

router = APIRouter(tags=["admin"], responses=error_responses(401, 403, 404, 409, 413, 422, 503))

# The caller, once its role may do the action (provisioning.permissions).
Reader = Annotated[AdminUser, Depends(require_permission("fleet.read"))]
DeviceWriter = Annotated[AdminUser, Depends(require_permission("device.write"))]
DeviceStatus = Annotated[AdminUser, Depends(require_permission("device.status"))]
DeviceResync = Annotated[AdminUser, Depends(require_permission("device.resync"))]
DeviceDeleter = Annotated[AdminUser, Depends(require_permission("device.delete"))]
LineWriter = Annotated[AdminUser, Depends(require_permission("line.write"))]
GroupWriter = Annotated[AdminUser, Depends(require_permission("group.write"))]
TemplateWriter = Annotated[AdminUser, Depends(require_permission("template.write"))]
FleetSettings = Annotated[AdminUser, Depends(require_permission("settings.fleet"))]
TokenWriter = Annotated[AdminUser, Depends(require_permission("enrollment_token.write"))]
PrivacyExport = Annotated[AdminUser, Depends(require_permission("privacy.export"))]
PrivacyErase = Annotated[AdminUser, Depends(require_permission("privacy.erase"))]
Purger = Annotated[AdminUser, Depends(require_permission("retention.purge"))]
UserManager = Annotated[AdminUser, Depends(require_permission("admin_user.manage"))]
TokenOwner = Annotated[AdminUser, Depends(require_permission("api_token.own"))]
# The scoped settings routes check settings.<scope> themselves (one handler per scope).
SCOPED_SETTINGS = {
    "group": Depends(require_permission("settings.group")),
    "device": Depends(require_permission("settings.device")),
}
NO_STORE = {"cache-control": "no-store"}  # answers carrying a secret shown once
Limit = Annotated[int, Query(ge=1, le=5000)]


def _actor(user: AdminUser, request: Request) -> Actor:
    return admin_actor(user, client_ip(request))


def _fail(exc: OperationError | AdminError) -> ApiError:
    status = getattr(exc, "status", 422)
    code = {404: "not_found", 409: "conflict"}.get(status, "invalid")
    return ApiError(status, code, str(exc))


@contextmanager
def _api_errors(
    kind: type[OperationError] | type[AdminError] = OperationError,
) -> Iterator[None]:
    """A refusal (``kind``) raised in the block becomes the API's error reply."""
    try:
        yield
    except kind as exc:
        raise _fail(exc) from None


def _commit_and_resync(db: Session, services: Services, device_ids: list[str]) -> int:
    return commit_and_resync(db, services.keys, services.notifier, device_ids)


_Row = TypeVar("_Row")


def _require(row: _Row | None, what: str) -> _Row:
    """A row this request has just written: missing only if a concurrent request deleted it."""
    if row is None:
        raise ApiError(404, "not_found", f"{what} no longer exists")
    return row


def _device_out(d: Device) -> dict[str, Any]:
    """The audit snapshot plus what the phone last reported."""
    return {
        **audit.device_snapshot(d),
        "reported_revision": d.reported_revision,
        "firmware_version": d.firmware_version,
        "last_ip": d.last_ip,
        "sip_contact": d.sip_contact,
        "poll_interval_s": d.poll_interval_s,
        "last_seen": d.last_seen.isoformat() if d.last_seen else None,
        "created_at": d.created_at.isoformat(),
    }


def _row(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        c.key: (v.isoformat() if hasattr(v, "isoformat") else v)
        for c in obj.__table__.columns
        if c.key not in skip
        for v in [getattr(obj, c.key)]
    }


# --- bodies -------------------------------------------------------------------------------------

# Text sizes as the columns hold them (PostgreSQL refuses longer ones; the API says so first).
Short = Annotated[str, Field(max_length=64)]
Name = Annotated[str, Field(max_length=128)]
Host = Annotated[str, Field(max_length=255)]
Long = Annotated[str, Field(max_length=4000)]
Ref = Name | Annotated[int, Field(ge=0, le=INT32_MAX)]  # a group or template: id or name


class DeviceCreate(RequestBody):
    mac: Short
    serial: Short = ""
    model: Short = ""
    name: Name = ""
    group: Ref | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class DeviceUpdate(RequestBody):
    name: Name | None = None
    serial: Short | None = None
    model: Short | None = None
    group: Ref | None = None
    clear_group: bool = False


class BulkRequest(RequestBody):
    action: Literal["approve", "reject", "revoke", "reset", "move", "resync", "delete"]
    device_ids: Annotated[list[Short], Field(min_length=1, max_length=5000)]
    group: Ref | None = Field(None, description="move: the group (none: out of any group)")


class Approval(RequestBody):
    name: Name | None = None
    group: Ref | None = None


class SettingsChange(RequestBody):
    """``set``: dotted keys -> values (``{"audio.tone_plan": "uk"}``); ``unset``: dotted keys;
    ``replace``: the whole partial config (applied first)."""

    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[Name] = Field(default_factory=list)
    replace: dict[str, Any] | None = None


class GroupCreate(RequestBody):
    name: Name
    kind: Literal["site", "group"] = "group"
    parent: Ref | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class GroupUpdate(RequestBody):
    name: Name | None = None
    parent: Ref | None = None
    clear_parent: bool = False


class TemplateCreate(RequestBody):
    name: Name
    description: Long = ""
    settings: dict[str, Any] = Field(default_factory=dict)


class TemplateUpdate(RequestBody):
    description: Long | None = None
    settings: dict[str, Any] | None = None


class LineCreate(RequestBody):
    extension: Short
    registrar: Host
    password: Host = ""
    display_name: Name = ""
    auth_user: Short = ""
    transport: Literal["udp", "tcp", "tls"] = "udp"
    outbound_proxy: Host = ""
    position: Count32 | None = None


class LineUpdate(RequestBody):
    extension: Short | None = None
    registrar: Host | None = None
    password: Host | None = None
    display_name: Name | None = None
    auth_user: Short | None = None
    transport: Literal["udp", "tcp", "tls"] | None = None
    outbound_proxy: Host | None = None
    enabled: bool | None = None


class TokenCreate(RequestBody):
    name: Name = ""
    ttl_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24 * 7
    max_uses: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class ResyncRequest(RequestBody):
    device_ids: list[Short] = Field(default_factory=list)
    group: Ref | None = None
    all: bool = False


class Subject(RequestBody):
    device: Short | None = None
    extension: Short | None = None


class AdminCreate(RequestBody):
    username: Short
    password: Annotated[str, Field(max_length=1024)]
    role: Literal["admin", "operator", "read-only"] = "read-only"


class RoleChange(RequestBody):
    role: Literal["admin", "operator", "read-only"]


class PasswordReset(RequestBody):
    password: Annotated[str, Field(max_length=1024)]


class ApiTokenCreate(RequestBody):
    name: Name = ""
    ttl_days: Annotated[float | None, Field(gt=0, le=3650)] = None


# --- devices ------------------------------------------------------------------------------------


def _device_filter(
    db: Session,
    q: str,
    status: str | None,
    group: str | None,
    subgroups: bool,
    firmware: str,
    sort: str,
) -> DeviceFilter:
    with _api_errors():
        return parse_filter(
            q=q,
            status=status or "",
            group=group,
            subgroups=subgroups,
            firmware=firmware,
            sort=sort,
            db=db,
        )


SortParam = Annotated[
    str,
    Query(
        max_length=16,
        description=f"one of {', '.join(SORTS)}; prefix - for descending (default: created)",
    ),
]
SearchParam = Annotated[
    str, Query(max_length=128, description="name, MAC, serial, last IP or a line's extension")
]


@router.get("/devices", response_model=list[replies.DeviceOut])
def list_devices(
    db: DbSession,
    _user: Reader,
    status: str | None = None,
    group: str | None = None,
    q: SearchParam = "",
    subgroups: bool = False,
    firmware: Annotated[str, Query(max_length=64)] = "",
    sort: SortParam = "created",
    limit: Limit = 500,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> list[dict[str, Any]]:
    """The device list of the web UI: search ``q``, filters that combine, ``sort``."""
    wanted = _device_filter(db, q, status, group, subgroups, firmware, sort)
    return [_device_out(d) for d in find_devices(db, wanted, limit=limit, offset=offset)]


@router.get(
    "/devices/export",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the devices as CSV"}},
)
def export_devices(
    db: DbSession,
    _user: Reader,
    status: str | None = None,
    group: str | None = None,
    q: SearchParam = "",
    subgroups: bool = False,
    firmware: Annotated[str, Query(max_length=64)] = "",
    sort: SortParam = "name",
) -> PlainTextResponse:
    """Every device the filters select, as CSV (the web UI's "Export these as CSV")."""
    wanted = _device_filter(db, q, status, group, subgroups, firmware, sort)
    return PlainTextResponse(
        devices_csv(db, find_devices(db, wanted, limit=1_000_000)),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="devices.csv"'},
    )


@router.post("/devices/bulk", response_model=replies.BulkOut)
def bulk_devices(
    body: BulkRequest,
    request: Request,
    db: DbSession,
    user: Reader,
    services: ServicesDep,
) -> dict[str, Any]:
    """One action on many devices; each needs the single action's role (approve: operator,
    delete: admin). Devices it does not fit are listed in ``skipped``, the rest change."""
    with _api_errors():
        try:
            result = run_bulk(
                db, _actor(user, request), body.action, body.device_ids, user=user, group=body.group
            )
        except BulkRefused as exc:
            raise ApiError(403, "forbidden", str(exc)) from None
    notified = _commit_and_resync(db, services, result.changed)
    return {
        "action": result.action,
        "done": len(result.done),
        "device_ids": result.done,
        "skipped": [{"device": label, "reason": why} for label, why in result.skipped],
        "notified": notified,
    }


@router.post("/devices", status_code=201, response_model=replies.DeviceOut)
def create_device(
    body: DeviceCreate, request: Request, db: DbSession, user: DeviceWriter
) -> dict[str, Any]:
    with _api_errors():
        device = operations.add_device(
            db,
            _actor(user, request),
            body.mac,
            serial=body.serial,
            model=body.model,
            name=body.name,
            group=body.group,
            settings=body.settings,
        )
    return _device_out(device)


@router.post("/devices/import", response_model=replies.ImportOut)
def import_devices(
    request: Request,
    db: DbSession,
    user: DeviceWriter,
    services: ServicesDep,
    csv_text: Annotated[str, Body(media_type="text/csv")],
) -> dict[str, Any]:
    """CSV with header: mac, serial, model, name, group (only mac required). Phones whose
    config an update changed are told to resync, as in the web UI and the CLI."""
    with _api_errors():
        result = operations.import_devices_csv(db, _actor(user, request), csv_text)
    _commit_and_resync(db, services, result.updated)
    return {"created": len(result.created), "updated": len(result.updated), "errors": result.errors}


@router.get("/devices/{ref}", response_model=replies.DeviceDetail)
def read_device(ref: str, db: DbSession, _user: Reader) -> dict[str, Any]:
    with _api_errors():
        device = operations.get_device(db, ref)
    out = _device_out(device)
    out["lines"] = [_row(line, ("password_enc",)) for line in device.lines]
    return out


@router.patch("/devices/{ref}", response_model=replies.DeviceOut)
def patch_device(
    ref: str,
    body: DeviceUpdate,
    request: Request,
    db: DbSession,
    user: DeviceWriter,
    services: ServicesDep,
) -> dict[str, Any]:
    with _api_errors():
        changed = operations.update_device(
            db,
            _actor(user, request),
            ref,
            name=body.name,
            serial=body.serial,
            model=body.model,
            group=body.group,
            clear_group=body.clear_group,
        )
    _commit_and_resync(db, services, changed)
    return _device_out(operations.get_device(db, ref))


@router.delete("/devices/{ref}", status_code=204)
def remove_device(ref: str, request: Request, db: DbSession, user: DeviceDeleter) -> None:
    with _api_errors():
        operations.delete_device(db, _actor(user, request), ref)


def _device_action_route(action: str) -> None:
    def handler(ref: str, request: Request, db: DbSession, user: DeviceStatus) -> dict[str, Any]:
        with _api_errors():
            device = operations.set_device_status(db, _actor(user, request), ref, action)
        return _device_out(device)

    if action == "approve":
        router.add_api_route(
            "/devices/{ref}/approve",
            approve_device,
            methods=["POST"],
            summary=DEVICE_ACTIONS[action],
            response_model=replies.DeviceOut,
        )
        return

    handler.__name__ = f"{action}_device"
    router.add_api_route(
        f"/devices/{{ref}}/{action}",
        handler,
        methods=["POST"],
        summary=DEVICE_ACTIONS[action],
        response_model=replies.DeviceOut,
    )


def approve_device(
    ref: str,
    request: Request,
    db: DbSession,
    user: DeviceStatus,
    services: ServicesDep,
    body: Annotated[Approval | None, Body()] = None,
) -> dict[str, Any]:
    """Optionally named and put into a group in the same step (``name``, ``group``)."""
    approval = body or Approval()
    with _api_errors():
        device, changed = operations.approve_device(
            db, _actor(user, request), ref, name=approval.name, group=approval.group
        )
    _commit_and_resync(db, services, changed)
    return _device_out(device)


DEVICE_ACTIONS = {
    "approve": "Approve a pending (or rejected) device",
    "reject": "Reject a pending device",
    "revoke": "Revoke a device's credential",
    "reset": "Forget the device secret so it can enrol again",
}
for _action in DEVICE_ACTIONS:
    _device_action_route(_action)


@router.get("/devices/{ref}/config", response_model=replies.RenderedConfig)
def preview_config(ref: str, db: DbSession, _user: Reader, services: ServicesDep) -> Any:
    """The config this device would receive (SIP passwords masked)."""

    try:
        device = operations.get_device(db, ref)
        rendered = render_device(db, device, services.keys)
    except OperationError as exc:
        raise _fail(exc) from None
    except ConfigError as exc:
        raise ApiError(422, "config_invalid", str(exc)) from None

    return audit.mask_secrets(json.loads(rendered.body))


@router.get("/devices/{ref}/status", response_model=list[replies.StatusReportOut])
def device_status_reports(
    ref: str, db: DbSession, _user: Reader, limit: Limit = 50
) -> list[dict[str, Any]]:
    with _api_errors():
        device = operations.get_device(db, ref)
    query = (
        select(StatusReport)
        .where(StatusReport.device_id == device.id)
        .order_by(StatusReport.time.desc())
        .limit(limit)
    )
    return [_row(r) for r in db.scalars(query)]


# --- settings -----------------------------------------------------------------------------------


def _change(
    db: Session,
    services: Any,
    user: AdminUser,
    request: Request,
    scope: str,
    ref: str | None,
    body: SettingsChange,
) -> dict[str, Any]:
    with _api_errors():
        changed = operations.change_settings(
            db,
            _actor(user, request),
            scope,
            ref,
            set_values=body.set,
            unset=body.unset,
            replace=body.replace,
        )
    notified = _commit_and_resync(db, services, changed)
    return {"changed_devices": len(changed), "notified": notified}


@router.get("/settings/schema", response_model=list[replies.SettingsSection])
def settings_schema(_user: Reader) -> list[dict[str, Any]]:
    """What the web UI's settings editor is generated from: every key the server may set, by
    section, with its meaning, type, allowed values, range and default."""
    return [
        {
            "name": section.name,
            "description": section.description,
            "fields": [
                {
                    "key": f.key,
                    "kind": f.kind,
                    "description": f.description,
                    "choices": list(f.choices),
                    "minimum": f.minimum,
                    "maximum": f.maximum,
                    "default": f.default,
                    "secret": f.secret,
                }
                for f in section.fields
            ],
        }
        for section in setting_fields.sections()
    ]


@router.get("/devices/{ref}/settings/effective", response_model=list[replies.EffectiveSetting])
def effective_settings(ref: str, db: DbSession, _user: Reader) -> list[dict[str, Any]]:
    """Each settable key's value for this device and where it comes from (default, fleet,
    template, site/group, device), as the device page shows it. Secrets are masked."""
    with _api_errors():
        device = operations.get_device(db, ref)
    secret = {f.key for s in setting_fields.sections() for f in s.fields if f.secret}
    return [
        {"key": key, "value": audit.MASK if key in secret and value else value, "source": source}
        for key, (value, source) in sorted(setting_fields.device_effective(db, device).items())
    ]


@router.get("/settings/fleet", response_model=replies.PartialConfig)
def read_fleet_settings(db: DbSession, _user: Reader) -> dict[str, Any]:
    return fleet_defaults(db).settings or {}


@router.patch("/settings/fleet", response_model=replies.ChangedDevices)
def change_fleet_settings(
    body: SettingsChange,
    request: Request,
    db: DbSession,
    user: FleetSettings,
    services: ServicesDep,
) -> dict[str, Any]:
    return _change(db, services, user, request, "fleet", None, body)


def _scoped_settings_route(scope: str) -> None:
    def handler(
        ref: str,
        body: SettingsChange,
        request: Request,
        db: DbSession,
        services: ServicesDep,
        user: AdminUser = SCOPED_SETTINGS[scope],
    ) -> dict[str, Any]:
        return _change(db, services, user, request, scope, ref, body)

    handler.__name__ = f"change_{scope}_settings"
    router.add_api_route(
        f"/{scope}s/{{ref}}/settings",
        handler,
        methods=["PATCH"],
        response_model=replies.ChangedDevices,
    )


for _scope in ("group", "device"):
    _scoped_settings_route(_scope)


# --- groups & templates -------------------------------------------------------------------------


def _group_out(g: Group) -> dict[str, Any]:
    return audit.group_snapshot(g)


@router.get("/groups", response_model=list[replies.GroupOut])
def list_groups(db: DbSession, _user: Reader) -> list[dict[str, Any]]:
    return [_group_out(g) for g in db.scalars(select(Group).order_by(Group.name))]


def _node_out(node: GroupNode) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "kind": node.kind,
        "templates": node.templates,
        "devices": node.devices,
        "total": node.total,
        "by_status": node.by_status,
        "children": [_node_out(child) for child in node.children],
    }


@router.get("/groups/tree", response_model=list[replies.GroupTreeNode])
def groups_tree(db: DbSession, _user: Reader) -> list[dict[str, Any]]:
    """Groups as a tree; ``total`` and ``by_status`` count every group below as well."""
    return [_node_out(root) for root in group_tree(db)]


@router.post("/groups", status_code=201, response_model=replies.GroupOut)
def create_group(body: GroupCreate, request: Request, db: DbSession, user: GroupWriter) -> Any:
    with _api_errors():
        group = operations.create_group(
            db, _actor(user, request), body.name, body.kind, body.parent, body.settings
        )
    return _group_out(group)


@router.get("/groups/{ref}", response_model=replies.GroupOut)
def read_group(ref: str, db: DbSession, _user: Reader) -> Any:
    with _api_errors():
        return _group_out(operations.get_group(db, ref))


@router.patch("/groups/{ref}", response_model=replies.GroupOut)
def patch_group(
    ref: str,
    body: GroupUpdate,
    request: Request,
    db: DbSession,
    user: GroupWriter,
    services: ServicesDep,
) -> Any:
    with _api_errors():
        changed = operations.update_group(
            db,
            _actor(user, request),
            ref,
            name=body.name,
            parent=body.parent,
            clear_parent=body.clear_parent,
        )
        group_id = operations.get_group(db, body.name or ref).id
    _commit_and_resync(db, services, changed)
    return _group_out(_require(db.get(Group, group_id), f"group {group_id}"))


@router.delete("/groups/{ref}", status_code=204)
def remove_group(
    ref: str, request: Request, db: DbSession, user: GroupWriter, services: ServicesDep
) -> None:
    with _api_errors():
        changed = operations.delete_group(db, _actor(user, request), ref)
    _commit_and_resync(db, services, changed)


def _set_template(
    db: Session, services: Any, actor: Actor, ref: str, template: str, attached: bool
) -> dict[str, Any]:
    with _api_errors():
        changed = operations.attach_template(db, actor, ref, template, attached)
    return {"changed_devices": len(changed), "notified": _commit_and_resync(db, services, changed)}


def _template_link_route(method: str, attached: bool) -> None:
    def handler(
        ref: str,
        template: str,
        request: Request,
        db: DbSession,
        user: GroupWriter,
        services: ServicesDep,
    ) -> dict[str, Any]:
        return _set_template(db, services, _actor(user, request), ref, template, attached)

    handler.__name__ = "attach_template" if attached else "detach_template"
    router.add_api_route(
        "/groups/{ref}/templates/{template}",
        handler,
        methods=[method],
        response_model=replies.ChangedDevices,
    )


_template_link_route("PUT", attached=True)
_template_link_route("DELETE", attached=False)


@router.get("/templates", response_model=list[replies.TemplateOut])
def list_templates(db: DbSession, _user: Reader) -> list[dict[str, Any]]:
    return [
        audit.template_snapshot(t) for t in db.scalars(select(Template).order_by(Template.name))
    ]


@router.post("/templates", status_code=201, response_model=replies.TemplateOut)
def create_template(
    body: TemplateCreate, request: Request, db: DbSession, user: TemplateWriter
) -> Any:
    with _api_errors():
        template = operations.create_template(
            db, _actor(user, request), body.name, body.settings, body.description
        )
    return audit.template_snapshot(template)


@router.patch("/templates/{ref}", response_model=replies.ChangedDevices)
def patch_template(
    ref: str,
    body: TemplateUpdate,
    request: Request,
    db: DbSession,
    user: TemplateWriter,
    services: ServicesDep,
) -> dict[str, Any]:
    with _api_errors():
        changed = operations.update_template(
            db, _actor(user, request), ref, settings=body.settings, description=body.description
        )
    return {"changed_devices": len(changed), "notified": _commit_and_resync(db, services, changed)}


@router.delete("/templates/{ref}", status_code=204)
def remove_template(
    ref: str, request: Request, db: DbSession, user: TemplateWriter, services: ServicesDep
) -> None:
    with _api_errors():
        changed = operations.delete_template(db, _actor(user, request), ref)
    _commit_and_resync(db, services, changed)


# --- lines --------------------------------------------------------------------------------------


@router.get("/lines", response_model=list[replies.LineOut])
def list_lines(
    db: DbSession, _user: Reader, extension: str | None = None, limit: Limit = 500
) -> list[dict[str, Any]]:
    query = select(Line).order_by(Line.device_id, Line.position).limit(limit)
    if extension:
        query = query.where(Line.extension == extension)
    return [audit.line_snapshot(line) for line in db.scalars(query)]


@router.post("/devices/{ref}/lines", status_code=201, response_model=replies.LineOut)
def create_line(
    ref: str,
    body: LineCreate,
    request: Request,
    db: DbSession,
    user: LineWriter,
    services: ServicesDep,
) -> dict[str, Any]:
    with _api_errors():
        line, changed = operations.add_line(
            db, services.keys, _actor(user, request), ref, **body.model_dump()
        )
    out = audit.line_snapshot(line)
    _commit_and_resync(db, services, changed)
    return out


@router.patch("/lines/{line_id}", response_model=replies.LineOut)
def patch_line(
    line_id: Id32,
    body: LineUpdate,
    request: Request,
    db: DbSession,
    user: LineWriter,
    services: ServicesDep,
) -> dict[str, Any]:
    with _api_errors():
        changed = operations.update_line(
            db,
            services.keys,
            _actor(user, request),
            line_id,
            **body.model_dump(exclude_unset=True),
        )
    _commit_and_resync(db, services, changed)
    return audit.line_snapshot(_require(db.get(Line, line_id), f"line {line_id}"))


@router.delete("/lines/{line_id}", status_code=204)
def remove_line(
    line_id: Id32, request: Request, db: DbSession, user: LineWriter, services: ServicesDep
) -> None:
    with _api_errors():
        changed = operations.delete_line(db, _actor(user, request), line_id)
    _commit_and_resync(db, services, changed)


# --- enrollment tokens --------------------------------------------------------------------------


def _token_out(t: EnrollmentToken) -> dict[str, Any]:
    return _row(t, ("token_hash", "token_enc"))


@router.get("/enrollment-tokens", response_model=list[replies.EnrollmentTokenOut])
def list_tokens(db: DbSession, _user: Reader) -> list[dict[str, Any]]:
    rows = db.scalars(select(EnrollmentToken).order_by(EnrollmentToken.created_at.desc()))
    return [_token_out(t) for t in rows]


@router.post("/enrollment-tokens", status_code=201, response_model=replies.EnrollmentTokenCreated)
def create_token(
    body: TokenCreate,
    request: Request,
    response: Response,
    db: DbSession,
    user: TokenWriter,
    services: ServicesDep,
) -> dict[str, Any]:
    """The token text is returned once; the database keeps it encrypted."""
    with _api_errors():
        plain, token = operations.create_enrollment_token(
            db,
            services.keys,
            _actor(user, request),
            name=body.name,
            ttl=timedelta(hours=body.ttl_hours),
            max_uses=body.max_uses,
        )
    response.headers.update(NO_STORE)
    return {**_token_out(token), "token": plain}


@router.delete("/enrollment-tokens/{token_id}", response_model=replies.EnrollmentTokenOut)
def revoke_token(token_id: Id32, request: Request, db: DbSession, user: TokenWriter) -> Any:
    with _api_errors():
        return _token_out(operations.revoke_enrollment_token(db, _actor(user, request), token_id))


# --- status and reports -------------------------------------------------------------------------


@router.get("/status", response_model=replies.FleetSummary)
def fleet_status(db: DbSession, _user: Reader) -> dict[str, Any]:
    return operations.fleet_summary(db)


def _report_route(path: str, order: Any, reply: type[BaseModel]) -> None:
    """GET /<path>: the newest rows of a per-device report table, optionally for one device."""
    model = order.class_

    def handler(
        request: Request,
        db: DbSession,
        user: Reader,
        device: str | None = None,
        limit: Limit = 500,
    ) -> list[dict[str, Any]]:
        query = select(model).order_by(order.desc()).limit(limit)
        if device:
            with _api_errors():
                query = query.where(model.device_id == operations.get_device(db, device).id)
        rows = [_row(r) for r in db.scalars(query)]
        if model is CallRecordRow:  # who read call records is audited (provisioning.privacy)
            filters = {"device": device, "limit": limit}
            database = request.app.state.database
            privacy.audit_cdr_read(database, _actor(user, request), "rest", filters, len(rows))
        return rows

    handler.__name__ = f"list_{path}"
    # list[reply] of a runtime class: fine for FastAPI, opaque to mypy
    router.add_api_route(
        f"/{path}",
        handler,
        methods=["GET"],
        response_model=list[reply],  # type: ignore[valid-type]
    )


_report_route("cdrs", CallRecordRow.start, replies.CallRecordOut)
_report_route("quality", QualityRecord.time, replies.QualityOut)
_report_route("events", DeviceEvent.time, replies.EventOut)


@router.get("/audit", response_model=list[replies.AuditEntryOut])
def list_audit(
    db: DbSession,
    _user: Reader,
    target_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: Limit = 500,
) -> list[dict[str, Any]]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if target_id:
        query = query.where(AuditEntry.target_id == target_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if since:
        query = query.where(AuditEntry.time >= since)
    return [_row(e) for e in db.scalars(query)]


@router.post("/resync", response_model=replies.ResyncOut)
def resync_devices(
    body: ResyncRequest,
    request: Request,
    db: DbSession,
    user: DeviceResync,
    services: ServicesDep,
) -> dict[str, Any]:
    """Send NOTIFY check-sync now (no revision change): devices by id, a group, or all."""
    with _api_errors():
        ids = operations.request_resync(
            db,
            _actor(user, request),
            devices=body.device_ids,
            group=body.group,
            all_devices=body.all,
        )
    return {"devices": len(ids), "notified": _commit_and_resync(db, services, ids)}


# --- privacy and retention ----------------------------------------------------------------------


@router.post("/privacy/export", response_model=replies.SubjectExport)
def privacy_export(body: Subject, request: Request, db: DbSession, user: PrivacyExport) -> Any:
    with _api_errors():
        return retention.export_subject(
            db, _actor(user, request), device=body.device, extension=body.extension
        )


@router.post("/privacy/erase", response_model=replies.RowCounts)
def privacy_erase(body: Subject, request: Request, db: DbSession, user: PrivacyErase) -> Any:
    with _api_errors():
        return retention.erase_subject(
            db, _actor(user, request), device=body.device, extension=body.extension
        )


@router.post("/purge", response_model=replies.RowCounts)
def purge(request: Request, db: DbSession, user: Purger, services: ServicesDep) -> dict[str, int]:
    """Run the retention purge now (it also runs periodically in the server)."""
    return retention.purge_session(db, services.settings.retention, _actor(user, request).name)


# --- admin users and API tokens -----------------------------------------------------------------


@router.get("/me", response_model=replies.Me)
def whoami(user: Reader) -> dict[str, Any]:
    return {"username": user.username, "role": user.role}


@router.post("/users", status_code=201, response_model=replies.AdminUserCreated)
def add_admin(body: AdminCreate, request: Request, db: DbSession, user: UserManager) -> Any:
    with _api_errors(AdminError):
        new = create_admin_user(db, _actor(user, request), body.username, body.password, body.role)
    return {"id": new.id, "username": new.username, "role": new.role}


def _admin_user_out(user: AdminUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "disabled": user.disabled,
        "locked_until": user.locked_until.isoformat() if user.locked_until else None,
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


@router.get("/users", response_model=list[replies.AdminUserOut])
def admin_users(db: DbSession, _user: UserManager) -> list[dict[str, Any]]:
    return [_admin_user_out(u) for u in list_admin_users(db)]


@router.post("/users/{ref}/role", response_model=replies.AdminUserOut)
def change_role(
    ref: str, body: RoleChange, request: Request, db: DbSession, user: UserManager
) -> dict[str, Any]:
    """Give a user another role (nobody lowers their own)."""
    with _api_errors(AdminError):
        changed = change_admin_role(db, _actor(user, request), ref, body.role, user)
    return _admin_user_out(changed)


def _admin_state_route(action: str, summary: str) -> None:
    def handler(ref: str, request: Request, db: DbSession, user: UserManager) -> dict[str, Any]:
        with _api_errors(AdminError):
            changed = change_admin_state(db, _actor(user, request), ref, action, user)
        return _admin_user_out(changed)

    handler.__name__ = f"{action}_admin_user"
    router.add_api_route(
        f"/users/{{ref}}/{action}",
        handler,
        methods=["POST"],
        summary=summary,
        response_model=replies.AdminUserOut,
    )


for _state, _summary in {
    "disable": "Disable a user (its API tokens end for good)",
    "enable": "Enable a disabled user",
    "unlock": "End a user's sign-in lockout",
}.items():
    _admin_state_route(_state, _summary)


@router.post("/users/{ref}/password", response_model=replies.AdminUserOut)
def reset_password(
    ref: str, body: PasswordReset, request: Request, db: DbSession, user: UserManager
) -> dict[str, Any]:
    """Set a user's password: their sessions, API tokens and any lockout end."""
    with _api_errors(AdminError):
        changed = reset_admin_password(db, _actor(user, request), ref, body.password)
    return _admin_user_out(changed)


def _own_or_all(user: AdminUser, everyone: bool) -> AdminUser | None:
    if everyone:
        require_allowed(user, "api_token.any")
        return None
    return user


@router.get("/api-tokens", response_model=list[replies.ApiTokenOut])
def api_tokens(
    db: DbSession,
    user: TokenOwner,
    everyone: Annotated[bool, Query(alias="all")] = False,
) -> list[dict[str, Any]]:
    """The caller's API tokens (``?all=true``: every user's, for admins). Never the token."""
    return [token_snapshot(t) for t in list_api_tokens(db, _own_or_all(user, everyone))]


@router.post("/api-tokens", status_code=201, response_model=replies.ApiTokenCreated)
def add_api_token(
    body: ApiTokenCreate, request: Request, response: Response, db: DbSession, user: TokenOwner
) -> Any:
    """A bearer token for the calling user (same role), shown once. It expires after
    ``ttl_days`` (default 30; at most 90, admins 365)."""
    actor = _actor(user, request)
    with _api_errors(AdminError):
        plain, row = issue_api_token(db, actor.name, actor.ip, user, body.name, body.ttl_days)
    response.headers.update(NO_STORE)
    return {**token_snapshot(row), "token": plain}


@router.delete("/api-tokens/{token_id}", response_model=replies.ApiTokenOut)
def remove_api_token(
    token_id: Id32, request: Request, db: DbSession, user: TokenOwner
) -> dict[str, Any]:
    """Revoke one of the caller's tokens (admins: anyone's)."""
    try:
        actor = _actor(user, request)
        row = revoke_api_token(db, actor.name, actor.ip, user, token_id)
    except AdminError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return token_snapshot(row)
