"""Privacy: what client data the server keeps (from the running configuration:
``provisioning.privacy``), and requests to export (one zip, or JSON) or erase everything
stored about a device or an extension."""

from __future__ import annotations

import json
import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from offhook.provisioning import privacy, retention
from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError
from offhook.provisioning.web.actions import actor_for, back_with_form
from offhook.provisioning.web.core import WebRoute, permitted, render
from offhook.provisioning.web.sessions import add_flash, take_form

router = APIRouter(route_class=WebRoute)
PrivacyExport = Annotated[AdminUser, permitted("privacy.export")]
PrivacyErase = Annotated[AdminUser, permitted("privacy.erase")]
SUBJECT_KINDS = ("device", "extension")


def _page(request: Request) -> Response:
    form = take_form(request, "/privacy")
    erased = json.loads(str(form.pop("erased", "{}")))
    erased_subject = form.pop("erased_subject", "")
    return render(
        request,
        "privacy.html",
        {
            "title": "Privacy",
            "section": "privacy",
            "error": form.get("error", ""),
            "form": {"kind": "device", "subject": "", **form},
            "kinds": SUBJECT_KINDS,
            "classes": privacy.data_classes(request.app.state.services.settings),
            "erased": erased,
            "erased_subject": erased_subject,
        },
    )


def _subject(kind: str, subject: str) -> dict[str, str]:
    if kind not in SUBJECT_KINDS:
        raise OperationError(f"subject kind must be one of {', '.join(SUBJECT_KINDS)}")
    if not subject.strip():
        raise OperationError(f"enter the {kind}'s {'id or MAC' if kind == 'device' else 'number'}")
    return {kind: subject.strip()}


@router.get("/privacy")
def privacy_page(request: Request, admin: PrivacyExport) -> Response:
    return _page(request)


@router.post("/privacy/export")
def privacy_export(
    request: Request,
    admin: PrivacyExport,
    db: DbSession,
    kind: Annotated[str, Form()] = "device",
    subject: Annotated[str, Form()] = "",
    format: Annotated[str, Form()] = "zip",
) -> Response:
    try:
        data = retention.export_subject(db, actor_for(request, admin), **_subject(kind, subject))
    except OperationError as exc:
        db.rollback()
        return back_with_form(
            request, "/privacy", {"error": str(exc), "kind": kind, "subject": subject}
        )
    db.commit()  # the export itself is audited
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", subject.strip())[:64]
    if format == "json":
        body, media, suffix = (
            json.dumps(data, indent=2, sort_keys=True, default=str).encode(),
            "application/json",
            "json",
        )
    else:  # one archive: a JSON and a CSV file per table, and a manifest
        body, media, suffix = privacy.export_archive(data), "application/zip", "zip"
    return Response(
        body,
        media_type=media,
        headers={
            "content-disposition": f'attachment; filename="offhook-export-{kind}-{safe}.{suffix}"',
            "cache-control": "no-store",
        },
    )


@router.post("/privacy/erase")
def privacy_erase(
    request: Request,
    admin: PrivacyErase,
    db: DbSession,
    kind: Annotated[str, Form()] = "device",
    subject: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    form = {"kind": kind, "subject": subject}
    if confirm.strip() != subject.strip() or not subject.strip():
        error = "to erase, type the subject again in the confirmation box"
        return back_with_form(request, "/privacy", {"error": error, **form})
    try:
        counts = retention.erase_subject(db, actor_for(request, admin), **_subject(kind, subject))
    except OperationError as exc:
        db.rollback()
        return back_with_form(request, "/privacy", {"error": str(exc), **form})
    db.commit()
    summary = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
    # The page it lands on lists what went, table by table, once.
    response = back_with_form(
        request, "/privacy", {"erased": json.dumps(counts), "erased_subject": subject.strip()}
    )
    add_flash(request, response, "ok", f"Erased {kind} {subject.strip()}: {summary}.")
    return response
