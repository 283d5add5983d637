"""board/: profiles, LEDs, ringer, display factory, serial console, the Pi board over the fake
GPIO (the real keypad and hook code runs), and the emulated board."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import serial

from offhook.board.display import DisplayError, apply_settings, make_display, make_dummy_display
from offhook.board.emulated import (
    KEY_HELP,
    KEYBOARD_MAP,
    EmulatedBoard,
    help_text,
    make_emulator_display,
)
from offhook.board.fake import FakeGPIO
from offhook.board.gpio import load_gpio
from offhook.board.leds import Leds
from offhook.board.pi import PiBoard
from offhook.board.profile import (
    PROFILES_DIR,
    DisplayWiring,
    ProfileError,
    load_profile,
    parse_profile,
)
from offhook.board.ringer import Ringer
from offhook.board.serial_console import SerialConsole, open_port, phone_commands
from offhook.contract.config import BoardSettings
from offhook.firmware.events import DIGIT_KEYS, Screen
from offhook.firmware.screens import render_to_device

V1 = (PROFILES_DIR / "offhook-v1.toml").read_text()


# --- profiles ------------------------------------------------------------------------------------


def test_shipped_profiles_load() -> None:
    names = [p.stem for p in PROFILES_DIR.glob("*.toml")]
    assert "offhook-v1" in names
    for name in names:
        profile = load_profile(name)
        assert set(profile.key_positions) >= DIGIT_KEYS


def test_v1_profile_contents() -> None:
    p = load_profile("offhook-v1")
    assert p.key_positions["5"] == (1, 1) and p.key_positions["ok"] == (4, 4)
    assert p.hook.pin == 17 and p.display.driver == "ssd1306" and p.display.address == 0x3C
    assert set(p.leds) == {"line1", "mwi", "dnd", "mute"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('"hold"', '"hld"'), "keypad.keys[0][3]: unknown key 'hld'"),
        (("pin = 17", "pin = 5"), "hook.pin: BCM 5 is already used by keypad.rows[0]"),
        (("pin = 27", "pin = 3"), "ringer.pin: BCM 3 belongs to the display's i2c bus"),
        (("pin = 27", "pin = 0"), "ringer.pin: BCM 0 is reserved for the HAT ID EEPROM"),
        (("pin = 27", "pin = 40"), "ringer.pin: Input should be less than or equal to 27"),
        (('"7", "8"', '"7", "7"'), "keypad.keys[2][1]: key '7' already at keypad.keys[2][0]"),
        (('"7", "8"', '"7", "7"'), "digit keys missing: 8"),
        (("cols = [12, 16, 20, 21, 23, 24]", "cols = [12]"), "keypad.keys[0]: 6 keys, but 1"),
        (('offhook_level = "high"', 'offhook_level = "up"'), "hook.offhook_level: Input should"),
        (("debounce_scans = 3", "debounce_scans = 3\nspeed = 2"), "keypad.speed: unknown setting"),
        (('driver = "ssd1306"', 'driver = "st7735"'), "display.driver"),
    ],
)
def test_profile_errors_name_the_key(edit, message) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile(V1.replace(*edit), "test.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("test.toml: ")


def test_profile_not_toml_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile("name = ", "x")
    with pytest.raises(ProfileError, match=r"no such board profile.*offhook-v1"):
        load_profile("offhook-v9")
    path = tmp_path / "mine.toml"
    path.write_text(V1.replace('name = "offhook-v1"', 'name = "mine"'))
    assert load_profile(path).name == "mine"


def test_spi_display_frees_i2c_pins_and_claims_spi_pins() -> None:
    text = V1.replace('bus = "i2c"', 'bus = "spi"\ndc_pin = 24')
    with pytest.raises(ProfileError, match=r"display.dc_pin: BCM 24 is already used"):
        parse_profile(text)
    moved = text.replace("dc_pin = 24", "dc_pin = 2")
    assert parse_profile(moved).display.bus == "spi"
    with pytest.raises(ProfileError, match="BCM 8 belongs to the display's spi bus"):
        parse_profile(moved.replace("pin = 27", "pin = 8"))


# --- fake GPIO API -------------------------------------------------------------------------------


def test_fake_gpio_behaves_like_rpi_gpio_on_misuse() -> None:
    gpio = FakeGPIO()
    with pytest.raises(RuntimeError, match="setmode"):
        gpio.setup(4, gpio.OUT)
    gpio.setmode(gpio.BCM)
    gpio.setup(4, gpio.IN, pull_up_down=gpio.PUD_UP)
    with pytest.raises(RuntimeError, match="OUTPUT"):
        gpio.output(4, 1)
    with pytest.raises(RuntimeError, match="setup"):
        gpio.input(9)
    with pytest.raises(ValueError, match="different mode"):
        gpio.setmode(gpio.BOARD)


def test_fake_gpio_edge_detection() -> None:
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_DOWN)
    edges: list[int] = []
    gpio.add_event_detect(17, gpio.RISING, callback=edges.append)
    gpio.set_input(17, 1)
    gpio.set_input(17, 0)
    assert edges == [17]
    assert gpio.event_detected(17) is True and gpio.event_detected(17) is False


def test_load_gpio_off_a_pi_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        load_gpio()


# --- LEDs and ringer -----------------------------------------------------------------------------


def test_leds_on_off_blink_with_polarity() -> None:
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    leds = Leds(gpio, {"mwi": (22, True), "dnd": (25, False)})
    leds.setup()
    assert gpio.level(22) == 0 and gpio.level(25) == 1  # both dark
    leds.set("dnd", "on", now=0.0)
    assert gpio.level(25) == 0, "active-low LED lit by driving LOW"
    leds.set("mwi", "blink", now=10.0)
    levels = []
    for step in range(8):
        leds.update(10.0 + step * 0.25)
        levels.append(gpio.level(22))
    assert levels == [1, 1, 0, 0, 1, 1, 0, 0]  # 1 Hz
    leds.set("mwi", "fast_blink", now=0.0)
    fast = []
    for step in range(4):
        leds.update(step * 0.125)
        fast.append(gpio.level(22))
    assert fast == [1, 0, 1, 0]  # 4 Hz
    leds.set("mwi", "off", now=1.0)
    assert gpio.level(22) == 0
    leds.set("nosuch", "on", now=1.0)  # a board without that LED ignores it
    with pytest.raises(ValueError, match="LED state"):
        leds.set("mwi", "dim", now=1.0)


def test_ringer_cadence() -> None:
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    ringer = Ringer(gpio, 27, active_high=True, cadence_s=(2.0, 4.0))
    ringer.setup()
    ringer.set(True, now=100.0)
    heard = []
    for t in (100.5, 101.9, 102.1, 105.9, 106.1):
        ringer.update(t)
        heard.append(gpio.level(27))
    assert heard == [1, 1, 0, 0, 1]
    ringer.set(False, now=106.2)
    assert gpio.level(27) == 0 and not ringer.ringing
    with pytest.raises(ValueError, match="cadence"):
        Ringer(gpio, 27, cadence_s=(0, 1))


# --- display -------------------------------------------------------------------------------------


def test_dummy_display_takes_a_rendered_screen() -> None:
    device = make_dummy_display(128, 32)
    render_to_device(Screen("idle", ("1001", "Registered"), {"time": "09:00"}), device)
    assert device.image.size == (128, 32) and device.image.getbbox() is not None


def test_real_display_off_a_pi_fails_with_a_clear_error() -> None:
    wiring = DisplayWiring(driver="ssd1306", bus="i2c", port=9, address=0x3C)
    with pytest.raises(DisplayError, match="ssd1306 display on i2c bus 9 address 0x3c"):
        make_display(wiring)
    assert make_display(DisplayWiring(driver="none")) is None


def test_config_overrides_profile_display() -> None:
    wiring = load_profile("offhook-v1").display
    settings = BoardSettings(display="sh1106", display_address=0x3D, display_rotate=2)
    merged = apply_settings(wiring, settings)
    assert (merged.driver, merged.address, merged.rotate, merged.port) == ("sh1106", 0x3D, 2, 1)


# --- serial console ------------------------------------------------------------------------------


def test_serial_console_over_loopback() -> None:
    port = serial.serial_for_url("loop://", timeout=0.5)
    console = SerialConsole(port, {"echo": lambda args: " ".join(args)})
    port.write(b"echo hello phone\r\nnope\nhelp\n")
    assert console.poll_once() == ["echo hello phone", "nope", "help"]
    replies = port.read(port.in_waiting).decode()
    assert replies.splitlines() == [
        "hello phone",
        "error: unknown command 'nope' (try help)",
        "commands: echo help",
    ]


def test_serial_console_command_errors_and_partial_lines() -> None:
    def key(args: list[str]) -> str:
        if not args:
            raise ValueError("key needs a key name")
        return f"pressed {args[0]}"

    port = serial.serial_for_url("loop://", timeout=0.5)
    console = SerialConsole(port)
    console.register("key", key)
    port.write(b"key")
    assert console.poll_once() == []
    port.write(b" 5\nkey\n")
    assert console.poll_once() == ["key 5", "key"]
    assert port.read(port.in_waiting).decode().splitlines() == [
        "pressed 5",
        "error: key needs a key name",
    ]


def test_serial_console_drives_the_emulated_board() -> None:
    board = EmulatedBoard(display="none")
    keys: list[str] = []
    hooks: list[bool] = []
    board.on_key(keys.append)
    board.on_hook(hooks.append)

    def snapshot() -> dict:
        return {"screen": ["Enter number", "5"], "hook": "off" if board.offhook else "on"}

    port = serial.serial_for_url("loop://", timeout=0.5)
    console = SerialConsole(port, phone_commands(board.press, board.set_hook, snapshot))
    port.write(b"hook up\nkey 5\nkey hld\nscreen\nstate\nhook sideways\n")
    console.poll_once()
    lines = port.read(port.in_waiting).decode().splitlines()
    assert keys == ["5"] and hooks == [True]
    assert lines[:5] == [
        "ok hook up",
        "ok key 5",
        "error: no key 'hld' on the phone",
        "Enter number",
        "5",
    ]
    assert '"hook": "off"' in lines[5]
    assert lines[6] == "error: usage: hook up|down"


def test_open_port_bad_url() -> None:
    with pytest.raises(RuntimeError, match="cannot open serial console"):
        open_port("nosuch://x")


# --- the Pi board over the fake GPIO -------------------------------------------------------------


def pi_board():
    profile = load_profile("offhook-v1")
    gpio = FakeGPIO()
    gpio.attach_matrix(profile.keypad.rows, profile.keypad.cols)
    gpio.set_input(profile.hook.pin, 0)  # handset on the cradle
    clock = [0.0]
    board = PiBoard(profile, gpio=gpio, display=make_dummy_display(), clock=lambda: clock[0])
    keys: list[str] = []
    hooks: list[bool] = []
    board.on_key(keys.append)
    board.on_hook(hooks.append)
    return board, gpio, profile, clock, keys, hooks


def test_pi_board_keys_hook_leds_ringer_step_by_step() -> None:
    board, gpio, profile, clock, keys, hooks = pi_board()
    board.setup()
    assert board.offhook is False
    r, c = profile.key_positions["transfer"]
    gpio.press(r, c)
    for _ in range(profile.keypad.debounce_scans):
        board.poll_once()
    assert keys == ["transfer"]
    gpio.set_input(profile.hook.pin, 1)
    for _ in range(profile.hook.debounce_reads):
        board.poll_once()
    assert hooks == [True] and board.offhook
    board.set_led("mwi", "blink")
    assert gpio.level(profile.leds["mwi"].pin) == 1
    clock[0] = 0.6
    board.poll_once()
    assert gpio.level(profile.leds["mwi"].pin) == 0
    board.set_ringer(True)
    assert gpio.level(profile.ringer.pin) == 1
    board.set_ringer(False)
    assert gpio.level(profile.ringer.pin) == 0
    assert board.leds["mwi"] == "blink"


def test_pi_board_thread_reports_a_key() -> None:
    board, gpio, profile, _, keys, _ = pi_board()
    got = threading.Event()
    board.on_key(lambda key: (keys.append(key), got.set()))
    board.start()
    try:
        gpio.press(*profile.key_positions["#"])
        assert got.wait(5)
    finally:
        board.stop()
    assert keys == ["#"]


def test_pi_board_without_ringer_and_active_low_hook() -> None:
    profile = load_profile("offhook-mini")
    assert profile.ringer is None and profile.display.height == 32
    gpio = FakeGPIO()
    gpio.attach_matrix(profile.keypad.rows, profile.keypad.cols)
    board = PiBoard(profile, gpio=gpio, clock=lambda: 0.0)
    hooks: list[bool] = []
    board.on_hook(hooks.append)
    board.setup()
    assert board.offhook is False, "open microswitch, pulled up: on hook for this wiring"
    gpio.set_input(profile.hook.pin, 0)  # lifted: the switch closes to GND
    for _ in range(profile.hook.debounce_reads):
        board.poll_once()
    assert hooks == [True]
    board.set_ringer(True)  # no ringer on this board: nothing to drive, no error
    board.set_led("dnd", "on")  # nor a DND LED
    board.set_led("mwi", "on")
    assert gpio.level(profile.leds["mwi"].pin) == 1


# --- emulated board ------------------------------------------------------------------------------


def test_emulated_board_keyboard_map() -> None:
    board = EmulatedBoard(display="dummy")
    keys: list[str] = []
    hooks: list[bool] = []
    board.on_key(keys.append)
    board.on_hook(hooks.append)
    done = board.feed("h12#o\r\x7f\x1b[A\x1bOQd")
    assert hooks == [True]
    assert keys == ["1", "2", "#", "hold", "ok", "cancel", "up", "softkey1", "dnd"]
    assert done[0] == "hook"
    board.feed("\x1b[")  # an escape sequence split across two reads
    board.feed("B ")
    assert keys[-1] == "down" and hooks == [True, False]
    assert board.feed("\x1b[1") == []  # F5 split across reads
    assert board.feed("5~") == ["softkey4"]
    assert board.feed("\x1bOP") == ["help"] and board.help_shown  # F1
    assert board.feed("?") == ["help"] and not board.help_shown


def test_every_key_of_the_keyboard_map_is_in_the_help_and_the_docs() -> None:
    helped = " ".join(f"{key} {action}" for key, action in KEY_HELP)
    docs = (Path(__file__).resolve().parents[3] / "docs/simulator.md").read_text()
    for key in set(KEYBOARD_MAP.values()):
        assert key in helped or key.startswith("softkey") or len(key) == 1, key
        assert f"`{key}`" in docs or key in DIGIT_KEYS, f"docs/simulator.md lacks `{key}`"
    lines = help_text(80)
    assert lines[0].startswith("offhook sim keys") and all(len(line) <= 80 for line in lines)


def test_emulated_board_programmatic_and_outputs() -> None:
    board = EmulatedBoard(display="dummy", height=32)
    keys: list[str] = []
    hooks: list[bool] = []
    board.on_key(keys.append)
    board.on_hook(hooks.append)
    board.set_hook(True)
    board.set_hook(True)  # already lifted: no second event
    board.press("voicemail")
    assert hooks == [True] and keys == ["voicemail"]
    with pytest.raises(ValueError, match="no key 'x'"):
        board.press("x")
    board.set_led("dnd", "on")
    board.set_ringer(True)
    assert board.leds == {"dnd": "on"} and board.ringing
    assert board.display.size == (128, 32)


def test_emulated_board_keyboard_thread_reads_a_pipe() -> None:
    import os

    read_fd, write_fd = os.pipe()
    board = EmulatedBoard(display="none")
    got = threading.Event()
    keys: list[str] = []
    board.on_key(lambda key: (keys.append(key), got.set()))
    board.run_keyboard(read_fd)
    try:
        os.write(write_fd, b"7")
        assert got.wait(5)
    finally:
        board.stop()
        os.close(write_fd)
        os.close(read_fd)
    assert keys == ["7"]


def test_emulator_display_kinds() -> None:
    assert make_emulator_display("none") is None
    assert make_emulator_display("dummy").size == (128, 64)
    # under pytest stdout is no terminal: the terminal OLED falls back to a headless one
    assert type(make_emulator_display("asciiblock")).__name__ == "dummy"
    with pytest.raises(ValueError, match="asciiblock, dummy or none"):
        make_emulator_display("hologram")
