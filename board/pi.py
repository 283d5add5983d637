"""The real board: keypad, hook, LEDs and ringer on GPIO per a profile, plus the OLED.

One thread polls everything at the keypad scan rate (scanning, hook debounce, LED blinking and
ringer cadence), so the board costs a single thread and its timing is one loop to reason about.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from offhook.board.base import Display
from offhook.board.gpio import GpioApi, load_gpio
from offhook.board.hook import HookSwitch
from offhook.board.keypad import MatrixKeypad
from offhook.board.leds import Leds
from offhook.board.profile import BoardProfile
from offhook.board.ringer import Ringer
from offhook.board.worker import Worker
from offhook.contract.logs import kv

log = logging.getLogger(__name__)


class PiBoard:
    def __init__(
        self,
        profile: BoardProfile,
        gpio: GpioApi | None = None,
        display: Display | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.display = display
        self._gpio = gpio
        self._clock = clock
        self._key_callback: Callable[[str], None] = lambda key: None
        self._hook_callback: Callable[[bool], None] = lambda offhook: None
        self._lock = threading.Lock()
        self._worker = Worker("board-poll", self._run)
        self._keypad: MatrixKeypad | None = None
        self._hook: HookSwitch | None = None
        self._leds: Leds | None = None
        self._ringer: Ringer | None = None

    # --- Board interface -----------------------------------------------------------------------

    @property
    def offhook(self) -> bool:
        return self._hook.offhook if self._hook else False

    def on_key(self, callback: Callable[[str], None]) -> None:
        self._key_callback = callback

    def on_hook(self, callback: Callable[[bool], None]) -> None:
        self._hook_callback = callback

    def set_led(self, name: str, state: str) -> None:
        if self._leds is not None:
            with self._lock:
                self._leds.set(name, state, self._clock())

    def set_ringer(self, on: bool) -> None:
        if self._ringer is not None:
            with self._lock:
                self._ringer.set(on, self._clock())

    def start(self) -> None:
        """Set up the pins and start polling (``setup()`` alone for step-by-step tests)."""
        self.setup()
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
        if self._gpio is not None:
            self._gpio.cleanup()

    # --- parts ---------------------------------------------------------------------------------

    def setup(self) -> None:
        if self._gpio is None:
            self._gpio = load_gpio()
        gpio, p = self._gpio, self.profile
        gpio.setmode(gpio.BCM)
        self._keypad = MatrixKeypad(
            gpio,
            p.keypad.rows,
            p.keypad.cols,
            p.keypad.keys,
            on_key=lambda key: self._key_callback(key),
            debounce_scans=p.keypad.debounce_scans,
            scan_hz=p.keypad.scan_hz,
        )
        self._hook = HookSwitch(
            gpio,
            p.hook.pin,
            on_change=lambda offhook: self._hook_callback(offhook),
            offhook_level=gpio.HIGH if p.hook.offhook_level == "high" else gpio.LOW,
            pull=p.hook.pull,
            debounce_reads=p.hook.debounce_reads,
        )
        self._leds = Leds(gpio, {n: (led.pin, led.active == "high") for n, led in p.leds.items()})
        if p.ringer is not None:
            self._ringer = Ringer(gpio, p.ringer.pin, p.ringer.active == "high", p.ringer.cadence_s)
        for part in (self._keypad, self._hook, self._leds, self._ringer):
            if part is not None:
                part.setup()
        log.info("board ready", extra=kv(profile=p.name))

    @property
    def leds(self) -> dict[str, str]:
        return self._leds.states if self._leds else {}

    def poll_once(self) -> None:
        """One pass: scan keys, read the hook, drive blinking LEDs and the ringer cadence."""
        assert self._keypad and self._hook and self._leds, "setup() first"
        self._keypad.scan_once()
        self._hook.poll_once()
        with self._lock:
            now = self._clock()
            self._leds.update(now)
            if self._ringer is not None:
                self._ringer.update(now)

    def _run(self, stop: threading.Event) -> None:
        assert self._keypad is not None
        period = self._keypad.scan_period_s
        while not stop.wait(period):
            try:
                self.poll_once()
            except Exception:  # keep the phone usable if one read fails
                log.exception("board poll failed")
