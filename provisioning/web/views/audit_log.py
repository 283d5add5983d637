"""Audit log: who changed what, when, with the before/after of each change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AuditEntry
from offhook.provisioning.web.core import Reader, WebRoute, render
from offhook.provisioning.web.paging import fetch_page, page_url, parse_paging
from offhook.provisioning.web.queries import flatten
from offhook.provisioning.web.target_names import audit_targets

router = APIRouter(route_class=WebRoute)
ABSENT = "(unset)"


@dataclass(frozen=True)
class Change:
    key: str
    before: str
    after: str


def _text(value: Any) -> str:
    return ABSENT if value is ABSENT else json.dumps(value, sort_keys=True)


def changes(before: Any, after: Any) -> list[Change]:
    """The keys whose value differs, flattened to dotted paths (``settings.audio.tone_plan``)."""
    old = (
        flatten(before)
        if isinstance(before, dict)
        else ({"": before} if before is not None else {})
    )
    new = flatten(after) if isinstance(after, dict) else ({"": after} if after is not None else {})
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if a != b:
            out.append(Change(key or "(value)", _text(a), _text(b)))
    return out


@router.get("/audit")
def audit_page(
    request: Request,
    admin: Reader,
    db: DbSession,
    actor: str = "",
    action: str = "",
    target: str = "",
    page: str = "",
    per: str = "",
) -> Response:
    paging = parse_paging(page, per)
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if actor:
        query = query.where(AuditEntry.actor.like(f"%{actor.strip()}%"))
    if action:
        query = query.where(AuditEntry.action.like(f"{action.strip()}%"))
    if target:
        query = query.where(AuditEntry.target_id == target.strip())
    entries, paging = fetch_page(db, query, paging)
    return render(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "section": "audit",
            "entries": [(e, changes(e.before, e.after)) for e in entries],
            "targets": audit_targets(db, entries),
            "filters": {"actor": actor, "action": action, "target": target},
            "paging": paging,
            "prev_url": page_url(request, paging.number - 1),
            "next_url": page_url(request, paging.number + 1),
        },
    )
