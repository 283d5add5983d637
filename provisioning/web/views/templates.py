"""Settings templates: named partial configs attached to groups."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser, Template
from offhook.provisioning.operations import NotFound as OperationNotFound
from offhook.provisioning.operations import (
    OperationError,
    create_template,
    delete_template,
    get_template,
    update_template,
)
from offhook.provisioning.render import SettingsError, set_dotted, unset_dotted
from offhook.provisioning.web import confirm
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done
from offhook.provisioning.web.core import NotFound, Reader, WebRoute, permitted, redirect, render
from offhook.provisioning.web.sessions import take_form
from offhook.provisioning.web.settings_form import layered, save_section, settings_editor

router = APIRouter(route_class=WebRoute)
TemplateWriter = Annotated[AdminUser, permitted("template.write")]
EXAMPLE = '{"audio": {"tone_plan": "uk"}, "features": {"call_waiting": false}}'


def parse_settings_json(text: str) -> dict:
    """The template editor takes JSON; say where it is broken rather than just 'invalid'."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise OperationError(
            f"settings are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise OperationError("settings must be a JSON object, e.g. " + EXAMPLE)
    return value


def _load(db: Session, template_id: int) -> Template:
    try:
        return get_template(db, template_id)
    except OperationNotFound:
        raise NotFound(f"No template {template_id}.") from None


def _list(request: Request, db: Session) -> Response:
    form = take_form(request, "/templates")
    return render(
        request,
        "templates.html",
        {
            "title": "Templates",
            "section": "templates",
            "templates": list(db.scalars(select(Template).order_by(Template.name))),
            "error": form.get("error", ""),
            "form": {"name": "", "description": "", "settings": "", **form},
            "example": EXAMPLE,
        },
    )


@router.get("/templates")
def templates_page(
    request: Request,
    admin: Reader,
    db: DbSession,
) -> Response:
    return _list(request, db)


@router.post("/templates")
def template_create(
    request: Request,
    admin: TemplateWriter,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    settings: Annotated[str, Form()] = "",
) -> Response:
    try:
        template = create_template(
            db, actor_for(request, admin), name, parse_settings_json(settings), description
        )
    except OperationError as exc:
        db.rollback()
        form = {"error": str(exc), "name": name, "description": description, "settings": settings}
        return back_with_form(request, "/templates", form)
    db.commit()
    return done(request, f"/templates/{template.id}", f"Template {template.name} created.")


def _detail(request: Request, db: Session, template_id: int) -> Response:
    template = _load(db, template_id)
    form = take_form(request, f"/templates/{template.id}")
    text = form.get("settings")
    return render(
        request,
        "template.html",
        {
            "title": template.name,
            "section": "templates",
            "template": template,
            "settings_text": text
            if isinstance(text, str)
            else json.dumps(template.settings or {}, indent=2, sort_keys=True),
            "error": form.get("error", ""),
            **settings_editor(template.settings or {}, layered([]), form),
            "form_action": f"/templates/{template.id}/settings/section",
            "section_error": form.get("section_error", ""),
            "section_name": form.get("section_name", ""),
        },
    )


@router.get("/templates/{template_id}")
def template_page(
    request: Request,
    template_id: int,
    admin: Reader,
    db: DbSession,
) -> Response:
    return _detail(request, db, template_id)


@router.post("/templates/{template_id}")
def template_update(
    request: Request,
    template_id: int,
    admin: TemplateWriter,
    db: DbSession,
    description: Annotated[str, Form()] = "",
    settings: Annotated[str, Form()] = "",
) -> Response:
    template = _load(db, template_id)
    try:
        changed = update_template(
            db,
            actor_for(request, admin),
            template.id,
            settings=parse_settings_json(settings),
            description=description,
        )
    except OperationError as exc:
        db.rollback()
        form = {"error": str(exc), "settings": settings}
        return back_with_form(request, f"/templates/{template.id}", form)
    commit_and_resync(request, db, changed)
    return done(
        request,
        f"/templates/{template.id}",
        f"Template saved; {len(changed)} device(s) will update.",
    )


@router.post("/templates/{template_id}/settings/section")
async def template_setting_section(
    request: Request, template_id: int, admin: TemplateWriter, db: DbSession
) -> Response:
    """The same generated form as a device's or group's: the template's settings change key by
    key (operations.update_template with the whole, changed dict)."""
    template = _load(db, template_id)
    form = {k: str(v) for k, v in (await request.form()).items()}
    actor = actor_for(request, admin)

    def apply(set_values: dict[str, Any], unset: list[str]) -> list[str]:
        new = dict(template.settings or {})
        try:
            for key, value in set_values.items():
                new = set_dotted(new, key, value)
            for key in unset:
                new = unset_dotted(new, key)
        except SettingsError as exc:
            raise OperationError(str(exc)) from None
        if new == (template.settings or {}):
            return []
        return update_template(db, actor, template.id, settings=new)

    page = f"/templates/{template.id}"
    return save_section(request, db, admin, page, form, template.settings or {}, apply)


@router.get("/templates/{template_id}/delete")
def template_delete_confirm(
    request: Request,
    template_id: int,
    admin: TemplateWriter,
    db: DbSession,
) -> Response:
    template = _load(db, template_id)
    return confirm.show(request, confirm.template_deletion(db, template), "templates")


@router.post("/templates/{template_id}/delete")
def template_delete(
    request: Request,
    template_id: int,
    admin: TemplateWriter,
    db: DbSession,
    confirmation: Annotated[str, Form(alias="confirm")] = "",
) -> Response:
    template = _load(db, template_id)
    if not confirm.confirmed(confirmation):
        return redirect(f"/templates/{template.id}/delete")
    name = template.name
    changed = delete_template(db, actor_for(request, admin), template.id)
    commit_and_resync(request, db, changed)
    return done(request, "/templates", f"Template {name} deleted.")
