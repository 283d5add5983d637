"""The device table: search, combinable filters, sortable columns, CSV export of what the
filters select, and bulk actions with a confirmation that says how many (services.device_list
and services.device_bulk, shared with the REST API and the CLI)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import DEVICE_STATUSES, AdminUser, Device, Group
from offhook.provisioning.operations import OperationError
from offhook.provisioning.permissions import required_role
from offhook.provisioning.services.device_bulk import (
    BULK_ACTIONS,
    BulkRefused,
    check_bulk,
    run_bulk,
)
from offhook.provisioning.services.device_list import (
    SORTS,
    DeviceFilter,
    count_devices,
    devices_csv,
    find_devices,
    firmware_versions,
    parse_filter,
)
from offhook.provisioning.web import confirm
from offhook.provisioning.web.actions import actor_for, commit_and_resync, done
from offhook.provisioning.web.core import (
    Forbidden,
    Reader,
    WebRoute,
    not_seen_threshold,
    permitted,
    render,
)
from offhook.provisioning.web.liveness import describe
from offhook.provisioning.web.paging import PAGE_SIZES, Paging, page_url, parse_paging
from offhook.provisioning.web.queries import rows_of
from offhook.provisioning.web.sessions import add_flash

router = APIRouter(route_class=WebRoute)
# The least role of any bulk action; each action's own permission is checked by the service.
BulkActor = Annotated[AdminUser, permitted("device.write")]
COLUMNS = (  # (sort key or "", heading)
    ("name", "Device"),
    ("mac", "MAC"),
    ("group", "Group"),
    ("status", "Status"),
    ("", "Lines"),
    ("last_seen", "Last seen"),
    ("firmware", "Firmware"),
    ("ip", "IP"),
    ("revision", "Config rev."),
)
FILTER_KEYS = ("q", "status", "group", "subgroups", "firmware", "sort")


def _filter(db: Session, params: dict[str, str]) -> tuple[DeviceFilter, str]:
    """The filter of the page's query string, or the default one and why it was refused."""
    try:
        return (
            parse_filter(
                q=params.get("q", ""),
                status=params.get("status", ""),
                group=params.get("group", "") or None,
                subgroups=params.get("subgroups", "") == "1",
                firmware=params.get("firmware", ""),
                sort=params.get("sort", ""),
            ),
            "",
        )
    except OperationError as exc:
        return DeviceFilter(), str(exc)


def _params(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in (*FILTER_KEYS, "page", "per")}


def _sort_links(params: dict[str, str], wanted: DeviceFilter) -> list[dict[str, Any]]:
    """Each column heading's link: ascending first, a second click descending."""
    out = []
    for key, label in COLUMNS:
        link, state = "", "none"
        if key:
            again = key == wanted.sort and not wanted.descending
            query = {k: v for k, v in params.items() if v and k not in ("sort", "page")}
            query["sort"] = f"-{key}" if again else key
            link = "/devices?" + urlencode(query)
            if key == wanted.sort:
                state = "descending" if wanted.descending else "ascending"
        out.append({"key": key, "label": label, "url": link, "sort": state})
    return out


def list_context(request: Request, db: Session) -> dict[str, Any]:
    params = _params(request)
    wanted, error = _filter(db, params)
    paging = parse_paging(params["page"], params["per"])
    devices = find_devices(db, wanted, limit=paging.size + 1, offset=paging.offset)
    rows = rows_of(db, devices[: paging.size], not_seen_threshold(request))
    paging = Paging(paging.number, paging.size, has_next=len(devices) > paging.size)
    export = {k: v for k, v in params.items() if v and k in FILTER_KEYS}
    return {
        "rows": rows,
        "filters": params,
        "filter_error": error,
        "total": count_devices(db, wanted),
        "columns": _sort_links(params, wanted),
        "paging": paging,
        "prev_url": page_url(request, paging.number - 1, "/devices"),
        "next_url": page_url(request, paging.number + 1, "/devices"),
        "csv_url": "/devices.csv" + ("?" + urlencode(export) if export else ""),
        "not_seen_text": describe(not_seen_threshold(request)),
        "page_sizes": PAGE_SIZES,
        "sorts": SORTS,
    }


@router.get("/devices")
def devices_page(request: Request, admin: Reader, db: DbSession) -> Response:
    context = list_context(request, db)
    context.update(
        title="Devices",
        section="devices",
        statuses=DEVICE_STATUSES,
        groups=list(db.scalars(select(Group).order_by(Group.name))),
        firmware_versions=firmware_versions(db),
        bulk_actions=BULK_ACTIONS,
    )
    return render(request, "devices.html", context)


