"""The generated settings editor on the fleet, group, device and template pages: one form per
section of the phone's schema (services.setting_fields), each key with what it means, its type,
allowed values, range, the value set at this level and the effective value with its source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError, change_settings
from offhook.provisioning.services.setting_fields import (
    Effective,
    SettingField,
    device_effective,
    flatten,
    group_layers,
    layered,
    section_changes,
    sections,
)

__all__ = ["device_effective", "editor", "group_layers", "layered", "save_section"]
from offhook.provisioning.web.actions import actor_for, back_with_form, commit_and_resync, done


@dataclass(frozen=True)
class FieldView:
    field: SettingField
    own: str  # the form text of the value set at this level ("" when inherited)
    is_set: bool
    effective: Any
    source: str

    @property
    def dom_id(self) -> str:
        return "set-" + self.field.key.replace(".", "-")


@dataclass(frozen=True)
class SectionView:
    name: str
    description: str
    fields: list[FieldView]

    @property
    def set_here(self) -> int:
        return sum(1 for f in self.fields if f.is_set)


def editor(own_settings: Mapping[str, Any], effective: Effective) -> list[SectionView]:
    own = flatten(own_settings)
    out = []
    for section in sections():
        views = []
        for field in section.fields:
            value, source = effective.get(field.key, (field.default, "default"))
            is_set = field.key in own
            shown = "" if field.secret or not is_set else field.form_text(own[field.key])
            views.append(FieldView(field, shown, is_set, value, source))
        out.append(SectionView(section.name, section.description, views))
    return out


def save_section(
    request: Request,
    db: Session,
    admin: AdminUser,
    page: str,
    form: Mapping[str, str],
    own_settings: Mapping[str, Any],
    apply: Callable[[dict[str, Any], list[str]], list[str]],
) -> Response:
    """Turn one section's form into set/unset and ``apply`` it (a change through operations,
    returning the changed device ids). A refusal comes back to the page with the reason."""
    name = form.get("section", "")
    try:
        set_values, unset = section_changes(name, form, flatten(own_settings))
        changed = apply(set_values, unset)
    except OperationError as exc:
        db.rollback()
        stash = {"section_error": str(exc), "section_name": name}
        return back_with_form(request, f"{page}#section-{name}", stash)
    commit_and_resync(request, db, changed)
    return done(
        request,
        f"{page}#section-{name}",
        f"Section {name} saved; {len(set(changed))} device(s) will update.",
    )


def scoped_change(
    request: Request, db: Session, admin: AdminUser, scope: str, ref: str | int | None
) -> Callable[[dict[str, Any], list[str]], list[str]]:
    actor = actor_for(request, admin)

    def apply(set_values: dict[str, Any], unset: list[str]) -> list[str]:
        return change_settings(db, actor, scope, ref, set_values=set_values, unset=unset)

    return apply
