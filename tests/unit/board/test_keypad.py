"""Matrix scanning and hook debounce through the fake GPIO: the real scanner reads modelled pins."""

from __future__ import annotations

import threading

import pytest

from offhook.board.fake import FakeGPIO
from offhook.board.hook import HookSwitch
from offhook.board.keypad import MatrixKeypad

ROWS = [5, 6, 13, 19]
COLS = [12, 16, 20]
KEYS = [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"], ["*", "0", "#"]]


def keypad(debounce: int = 3, **kwargs):
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    gpio.attach_matrix(ROWS, COLS)
    seen: list[str] = []
    pad = MatrixKeypad(
        gpio, ROWS, COLS, KEYS, on_key=seen.append, debounce_scans=debounce, **kwargs
    )
    pad.setup()
    return gpio, pad, seen


def scans(pad: MatrixKeypad, n: int) -> None:
    for _ in range(n):
        pad.scan_once()


def test_setup_drives_rows_high_and_pulls_columns_up() -> None:
    gpio, _, _ = keypad()
    assert all(gpio.level(r) == gpio.HIGH for r in ROWS)
    assert all(gpio.level(c) == gpio.HIGH for c in COLS)


def test_press_is_reported_once_after_debounce() -> None:
    gpio, pad, seen = keypad(debounce=3)
    gpio.press(1, 1)
    scans(pad, 2)
    assert seen == []
    scans(pad, 1)
    assert seen == ["5"]
    scans(pad, 10)
    assert seen == ["5"], "a held key is reported once"
    assert pad.pressed == ["5"]


def test_each_key_of_the_grid_maps_to_its_name() -> None:
    gpio, pad, seen = keypad(debounce=1)
    for r, row in enumerate(KEYS):
        for c, _ in enumerate(row):
            gpio.press(r, c)
            scans(pad, 1)
            gpio.release(r, c)
            scans(pad, 1)
    assert seen == [k for row in KEYS for k in row]


READS_PER_SCAN = len(ROWS) * len(COLS)


@pytest.mark.parametrize("seed", range(5))
def test_bounce_on_press_and_release_gives_a_single_key(seed: int) -> None:
    gpio, pad, seen = keypad(debounce=4)
    gpio._rng.seed(seed)
    # the contact chatters for ~8 scans, then settles
    gpio.press(0, 2, bounce=8 * READS_PER_SCAN)
    scans(pad, 14)
    gpio.release(0, 2, bounce=8 * READS_PER_SCAN)
    scans(pad, 14)
    assert seen == ["3"]
    assert pad.pressed == []


def test_the_same_bounce_without_debounce_gives_many_keys() -> None:
    # proves the fake really bounces: a scanner with no debounce sees several presses
    gpio, pad, seen = keypad(debounce=1)
    gpio.press(0, 2, bounce=8 * READS_PER_SCAN)
    scans(pad, 14)
    assert len(seen) > 1


def test_short_glitch_is_not_a_key() -> None:
    gpio, pad, seen = keypad(debounce=3)
    gpio.press(2, 0)
    scans(pad, 2)
    gpio.release(2, 0)
    scans(pad, 5)
    assert seen == []


def test_two_keys_at_once_are_both_reported() -> None:
    gpio, pad, seen = keypad(debounce=2)
    gpio.press(0, 0)
    gpio.press(3, 2)
    scans(pad, 2)
    assert sorted(seen) == ["#", "1"]
    # rolling over: release the first, press another while the second stays down
    gpio.release(0, 0)
    gpio.press(1, 1)
    scans(pad, 2)
    assert seen[-1] == "5"


def test_three_keys_in_an_l_are_ambiguous_and_ignored() -> None:
    gpio, pad, seen = keypad(debounce=1)
    gpio.press(0, 0)
    gpio.press(0, 1)
    scans(pad, 1)
    assert sorted(seen) == ["1", "2"]
    gpio.press(1, 0)  # with no diodes "5" (row 1, col 1) now reads as pressed too
    assert pad.scan_matrix() == {(0, 0), (0, 1), (1, 0), (1, 1)}
    scans(pad, 3)
    assert sorted(seen) == ["1", "2"], "neither the real key nor the ghost is reported"
    assert pad.ghost_scans == 3
    gpio.release(0, 0)
    gpio.release(0, 1)
    scans(pad, 1)
    assert seen[-1] == "4", "once unambiguous, the real key comes through"


def test_three_keys_in_different_rows_and_columns_are_fine() -> None:
    gpio, pad, seen = keypad(debounce=1)
    for r, c in ((0, 0), (1, 1), (2, 2)):
        gpio.press(r, c)
    scans(pad, 1)
    assert sorted(seen) == ["1", "5", "9"]


def test_release_callback() -> None:
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    gpio.attach_matrix(ROWS, COLS)
    released: list[str] = []
    pad = MatrixKeypad(gpio, ROWS, COLS, KEYS, lambda k: None, 1, on_release=released.append)
    pad.setup()
    gpio.press(3, 1)
    scans(pad, 1)
    gpio.release(3, 1)
    scans(pad, 1)
    assert released == ["0"]


def test_grid_shape_is_checked() -> None:
    gpio = FakeGPIO()
    with pytest.raises(ValueError, match="4 rows x 3 columns"):
        MatrixKeypad(gpio, ROWS, COLS, KEYS[:3], lambda k: None)


def test_scanning_thread_reports_keys() -> None:
    gpio, pad, seen = keypad(debounce=2, scan_hz=500)
    got = threading.Event()
    pad._on_key = lambda key: (seen.append(key), got.set())
    pad.start()
    try:
        gpio.press(2, 1)
        assert got.wait(5)
    finally:
        pad.stop()
    assert seen == ["8"]


# --- hook switch ---------------------------------------------------------------------------------

HOOK = 17


def hook(debounce: int = 4, level_offhook: int = 1, pull: str = "up"):
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    changes: list[bool] = []
    switch = HookSwitch(gpio, HOOK, changes.append, level_offhook, pull, debounce)
    return gpio, switch, changes


def test_hook_starts_from_the_settled_state_without_a_callback() -> None:
    gpio, switch, changes = hook()
    gpio.set_input(HOOK, 0)  # cradle switch closed to GND: on hook
    switch.setup()
    assert switch.offhook is False and changes == []


def test_hook_lift_and_hang_up_debounced() -> None:
    gpio, switch, changes = hook(debounce=4)
    gpio.set_input(HOOK, 0)
    switch.setup()
    gpio.set_input(HOOK, 1, bounce=6)
    for _ in range(12):
        switch.poll_once()
    assert changes == [True]
    gpio.set_input(HOOK, 0, bounce=3)
    for _ in range(12):
        switch.poll_once()
    assert changes == [True, False]


def test_hook_glitch_is_ignored() -> None:
    gpio, switch, changes = hook(debounce=4)
    gpio.set_input(HOOK, 0)
    switch.setup()
    gpio.set_input(HOOK, 1)
    for _ in range(3):
        switch.poll_once()
    gpio.set_input(HOOK, 0)
    for _ in range(10):
        switch.poll_once()
    assert changes == []


def test_hook_pull_up_open_switch_reads_offhook() -> None:
    # Nothing drives the pin: the pull-up makes it HIGH, which this wiring calls off-hook.
    _, switch, _ = hook(pull="up")
    switch.setup()
    assert switch.offhook is True


def test_hook_inverted_polarity() -> None:
    gpio, switch, changes = hook(debounce=1, level_offhook=0)
    gpio.set_input(HOOK, 1)
    switch.setup()
    assert switch.offhook is False
    gpio.set_input(HOOK, 0)
    switch.poll_once()
    assert changes == [True]


def test_hook_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="pull"):
        HookSwitch(FakeGPIO(), HOOK, lambda x: None, pull="sideways")
    with pytest.raises(ValueError, match="debounce_reads"):
        HookSwitch(FakeGPIO(), HOOK, lambda x: None, debounce_reads=0)
