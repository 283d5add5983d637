"""The generated settings editor on the fleet, group, device and template pages: one form per
section of the phone's schema (services.setting_fields), each key with what it means, its type,
allowed values, range, the value set at this level and the effective value with its source;
and one form per list of tables (phonebook, BLF keys), a row per item.

A list's row buttons (add, remove, up, down, copy the inherited rows) and a refused save come
back to the page with the rows as typed and each problem beside its field, carried in the
one-shot form cookie (Post/Redirect/Get); nothing is stored until a save passes."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.models import AdminUser
from offhook.provisioning.operations import OperationError, change_settings
from offhook.provisioning.services.setting_fields import (
    ROW_ORIGIN,
    Effective,
    ListRefused,
    ListSection,
    SettingField,
    device_effective,
    edit_rows,
    flatten,
    group_layers,
    layered,
    list_section,
    list_sections,
    list_value,
    rows_as_text,
    rows_from_form,
    section_changes,
    sections,
)

__all__ = [
    "device_effective",
    "editor",
    "group_layers",
    "layered",
    "save_section",
    "settings_editor",
]
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


@dataclass(frozen=True)
class CellView:
    field: SettingField
    text: str  # as typed or stored; a secret is always ""
    error: str
    dom_id: str
    stored_secret: bool  # a secret is stored for this row (an empty box keeps it)


@dataclass(frozen=True)
class RowView:
    index: int
    origin: str  # the row's index in the stored list, "" for a new one
    cells: list[CellView]


@dataclass(frozen=True)
class ListView:
    section: ListSection
    rows: list[RowView]
    set_here: bool
    effective_rows: int
    source: str
    error: str  # a problem of the whole list
    draft: bool  # the rows shown are not stored yet
    inherited: str  # JSON of the rows from above (the "copy" button's start), "" when set here

    @property
    def name(self) -> str:
        return self.section.name


def _list_view(
    wanted: ListSection, own: Mapping[str, Any], effective: Effective, draft: Mapping[str, object]
) -> ListView:
    stored = own.get(wanted.name)
    value, source = effective.get(wanted.name, ([], "default"))
    errors: dict[str, str] = {}
    rows = rows_as_text(wanted, stored)
    is_draft = draft.get("list_name") == wanted.name
    if is_draft:
        count = draft.get("list_rows", 0)
        loaded = [draft.get(f"list_row.{i}", "{}") for i in range(int(str(count)))]
        rows = [json.loads(str(r)) for r in loaded]
        errors = json.loads(str(draft.get("list_errors", "{}")))
    previous = stored if isinstance(stored, list) else []
    views = []
    for index, row in enumerate(rows):
        origin = str(row.get(ROW_ORIGIN, ""))
        before = previous[int(origin)] if origin.isdigit() and int(origin) < len(previous) else {}
        cells = [
            CellView(
                field,
                "" if field.secret else str(row.get(field.name, "")),
                errors.get(f"{index}.{field.name}", ""),
                f"list-{wanted.name}-{index}-{field.name}",
                field.secret and isinstance(before, dict) and bool(before.get(field.name)),
            )
            for field in wanted.fields
        ]
        views.append(RowView(index, origin, cells))
    return ListView(
        wanted,
        views,
        isinstance(stored, list),
        len(value) if isinstance(value, list) else 0,
        source,
        errors.get("", ""),
        is_draft,
        "" if isinstance(stored, list) else json.dumps(value if isinstance(value, list) else []),
    )


def settings_editor(
    own_settings: Mapping[str, Any], effective: Effective, form: Mapping[str, object]
) -> dict[str, Any]:
    """The page's editor: the sections' forms and the lists' forms (``form``: what a refused
    or unfinished list edit left in the form cookie)."""
    own = dict(own_settings)
    return {
        "editor_sections": editor(own_settings, effective),
        "list_sections": [_list_view(w, own, effective, form) for w in list_sections()],
    }


def _rows_back(
    request: Request,
    url: str,
    name: str,
    rows: list[dict[str, str]],
    errors: Mapping[str, str],
) -> Response:
    """Back to the page with the rows as typed (each row its own cookie field: a field is cut
    at 2000 characters) and the problems by "row.field"."""
    data: dict[str, str | int] = {
        "list_name": name,
        "list_rows": len(rows),
        "list_errors": json.dumps(dict(errors)),
    }
    for index, row in enumerate(rows):
        data[f"list_row.{index}"] = json.dumps(row)
    return back_with_form(request, url, data)


def _save_list(
    request: Request,
    db: Session,
    wanted: ListSection,
    page: str,
    form: Mapping[str, str],
    own_settings: Mapping[str, Any],
    apply: Callable[[dict[str, Any], list[str]], list[str]],
) -> Response:
    url = f"{page}#list-{wanted.name}"
    rows = rows_from_form(wanted, form)
    op = form.get("op", "save")
    stored = own_settings.get(wanted.name)
    if op != "save":
        inherited = json.loads(form.get(f"{wanted.name}.inherited", "[]") or "[]")
        try:
            rows = edit_rows(wanted, rows, op, inherited)
        except OperationError as exc:
            return _rows_back(request, url, wanted.name, rows, {"": str(exc)})
        return _rows_back(request, url, wanted.name, rows, {})
    try:
        value = list_value(wanted, rows, stored)
        if value:
            changed = apply({wanted.name: value}, [])
        else:  # no rows: this level sets nothing, the list is inherited
            changed = apply({}, [wanted.name] if wanted.name in own_settings else [])
    except ListRefused as exc:
        db.rollback()
        return _rows_back(request, url, wanted.name, rows, exc.errors)
    except OperationError as exc:
        db.rollback()
        return _rows_back(request, url, wanted.name, rows, {"": str(exc)})
    commit_and_resync(request, db, changed)
    return done(
        request, url, f"List {wanted.name} saved; {len(set(changed))} device(s) will update."
    )


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
    wanted = list_section(name)
    if wanted is not None:
        return _save_list(request, db, wanted, page, form, own_settings, apply)
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
