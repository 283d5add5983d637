"""The simulator's BLF and messages keys, and the LED/ringer line under the drawn OLED."""

from __future__ import annotations

from offhook.board.emulated import EmulatedBoard, indicator_line


def test_f6_to_f9_are_the_blf_keys_and_x_the_messages() -> None:
    board = EmulatedBoard(display="dummy")
    keys: list[str] = []
    board.on_key(keys.append)
    assert board.feed("\x1b[17~\x1b[20~x") == ["blf1", "blf4", "messages"]
    assert keys == ["blf1", "blf4", "messages"]


def test_the_indicator_line_shows_each_led_and_the_ringer() -> None:
    line = indicator_line({"line1": "fast_blink", "mwi": "blink", "blf1": "on", "dnd": "off"}, True)
    assert line == "LEDs blf1* dnd. line1! mwi~   RINGING"
    assert indicator_line({}, False) == "LEDs "


def test_headless_boards_keep_the_plain_device() -> None:
    board = EmulatedBoard(display="dummy")
    assert not board.in_terminal
    board.set_led("blf1", "on")  # nothing is written to a terminal
    assert board.leds == {"blf1": "on"}
