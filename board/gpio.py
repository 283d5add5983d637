"""GPIO access: the RPi.GPIO API, loaded only on a Raspberry Pi.

Everything in board/ talks to an object with the RPi.GPIO module's API (``setmode``, ``setup``,
``input``, ``output``, ``cleanup``, ``add_event_detect`` and the constants). On a Pi that is the
RPi.GPIO module itself (on a Pi 5, the ``rpi-lgpio`` package provides the same module); in tests
and in the simulator it is ``board.fake.FakeGPIO``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol


class GpioApi(Protocol):
    BCM: int
    OUT: int
    IN: int
    LOW: int
    HIGH: int
    PUD_OFF: int
    PUD_UP: int
    PUD_DOWN: int

    def setmode(self, mode: int) -> None: ...
    def setup(
        self, channel: Any, direction: int, pull_up_down: int = ..., initial: int = ...
    ) -> None: ...
    def input(self, channel: int) -> int: ...
    def output(self, channel: Any, value: Any) -> None: ...
    def cleanup(self, channel: Any = ...) -> None: ...


def load_gpio() -> GpioApi:
    """Import RPi.GPIO now (importing it off a Pi raises RuntimeError, so never at module load)."""
    try:
        module = importlib.import_module("RPi.GPIO")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "RPi.GPIO is not installed: install offhook[pi] (on a Pi 5: the rpi-lgpio package)"
        ) from exc
    module.setwarnings(False)
    return module
