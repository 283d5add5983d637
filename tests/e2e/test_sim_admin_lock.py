"""The admin PIN's lock in a real ``offhook sim`` whose phone process is killed (as a power cut
would end it) and started again by the supervisor: the wrong-PIN count and the lock are read
back from the state directory, so the guessing does not start over."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from offhook.contract.config import parse_config
from offhook.firmware.sim import SimPhone, sim_settings
from tests.fixtures import waiting

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
wait_until = partial(waiting.wait_until, timeout=60.0, interval=0.1)

CONTROL_PORT = 42001
SIP_PORT = 42002


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[SimPhone]:
    data = {
        "device": {"name": "desk"},
        "accounts": [],
        "control": {"listen": f"127.0.0.1:{CONTROL_PORT}", "token": "t" * 22},
        "admin": {"pin": "2468"},
        **sim_settings(),
    }
    data["sip"] = {"port": SIP_PORT, "bind_address": "127.0.0.1"}
    sim = SimPhone(tmp_path, parse_config(data, source="test"))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def screen(phone: SimPhone) -> list[str]:
    return list((phone.state() or {}).get("screen") or [])


def wrong_pin(phone: SimPhone, count: int) -> None:
    """Open the settings, wait out a running lock, type a wrong PIN: the ``count``-th one."""
    phone.client.keys(["menu", "up", "ok"])
    wait_until(lambda: screen(phone)[:1] == ["Admin PIN"], "the PIN prompt")
    phone.client.keys(["1", "1", "ok"])
    wait_until(lambda: screen(phone)[1:2] == [f"Wrong PIN ({count})"], f"wrong PIN {count}")
    phone.client.keys(["cancel"])
    wait_until(lambda: screen(phone)[:1] != ["Settings locked"], "the menu left")


def test_the_pin_lock_survives_the_phone_process_being_killed(
    phone: SimPhone, phone_logs_on_failure: list[SimPhone]
) -> None:
    phone_logs_on_failure.append(phone)
    before = phone.wait_for(lambda s: bool(s.get("screen")), 90, "the phone up")["device"]["pid"]
    lock_path = phone.directory / "state" / "admin_lock.json"
    for count in (1, 2, 3):  # locks of 1, 2 and 4 s
        wrong_pin(phone, count)
        if count < 3:
            time.sleep(2.0 ** (count - 1) + 0.2)
    kept = wait_until(
        lambda: lock_path.exists() and json.loads(lock_path.read_text())["failures"] == 3 and 1,
        "the third failure written",
    )
    assert kept
    written = json.loads(lock_path.read_text())
    os.kill(before, signal.SIGKILL)
    after = phone.wait_for(
        lambda s: s["device"]["pid"] != before and bool(s.get("screen")), 90, "a new phone process"
    )
    assert after["device"]["pid"] != before
    phone.client.keys(["menu", "up", "ok"])
    wait_until(lambda: screen(phone)[:1] in (["Settings locked"], ["Admin PIN"]), "the settings")
    if time.time() < written["locked_until"] - 0.5:  # restarted within the 4 s lock
        assert screen(phone)[0] == "Settings locked"
    wait_until(lambda: screen(phone)[:1] == ["Admin PIN"], "the lock over")
    typed = time.time()
    phone.client.keys(["1", "1", "ok"])
    # the fourth wrong PIN in a row, not a first one: an 8 s lock
    wait_until(
        lambda: screen(phone)[:2] == ["Settings locked", "Wrong PIN (4)"],
        "the count kept across the restart",
    )
    fourth = wait_until(
        lambda: (data := json.loads(lock_path.read_text()))["failures"] == 4 and data,
        "the fourth failure written",
    )
    assert 7.0 < fourth["locked_until"] - typed < 9.5
