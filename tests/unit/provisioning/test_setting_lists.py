"""The settings editor's lists of tables (services.setting_fields): fields from the item's
schema, row operations, per-row and per-field refusals, secrets kept; and the partial-settings
check that lets BLF keys name lines only the device has (render.validate_settings)."""

from __future__ import annotations

import pytest

from offhook.provisioning.render import SettingsError, set_dotted, validate_settings
from offhook.provisioning.services.setting_fields import (
    ROW_ORIGIN,
    ListRefused,
    edit_rows,
    list_section,
    list_sections,
    list_value,
    rows_as_text,
    rows_from_form,
)


def test_the_lists_come_from_the_schema_without_the_accounts() -> None:
    names = [s.name for s in list_sections()]
    assert names == ["phonebook", "blf"]  # accounts are lines, managed on the device page
    blf = list_section("blf")
    assert blf is not None and blf.max_items == 8
    kinds = {f.name: (f.kind, f.minimum, f.default) for f in blf.fields}
    assert kinds == {
        "extension": ("string", None, None),
        "label": ("string", None, ""),
        "account": ("integer", 0, 0),
    }


def test_rows_are_read_from_the_form_in_order_and_moved() -> None:
    blf = list_section("blf")
    assert blf is not None
    form = {"blf.count": "2", "blf.0.extension": "2001", "blf.1.extension": "2002"}
    rows = rows_from_form(blf, form)
    assert [r["extension"] for r in rows] == ["2001", "2002"]
    assert [r["extension"] for r in edit_rows(blf, rows, "up:1", [])] == ["2002", "2001"]
    assert [r["extension"] for r in edit_rows(blf, rows, "remove:0", [])] == ["2002"]
    assert len(edit_rows(blf, rows, "add", [])) == 3
    full = [{ROW_ORIGIN: "", "extension": str(n)} for n in range(8)]
    with pytest.raises(Exception, match="at most 8 rows"):
        edit_rows(blf, full, "add", [])


def test_every_bad_field_is_named_by_row() -> None:
    blf = list_section("blf")
    assert blf is not None
    rows = [
        {"extension": "2001", "account": "0"},
        {"extension": "two words", "account": "-2"},
        {"extension": "", "label": "x"},
    ]
    with pytest.raises(ListRefused) as refused:
        list_value(blf, rows, [])
    assert refused.value.errors == {
        "1.account": "-2 is below 0",
        "1.extension": "extension must be 1-64 of letters, digits and . _ + * -",
        "2.extension": "Field required",
    }
    assert "blf[1].account: -2 is below 0" in str(refused.value)


def test_a_secret_left_empty_keeps_the_stored_rows_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No list of the schema has a secret today; the rule is generic (a field named *password)."""
    book = list_section("phonebook")
    assert book is not None
    fields = tuple(
        f if f.name != "speed_dial" else type(f)(**{**f.__dict__, "name": "password"})
        for f in book.fields
    )
    with_secret = type(book)(book.name, "", fields, book.max_items, book.item_model)
    stored = [{"name": "A", "number": "1", "password": "kept"}]
    shown = rows_as_text(with_secret, stored)
    assert shown[0]["password"] == "" and shown[0][ROW_ORIGIN] == "0"
    monkeypatch.setattr(with_secret.item_model, "model_validate", lambda item: _Echo(item))
    assert list_value(with_secret, shown, stored) == [stored[0]]
    moved = [{**shown[0], ROW_ORIGIN: ""}]  # a new row: nothing to keep
    assert list_value(with_secret, moved, stored) == [{"name": "A", "number": "1"}]


class _Echo:
    def __init__(self, item: dict[str, object]) -> None:
        self.item = item

    def model_dump(self, **_: object) -> dict[str, object]:
        return self.item


def test_partial_settings_may_name_a_line_for_a_blf_key() -> None:
    """A group or template cannot know a phone's lines; the device's render checks them."""
    assert validate_settings({"blf": [{"extension": "2001", "account": 1}]})
    stored = set_dotted({}, "blf", [{"extension": "2001"}])
    assert stored == {"blf": [{"extension": "2001", "label": "", "account": 0}]}
    with pytest.raises(SettingsError, match="sip"):  # only a list may stand alone
        set_dotted({}, "sip", [1])
