"""LEDs on GPIO outputs: on, off, blink (1 Hz) and fast blink (4 Hz), driven by ``update(now)``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from offhook.board.gpio import GpioApi
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

STATES = ("off", "on", "blink", "fast_blink")
BLINK_HZ = {"blink": 1.0, "fast_blink": 4.0}


class Leds:
    def __init__(self, gpio: GpioApi, pins: Mapping[str, tuple[int, bool]]) -> None:
        """``pins``: LED name -> (BCM pin, active_high)."""
        self._gpio = gpio
        self._pins = dict(pins)
        self._states = {name: "off" for name in self._pins}
        self._levels: dict[str, bool] = {}

    def setup(self) -> None:
        for name, (pin, active_high) in self._pins.items():
            self._gpio.setup(pin, self._gpio.OUT, initial=0 if active_high else 1)
            self._levels[name] = False

    @property
    def states(self) -> dict[str, str]:
        return dict(self._states)

    def set(self, name: str, state: str, now: float) -> None:
        if state not in STATES:
            raise ValueError(f"LED state must be one of {', '.join(STATES)}, not {state!r}")
        if name not in self._pins:
            log.debug("no such LED on this board", extra=kv(led=name))
            return
        self._states[name] = state
        self.update(now)

    def update(self, now: float) -> None:
        """Drive the LEDs for time ``now``; blinking ones follow the clock, so all blink in step."""
        for name, state in self._states.items():
            if state in BLINK_HZ:
                lit = math.fmod(now * BLINK_HZ[state], 1.0) < 0.5
            else:
                lit = state == "on"
            if self._levels.get(name) != lit:
                pin, active_high = self._pins[name]
                self._gpio.output(pin, 1 if lit == active_high else 0)
                self._levels[name] = lit

    def lit(self, name: str) -> bool:
        return self._levels.get(name, False)
