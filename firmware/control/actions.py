"""What the control API (and the serial bench console) can do to a phone: always through its
Runtime, as events and loop calls, never by reaching into the Phone."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from offhook.board.base import ManualInputs
from offhook.firmware import events as ev
from offhook.firmware.control.protocol import RequestError

if TYPE_CHECKING:
    from offhook.firmware.runtime import Runtime

RUNTIME_TIMEOUT_S = 5.0


class PhoneActions:
    """What the API can do to a phone, carried out through its Runtime (events, never shortcuts)."""

    def __init__(
        self,
        runtime: Runtime,
        screen_png: Callable[[ev.Screen | None], bytes],
        inputs: ManualInputs | None = None,
        resync: Callable[[], str] | None = None,
        test_hooks: dict[str, Callable[[], str]] | None = None,
        device_info: Callable[[], dict] | None = None,
    ) -> None:
        self.runtime = runtime
        self.inputs = inputs  # a board with press()/set_hook() (emulated), else events go direct
        self._device_info = device_info
        self._screen_png = screen_png
        self._resync = resync
        self.test_hooks = test_hooks or {}

    def _barrier(self) -> list[str]:
        """Wait until the loop handled everything posted so far; return the screen lines then."""

        def lines() -> list[str]:
            screen = self.runtime.screen
            return list(screen.lines) if screen else []

        return self.runtime.call(lines, RUNTIME_TIMEOUT_S)

    def set_hook(self, offhook: bool) -> dict:
        if self.inputs is not None:
            self.inputs.set_hook(offhook)
        else:
            self.runtime.post(ev.HookChanged(offhook))
        return {"hook": "off" if offhook else "on", "screen": self._barrier()}

    def press(self, keys: list[str]) -> dict:
        for key in keys:
            if self.inputs is not None:
                self.inputs.press(key)
            else:
                self.runtime.post(ev.KeyPressed(key))
        return {"pressed": keys, "screen": self._barrier()}

    def state(self) -> dict:
        state = dict(self.runtime.snapshot(RUNTIME_TIMEOUT_S))
        if self._device_info is not None:
            state["device"] = self._device_info()
        return state

    def screen(self) -> dict:
        screen = self.runtime.screen
        if screen is None:
            return {"kind": "", "lines": [], "status": {}, "softkeys": []}
        return {
            "kind": screen.kind,
            "lines": list(screen.lines),
            "status": dict(screen.status),
            "softkeys": list(screen.softkeys),
        }

    def screen_png(self) -> bytes:
        return self._screen_png(self.runtime.screen)

    def resync(self) -> dict:
        if self._resync is None:
            raise RequestError(HTTPStatus.CONFLICT, "provisioning is not configured on this phone")
        return {"resync": self._resync()}
