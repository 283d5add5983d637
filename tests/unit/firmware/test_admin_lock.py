"""The admin PIN's lock survives a restart: wrong PINs leave as SaveAdminLock, the state file
keeps them atomically, and a Phone built from that file is still locked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from offhook.firmware.events import KeyPressed, StartTimer, TimerFired
from offhook.firmware.features.events import SaveAdminLock
from offhook.firmware.features.settings import LOCK_MAX_S
from offhook.firmware.features.state import AdminLock
from offhook.firmware.phone import Phone
from offhook.firmware.state_files import DAMAGED_LOCK_FAILURES, AdminLockFile
from tests.unit.firmware.test_phone import T0, make_config

CONFIG = make_config(admin={"pin": "2468"})


class Keypad:
    """A Phone driven by key presses on a clock the test moves."""

    def __init__(self, phone: Phone, now: float = T0) -> None:
        self.phone = phone
        self.now = now
        self.out = phone.start(now)

    def press(self, *keys: str, advance: float = 0.1) -> list:
        out: list = []
        for key in keys:
            self.now += advance
            out += self.phone.handle(KeyPressed(key), self.now)
        self.out = out
        return out

    def saved(self) -> list[SaveAdminLock]:
        return [c for c in self.out if isinstance(c, SaveAdminLock)]

    @property
    def lines(self) -> tuple[str, ...]:
        return self.phone.screen.lines


def open_settings(pad: Keypad) -> None:
    pad.press("menu", "up", "ok")
    assert pad.phone.screen.kind == "settings"


def test_each_wrong_pin_is_saved_and_the_right_one_clears_the_saved_count() -> None:
    pad = Keypad(Phone(CONFIG))
    open_settings(pad)
    pad.press("1", "ok")
    assert pad.saved() == [SaveAdminLock(1, pad.now + 1.0)]
    pad.now += 1.0
    pad.phone.handle(TimerFired("admin_lock"), pad.now)
    pad.press(*"2468", "ok")
    assert pad.lines[0] == "Settings"
    assert pad.saved() == [SaveAdminLock(0, 0.0)]
    pad.press("cancel")
    open_settings(pad)
    pad.press(*"2468", "ok")
    assert pad.saved() == []  # nothing to clear: no write


def test_a_phone_restarted_from_the_state_file_stays_locked(tmp_path: Path) -> None:
    lock_file = AdminLockFile(tmp_path / "admin_lock.json")
    pad = Keypad(Phone(CONFIG))
    for _ in range(4):  # 1, 2, 4, then 8 s
        open_settings(pad)
        pad.press("9", "ok")
        for command in pad.saved():
            lock_file.save(command.failures, command.locked_until)
        pad.now += 10
        pad.phone.handle(TimerFired("admin_lock"), pad.now)
        pad.press("cancel")
    pad.press("menu", "up", "ok", "1", "ok")  # the fifth: 16 s
    assert pad.lines[1:] == ("Wrong PIN (5)", "Try again in 16 s")
    (command,) = pad.saved()
    lock_file.save(command.failures, command.locked_until)

    # the power is pulled; a new phone process reads the same state directory 5 s later
    now = pad.now + 5
    again = Keypad(Phone(CONFIG, admin_lock=AdminLockFile(lock_file.path).load(now)), now)
    out = again.press("menu", "up", "ok")
    assert again.lines == ("Settings locked", "Try again in 11 s")
    assert StartTimer("admin_lock", pytest.approx(10.7)) in out  # ends the lock on time
    again.press(*"2468", "ok")
    assert again.lines[0] == "Settings locked"  # the right PIN is not even asked for
    again.now += 11
    again.phone.handle(TimerFired("admin_lock"), again.now)
    assert again.lines[0] == "Admin PIN"
    again.press("1", "ok")
    assert again.lines[1:] == ("Wrong PIN (6)", "Try again in 32 s")  # the count went on


def test_a_kept_lock_never_reaches_past_the_longest_lock_from_now() -> None:
    # a Pi has no clock of its own: booted with the clock set back, the lock must still end
    phone = Phone(CONFIG, admin_lock=AdminLock(12, T0 + 86_400))
    phone.start(T0)
    assert phone.state.admin_lock == AdminLock(12, T0 + LOCK_MAX_S)


def test_state_file_round_trip_and_no_file(tmp_path: Path) -> None:
    lock_file = AdminLockFile(tmp_path / "admin_lock.json")
    assert lock_file.load(T0) == AdminLock()
    lock_file.save(3, T0 + 4)
    assert json.loads(lock_file.path.read_text()) == {"failures": 3, "locked_until": T0 + 4}
    assert AdminLockFile(lock_file.path).load(T0) == AdminLock(3, T0 + 4)
    assert not list(tmp_path.glob("*.tmp*"))  # written by rename, no temp file left


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        '{"failures": "3", "locked_until": 1}',
        '{"failures": -1, "locked_until": 1}',
        '{"failures": true, "locked_until": 1}',
        '{"failures": 2}',
        "[1, 2]",
        "\x00\x00\x00",
    ],
)
def test_a_damaged_state_file_locks_for_the_longest_time_and_is_logged(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "admin_lock.json"
    path.write_text(text)
    with caplog.at_level(logging.WARNING):
        lock = AdminLockFile(path).load(T0)
    assert lock == AdminLock(DAMAGED_LOCK_FAILURES, T0 + LOCK_MAX_S)
    assert "admin lock file damaged" in caplog.text
    pad = Keypad(Phone(CONFIG, admin_lock=lock))
    open_settings(pad)
    assert pad.lines == ("Settings locked", "Try again in 300 s")
