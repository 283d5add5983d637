"""Hook switch: a debounced GPIO input reported as off-hook / on-hook changes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from offhook.board.gpio import GpioApi
from offhook.contract.logs import kv

log = logging.getLogger(__name__)


class HookSwitch:
    """``offhook_level`` is the pin level with the handset lifted (wiring decides the polarity)."""

    def __init__(
        self,
        gpio: GpioApi,
        pin: int,
        on_change: Callable[[bool], None],
        offhook_level: int = 1,
        pull: str = "up",
        debounce_reads: int = 5,
    ) -> None:
        if debounce_reads < 1:
            raise ValueError("debounce_reads must be at least 1")
        if pull not in ("up", "down", "off"):
            raise ValueError(f"pull must be up, down or off, not {pull!r}")
        self._gpio = gpio
        self._pin = pin
        self._on_change = on_change
        self._offhook_level = offhook_level
        self._pull = pull
        self._debounce = debounce_reads
        self._streak = 0
        self.offhook = False

    def setup(self) -> None:
        """Configure the pin and take its settled state as the start state (no callback)."""
        pulls = {"up": self._gpio.PUD_UP, "down": self._gpio.PUD_DOWN, "off": self._gpio.PUD_OFF}
        self._gpio.setup(self._pin, self._gpio.IN, pull_up_down=pulls[self._pull])
        self.offhook = self._gpio.input(self._pin) == self._offhook_level

    def poll_once(self) -> bool | None:
        """Read the pin; returns the new state when a debounced change happened."""
        reading = self._gpio.input(self._pin) == self._offhook_level
        if reading == self.offhook:
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < self._debounce:
            return None
        self._streak = 0
        self.offhook = reading
        log.info("hook changed", extra=kv(offhook=reading))
        self._on_change(reading)
        return reading
