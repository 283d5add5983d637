"""What client data the server keeps, described from the running configuration, and the data
subject's archive.

``data_classes(settings)`` is the privacy page's table (and ``GET /api/v1/admin/privacy/classes``,
``offhook fleet privacy classes``): each class of client data with what it holds, why, the
tables, how long it is kept (``settings.retention``, the same numbers the purge uses), which
roles can read it (``provisioning.permissions``, the same table every front end asks) and
whether it is encrypted at rest. ``export_archive`` turns ``retention.export_subject`` into one
zip: a JSON and a CSV file per table plus a manifest. ``record_cdr_access`` audits every read of
call records (web page, REST API, CLI): who looked, with which filters, how many rows.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from offhook.provisioning import audit
from offhook.provisioning.db import Database
from offhook.provisioning.models import ROLES
from offhook.provisioning.operations import Actor
from offhook.provisioning.permissions import allowed
from offhook.provisioning.settings import RetentionDays, ServerSettings


@dataclass(frozen=True)
class DataClass:
    key: str
    name: str
    holds: str
    why: str
    tables: tuple[str, ...]
    retention: str  # a RetentionDays field, or "" (kept while the device or admin exists)
    read_action: str  # provisioning.permissions action that reads it
    at_rest: str


CLASSES = (
    DataClass(
        "identity",
        "Identity",
        "phones' MAC, serial, model and name; lines' extension, display name, SIP user "
        "(SIP passwords and device secrets: see at rest)",
        "to recognise a phone at enrolment and give it its lines",
        ("devices", "lines"),
        "identity",
        "fleet.read",
        "SIP passwords, device and enrolment secrets AES-256-GCM (key ring); the rest plain",
    ),
    DataClass(
        "network",
        "Network",
        "each phone's IP address, SIP contact, uptime and reported config revision",
        "to show where a phone is and whether it is up to date; to diagnose registration",
        ("status_reports", "devices.last_ip", "devices.sip_contact"),
        "network",
        "fleet.read",
        "plain (whole-database encryption: SQLCipher, see docs/privacy.md)",
    ),
    DataClass(
        "cdr",
        "Call records",
        "who called whom (local and remote URI, remote name), when, how long, the result",
        "call history for support and usage reports; every read is audited (cdr.read)",
        ("call_records",),
        "cdr",
        "fleet.read",
        "plain (whole-database encryption: SQLCipher, see docs/privacy.md)",
    ),
    DataClass(
        "quality",
        "Call quality and phone events",
        "MOS, jitter, loss and round-trip time per call; config applied or rolled back",
        "to find poor lines and failed configurations",
        ("quality_records", "device_events"),
        "quality",
        "fleet.read",
        "plain (whole-database encryption: SQLCipher, see docs/privacy.md)",
    ),
    DataClass(
        "preferences",
        "Preferences",
        "settings chosen for a phone, its group or site and templates (tone plan, speed "
        "dials, directory...)",
        "to render each phone's configuration",
        ("devices.settings", "groups.settings", "templates.settings"),
        "",
        "fleet.read",
        "plain; secret keys inside them masked in the audit log",
    ),
    DataClass(
        "security",
        "Security logs",
        "admins' sign-in attempts with their address, the audit log (who changed what, from "
        "where), admins' sessions and the networks they signed in from",
        "to detect and investigate misuse; accountability for every change",
        ("login_attempts", "audit_log", "admin_sessions", "admin_known_networks"),
        "security",
        "fleet.read",
        "passwords argon2, API tokens and recovery codes SHA-256, TOTP secrets AES-256-GCM",
    ),
)


def roles_allowed(action: str) -> list[str]:
    return [role for role in ROLES if allowed(role, action)]


def retention_text(retention: RetentionDays, field: str) -> str:
    if not field:
        return "while the phone, group or template exists"
    days = int(getattr(retention, field))
    return "forever (retention off)" if days == 0 else f"{days} days"


def data_classes(settings: ServerSettings) -> list[dict[str, Any]]:
    """The privacy page's table, from this server's retention settings and role table."""
    out = []
    for c in CLASSES:
        out.append(
            {
                "key": c.key,
                "name": c.name,
                "holds": c.holds,
                "why": c.why,
                "tables": list(c.tables),
                "retention_setting": (
                    f"OFFHOOK_RETENTION_{c.retention.upper()}_DAYS" if c.retention else ""
                ),
                "retention_days": int(getattr(settings.retention, c.retention))
                if c.retention
                else None,
                "kept": retention_text(settings.retention, c.retention),
                "readers": roles_allowed(c.read_action),
                "exporters": roles_allowed("privacy.export"),
                "at_rest": c.at_rest,
            }
        )
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    columns = sorted({k for row in rows for k in row})
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        )
    return out.getvalue()


def export_archive(data: dict[str, Any]) -> bytes:
    """One zip: ``manifest.json`` (subject, time, row counts) and per table ``<table>.json``
    and ``<table>.csv``."""
    tables = {k: v for k, v in data.items() if isinstance(v, list)}
    if isinstance(data.get("device"), dict):
        tables = {"device": [data["device"]], **tables}
    manifest = {
        "subject": data.get("subject"),
        "exported_at": data.get("exported_at"),
        "tables": {k: len(v) for k, v in tables.items()},
        "format": "each table as JSON (a list of rows) and CSV (nested values as JSON text)",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
        for name, rows in tables.items():
            archive.writestr(f"{name}.json", json.dumps(rows, indent=2, default=str))
            archive.writestr(f"{name}.csv", _csv(rows))
    return buffer.getvalue()


def record_cdr_access(
    db: Session, actor: Actor, where: str, filters: dict[str, Any], rows: int
) -> None:
    """Audit a read of call records: ``cdr.read`` with the front end, filters and row count."""
    used = {k: v for k, v in filters.items() if v not in ("", None)}
    audit.record(
        db, actor.name, "cdr.read", "call_records", where, None, {**used, "rows": rows}, actor.ip
    )


def audit_cdr_read(
    database: Database, actor: Actor, where: str, filters: dict[str, Any], rows: int
) -> None:
    """``record_cdr_access`` in a write transaction of its own, for requests that only read:
    on SQLite a read transaction that then writes fails at once when another writer committed
    meanwhile, while a writer's BEGIN IMMEDIATE waits its turn."""
    with database.session() as db:
        record_cdr_access(db, actor, where, filters, rows)
