"""``offhook sim`` with ``board.serial_console`` set: the phone process opens the port and a
person at the serial terminal (the far end of a real pty pair) drives the phone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from offhook.firmware.sim import SimPhone, sim_config
from tests.unit.firmware.test_serial_console_wiring import Terminal

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]


def test_phone_process_serves_the_serial_console(tmp_path: Path, phone_logs_on_failure) -> None:
    master, slave = os.openpty()
    config = sim_config("console", "", "", "")
    config = config.model_copy(
        update={"board": config.board.model_copy(update={"serial_console": os.ttyname(slave)})}
    )
    phone = SimPhone(tmp_path / "phone", config)
    phone_logs_on_failure.append(phone)
    phone.start()
    try:
        phone.wait_for(lambda s: s["hook"] == "on", timeout=60, what="phone up")
        term = Terminal(master)
        assert term.command("hook up", timeout=20) == "ok hook up"
        assert term.command("key 4") == "ok key 4"
        state = json.loads(term.command("state"))
        assert state["dialing"] == "4" and state["device"]["pid"] > 0
        assert phone.client.state()["hook"] == "off"  # the same phone the control API sees
        assert term.command("hook down") == "ok hook down"
    finally:
        phone.stop()
        os.close(master)
        os.close(slave)
