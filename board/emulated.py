"""The simulator's board: the PC keyboard as keypad and hook switch, the OLED in the terminal.

Same interface as the Pi board (board/base.py). Keys come from the keyboard (``run_keyboard``),
or programmatically from ``press(key)`` / ``set_hook(offhook)`` (the control API and tests use
these). The display is luma.emulator's ``asciiblock`` in a terminal, or luma's dummy device
headless. LED and ringer states are kept for the control API (``leds``, ``ringing``).

The keyboard map is KEY_HELP below (F1 or ? shows it under the OLED; docs/simulator.md lists it).
"""

from __future__ import annotations

import logging
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable

from offhook.board.base import Display
from offhook.board.display import make_dummy_display
from offhook.board.worker import Worker
from offhook.contract.keys import DIGIT_KEYS, FUNCTION_KEYS

log = logging.getLogger(__name__)

KEYBOARD_MAP: dict[str, str] = {
    **{d: d for d in DIGIT_KEYS},
    "\r": "ok",
    "\n": "ok",
    "\x7f": "cancel",
    "\x08": "cancel",
    "o": "hold",
    "t": "transfer",
    "c": "conference",
    "r": "redial",
    "d": "dnd",
    "v": "voicemail",
    "m": "mute",
    "l": "history",
    "p": "phonebook",
    "n": "menu",
    "s": "speaker",
    "a": "headset",
    "+": "vol_up",
    "-": "vol_down",
    "[": "line1",
    "]": "line2",
    "\x1b[A": "up",
    "\x1b[B": "down",
    "\x1b[C": "right",
    "\x1b[D": "left",
    # F1 is the help; the softkeys are F2-F5 (xterm's escape sequences)
    "\x1bOQ": "softkey1",
    "\x1bOR": "softkey2",
    "\x1bOS": "softkey3",
    "\x1b[15~": "softkey4",
    # F6-F9: the first BLF keys (config [[blf]]); x: the text messages
    "\x1b[17~": "blf1",
    "\x1b[18~": "blf2",
    "\x1b[19~": "blf3",
    "\x1b[20~": "blf4",
    "x": "messages",
}
HOOK_KEYS = frozenset("h ")
HELP_KEYS = frozenset({"\x1bOP", "?"})  # F1 or ?: show or hide the keyboard help
ESCAPES = sorted((k for k in (*KEYBOARD_MAP, *HELP_KEYS) if k.startswith("\x1b")), key=len)
# What each key of the PC keyboard does on the phone: (keyboard, phone), shown by F1.
KEY_HELP: tuple[tuple[str, str], ...] = (
    ("0-9 * #", "digit keys"),
    ("h, space", "lift / hang up handset"),
    ("Enter", "ok"),
    ("Backspace", "cancel"),
    ("arrows", "up down left right"),
    ("F2 F3 F4 F5", "softkey1-softkey4"),
    ("o", "hold"),
    ("t", "transfer"),
    ("c", "conference"),
    ("r", "redial"),
    ("d", "dnd"),
    ("v", "voicemail"),
    ("m", "mute"),
    ("l", "history"),
    ("p", "phonebook"),
    ("n", "menu"),
    ("s", "speaker"),
    ("a", "headset"),
    ("+ -", "vol_up vol_down"),
    ("[ ]", "line1 line2"),
    ("F6 F7 F8 F9", "blf1 blf2 blf3 blf4"),
    ("x", "messages"),
    ("F1, ?", "this help"),
    ("Ctrl-C", "quit"),
)


