"""The settings editor's fields, generated from the phone's config schema
(offhook.contract.config.PhoneConfig): each key the server may set, grouped by section, with
its type, allowed values (enums), number range, default and what it means (setting_help).

``section_changes`` turns one section's submitted form into the ``set``/``unset`` of
operations.change_settings (the same change the REST API's PATCH .../settings makes), so a
bad value is refused by the schema with the key named, as from any other front end.

The schema's lists of tables (``phonebook``, ``blf``) are edited a row at a time
(``list_sections``, ``list_value``): each row's fields come from the item's schema, a row is
checked with the item's own model, and every problem is named by row and field
(``blf[1].extension``). ``accounts`` is not among them: SIP accounts are a device's lines.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from offhook.contract.config import PhoneConfig
from offhook.provisioning.models import Device, Group
from offhook.provisioning.operations import OperationError
from offhook.provisioning.render import (
    LOCAL_KEYS,
    LOCAL_SECTIONS,
    SERVER_MANAGED,
    fleet_defaults,
    group_chain,
)
from offhook.provisioning.setting_help import DESCRIPTIONS

INHERIT = ""  # a form field left empty (or "inherit" chosen) sets nothing at this level


@dataclass(frozen=True)
class SettingField:
    key: str  # dotted: audio.tone_plan
    section: str
    name: str
    kind: str  # boolean | integer | number | string | choice | list
    default: Any
    description: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def secret(self) -> bool:
        """Never sent back to the browser: an empty field keeps what is stored."""
        return self.name.endswith("password") or self.name in ("pin", "token", "secret")

    def form_text(self, value: Any) -> str:
        """A stored value as the form shows it."""
        if value is None:
            return ""
        if self.kind == "boolean":
            return "true" if value else "false"
        if self.kind == "list":
            return json.dumps(value)
        return str(value)

    def parse(self, text: str) -> Any:
        """Form text to a value (the schema then checks it); OperationError names the key."""
        text = text.strip()
        if self.kind == "boolean":
            if text not in ("true", "false"):
                raise OperationError(f"{self.key}: choose true or false")
            return text == "true"
        if self.kind == "choice":
            by_text = {str(c): c for c in self.choices}
            if text not in by_text:
                allowed = ", ".join(by_text)
                raise OperationError(f"{self.key}: {text!r} is not one of {allowed}")
            return by_text[text]
        if self.kind in ("integer", "number"):
            try:
                number: float = int(text) if self.kind == "integer" else float(text)
            except ValueError:
                raise OperationError(f"{self.key}: {text!r} is not a number") from None
            if self.minimum is not None and number < self.minimum:
                raise OperationError(f"{self.key}: {text} is below {self.minimum:g}")
            if self.maximum is not None and number > self.maximum:
                raise OperationError(f"{self.key}: {text} is above {self.maximum:g}")
            return number
        if self.kind == "list":
            try:
                value = json.loads(text)
            except ValueError:
                value = [item.strip() for item in text.split(",") if item.strip()]
            if not isinstance(value, list):
                raise OperationError(f'{self.key}: a list, e.g. ["G722", "PCMU"] or G722, PCMU')
            return value
        return text


@dataclass(frozen=True)
class Section:
    name: str
    description: str
    fields: tuple[SettingField, ...]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref", "")
    if ref:
        return dict(schema["$defs"][ref.rsplit("/", 1)[-1]])
    for option in node.get("anyOf", []):  # Optional[...]: the non-null branch
        if option.get("type") != "null":
            merged = {**node, **_resolve(schema, option)}
            merged.pop("anyOf", None)
            return merged
    return node


def _field(section: str, name: str, node: dict[str, Any]) -> SettingField:
    key = f"{section}.{name}"
    kind = {"boolean": "boolean", "integer": "integer", "number": "number", "array": "list"}.get(
        node.get("type", "string"), "string"
    )
    choices: tuple[Any, ...] = ()
    if "enum" in node:
        kind, choices = "choice", tuple(node["enum"])
    return SettingField(
        key=key,
        section=section,
        name=name,
        kind=kind,
        default=node.get("default"),
        description=DESCRIPTIONS.get(key, node.get("description", "")),
        choices=choices,
        minimum=node.get("minimum", node.get("exclusiveMinimum")),
        maximum=node.get("maximum", node.get("exclusiveMaximum")),
    )


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def settable_defaults() -> dict[str, Any]:
    """Every key the server may set (not the phone-local or server-managed ones), with the
    schema's default."""
    defaults = PhoneConfig().model_dump(mode="json")
    for name in (*LOCAL_SECTIONS, *SERVER_MANAGED):
        defaults.pop(name, None)
    for name, key in LOCAL_KEYS:
        defaults[name].pop(key, None)
    return flatten(defaults)


