"""Fleet defaults: the settings every phone starts from (``settings.fleet``: they reach every
phone, so admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.db import DbSession
from offhook.provisioning.models import AdminUser
from offhook.provisioning.permissions import allowed
from offhook.provisioning.render import fleet_defaults
from offhook.provisioning.web.core import Reader, WebRoute, permitted, render
from offhook.provisioning.web.queries import flatten, settable_defaults
from offhook.provisioning.web.sessions import take_form
from offhook.provisioning.web.settings_form import (
    group_layers,
    layered,
    save_section,
    scoped_change,
    settings_editor,
)
from offhook.provisioning.web.views.changes import apply_setting_form

router = APIRouter(route_class=WebRoute)
FleetSettings = Annotated[AdminUser, permitted("settings.fleet")]


def _page(request: Request, db: Session) -> Response:
    admin = request.state.web_admin
    form = take_form(request, "/fleet")
    return render(
        request,
        "fleet.html",
        {
            "title": "Fleet defaults",
            "section": "groups",
            "own_settings": sorted(flatten(fleet_defaults(db).settings or {}).items()),
            "defaults": settable_defaults(),
            "setting_keys": sorted(settable_defaults()),
            "settings_action": "/fleet/settings",
            "settings_table_id": "fleet-settings",
            "form_error": form.get("error", ""),
            "form_key": form.get("key", ""),
            "form_value": form.get("value", ""),
            **settings_editor(
                fleet_defaults(db).settings or {}, layered(group_layers(db, None)), form
            ),
            "form_action": "/fleet/settings/section",
            "section_error": form.get("section_error", ""),
            "section_name": form.get("section_name", ""),
            # The shared editor shows its controls to operators; fleet changes need more.
            "can_operate": allowed(admin.role, "settings.fleet"),
        },
    )


@router.get("/fleet")
def fleet_page(request: Request, admin: Reader, db: DbSession) -> Response:
    return _page(request, db)


@router.post("/fleet/settings/section")
async def fleet_setting_section(request: Request, admin: FleetSettings, db: DbSession) -> Response:
    """One section of the generated settings editor (services.setting_fields)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    own = fleet_defaults(db).settings or {}
    apply = scoped_change(request, db, admin, "fleet", None)
    return save_section(request, db, admin, "/fleet", form, own, apply)


@router.post("/fleet/settings")
def fleet_setting(
    request: Request,
    admin: FleetSettings,
    db: DbSession,
    key: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    unset: Annotated[str, Form()] = "",
) -> Response:
    def message(changed: list[str]) -> str:
        what = f"{unset} back to the built-in default" if unset else f"{key.strip()} set fleet-wide"
        return f"{what}; {len(changed)} device(s) will update."

    return apply_setting_form(
        request, db, admin, "fleet", None, "/fleet", message, key=key, value=value, unset=unset
    )
