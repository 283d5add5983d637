"""Fleet changes shared by the admin REST API, the CLI and the web UI.

Every function takes the session and the acting principal, validates its input (OperationError
with a specific message), writes an audit entry and returns the ids of devices whose rendered
config changed (their revision was bumped). The caller commits, then calls resync.resync().
"""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offhook.contract.config import ConfigError, parse_config
from offhook.contract.errors import OffhookError
from offhook.provisioning import audit
from offhook.provisioning.auth import check_serial, normalise_mac
from offhook.provisioning.crypto import KeyRing, sha256_hex
from offhook.provisioning.models import (
    DEVICE_APPROVED,
    DEVICE_PENDING,
    DEVICE_REJECTED,
    DEVICE_REVOKED,
    DEVICE_STATUSES,
    Device,
    EnrollmentToken,
    Group,
    Line,
    Template,
    utcnow,
)
from offhook.provisioning.render import (
    SettingsError,
    bump_all,
    bump_devices,
    bump_group,
    fleet_defaults,
    group_chain,
    set_dotted,
    subtree_group_ids,
    unset_dotted,
    validate_settings,
)

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp", "tls")
GROUP_KINDS = ("site", "group")


class OperationError(OffhookError, ValueError):
    """A change that cannot be made; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        self.status = status
        super().__init__(message)


class NotFound(OperationError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found", 404)


@dataclass(frozen=True)
class Actor:
    name: str  # "admin:alice", "cli:root", "system:purge"
    ip: str = ""


# --- lookups ------------------------------------------------------------------------------------


def get_device(db: Session, ref: str) -> Device:
    """By id or MAC (any common MAC spelling)."""
    device = db.get(Device, ref)
    if device is None:
        try:
            device = db.scalar(select(Device).where(Device.mac == normalise_mac(ref)))
        except ValueError:
            device = None
    if device is None:
        raise NotFound(f"device {ref!r}")
    return device


_Named = TypeVar("_Named", Group, Template)


MAX_ID = 2**31 - 1  # INTEGER primary keys (PostgreSQL int4)
MAX_SETTINGS_BYTES = 64 * 1024  # one level's partial config, as stored JSON


def _as_id(ref: int | str) -> int | None:
    """A numeric id within the column's range, else None (a name). ``str.isdigit`` alone
    accepts '¹' or '٣', which int() refuses."""
    if isinstance(ref, int):
        return ref if 0 < ref <= MAX_ID else None
    text = str(ref)
    if text.isascii() and text.isdigit() and len(text) <= 10 and 0 < int(text) <= MAX_ID:
        return int(text)
    return None


def _get_by_id_or_name(db: Session, model: type[_Named], ref: int | str) -> _Named:
    """A group or template by numeric id or, failing that, by its unique name."""
    number = _as_id(ref)
    found = db.get(model, number) if number is not None else None
    if found is None:
        found = db.scalar(select(model).where(model.name == str(ref)))
    if found is None:
        raise NotFound(f"{model.__name__.lower()} {ref!r}")
    return found


def get_group(db: Session, ref: int | str) -> Group:
    return _get_by_id_or_name(db, Group, ref)


def get_template(db: Session, ref: int | str) -> Template:
    return _get_by_id_or_name(db, Template, ref)


def _settings(value: dict[str, Any] | None, where: str) -> dict[str, Any]:
    try:
        checked = validate_settings(value or {}, where)
    except SettingsError as exc:
        raise OperationError(str(exc)) from None
    _check_settings_size(checked, where)
    return checked


def _check_settings_size(value: dict[str, Any], where: str) -> None:
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_SETTINGS_BYTES:
        raise OperationError(f"{where}: {size} bytes of settings, at most {MAX_SETTINGS_BYTES}")


# --- settings -----------------------------------------------------------------------------------


def change_settings(
    db: Session,
    actor: Actor,
    scope: str,
    ref: str | int | None = None,
    *,
    set_values: dict[str, Any] | None = None,
    unset: list[str] | None = None,
    replace: dict[str, Any] | None = None,
) -> list[str]:
    """Change the settings of ``scope`` = fleet | group | device (ref = id/name/MAC).
    ``replace`` swaps the whole dict; ``set_values`` maps dotted keys to values."""
    if scope == "fleet":
        row: Any = fleet_defaults(db)
    elif scope == "group":
        row = get_group(db, ref if ref is not None else "")
    elif scope == "device":
        row = get_device(db, str(ref))
    else:
        raise OperationError(f"unknown settings scope {scope!r}: use fleet, group or device")
    before = dict(row.settings or {})
    new = _settings(replace, "settings") if replace is not None else dict(before)
    try:
        for dotted, value in (set_values or {}).items():
            new = set_dotted(new, dotted, value)
        for dotted in unset or []:
            new = unset_dotted(new, dotted)
    except SettingsError as exc:
        raise OperationError(str(exc)) from None
    if new == before:
        return []
    _check_settings_size(new, "settings")
    row.settings = new
    target = "fleet" if scope == "fleet" else str(getattr(row, "id", ""))
    audit.record(db, actor.name, f"settings.{scope}", scope, target, before, new, actor.ip)
    if scope == "fleet":
        return bump_all(db)
    if scope == "group":
        return bump_group(db, row.id)
    return bump_devices(db, [row.id])


# --- groups and templates -----------------------------------------------------------------------


def create_group(
    db: Session,
    actor: Actor,
    name: str,
    kind: str = "group",
    parent: str | int | None = None,
    settings: dict[str, Any] | None = None,
) -> Group:
    name = name.strip()
    if not name or len(name) > 128:
        raise OperationError("group name must be 1-128 characters")
    if kind not in GROUP_KINDS:
        raise OperationError(f"group kind must be one of {', '.join(GROUP_KINDS)}")
    if db.scalar(select(Group).where(Group.name == name)):
        raise OperationError(f"group {name!r} already exists", 409)
    parent_id = get_group(db, parent).id if parent not in (None, "") else None
    group = Group(name=name, kind=kind, parent_id=parent_id, settings=_settings(settings, name))
    db.add(group)
    db.flush()
    audit.record(
        db,
        actor.name,
        "group.create",
        "group",
        group.id,
        None,
        audit.group_snapshot(group),
        actor.ip,
    )
    return group


def update_group(
    db: Session,
    actor: Actor,
    ref: str | int,
    *,
    name: str | None = None,
    parent: str | int | None = None,
    clear_parent: bool = False,
) -> list[str]:
    group = get_group(db, ref)
    before = audit.group_snapshot(group)
    if name is not None:
        name = name.strip()
        clash = db.scalar(select(Group).where(Group.name == name, Group.id != group.id))
        if not name or clash:
            raise OperationError(f"group name {name!r} is empty or taken")
        group.name = name
    if clear_parent:
        group.parent_id = None
    elif parent not in (None, ""):
        new_parent = get_group(db, parent)
        if group.id in [g.id for g in group_chain(db, new_parent.id)]:
            raise OperationError("a group cannot be nested inside itself")
        group.parent_id = new_parent.id
    db.flush()
    audit.record(
        db,
        actor.name,
        "group.update",
        "group",
        group.id,
        before,
        audit.group_snapshot(group),
        actor.ip,
    )
    return bump_group(db, group.id)


def delete_group(db: Session, actor: Actor, ref: str | int) -> list[str]:
    group = get_group(db, ref)
    if db.scalar(select(func.count()).select_from(Group).where(Group.parent_id == group.id)):
        raise OperationError(f"group {group.name!r} has child groups; move or delete them first")
    affected = bump_group(db, group.id)
    before = audit.group_snapshot(group)
    db.delete(group)
    db.flush()
    audit.record(db, actor.name, "group.delete", "group", before["id"], before, None, actor.ip)
    return affected


def create_template(
    db: Session, actor: Actor, name: str, settings: dict[str, Any], description: str = ""
) -> Template:
    name = name.strip()
    if not name or db.scalar(select(Template).where(Template.name == name)):
        raise OperationError(f"template name {name!r} is empty or taken", 409)
    template = Template(name=name, description=description, settings=_settings(settings, name))
    db.add(template)
    db.flush()
    audit.record(
        db,
        actor.name,
        "template.create",
        "template",
        template.id,
        None,
        audit.template_snapshot(template),
        actor.ip,
    )
    return template


def _template_devices(db: Session, template: Template) -> list[str]:
    ids: list[str] = []
    for group in template.groups:
        ids.extend(bump_group(db, group.id))
    return ids


def update_template(
    db: Session,
    actor: Actor,
    ref: str | int,
    *,
    settings: dict[str, Any] | None = None,
    description: str | None = None,
) -> list[str]:
    template = get_template(db, ref)
    before = audit.template_snapshot(template)
    if settings is not None:
        template.settings = _settings(settings, template.name)
    if description is not None:
        template.description = description
    audit.record(
        db,
        actor.name,
        "template.update",
        "template",
        template.id,
        before,
        audit.template_snapshot(template),
        actor.ip,
    )
    return _template_devices(db, template)


def delete_template(db: Session, actor: Actor, ref: str | int) -> list[str]:
    template = get_template(db, ref)
    affected = _template_devices(db, template)
    before = audit.template_snapshot(template)
    db.delete(template)
    db.flush()
    audit.record(
        db, actor.name, "template.delete", "template", before["id"], before, None, actor.ip
    )
    return affected


def attach_template(
    db: Session, actor: Actor, group_ref: str | int, template_ref: str | int, attach: bool = True
) -> list[str]:
    group = get_group(db, group_ref)
    template = get_template(db, template_ref)
    before = audit.group_snapshot(group)
    if attach and template not in group.templates:
        group.templates.append(template)
    elif not attach and template in group.templates:
        group.templates.remove(template)
    else:
        return []
    db.flush()
    audit.record(
        db,
        actor.name,
        "group.template_" + ("attach" if attach else "detach"),
        "group",
        group.id,
        before,
        audit.group_snapshot(group),
        actor.ip,
    )
    return bump_group(db, group.id)


# --- devices ------------------------------------------------------------------------------------


def add_device(
    db: Session,
    actor: Actor,
    mac: str,
    *,
    serial: str = "",
    model: str = "",
    name: str = "",
    group: str | int | None = None,
    settings: dict[str, Any] | None = None,
) -> Device:
    """Pre-register a device: approved at once when it enrols with a valid token."""
    try:
        mac = normalise_mac(mac)
        if serial:
            check_serial(serial)
    except ValueError as exc:
        raise OperationError(str(exc)) from None
    if db.scalar(select(Device).where(Device.mac == mac)):
        raise OperationError(f"device with MAC {mac} already exists", 409)
    device = Device(
        mac=mac,
        serial=serial,
        model=model,
        name=name,
        group_id=get_group(db, group).id if group not in (None, "") else None,
        status=DEVICE_APPROVED,
        pre_registered=True,
        settings=_settings(settings, mac),
    )
    db.add(device)
    db.flush()
    audit.record(
        db,
        actor.name,
        "device.create",
        "device",
        device.id,
        None,
        audit.device_snapshot(device),
        actor.ip,
    )
    return device


def update_device(
    db: Session,
    actor: Actor,
    ref: str,
    *,
    name: str | None = None,
    serial: str | None = None,
    model: str | None = None,
    group: str | int | None = None,
    clear_group: bool = False,
) -> list[str]:
    device = get_device(db, ref)
    before = audit.device_snapshot(device)
    if name is not None:
        device.name = name
    if serial is not None:
        try:
            device.serial = check_serial(serial) if serial else ""
        except ValueError as exc:
            raise OperationError(str(exc)) from None
    if model is not None:
        device.model = model
    if clear_group:
        device.group_id = None
    elif group not in (None, ""):
        device.group_id = get_group(db, group).id
    after = audit.device_snapshot(device)
    if after == before:
        return []
    audit.record(db, actor.name, "device.update", "device", device.id, before, after, actor.ip)
    return bump_devices(db, [device.id])


def delete_device(db: Session, actor: Actor, ref: str) -> None:
    device = get_device(db, ref)
    before = audit.device_snapshot(device)
    db.delete(device)
    db.flush()
    audit.record(db, actor.name, "device.delete", "device", before["id"], before, None, actor.ip)


def set_device_status(db: Session, actor: Actor, ref: str, action: str) -> Device:
    """approve | reject | revoke | reset (forget the secret so the phone can enrol again)."""
    device = get_device(db, ref)
    before = audit.device_snapshot(device)
    if action == "approve":
        if device.status not in (DEVICE_PENDING, DEVICE_REJECTED):
            raise OperationError(
                f"device is {device.status}; only pending/rejected can be approved"
            )
        device.status = DEVICE_APPROVED
    elif action == "reject":
        if device.status != DEVICE_PENDING:
            raise OperationError(f"device is {device.status}; only pending can be rejected")
        device.status = DEVICE_REJECTED
    elif action == "revoke":
        device.status = DEVICE_REVOKED
    elif action == "reset":
        device.status = DEVICE_APPROVED
        device.secret_hash = None
        device.secret_enc = None
        device.enroll_nonce = None
        device.enrolled_at = None
    else:
        raise OperationError(f"unknown device action {action!r}")
    audit.record(
        db,
        actor.name,
        f"device.{action}",
        "device",
        device.id,
        before,
        audit.device_snapshot(device),
        actor.ip,
    )
    return device


def approve_device(
    db: Session,
    actor: Actor,
    ref: str,
    *,
    name: str | None = None,
    group: str | int | None = None,
) -> tuple[Device, list[str]]:
    """Approve a pending (or rejected) phone, optionally naming it and putting it into a group
    in the same step (``device.approve``, then ``device.update`` when either changed). Returns
    the device and the ids whose config changed."""
    device = set_device_status(db, actor, ref, "approve")
    changed: list[str] = []
    if (name and name.strip()) or group not in (None, ""):
        changed = update_device(
            db,
            actor,
            device.id,
            name=name.strip() if name and name.strip() else None,
            group=group if group not in (None, "") else None,
        )
    return device, changed


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ImportRefused(OperationError):
    """A CSV import with bad rows: nothing was imported. ``errors``: one message per bad row."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = "; ".join(errors[:20])
        if len(errors) > 20:
            shown += f"; and {len(errors) - 20} more"
        super().__init__(f"nothing imported, {len(errors)} bad row(s): {shown}")


