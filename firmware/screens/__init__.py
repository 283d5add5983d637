"""Screen -> pixels for the phone's OLED, and phone state -> Screen (``firmware.screens.views``).

The renderers load luma and Pillow on first use, so the Phone can compose screens without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offhook.firmware.screens.oled import render, render_image, render_to_device

__all__ = ["render", "render_image", "render_to_device"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return getattr(import_module("offhook.firmware.screens.oled"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