@cache
def sections() -> tuple[Section, ...]:
    """Every section with the keys the server may set, in the schema's order."""
    settable = settable_defaults()
    schema = PhoneConfig.model_json_schema()
    out = []
    for section, ref in schema["properties"].items():
        node = _resolve(schema, ref)
        if node.get("type") != "object" or "properties" not in node:
            continue  # lists of tables (accounts, phonebook, blf) have their own pages
        fields = tuple(
            _field(section, name, _resolve(schema, sub))
            for name, sub in node["properties"].items()
            if f"{section}.{name}" in settable
        )
        if fields:
            doc = (node.get("description") or "").strip().replace("\n", " ")
            out.append(Section(section, doc, fields))
    return tuple(out)


def section(name: str) -> Section:
    for found in sections():
        if found.name == name:
            return found
    raise OperationError(f"unknown settings section {name!r}")


def section_changes(
    name: str, form: Mapping[str, str], own: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """(set, unset) for operations.change_settings from one section's form: a field left
    empty is inherited (unset here, if ``own``, the level's flattened settings, has it), any
    other value is parsed and set."""
    wanted = section(name)
    set_values: dict[str, Any] = {}
    unset: list[str] = []
    problems: list[str] = []
    for field in wanted.fields:
        text = form.get(field.key, INHERIT)
        if field.secret and text.strip() == INHERIT:
            if form.get(f"{field.key}.clear"):
                unset.append(field.key)
            continue  # kept: the stored secret is never shown, so empty means "no change"
        if text.strip() == INHERIT:
            if field.key in own:
                unset.append(field.key)
            continue
        try:
            set_values[field.key] = field.parse(text)
        except OperationError as exc:
            problems.append(str(exc))
    if problems:
        raise OperationError("; ".join(problems))
    return set_values, unset


# --- lists of tables (phonebook, blf) -------------------------------------------------------

ROW_ORIGIN = "__row"  # a row's index in the stored list ("" for a new row): its secrets stay
MAX_ROWS = 200  # a form's rows, whatever the schema allows


@dataclass(frozen=True)
class ListSection:
    """A top-level list of tables: the fields of one item, and at most how many items."""

    name: str
    description: str
    fields: tuple[SettingField, ...]
    max_items: int
    item_model: type[BaseModel]

    def row_field(self, index: int, field: SettingField) -> SettingField:
        """The field as row ``index`` names it in messages: ``blf[1].extension``."""
        return dataclasses.replace(field, key=f"{self.name}[{index}].{field.name}")


class ListRefused(OperationError):
    """Rows that cannot be stored: ``errors`` maps "row.field" (or "" for the list) to why."""

    def __init__(self, name: str, errors: dict[str, str]) -> None:
        self.errors = errors
        named = []
        for where, why in errors.items():
            row, _, field = where.partition(".")
            named.append(f"{name}[{row}].{field}: {why}" if where else why)
        super().__init__("; ".join(named))


def _item_model(name: str) -> type[BaseModel]:
    (model,) = get_args(PhoneConfig.model_fields[name].annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"PhoneConfig.{name}: not a list of tables")
    return model


@cache
def list_sections() -> tuple[ListSection, ...]:
    """The lists of tables the server may set, in the schema's order, each item's fields
    generated like a section's."""
    schema = PhoneConfig.model_json_schema()
    settable = settable_defaults()
    out = []
    for name, node in schema["properties"].items():
        items = node.get("items", {})
        if node.get("type") != "array" or "$ref" not in items or name not in settable:
            continue
        item = _resolve(schema, items)
        fields = tuple(
            _field(name, prop, _resolve(schema, sub)) for prop, sub in item["properties"].items()
        )
        doc = (item.get("description") or "").strip().replace("\n", " ")
        limit = int(node.get("maxItems", MAX_ROWS))
        out.append(ListSection(name, doc, fields, min(limit, MAX_ROWS), _item_model(name)))
    return tuple(out)


def list_section(name: str) -> ListSection | None:
    return next((found for found in list_sections() if found.name == name), None)


def rows_as_text(wanted: ListSection, stored: Any) -> list[dict[str, str]]:
    """Stored items as the form shows them; secrets blank (never sent back)."""
    rows = []
    for index, item in enumerate(stored if isinstance(stored, list) else []):
        row = {ROW_ORIGIN: str(index)}
        for field in wanted.fields:
            value = item.get(field.name) if isinstance(item, dict) else None
            row[field.name] = "" if field.secret else field.form_text(value)
        rows.append(row)
    return rows


def rows_from_form(wanted: ListSection, form: Mapping[str, str]) -> list[dict[str, str]]:
    """The rows as typed: ``{name}.{i}.{field}`` for i from 0 to ``{name}.count``."""
    try:
        count = min(int(form.get(f"{wanted.name}.count", "0")), MAX_ROWS)
    except ValueError:
        count = 0
    rows = []
    for index in range(count):
        prefix = f"{wanted.name}.{index}."
        row = {ROW_ORIGIN: form.get(prefix + ROW_ORIGIN, "")}
        for field in wanted.fields:
            row[field.name] = form.get(prefix + field.name, "")
        rows.append(row)
    return rows


def edit_rows(
    wanted: ListSection, rows: list[dict[str, str]], op: str, inherited: Any
) -> list[dict[str, str]]:
    """A row operation of the form (no JavaScript needed): add, remove:N, up:N, down:N, or
    copy (the inherited rows, as a start for this level's own)."""
    rows = [dict(r) for r in rows]
    verb, _, arg = op.partition(":")
    index = int(arg) if arg.isdigit() else -1
    if verb == "add":
        if len(rows) >= wanted.max_items:
            raise OperationError(f"{wanted.name}: at most {wanted.max_items} rows")
        rows.append({ROW_ORIGIN: "", **{f.name: "" for f in wanted.fields}})
    elif verb == "copy":
        rows = [{**r, ROW_ORIGIN: ""} for r in rows_as_text(wanted, inherited)]
    elif 0 <= index < len(rows):
        if verb == "remove":
            del rows[index]
        elif verb == "up" and index > 0:
            rows[index - 1], rows[index] = rows[index], rows[index - 1]
        elif verb == "down" and index + 1 < len(rows):
            rows[index + 1], rows[index] = rows[index], rows[index + 1]
    return rows


_VALUE_ERROR = re.compile(r"^(Value error|Assertion failed), ")


def list_value(
    wanted: ListSection, rows: list[dict[str, str]], stored: Any
) -> list[dict[str, Any]]:
    """The rows as the list to store: each field parsed (types, choices, ranges), an empty
    field left to the schema's default, an empty secret keeping the stored row's, each row
    checked with the item's model. ListRefused names every bad field by row."""
    if len(rows) > wanted.max_items:
        raise ListRefused(wanted.name, {"": f"{wanted.name}: at most {wanted.max_items} rows"})
    previous = stored if isinstance(stored, list) else []
    errors: dict[str, str] = {}
    items = []
    for index, row in enumerate(rows):
        origin = row.get(ROW_ORIGIN, "")
        before = previous[int(origin)] if origin.isdigit() and int(origin) < len(previous) else {}
        item: dict[str, Any] = {}
        for field in wanted.fields:
            text = row.get(field.name, "").strip()
            if not text:
                if field.secret and isinstance(before, dict) and before.get(field.name):
                    item[field.name] = before[field.name]  # kept: never shown, so empty = same
                continue
            try:
                item[field.name] = wanted.row_field(index, field).parse(text)
            except OperationError as exc:
                errors[f"{index}.{field.name}"] = str(exc).split(": ", 1)[-1]
        try:
            checked = wanted.item_model.model_validate(item)
        except ValidationError as exc:
            for problem in exc.errors():
                where = str(problem["loc"][0]) if problem["loc"] else ""
                message = _VALUE_ERROR.sub("", problem["msg"])
                errors.setdefault(f"{index}.{where}" if where else "", message)
            continue
        items.append(checked.model_dump(mode="json", exclude_unset=True))
    if errors:
        raise ListRefused(wanted.name, errors)
    return items


# --- effective values and where they come from ----------------------------------------------

Effective = Mapping[str, tuple[Any, str]]  # dotted key -> (value, where it comes from)


def layered(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[Any, str]]:
    """Defaults, then each (label, partial settings) layer in the order render applies them."""
    out: dict[str, tuple[Any, str]] = {
        key: (value, "default") for key, value in settable_defaults().items()
    }
    for label, partial in layers:
        for key, value in flatten(partial).items():
            out[key] = (value, label)
    return out


def group_layers(db: Session, group: Group | None) -> list[tuple[str, dict[str, Any]]]:
    layers: list[tuple[str, dict[str, Any]]] = [("fleet", fleet_defaults(db).settings or {})]
    for g in group_chain(db, group.id if group else None):
        for template in g.templates:
            layers.append((f"template {template.name}", template.settings or {}))
        layers.append((f"{g.kind} {g.name}", g.settings or {}))
    return layers


def device_effective(db: Session, device: Device) -> Effective:
    layers = group_layers(db, db.get(Group, device.group_id) if device.group_id else None)
    if device.name:
        layers.append(("device name", {"device": {"name": device.name}}))
    layers.append(("device", device.settings or {}))
    return layered(layers)
