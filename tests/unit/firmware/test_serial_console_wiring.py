"""The serial debug console on a real pty pair, driving the real Phone through the Runtime."""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Iterator

import pytest

from offhook.contract.config import parse_config
from offhook.firmware.bench_console import open_serial_console
from offhook.firmware.control import PhoneActions
from offhook.firmware.phone import Phone
from offhook.firmware.runtime import Runtime


class Terminal:
    """The far side of the pty: what a person at the serial terminal types and reads."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def command(self, line: str, timeout: float = 10.0) -> str:
        os.write(self.fd, line.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        # every reply ends with CRLF; a multi-line reply ("screen") is all in one write
        while b"\r\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no reply to {line!r}; got {self.buffer!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                self.buffer += os.read(self.fd, 4096)
        time.sleep(0.05)  # the rest of a multi-line reply
        while select.select([self.fd], [], [], 0)[0]:
            self.buffer += os.read(self.fd, 4096)
        reply, self.buffer = self.buffer.rstrip(b"\r\n"), b""
        return reply.decode()


@pytest.fixture
def console() -> Iterator[tuple[Terminal, Runtime]]:
    config = parse_config({"accounts": [{"user": "1001", "domain": "127.0.0.1"}]})
    runtime = Runtime(Phone(config))
    runtime.start()
    master, slave = os.openpty()
    actions = PhoneActions(runtime, lambda screen: b"")
    serial_console, port = open_serial_console(os.ttyname(slave), actions)
    serial_console.start()
    try:
        yield Terminal(master), runtime
    finally:
        serial_console.stop()
        port.close()
        runtime.stop()
        os.close(master)
        os.close(slave)


def test_console_lifts_the_handset_presses_keys_and_reads_the_phone(console) -> None:
    term, runtime = console
    assert term.command("help") == "commands: help hook key screen state"
    assert term.command("hook up") == "ok hook up"
    assert runtime.snapshot()["hook"] == "off"
    assert term.command("key 2") == "ok key 2"
    assert term.command("key 0") == "ok key 0"
    assert term.command("screen") == "Enter number\r\n20"
    state = json.loads(term.command("state"))
    assert state["dialing"] == "20" and state["hook"] == "off"
    assert term.command("key menu") == "ok key menu"  # function keys by name
    assert term.command("hook down") == "ok hook down"
    assert runtime.snapshot()["hook"] == "on"


def test_console_refuses_bad_input_with_a_reason(console) -> None:
    term, runtime = console
    assert term.command("key banana").startswith("error: unknown key 'banana'")
    assert term.command("hook sideways") == "error: usage: hook up|down"
    assert term.command("reboot").startswith("error: unknown command 'reboot'")
    assert runtime.snapshot()["hook"] == "on"


def test_unopenable_console_port_is_a_clear_error() -> None:
    config = parse_config({})
    runtime = Runtime(Phone(config))
    with pytest.raises(RuntimeError, match="cannot open serial console '/nonexistent/tty'"):
        open_serial_console("/nonexistent/tty", PhoneActions(runtime, lambda screen: b""))
