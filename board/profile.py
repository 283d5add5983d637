"""Board profiles: which BCM pin is what, as data (board/profiles/<name>.toml).

Loading validates everything a wrong pin map could break (unknown keys, a pin used twice, a keypad
grid that does not match its rows and columns, pins of the display bus taken by something else)
and reports each problem with the key that holds it: ``keypad.keys[2][4]: unknown key 'hld'``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offhook.contract.config import format_validation_errors
from offhook.contract.errors import OffhookError
from offhook.contract.keys import DIGIT_KEYS, FUNCTION_KEYS

PROFILES_DIR = Path(__file__).parent / "profiles"
KNOWN_KEYS = DIGIT_KEYS | FUNCTION_KEYS
BcmPin = Annotated[int, Field(ge=0, le=27)]
# Pins a bus needs for itself on every Raspberry Pi 40-pin header.
BUS_PINS = {"i2c": {2, 3}, "spi": {7, 8, 9, 10, 11}}
ID_EEPROM_PINS = {0, 1}


class ProfileError(OffhookError, ValueError):
    def __init__(self, problems: list[str], source: str) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeypadPins(_Section):
    rows: Annotated[list[BcmPin], Field(min_length=1)]
    cols: Annotated[list[BcmPin], Field(min_length=1)]
    keys: list[list[str]]  # rows x cols key names; "" where no key is fitted
    debounce_scans: Annotated[int, Field(ge=1, le=50)] = 3
    scan_hz: Annotated[float, Field(gt=0, le=2000)] = 200.0


class HookPin(_Section):
    pin: BcmPin
    offhook_level: Literal["high", "low"] = "high"  # level with the handset lifted
    pull: Literal["up", "down", "off"] = "up"
    debounce_reads: Annotated[int, Field(ge=1, le=200)] = 5


class OutputPin(_Section):
    pin: BcmPin
    active: Literal["high", "low"] = "high"


class RingerPin(OutputPin):
    cadence_s: tuple[float, float] = (2.0, 4.0)


class DisplayWiring(_Section):
    driver: Literal["ssd1306", "sh1106", "none"] = "ssd1306"
    bus: Literal["i2c", "spi"] = "i2c"
    port: Annotated[int, Field(ge=0, le=10)] = 1
    address: Annotated[int, Field(ge=0x03, le=0x77)] = 0x3C
    spi_device: Annotated[int, Field(ge=0, le=1)] = 0
    dc_pin: BcmPin | None = None  # SPI panels: data/command
    reset_pin: BcmPin | None = None
    width: Literal[128] = 128
    height: Literal[32, 64] = 64
    rotate: Literal[0, 1, 2, 3] = 0


class BoardProfile(_Section):
    name: str
    description: str = ""
    keypad: KeypadPins
    hook: HookPin
    leds: dict[str, OutputPin] = Field(default_factory=dict)
    ringer: RingerPin | None = None
    display: DisplayWiring = Field(default_factory=DisplayWiring)

    @model_validator(mode="after")
    def _consistent(self) -> BoardProfile:
        problems = _keypad_problems(self.keypad) + _pin_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def key_positions(self) -> dict[str, tuple[int, int]]:
        return {
            key: (r, c)
            for r, row in enumerate(self.keypad.keys)
            for c, key in enumerate(row)
            if key
        }


def _keypad_problems(keypad: KeypadPins) -> list[str]:
    problems = []
    if len(keypad.keys) != len(keypad.rows):
        problems.append(f"keypad.keys: {len(keypad.keys)} rows, but {len(keypad.rows)} row pins")
    seen: dict[str, str] = {}
    for r, row in enumerate(keypad.keys):
        if len(row) != len(keypad.cols):
            problems.append(
                f"keypad.keys[{r}]: {len(row)} keys, but {len(keypad.cols)} column pins"
            )
        for c, key in enumerate(row):
            where = f"keypad.keys[{r}][{c}]"
            if key and key not in KNOWN_KEYS:
                problems.append(f"{where}: unknown key {key!r}")
            elif key in seen:
                problems.append(f"{where}: key {key!r} already at {seen[key]}")
            elif key:
                seen[key] = where
    missing = sorted(DIGIT_KEYS - set(seen))
    if missing:
        problems.append(f"keypad.keys: digit keys missing: {' '.join(missing)}")
    return problems


def _pin_problems(profile: BoardProfile) -> list[str]:
    users: list[tuple[str, int]] = []
    users += [(f"keypad.rows[{i}]", p) for i, p in enumerate(profile.keypad.rows)]
    users += [(f"keypad.cols[{i}]", p) for i, p in enumerate(profile.keypad.cols)]
    users.append(("hook.pin", profile.hook.pin))
    users += [(f"leds.{name}.pin", led.pin) for name, led in profile.leds.items()]
    if profile.ringer is not None:
        users.append(("ringer.pin", profile.ringer.pin))
    display = profile.display
    for field in ("dc_pin", "reset_pin"):
        if getattr(display, field) is not None:
            users.append((f"display.{field}", getattr(display, field)))
    problems = []
    owner: dict[int, str] = {}
    for where, pin in users:
        if pin in owner:
            problems.append(f"{where}: BCM {pin} is already used by {owner[pin]}")
        owner.setdefault(pin, where)
        if pin in ID_EEPROM_PINS:
            problems.append(f"{where}: BCM {pin} is reserved for the HAT ID EEPROM")
        if display.driver != "none" and pin in BUS_PINS[display.bus]:
            problems.append(f"{where}: BCM {pin} belongs to the display's {display.bus} bus")
    return problems


def parse_profile(text: str, source: str = "profile") -> BoardProfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([f"not valid TOML: {exc}"], source) from None
    try:
        return BoardProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(
            format_validation_errors(exc, unknown="unknown setting"), source
        ) from None


def load_profile(name_or_path: str | Path) -> BoardProfile:
    """A shipped profile by name (``offhook-v1``) or a profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
            raise ProfileError([f"no such board profile (known: {known})"], str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError([f"cannot read: {exc}"], str(path)) from None
    return parse_profile(text, str(path))
