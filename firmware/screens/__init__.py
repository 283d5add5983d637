"""Screen -> pixels for the phone's OLED."""

from firmware.screens.oled import render, render_image, render_to_device

__all__ = ["render", "render_image", "render_to_device"]
