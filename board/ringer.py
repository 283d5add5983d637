"""Ringer output (a buzzer or bell driver on a GPIO), ringing in a cadence while on."""

from __future__ import annotations

import math

from offhook.board.gpio import GpioApi


class Ringer:
    def __init__(
        self,
        gpio: GpioApi,
        pin: int,
        active_high: bool = True,
        cadence_s: tuple[float, float] = (2.0, 4.0),
    ) -> None:
        on_s, off_s = cadence_s
        if on_s <= 0 or off_s < 0:
            raise ValueError(f"ringer cadence must be on > 0 and off >= 0 seconds, not {cadence_s}")
        self._gpio = gpio
        self._pin = pin
        self._active_high = active_high
        self._cadence = (on_s, off_s)
        self._since: float | None = None  # ringing since, or None when silent
        self.sounding = False

    def setup(self) -> None:
        self._gpio.setup(self._pin, self._gpio.OUT, initial=0 if self._active_high else 1)

    @property
    def ringing(self) -> bool:
        return self._since is not None

    def set(self, on: bool, now: float) -> None:
        if on and self._since is None:
            self._since = now
        elif not on:
            self._since = None
        self.update(now)

    def update(self, now: float) -> None:
        on_s, off_s = self._cadence
        if self._since is None:
            sound = False
        else:
            sound = math.fmod(max(0.0, now - self._since), on_s + off_s) < on_s
        if sound != self.sounding:
            self._gpio.output(self._pin, 1 if sound == self._active_high else 0)
            self.sounding = sound
