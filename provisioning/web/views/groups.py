"""Groups and sites: their own settings (validated against the phone's schema) and templates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser, Device, Group, Template
from offhook.provisioning.operations import NotFound as OperationNotFound
from offhook.provisioning.operations import (
    OperationError,
    attach_template,
    create_group,
    delete_group,
    get_group,
    request_resync,
    update_group,
)
from offhook.provisioning.services.device_list import DeviceFilter, count_devices
from offhook.provisioning.services.group_tree import group_tree, ungrouped_count
from offhook.provisioning.web import confirm
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done
from offhook.provisioning.web.core import NotFound, Reader, WebRoute, permitted, redirect, render
from offhook.provisioning.web.queries import flatten, settable_defaults
from offhook.provisioning.web.sessions import take_form
from offhook.provisioning.web.settings_form import (
    group_layers,
    layered,
    save_section,
    scoped_change,
    settings_editor,
)
from offhook.provisioning.web.views.changes import apply_change, apply_setting_form

router = APIRouter(route_class=WebRoute)
GroupWriter = Annotated[AdminUser, permitted("group.write")]
GroupSettings = Annotated[AdminUser, permitted("settings.group")]
GroupResync = Annotated[AdminUser, permitted("device.resync")]


def _load(db: Session, group_id: int) -> Group:
    try:
        return get_group(db, group_id)
    except OperationNotFound:
        raise NotFound(f"No group {group_id}.") from None


def _list(request: Request, db: Session) -> Response:
    form = take_form(request, "/groups")
    groups = list(db.scalars(select(Group).order_by(Group.name)))
    return render(
        request,
        "groups.html",
        {
            "title": "Groups",
            "section": "groups",
            "groups": groups,
            "tree": group_tree(db),
            "ungrouped": ungrouped_count(db),
            "error": form.get("error", ""),
            "form": {"name": "", "kind": "group", "parent": "", **form},
        },
    )


@router.get("/groups")
def groups_page(
    request: Request,
    admin: Reader,
    db: DbSession,
) -> Response:
    return _list(request, db)


@router.post("/groups")
def group_create(
    request: Request,
    admin: GroupWriter,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "group",
    parent: Annotated[str, Form()] = "",
) -> Response:
    try:
        group = create_group(db, actor_for(request, admin), name, kind, parent or None)
    except OperationError as exc:
        db.rollback()
        form = {"error": str(exc), "name": name, "kind": kind, "parent": parent}
        return back_with_form(request, "/groups", form)
    db.commit()
    return done(request, f"/groups/{group.id}", f"Group {group.name} created.")


def _detail(request: Request, db: Session, group_id: int) -> Response:
    group = _load(db, group_id)
    form = take_form(request, f"/groups/{group.id}")
    devices = list(
        db.scalars(select(Device).where(Device.group_id == group.id).order_by(Device.mac))
    )
    attached = {t.id for t in group.templates}
    return render(
        request,
        "group.html",
        {
            "title": group.name,
            "section": "groups",
            "group": group,
            "parent": db.get(Group, group.parent_id) if group.parent_id else None,
            "other_groups": [
                g for g in db.scalars(select(Group).order_by(Group.name)) if g.id != group.id
            ],
            "own_settings": sorted(flatten(group.settings or {}).items()),
            "setting_keys": sorted(settable_defaults()),
            "devices": devices,
            "subtree_total": count_devices(db, DeviceFilter(group_id=group.id, subgroups=True)),
            "templates": [t for t in group.templates],
            "available": [
                t
                for t in db.scalars(select(Template).order_by(Template.name))
                if t.id not in attached
            ],
            "form_error": form.get("error", ""),
            "form_key": form.get("key", ""),
            "form_value": form.get("value", ""),
            **settings_editor(group.settings or {}, layered(group_layers(db, group)), form),
            "form_action": f"/groups/{group.id}/settings/section",
            "section_error": form.get("section_error", ""),
            "section_name": form.get("section_name", ""),
        },
    )


@router.get("/groups/{group_id}")
def group_page(
    request: Request,
    group_id: int,
    admin: Reader,
    db: DbSession,
) -> Response:
    return _detail(request, db, group_id)


@router.post("/groups/{group_id}/settings")
def group_setting(
    request: Request,
    group_id: int,
    admin: GroupSettings,
    db: DbSession,
    key: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    unset: Annotated[str, Form()] = "",
) -> Response:
    group = _load(db, group_id)

    def message(changed: list[str]) -> str:
        if unset:
            return f"{unset} removed from {group.name}; inherited again."
        return f"{key.strip()} set for {group.name}; {len(changed)} device(s) will update."

    return apply_setting_form(
        request,
        db,
        admin,
        "group",
        group.id,
        f"/groups/{group.id}",
        message,
        key=key,
        value=value,
        unset=unset,
    )


@router.post("/groups/{group_id}/settings/section")
async def group_setting_section(
    request: Request, group_id: int, admin: GroupSettings, db: DbSession
) -> Response:
    """One section of the generated settings editor (services.setting_fields)."""
    group = _load(db, group_id)
    form = {k: str(v) for k, v in (await request.form()).items()}
    apply = scoped_change(request, db, admin, "group", group.id)
    return save_section(
        request, db, admin, f"/groups/{group.id}", form, group.settings or {}, apply
    )


@router.post("/groups/{group_id}/templates")
def group_template(
    request: Request,
    group_id: int,
    admin: GroupWriter,
    db: DbSession,
    template: Annotated[str, Form()] = "",
    attach: Annotated[str, Form()] = "1",
) -> Response:
    group = _load(db, group_id)
    actor = actor_for(request, admin)
    verb = "attached" if attach == "1" else "detached"
    return apply_change(
        request,
        db,
        f"/groups/{group.id}",
        lambda: attach_template(db, actor, group.id, template, attach=attach == "1"),
        lambda _changed: f"Template {verb}.",
    )


@router.post("/groups/{group_id}/edit")
def group_edit(
    request: Request,
    group_id: int,
    admin: GroupWriter,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    parent: Annotated[str, Form()] = "",
) -> Response:
    group = _load(db, group_id)
    actor = actor_for(request, admin)
    return apply_change(
        request,
        db,
        f"/groups/{group.id}",
        lambda: update_group(
            db, actor, group.id, name=name, parent=parent or None, clear_parent=not parent
        ),
        lambda changed: f"Saved; {len(changed)} device(s) will update.",
    )


@router.post("/groups/{group_id}/resync")
def group_resync(
    request: Request,
    group_id: int,
    admin: GroupResync,
    db: DbSession,
    back: Annotated[str, Form()] = "",
) -> Response:
    """Tell every phone of the group and its subgroups to fetch its config now (one ``resync``
    audit row with the count, as from the REST API's and the CLI's resync by group)."""
    group = _load(db, group_id)
    ids = request_resync(db, actor_for(request, admin), group=group.id)
    notified = commit_and_resync(request, db, ids)
    target = back if back in ("/groups", f"/groups/{group.id}") else f"/groups/{group.id}"
    return done(
        request,
        target,
        f"Resync of {group.name}: {len(ids)} device(s), {notified} notified now; "
        "the others update at their next poll.",
    )


@router.get("/groups/{group_id}/delete")
def group_delete_confirm(
    request: Request,
    group_id: int,
    admin: GroupWriter,
    db: DbSession,
) -> Response:
    """What deleting the group takes with it, and the button that does it."""
    return confirm.show(request, confirm.group_deletion(db, _load(db, group_id)), "groups")


@router.post("/groups/{group_id}/delete")
def group_delete(
    request: Request,
    group_id: int,
    admin: GroupWriter,
    db: DbSession,
    confirmation: Annotated[str, Form(alias="confirm")] = "",
) -> Response:
    group = _load(db, group_id)
    if not confirm.confirmed(confirmation):
        return redirect(f"/groups/{group.id}/delete")  # nothing happens without the second step
    name = group.name
    actor = actor_for(request, admin)
    return apply_change(
        request,
        db,
        f"/groups/{group_id}",
        lambda: delete_group(db, actor, group.id),
        lambda changed: f"Group {name} deleted; {len(changed)} device(s) will update.",
        then="/groups",
    )