IMPORT_COLUMNS = ("mac", "serial", "model", "name", "group")


def import_devices_csv(
    db: Session,
    actor: Actor,
    text: str,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """CSV with a header row: mac (required), serial, model, name, group. Existing MACs are
    updated. All or nothing: when any row is bad (a MAC twice in the file included), nothing is
    imported and ImportRefused names every bad row by line number."""
    if "\x00" in text:
        raise OperationError("CSV contains a NUL character: not a text file")
    reader = csv.DictReader(io.StringIO(text))
    try:
        fieldnames = reader.fieldnames
        rows = list(reader)
    except csv.Error as exc:
        raise OperationError(f"CSV is malformed: {exc}") from None
    if fieldnames is None or "mac" not in [f.strip().lower() for f in fieldnames]:
        raise OperationError("CSV needs a header row with at least a 'mac' column")
    unknown = [f for f in fieldnames if f.strip().lower() not in IMPORT_COLUMNS]
    if unknown:
        raise OperationError(f"unknown CSV column(s) {unknown}; known: {', '.join(IMPORT_COLUMNS)}")
    result = ImportResult()
    groups: dict[str, int] = {}
    seen: dict[str, int] = {}  # MAC -> the line it first appeared on
    whole = db.begin_nested()  # rolled back when any row is bad
    for number, raw in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        try:
            with db.begin_nested():
                mac = normalise_mac(row.get("mac", ""))
                if mac in seen:
                    raise OperationError(f"MAC {mac} is also on line {seen[mac]}")
                seen[mac] = number
                group_name = row.get("group", "")
                group_id = None
                if group_name:
                    if group_name not in groups:
                        groups[group_name] = get_group(db, group_name).id
                    group_id = groups[group_name]
                existing = db.scalar(select(Device).where(Device.mac == mac))
                if existing is None:
                    device = add_device(
                        db,
                        actor,
                        mac,
                        serial=row.get("serial", ""),
                        model=row.get("model", ""),
                        name=row.get("name", ""),
                        group=group_id,
                    )
                    result.created.append(device.id)
                else:
                    update_device(
                        db,
                        actor,
                        existing.id,
                        name=row.get("name") or None,
                        serial=row.get("serial") or None,
                        model=row.get("model") or None,
                        group=group_id,
                    )
                    result.updated.append(existing.id)
        except (OperationError, ValueError) as exc:
            result.errors.append(f"line {number}: {exc}")
        if progress:
            progress(number - 1, len(rows))
    if result.errors:
        whole.rollback()
        raise ImportRefused(result.errors)
    whole.commit()
    audit.record(
        db,
        actor.name,
        "device.import",
        "device",
        "",
        None,
        {"created": len(result.created), "updated": len(result.updated)},
        actor.ip,
    )
    return result


# --- lines --------------------------------------------------------------------------------------


def _check_line(extension: str, registrar: str, transport: str, keys: KeyRing) -> None:

    if transport not in TRANSPORTS:
        raise OperationError(f"transport must be one of {', '.join(TRANSPORTS)}")
    if not extension.strip():
        raise OperationError("extension: required")
    try:
        parse_config(
            {"accounts": [{"user": extension, "domain": registrar, "transport": transport}]}, "line"
        )
    except ConfigError as exc:
        raise OperationError(str(exc).replace("accounts[0].", "")) from None


def add_line(
    db: Session,
    keys: KeyRing,
    actor: Actor,
    device_ref: str,
    *,
    extension: str,
    registrar: str,
    password: str = "",
    display_name: str = "",
    auth_user: str = "",
    transport: str = "udp",
    outbound_proxy: str = "",
    position: int | None = None,
) -> tuple[Line, list[str]]:
    device = get_device(db, device_ref)
    _check_line(extension, registrar, transport, keys)
    if position is None:
        position = len(device.lines)
    if any(line.position == position for line in device.lines):
        raise OperationError(f"device already has a line at position {position}", 409)
    line = Line(
        device_id=device.id,
        position=position,
        extension=extension,
        registrar=registrar,
        password_enc=keys.encrypt(password, "lines.password") if password else "",
        display_name=display_name,
        auth_user=auth_user,
        transport=transport,
        outbound_proxy=outbound_proxy,
    )
    db.add(line)
    db.flush()
    audit.record(
        db, actor.name, "line.create", "line", line.id, None, audit.line_snapshot(line), actor.ip
    )
    return line, bump_devices(db, [device.id])


def update_line(
    db: Session, keys: KeyRing, actor: Actor, line_id: int, **changes: Any
) -> list[str]:
    line = db.get(Line, line_id)
    if line is None:
        raise NotFound(f"line {line_id}")
    before = audit.line_snapshot(line)
    allowed = {
        "extension",
        "registrar",
        "password",
        "display_name",
        "auth_user",
        "transport",
        "outbound_proxy",
        "enabled",
    }
    bad = set(changes) - allowed
    if bad:
        raise OperationError(f"unknown line field(s) {sorted(bad)}")
    for key, value in changes.items():
        if value is None:
            continue
        if key == "password":
            line.password_enc = keys.encrypt(value, "lines.password") if value else ""
        else:
            setattr(line, key, value)
    _check_line(line.extension, line.registrar, line.transport, keys)
    audit.record(
        db, actor.name, "line.update", "line", line.id, before, audit.line_snapshot(line), actor.ip
    )
    return bump_devices(db, [line.device_id])


def delete_line(db: Session, actor: Actor, line_id: int) -> list[str]:
    line = db.get(Line, line_id)
    if line is None:
        raise NotFound(f"line {line_id}")
    before = audit.line_snapshot(line)
    device_id = line.device_id
    db.delete(line)
    db.flush()
    audit.record(db, actor.name, "line.delete", "line", line_id, before, None, actor.ip)
    return bump_devices(db, [device_id])


# --- resync -------------------------------------------------------------------------------------


def request_resync(
    db: Session,
    actor: Actor,
    *,
    devices: list[str] | tuple[str, ...] = (),
    group: str | int | None = None,
    all_devices: bool = False,
) -> list[str]:
    """The ids of the devices a resync asks for (every device, a group with its subgroups, or
    devices by id or MAC), with the audit entry: ``device.resync`` on the device when exactly one
    is named, else ``resync`` with the count. No revision changes; the caller commits and then
    sends the NOTIFYs (resync.resync, or notify.send_batch in the CLI)."""
    target_type, target = "devices", ""
    detail: dict[str, object] = {}
    if all_devices:
        ids = list(db.scalars(select(Device.id).order_by(Device.id)))
        detail = {"all": True}
    elif group not in (None, ""):
        found = get_group(db, group)
        subtree = subtree_group_ids(db, found.id)
        ids = list(db.scalars(select(Device.id).where(Device.group_id.in_(subtree))))
        target_type, target, detail = "group", str(found.id), {"group": found.name}
    elif devices:
        ids = list(dict.fromkeys(get_device(db, ref).id for ref in devices))
    else:
        raise OperationError("name devices, a group or all devices to resync")
    if len(ids) == 1 and devices and not all_devices and group in (None, ""):
        audit.record(db, actor.name, "device.resync", "device", ids[0], None, None, actor.ip)
    else:
        after = {**detail, "devices": len(ids)}
        audit.record(db, actor.name, "resync", target_type, target, None, after, actor.ip)
    return ids


# --- enrollment tokens --------------------------------------------------------------------------


def create_enrollment_token(
    db: Session,
    keys: KeyRing,
    actor: Actor,
    *,
    name: str = "",
    ttl: timedelta = timedelta(days=7),
    max_uses: int = 1,
) -> tuple[str, EnrollmentToken]:
    if max_uses < 1:
        raise OperationError("max_uses must be at least 1")
    if ttl <= timedelta(0):
        raise OperationError("expiry must be in the future")
    plain = secrets.token_urlsafe(24)
    token = EnrollmentToken(
        name=name,
        token_hash=sha256_hex(plain),
        token_enc=keys.encrypt(plain, "enrollment_tokens.token"),
        expires_at=utcnow() + ttl,
        max_uses=max_uses,
        created_by=actor.name,
    )
    db.add(token)
    db.flush()
    audit.record(
        db,
        actor.name,
        "enrollment_token.create",
        "enrollment_token",
        token.id,
        None,
        {"name": name, "expires_at": token.expires_at.isoformat(), "max_uses": max_uses},
        actor.ip,
    )
    return plain, token


def revoke_enrollment_token(db: Session, actor: Actor, token_id: int) -> EnrollmentToken:
    token = db.get(EnrollmentToken, token_id)
    if token is None:
        raise NotFound(f"enrollment token {token_id}")
    token.revoked = True
    audit.record(
        db,
        actor.name,
        "enrollment_token.revoke",
        "enrollment_token",
        token.id,
        {"revoked": False},
        {"revoked": True},
        actor.ip,
    )
    return token


# --- status -------------------------------------------------------------------------------------


def fleet_summary(db: Session) -> dict[str, Any]:
    counts = dict.fromkeys(DEVICE_STATUSES, 0)
    for status, count in db.execute(select(Device.status, func.count()).group_by(Device.status)):
        counts[status] = count
    out_of_date = db.scalar(
        select(func.count())
        .select_from(Device)
        .where(
            Device.status == DEVICE_APPROVED,
            Device.secret_hash.is_not(None),
            (Device.reported_revision.is_(None)) | (Device.reported_revision != Device.revision),
        )
    )
    return {"devices": counts, "out_of_date": out_of_date}


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise OperationError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise OperationError(f"{text!r} needs a timezone (e.g. Z or +00:00)")
    return value
