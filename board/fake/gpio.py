"""FakeGPIO: the RPi.GPIO API over a small model of the electrics, so the real scanning code runs.

The model: pins are nodes; closed switches (keys, the hook contact) join nodes into nets. A pin
set up as an input reads the level of its net: LOW if any output in the net drives LOW (outputs
are modelled open-drain-like, LOW wins, which is how a matrix with undriven rows behaves), else
HIGH if any output drives HIGH, else its pull resistor (PUD_UP -> HIGH, PUD_DOWN -> LOW), else
an external level set with ``set_input``. Pressing key (row, col) on an attached keypad matrix
closes the switch between that row pin and that column pin, so ghosting with three keys held
happens exactly as on the bare matrix.

Bounce: a switch or an externally driven pin can be given N noisy reads; during the next N reads
of any pin the contact (or level) is random (a seeded generator, so tests are repeatable), then it
settles in its final state.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Pin:
    direction: int
    pull: int
    level: int  # driven level (outputs)
    external: int | None = None  # level forced from outside on an input (set_input)
    noise: int = 0  # reads left during which the external level bounces
    now_external: int = 0  # the external level as seen by the current read


@dataclass
class _Switch:
    closed: bool
    noise: int = 0  # reads left during which the contact chatters
    now_closed: bool = False  # the contact as seen by the current read


class FakeGPIO:
    """Drop-in for the ``RPi.GPIO`` module (the subset the board code and common scripts use)."""

    BCM = 11
    BOARD = 10
    OUT = 0
    IN = 1
    LOW = 0
    HIGH = 1
    PUD_OFF = 20
    PUD_DOWN = 21
    PUD_UP = 22
    RISING = 31
    FALLING = 32
    BOTH = 33
    VERSION = "fake"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._mode: int | None = None
        self._pins: dict[int, _Pin] = {}
        self._switches: dict[frozenset[int], _Switch] = {}
        self._matrix: tuple[list[int], list[int]] | None = None
        self._detect: dict[int, tuple[int, list[Callable[[int], None]], bool]] = {}
        self._last_seen: dict[int, int] = {}
        self.output_log: list[tuple[int, int]] = []  # every output() call, in order
        self.reads = 0  # input() calls, for tests that count scans
        self._bouncing = False  # any contact or level still bouncing

    # --- RPi.GPIO API --------------------------------------------------------------------------

    def setmode(self, mode: int) -> None:
        if mode not in (self.BCM, self.BOARD):
            raise ValueError("An invalid mode was passed to setmode()")
        with self._lock:
            if self._mode is not None and self._mode != mode:
                raise ValueError("A different mode has already been set!")
            self._mode = mode

    def getmode(self) -> int | None:
        return self._mode

    def setwarnings(self, flag: bool) -> None:
        pass

    def setup(
        self,
        channel: int | list[int] | tuple[int, ...],
        direction: int,
        pull_up_down: int = PUD_OFF,
        initial: int = -1,
    ) -> None:
        if isinstance(channel, list | tuple):
            for ch in channel:
                self.setup(ch, direction, pull_up_down, initial)
            return
        self._need_mode()
        if direction not in (self.IN, self.OUT):
            raise ValueError("An invalid direction was passed to setup()")
        if direction == self.OUT and pull_up_down != self.PUD_OFF:
            raise ValueError("pull_up_down parameter is not valid for outputs")
        with self._lock:
            old = self._pins.get(channel)
            level = initial if initial in (self.LOW, self.HIGH) else (old.level if old else 0)
            external = old.external if old else None
            self._pins[channel] = _Pin(direction, pull_up_down, level, external)
            self._last_seen[channel] = self._read(channel)

    def output(self, channel: int | list[int], value: int | bool | list[int]) -> None:
        if isinstance(channel, list | tuple):
            values = value if isinstance(value, list | tuple) else [value] * len(channel)
            for ch, v in zip(channel, values, strict=True):
                self.output(ch, v)
            return
        with self._lock:
            pin = self._pins.get(channel)
            if pin is None or pin.direction != self.OUT:
                raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
            pin.level = self.HIGH if value else self.LOW
            self.output_log.append((channel, pin.level))
        self._fire_edges()

    def input(self, channel: int) -> int:
        with self._lock:
            if channel not in self._pins:
                raise RuntimeError("You must setup() the GPIO channel first")
            self.reads += 1
            if self._bouncing:
                self._sample_noise()
            level = self._read(channel)
            if self._bouncing:
                self._age_noise()
            return level

    def cleanup(self, channel: int | list[int] | None = None) -> None:
        with self._lock:
            channels = (
                list(self._pins)
                if channel is None
                else (channel if isinstance(channel, list) else [channel])
            )
            for ch in channels:
                self._pins.pop(ch, None)
                self._detect.pop(ch, None)
            if channel is None:
                self._mode = None

    def gpio_function(self, channel: int) -> int:
        pin = self._pins.get(channel)
        return pin.direction if pin else self.IN

    def add_event_detect(
        self,
        channel: int,
        edge: int,
        callback: Callable[[int], None] | None = None,
        bouncetime: int | None = None,
    ) -> None:
        with self._lock:
            pin = self._pins.get(channel)
            if pin is None or pin.direction != self.IN:
                raise RuntimeError("You must setup() the GPIO channel as an input first")
            if channel in self._detect:
                raise RuntimeError("Conflicting edge detection already enabled for this GPIO")
            if edge not in (self.RISING, self.FALLING, self.BOTH):
                raise ValueError("The edge must be set to RISING, FALLING or BOTH")
            self._detect[channel] = (edge, [callback] if callback else [], False)
            self._last_seen[channel] = self._read(channel)

    def add_event_callback(self, channel: int, callback: Callable[[int], None]) -> None:
        with self._lock:
            if channel not in self._detect:
                raise RuntimeError("Add event detection using add_event_detect first")
            self._detect[channel][1].append(callback)

    def remove_event_detect(self, channel: int) -> None:
        with self._lock:
            self._detect.pop(channel, None)

    def event_detected(self, channel: int) -> bool:
        with self._lock:
            entry = self._detect.get(channel)
            if entry is None:
                return False
            edge, callbacks, seen = entry
            self._detect[channel] = (edge, callbacks, False)
            return seen

    # --- the outside world (tests and the emulator drive these) --------------------------------

    def attach_matrix(self, rows: list[int], cols: list[int]) -> None:
        """Wire a key matrix: ``press(r, c)`` then joins ``rows[r]`` and ``cols[c]``."""
        self._matrix = (list(rows), list(cols))

    def press(self, row: int, col: int, bounce: int = 0) -> None:
        self._set_switch(*self._matrix_pins(row, col), closed=True, bounce=bounce)

    def release(self, row: int, col: int, bounce: int = 0) -> None:
        self._set_switch(*self._matrix_pins(row, col), closed=False, bounce=bounce)

    def connect(self, pin_a: int, pin_b: int, bounce: int = 0) -> None:
        self._set_switch(pin_a, pin_b, closed=True, bounce=bounce)

    def disconnect(self, pin_a: int, pin_b: int, bounce: int = 0) -> None:
        self._set_switch(pin_a, pin_b, closed=False, bounce=bounce)

    def set_input(self, channel: int, level: int | bool, bounce: int = 0) -> None:
        """Drive an input from outside (a switch to a rail, a sensor) to ``level``."""
        with self._lock:
            pin = self._pins.setdefault(channel, _Pin(self.IN, self.PUD_OFF, 0))
            pin.external = self.HIGH if level else self.LOW
            pin.noise = bounce
            self._bouncing |= bounce > 0
        self._fire_edges()

    def level(self, channel: int) -> int:
        """What the pin is at now (outputs: driven level), without counting as a read."""
        with self._lock:
            return self._read(channel)

    # --- model ---------------------------------------------------------------------------------

    def _need_mode(self) -> None:
        if self._mode is None:
            raise RuntimeError(
                "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or "
                "GPIO.setmode(GPIO.BCM)"
            )

    def _matrix_pins(self, row: int, col: int) -> tuple[int, int]:
        if self._matrix is None:
            raise RuntimeError("attach_matrix() first")
        rows, cols = self._matrix
        if not (0 <= row < len(rows) and 0 <= col < len(cols)):
            raise IndexError(f"no key at row {row}, column {col}")
        return rows[row], cols[col]

    def _set_switch(self, a: int, b: int, closed: bool, bounce: int) -> None:
        with self._lock:
            self._switches[frozenset((a, b))] = _Switch(closed, bounce)
            self._bouncing |= bounce > 0
        self._fire_edges()

    def _contact(self, switch: _Switch) -> bool:
        return switch.now_closed if switch.noise > 0 else switch.closed

    def _sample_noise(self) -> None:
        for switch in self._switches.values():
            if switch.noise > 0:
                switch.now_closed = self._rng.random() < 0.5
        for pin in self._pins.values():
            if pin.noise > 0:
                pin.now_external = self._rng.randrange(2)

    def _net(self, channel: int) -> set[int]:
        net = {channel}
        frontier = [channel]
        while frontier:
            node = frontier.pop()
            for pair, switch in self._switches.items():
                if node in pair and self._contact(switch):
                    (other,) = (pair - {node}) or {node}
                    if other not in net:
                        net.add(other)
                        frontier.append(other)
        return net

    def _read(self, channel: int) -> int:
        pin = self._pins.get(channel)
        if pin is None:
            return self.LOW
        if pin.direction == self.OUT:
            return pin.level
        net = [self._pins[n] for n in self._net(channel) if n in self._pins]
        driven = [p.level for p in net if p.direction == self.OUT]
        if not driven:
            driven = [self._external(p) for p in net if p.external is not None]
        if driven:
            return self.LOW if self.LOW in driven else self.HIGH
        # Nothing drives the net: the pull resistor decides (a floating pin reads LOW here).
        return self.HIGH if pin.pull == self.PUD_UP else self.LOW

    def _external(self, pin: _Pin) -> int:
        assert pin.external is not None
        return pin.now_external if pin.noise > 0 else pin.external

    def _age_noise(self) -> None:
        bouncing = False
        parts: list[_Switch | _Pin] = [*self._switches.values(), *self._pins.values()]
        for part in parts:
            if part.noise > 0:
                part.noise -= 1
                bouncing |= part.noise > 0
        self._bouncing = bouncing

    def _fire_edges(self) -> None:
        fired: list[tuple[Callable[[int], None], int]] = []
        with self._lock:
            for channel, (edge, callbacks, _) in list(self._detect.items()):
                now = self._read(channel)
                before = self._last_seen.get(channel, now)
                self._last_seen[channel] = now
                rising = before == self.LOW and now == self.HIGH
                falling = before == self.HIGH and now == self.LOW
                if (
                    (edge == self.RISING and rising)
                    or (edge == self.FALLING and falling)
                    or (edge == self.BOTH and (rising or falling))
                ):
                    self._detect[channel] = (edge, callbacks, True)
                    fired += [(cb, channel) for cb in callbacks]
        for callback, channel in fired:
            callback(channel)
