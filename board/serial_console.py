"""A line-based debugging console on a serial port (a UART, a USB gadget, or ``loop://``).

Each line received is ``<command> [args...]``; the reply is written back followed by CRLF.
Commands are plain callables registered by whoever owns the console (``help`` is built in).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

import serial

from offhook.board.worker import Worker

log = logging.getLogger(__name__)

Command = Callable[[list[str]], str]
MAX_LINE = 256


class Port(Protocol):
    """What the console needs of a pyserial port (a UART, a USB gadget, ``loop://``)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def open_port(url: str, baudrate: int = 115200) -> Port:
    """``/dev/ttyS1`` (Pi header UART on Debian's kernel), ``/dev/ttyGS0`` or any pyserial URL;
    reads time out so loops can stop."""
    try:
        # every port class serial_for_url makes has in_waiting; SerialBase does not declare it
        return cast(Port, serial.serial_for_url(url, baudrate=baudrate, timeout=0.2))
    except (serial.SerialException, ValueError) as exc:
        raise RuntimeError(f"cannot open serial console {url!r}: {exc}") from exc


class SerialConsole:
    def __init__(self, port: Port, commands: dict[str, Command] | None = None) -> None:
        self._port = port
        self._commands: dict[str, Command] = dict(commands or {})
        self._buffer = b""
        self._worker = Worker("serial-console", self._run)

    def register(self, name: str, command: Command) -> None:
        self._commands[name] = command

    def execute(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        name, args = words[0].lower(), words[1:]
        if name == "help":
            return "commands: " + " ".join(sorted([*self._commands, "help"]))
        command = self._commands.get(name)
        if command is None:
            return f"error: unknown command {name!r} (try help)"
        try:
            return command(args)
        except (ValueError, KeyError, IndexError) as exc:
            return f"error: {exc}"

    def poll_once(self) -> list[str]:
        """Read what has arrived; run each complete line. Returns the lines that were run."""
        chunk = self._port.read(max(1, self._port.in_waiting))
        self._buffer += chunk
        done = []
        while True:
            end = min(
                (i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0),
                default=-1,
            )
            if end < 0:
                break
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            line = raw.decode("utf-8", "replace").strip()
            if line:
                reply = self.execute(line)
                self._port.write(reply.encode("utf-8") + b"\r\n")
                self._port.flush()
                done.append(line)
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self._port.write(b"error: line too long\r\n")
        return done

    def write_line(self, text: str) -> None:
        self._port.write(text.encode("utf-8") + b"\r\n")

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except serial.SerialException:
                log.exception("serial console read failed")
                stop.wait(1.0)


def phone_commands(
    press: Callable[[str], None],
    set_hook: Callable[[bool], None],
    snapshot: Callable[[], dict[str, Any]],
) -> dict[str, Command]:
    """The usual bench commands: ``key <name>``, ``hook up|down``, ``screen``, ``state``."""

    def key(args: list[str]) -> str:
        if len(args) != 1:
            raise ValueError("usage: key <name>")
        press(args[0])
        return f"ok key {args[0]}"

    def hook(args: list[str]) -> str:
        if args not in (["up"], ["down"]):
            raise ValueError("usage: hook up|down")
        set_hook(args[0] == "up")
        return f"ok hook {args[0]}"

    def screen(args: list[str]) -> str:
        return "\r\n".join(snapshot().get("screen", []))

    def state(args: list[str]) -> str:
        return json.dumps(snapshot(), sort_keys=True)

    return {"key": key, "hook": hook, "screen": screen, "state": state}