def help_text(columns: int = 80) -> list[str]:
    """KEY_HELP laid out in as many columns of ``key  action`` as fit the terminal."""
    cells = [f"{key:<12}{action}" for key, action in KEY_HELP]
    width = max(len(c) for c in cells) + 2
    per_row = max(1, columns // width)
    rows = -(-len(cells) // per_row)
    lines = ["offhook sim keys (F1 or ? again hides this):"]
    for r in range(rows):
        lines.append(
            "".join(
                cells[r + c * rows].ljust(width)
                for c in range(per_row)
                if r + c * rows < len(cells)
            ).rstrip()
        )
    return lines


LED_STATES = ("off", "on", "blink", "fast_blink")


def make_emulator_display(kind: str, width: int = 128, height: int = 64) -> Display | None:
    """``asciiblock`` (terminal), ``dummy`` (headless) or ``none``."""
    if kind == "none":
        return None
    if kind == "dummy":
        return make_dummy_display(width, height)
    if kind == "asciiblock":
        if not _terminal_ok():
            # luma's asciiblock sizes itself from the terminal: without one it cannot draw.
            log.warning("stdout is not a terminal; drawing the OLED headless instead")
            return make_dummy_display(width, height)
        from luma.emulator.device import asciiblock

        return asciiblock(width=width, height=height, mode="1")
    raise ValueError(f"emulated display must be asciiblock, dummy or none, not {kind!r}")


def _terminal_ok() -> bool:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


def indicator_line(leds: dict[str, str], ringing: bool) -> str:
    """The LEDs and the ringer as one terminal line: ``*`` on, ``~`` blinking, ``!`` fast."""
    marks = {"off": ".", "on": "*", "blink": "~", "fast_blink": "!"}
    shown = [f"{name}{marks.get(state, '?')}" for name, state in sorted(leds.items())]
    return "LEDs " + " ".join(shown) + ("   RINGING" if ringing else "")


class _TerminalPanel:
    """The asciiblock device, drawn under the board's terminal lock, with the LED line after
    each frame (the display worker, the runtime and the keyboard all write to the terminal)."""

    def __init__(self, device: Display, board: EmulatedBoard) -> None:
        self._device = device
        self._board = board
        self.width, self.height, self.mode = device.width, device.height, device.mode

    @property
    def size(self) -> tuple[int, int]:
        return self._device.size

    def display(self, image: object) -> None:
        with self._board.terminal_lock:
            self._device.display(image)
            self._board.draw_indicators_locked()

    def __getattr__(self, name: str) -> object:
        return getattr(self._device, name)


class EmulatedBoard:
    def __init__(self, display: str = "dummy", width: int = 128, height: int = 64) -> None:
        device = make_emulator_display(display, width, height)
        self.terminal_lock = threading.Lock()
        # in a terminal, the LEDs and the ringer show on a line under the drawn OLED
        self.in_terminal = display == "asciiblock" and _terminal_ok()
        self.display: Display | None = (
            _TerminalPanel(device, self) if device is not None and self.in_terminal else device
        )
        self._key_callback: Callable[[str], None] = lambda key: None
        self._hook_callback: Callable[[bool], None] = lambda offhook: None
        self._offhook = False
        self._leds: dict[str, str] = {}
        self.ringing = False
        self._lock = threading.Lock()
        self._keyboard: Worker | None = None
        self._pending = ""  # an escape sequence split across reads
        self.help_shown = False
        self._size = (width, height)

    # --- Board interface -----------------------------------------------------------------------

    @property
    def offhook(self) -> bool:
        return self._offhook

    def on_key(self, callback: Callable[[str], None]) -> None:
        self._key_callback = callback

    def on_hook(self, callback: Callable[[bool], None]) -> None:
        self._hook_callback = callback

    def set_led(self, name: str, state: str) -> None:
        if state not in LED_STATES:
            raise ValueError(f"LED state must be one of {', '.join(LED_STATES)}, not {state!r}")
        with self._lock:
            changed = self._leds.get(name) != state
            self._leds[name] = state
        if changed:
            self._draw_indicators()

    def set_ringer(self, on: bool) -> None:
        changed, self.ringing = self.ringing != on, on
        if changed:
            self._draw_indicators()

    def _indicator_row(self) -> int:
        size = os.get_terminal_size(sys.stdout.fileno())
        width, height = self._size
        # asciiblock scales the panel to the terminal's width, two pixel rows per text line
        return int(height * size.columns / width / 2) + 2

    def _draw_indicators(self) -> None:
        if self.in_terminal:
            with self.terminal_lock:
                self.draw_indicators_locked()

    def draw_indicators_locked(self) -> None:
        """Write the LED line under the OLED (the caller holds ``terminal_lock``)."""
        try:
            row = self._indicator_row()
        except (OSError, ValueError):
            return
        # save the cursor, write the line, restore: the OLED frames are not disturbed
        sys.stdout.write(f"\x1b7\x1b[{row};1H\x1b[2K{indicator_line(self.leds, self.ringing)}\x1b8")
        sys.stdout.flush()

    def start(self) -> None:
        pass  # inputs are pushed (press/set_hook) or read by run_keyboard

    def stop(self) -> None:
        if self._keyboard is not None:
            self._keyboard.stop()

    # --- programmatic hardware -----------------------------------------------------------------

    @property
    def leds(self) -> dict[str, str]:
        with self._lock:
            return dict(self._leds)

    def press(self, key: str) -> None:
        if key not in DIGIT_KEYS and key not in FUNCTION_KEYS:
            raise ValueError(f"no key {key!r} on the phone")
        self._key_callback(key)

    def set_hook(self, offhook: bool) -> None:
        """Lift (True) or hang up (False) the handset; nothing happens if it is there already."""
        if offhook != self._offhook:
            self._offhook = offhook
            self._hook_callback(offhook)

    # --- keyboard ------------------------------------------------------------------------------

    def feed(self, text: str) -> list[str]:
        """Interpret keyboard input; returns what it did (key names, 'hook')."""
        done = []
        data = self._pending + text
        self._pending = ""
        i = 0
        while i < len(data):
            if data[i] == "\x1b":
                rest = data[i:]
                seq = next((e for e in reversed(ESCAPES) if rest.startswith(e)), "")
                if not seq and any(e.startswith(rest) for e in ESCAPES):
                    self._pending = rest  # the rest of the sequence is on its way
                    break
                if seq in HELP_KEYS:
                    self.toggle_help()
                    done.append("help")
                elif seq:
                    self.press(KEYBOARD_MAP[seq])
                    done.append(KEYBOARD_MAP[seq])
                i += len(seq) or 3  # an unknown sequence: skipped as its usual three bytes
                continue
            ch = data[i]
            if ch in HELP_KEYS:
                self.toggle_help()
                done.append("help")
            elif ch in HOOK_KEYS:
                self.set_hook(not self._offhook)
                done.append("hook")
            elif ch in KEYBOARD_MAP or ch.lower() in KEYBOARD_MAP:
                key = KEYBOARD_MAP.get(ch) or KEYBOARD_MAP[ch.lower()]
                self.press(key)
                done.append(key)
            i += 1
        return done

    def toggle_help(self) -> None:
        """Show the keyboard help under the OLED drawing, or take it away again."""
        self.help_shown = not self.help_shown
        if not _terminal_ok():
            return
        size = os.get_terminal_size(sys.stdout.fileno())
        row = self._indicator_row() + 1  # under the LED line
        out = f"\x1b[{row};1H\x1b[J"
        if self.help_shown:
            out += "\r\n".join(help_text(size.columns))
        with self.terminal_lock:
            sys.stdout.write(out)
            sys.stdout.flush()

    def run_keyboard(self, fd: int | None = None) -> None:
        """Read the terminal in cbreak mode in a thread until ``stop()`` (Ctrl-C still works)."""
        fd = sys.stdin.fileno() if fd is None else fd
        self._keyboard = Worker("keyboard", lambda stop: self._read_keyboard(fd, stop))
        self._keyboard.start()

    def _read_keyboard(self, fd: int, stop: threading.Event) -> None:
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
        try:
            if saved is not None:
                tty.setcbreak(fd)
            while not stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(fd, 64)
                if not data:
                    break
                self.feed(data.decode("utf-8", "ignore"))
        finally:
            if saved is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
