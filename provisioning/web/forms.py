"""Turning form text into setting values."""

from __future__ import annotations

import json
from typing import Any


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
