"""Turning form text into setting values."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from offhook.provisioning.operations import Actor, OperationError, change_settings


def parse_form_value(text: str) -> Any:
    """Form fields are text. A JSON list or object (``["G722", "PCMU"]``) is decoded; anything
    else stays text and the config schema converts it (``"80"`` -> 80, ``"true"`` -> True)."""
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            return json.loads(stripped)
        except ValueError:
            return stripped
    return stripped


def change_one_setting(
    db: Session, actor: Actor, scope: str, ref: str | int | None, key: str, value: str, unset: str
) -> list[str]:
    """The settings form of the fleet, a group or a device: set one dotted key from form text, or
    unset one so it is inherited again. Returns the devices whose config changed."""
    if unset:
        return change_settings(db, actor, scope, ref, unset=[unset])
    if not key.strip():
        raise OperationError("choose a setting, e.g. audio.tone_plan")
    return change_settings(db, actor, scope, ref, set_values={key.strip(): parse_form_value(value)})
