"""The board's interfaces, as the phone runtime drives them: the real Pi board and the emulated
one both fit ``Board``; the OLED (a luma device, real, emulated or dummy) fits ``Display``.

Inputs arrive through callbacks (called from the board's own thread): ``on_key(cb)`` with key
names from contract/keys.py (digits, ``*``, ``#`` and FUNCTION_KEYS), ``on_hook(cb)`` with True
when the handset is lifted. Outputs: ``set_led(name, state)`` (Phone's SetLed),
``set_ringer(on)`` (Phone's SetRinger) and ``display``, a Display (or None) to render on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Display(Protocol):
    """A luma device: the screen renderer draws a PIL image of ``size`` in ``mode`` on it."""

    width: int
    height: int
    mode: str

    @property
    def size(self) -> tuple[int, int]: ...

    def display(self, image: Any) -> None: ...


class ManualInputs(Protocol):
    """A board whose handset and keys can be worked by software (the emulated one): the control
    API and the bench console go through it, so the board's own hook state stays the phone's."""

    def press(self, key: str) -> None: ...

    def set_hook(self, offhook: bool) -> None: ...


class Board(Protocol):
    @property
    def display(self) -> Display | None: ...

    @property
    def offhook(self) -> bool: ...

    @property
    def leds(self) -> dict[str, str]:
        """Each LED's last state as set (what the control API's state shows)."""
        ...

    def on_key(self, callback: Callable[[str], None]) -> None: ...

    def on_hook(self, callback: Callable[[bool], None]) -> None: ...

    def set_led(self, name: str, state: str) -> None: ...

    def set_ringer(self, on: bool) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...
