"""The Board interface the phone runtime drives: the real Pi board and the emulated one both fit.

Inputs arrive through callbacks (called from the board's own thread): ``on_key(cb)`` with key
names from firmware.events (digits, ``*``, ``#`` and FUNCTION_KEYS), ``on_hook(cb)`` with True
when the handset is lifted. Outputs: ``set_led(name, state)`` (Phone's SetLed),
``set_ringer(on)`` (Phone's SetRinger) and ``display``, a luma device (or None) to render on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Board(Protocol):
    display: Any  # a luma device (real panel, emulator or dummy), or None

    @property
    def offhook(self) -> bool: ...

    def on_key(self, callback: Callable[[str], None]) -> None: ...

    def on_hook(self, callback: Callable[[bool], None]) -> None: ...

    def set_led(self, name: str, state: str) -> None: ...

    def set_ringer(self, on: bool) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...
