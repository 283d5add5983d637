"""Privacy over the REST API: the data classes the server keeps (as the web UI's Privacy page
shows them, from the running configuration) and a data subject's export as one zip archive.
The JSON export and the erase stay at ``/privacy/export`` and ``/privacy/erase``; all of them
go through ``provisioning.retention`` and ``provisioning.privacy`` and are audited."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from offhook.provisioning import privacy, retention
from offhook.provisioning.admin_auth import client_ip, require_permission
from offhook.provisioning.api.bodies import RequestBody, error_responses
from offhook.provisioning.deps import DbSession, ServicesDep
from offhook.provisioning.errors import ApiError
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError
from offhook.provisioning.services.actors import admin_actor

router = APIRouter(tags=["privacy"], responses=error_responses(401, 403, 404, 422))
PrivacyExport = Annotated[AdminUser, Depends(require_permission("privacy.export"))]
Short = Annotated[str, Field(min_length=1, max_length=128)]


class DataClassOut(BaseModel):
    key: str
    name: str
    holds: str
    why: str
    tables: list[str]
    retention_setting: str = Field(description="the OFFHOOK_RETENTION_*_DAYS variable, if any")
    retention_days: int | None = Field(description="0: kept forever; null: while it exists")
    kept: str
    readers: list[str] = Field(description="roles that can read it (provisioning.permissions)")
    exporters: list[str]
    at_rest: str


class ArchiveSubject(RequestBody):
    device: Short | None = None
    extension: Short | None = None


@router.get("/privacy/classes", response_model=list[DataClassOut])
def data_classes(services: ServicesDep, _user: PrivacyExport) -> list[dict[str, Any]]:
    return privacy.data_classes(services.settings)


@router.post(
    "/privacy/export.zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the archive"}},
)
def export_archive(
    body: ArchiveSubject, request: Request, db: DbSession, user: PrivacyExport
) -> Response:
    """Everything stored about one device or extension: ``manifest.json`` and a JSON and a CSV
    file per table. Audited as ``privacy.export``."""
    try:
        data = retention.export_subject(
            db,
            admin_actor(user, client_ip(request)),
            device=body.device,
            extension=body.extension,
        )
    except OperationError as exc:
        status = getattr(exc, "status", 422)
        raise ApiError(status, "not_found" if status == 404 else "invalid", str(exc)) from None
    db.commit()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", body.device or body.extension or "")[:64]
    return Response(
        privacy.export_archive(data),
        media_type="application/zip",
        headers={
            "content-disposition": f'attachment; filename="offhook-export-{name}.zip"',
            "cache-control": "no-store",
        },
    )
