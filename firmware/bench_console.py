"""The bench console on a serial port, wired to the phone (board/serial_console.py speaks it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from offhook.board.serial_console import SerialConsole, open_port, phone_commands
from offhook.contract.keys import DIGIT_KEYS, FUNCTION_KEYS

if TYPE_CHECKING:
    from offhook.board.serial_console import Port, SerialConsole
    from offhook.firmware.control.actions import PhoneActions


def open_serial_console(url: str, actions: PhoneActions) -> tuple[SerialConsole, Port]:
    """The bench console on a serial port: ``key``, ``hook``, ``screen``, ``state``, ``help``.

    Inputs go through the same PhoneActions as the control API (so an emulated board's own hook
    state follows). Returns (console, port); the caller starts the console and closes the port."""

    def press(key: str) -> None:
        if key not in DIGIT_KEYS and key not in FUNCTION_KEYS:
            valid = "0-9 * # " + " ".join(sorted(FUNCTION_KEYS))
            raise ValueError(f"unknown key {key!r}; valid keys: {valid}")
        actions.press([key])

    def set_hook(offhook: bool) -> None:
        actions.set_hook(offhook)

    port = open_port(url)
    return SerialConsole(port, phone_commands(press, set_hook, actions.state)), port
