"""Audit log: who changed what, when, with before/after JSON. Secrets are masked before storing."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from offhook.contract.logs import kv
from offhook.provisioning.models import AuditEntry, Device, Group, Line, Template

log = logging.getLogger(__name__)

SECRET_KEYS = {
    "password",
    "secret",
    "token",
    "password_enc",
    "secret_enc",
    "token_enc",
    "secret_hash",
    "token_hash",
    "password_hash",
    "bind_password",  # directory.bind_password
    "pin",  # admin.pin
}
MASK = "***"


def _secret(key: object) -> bool:
    return isinstance(key, str) and key.rsplit(".", 1)[-1] in SECRET_KEYS


def mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        # a setting's dotted name ("directory.bind_password") is a secret by its last part
        return {k: (MASK if _secret(k) and v else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def record(
    db: Session,
    actor: str,
    action: str,
    target_type: str = "",
    target_id: Any = "",
    before: Any = None,
    after: Any = None,
    ip: str = "",
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        before=mask_secrets(before),
        after=mask_secrets(after),
        ip=ip,
    )
    db.add(entry)
    log.info("audit", extra=kv(actor=actor, action=action, target=f"{target_type}:{target_id}"))
    return entry


# --- JSON snapshots of rows for before/after ----------------------------------------------------


def device_snapshot(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "mac": device.mac,
        "serial": device.serial,
        "model": device.model,
        "name": device.name,
        "group_id": device.group_id,
        "status": device.status,
        "pre_registered": device.pre_registered,
        "settings": device.settings,
        "revision": device.revision,
        "enrolled": device.secret_hash is not None,
    }


def group_snapshot(group: Group) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "kind": group.kind,
        "parent_id": group.parent_id,
        "settings": group.settings,
        "templates": [t.name for t in group.templates],
    }


def template_snapshot(template: Template) -> dict[str, Any]:
    return {
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "settings": template.settings,
    }


def line_snapshot(line: Line) -> dict[str, Any]:
    return {
        "id": line.id,
        "device_id": line.device_id,
        "position": line.position,
        "extension": line.extension,
        "auth_user": line.auth_user,
        "password": MASK if line.password_enc else "",
        "display_name": line.display_name,
        "registrar": line.registrar,
        "transport": line.transport,
        "outbound_proxy": line.outbound_proxy,
        "enabled": line.enabled,
    }