@router.get("/devices/rows")
def devices_rows(request: Request, admin: Reader, db: DbSession) -> Response:
    """The table body alone, for the page's live refresh (same page, same filters)."""
    return render(request, "_device_rows.html", list_context(request, db), fragment=True)


@router.get("/devices.csv")
def devices_export(request: Request, admin: Reader, db: DbSession) -> Response:
    """Every device the filters select (all pages), in the table's order."""
    wanted, error = _filter(db, _params(request))
    if error:
        return done(request, "/devices", f"Export refused: {error}", "error")
    body = devices_csv(db, find_devices(db, wanted, limit=1_000_000))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="devices.csv"'},
    )


def _labels(db: Session, ids: list[str]) -> list[str]:
    found = {d.id: d.name or d.mac for d in db.scalars(select(Device).where(Device.id.in_(ids)))}
    return [found.get(i, i) for i in ids]


def _plural(count: int) -> str:
    return f"{count} device{'' if count == 1 else 's'}"


def bulk_confirmation(
    db: Session, action: str, ids: list[str], group: str, back: str
) -> confirm.Confirmation:
    labels = _labels(db, ids[:5000])
    verb = {"move": "Move", "resync": "Resync", "reset": "Reset"}.get(action, action.title())
    where = ""
    if action == "move":
        target = db.get(Group, int(group)) if group.isdigit() else None
        where = f" to {target.name}" if target else " out of any group"
    shown = ", ".join(labels[:20]) + (f" and {len(labels) - 20} more" if len(labels) > 20 else "")
    consequences = [f"Devices: {shown}."]
    if action == "delete":
        consequences.append(
            "Each device and everything it reported (lines, status, calls, quality) is deleted."
            " There is no undo."
        )
    elif action in ("revoke", "reject"):
        consequences.append("Their phones can no longer fetch a config with their credential.")
    elif action == "reset":
        consequences.append("Their secrets are forgotten: each phone must enrol again.")
    elif action == "move":
        consequences.append("Their configs change to the new group's settings at the next poll.")
    fields = [("bulk_action", action), ("group", group), ("back", back)]
    fields += [("device", i) for i in ids]
    return confirm.Confirmation(
        title=f"{verb} {_plural(len(ids))}?",
        question=f"{verb} {_plural(len(ids))}{where}?",
        action="/devices/bulk",
        button=f"{verb} {_plural(len(ids))}",
        cancel_url=back,
        consequences=consequences,
        fields=fields,
    )


def _back(text: str) -> str:
    return text if text.startswith("/devices") and "//" not in text else "/devices"


@router.post("/devices/bulk")
async def devices_bulk(request: Request, admin: BulkActor, db: DbSession) -> Response:
    """First post: the confirmation page (how many, which). Its own form, with confirm=yes,
    does it. Read from the form itself: ``device`` repeats, once per ticked row."""
    form = await request.form()
    action = str(form.get("bulk_action", ""))
    ids = [str(v) for v in form.getlist("device")]
    group = str(form.get("group", ""))
    back = _back(str(form.get("back", "/devices")))
    try:
        check_bulk(action, admin, len(ids))
    except BulkRefused as exc:
        needed = BULK_ACTIONS[action][0]
        raise Forbidden(
            f"This needs the {required_role(needed)} role; you are {admin.role}."
        ) from exc
    except OperationError as exc:
        return done(request, back, f"Nothing done: {exc}.", "error")
    if not confirm.confirmed(str(form.get("confirm", ""))):
        return confirm.show(request, bulk_confirmation(db, action, ids, group, back), "devices")
    return _run(request, db, admin, action, ids, group, back)


def _run(
    request: Request,
    db: Session,
    admin: AdminUser,
    action: str,
    ids: list[str],
    group: str,
    back: str,
) -> Response:
    try:
        result = run_bulk(db, actor_for(request, admin), action, ids, user=admin, group=group)
    except OperationError as exc:
        db.rollback()
        return done(request, back, f"Nothing done: {exc}.", "error")
    commit_and_resync(request, db, result.changed)
    response = done(request, back, result.summary + ".", "ok" if not result.skipped else "info")
    for label, why in result.skipped[:10]:
        add_flash(request, response, "error", f"{label}: {why}")
    return response


__all__ = ["list_context", "router"]
