"""Key press to pixels: fake GPIO contact -> matrix scanner -> Phone -> OLED render (dummy device).

Measured: the processing time from closing the contact until the new screen is on the device,
with the scans run back to back (the debounce scans included). On hardware the scanner also waits
its scan period between scans, so the press-to-screen latency is that processing time plus
(debounce_scans - 1) scan periods; both are printed. Goal: <= 30 ms.

Peer: luma's own ``canvas`` drawing the same text lines with the same font on the same dummy
device: the least any renderer must spend to show the screen, so the ratio says what the scanner,
the state machine and our layout (status bar, icons, softkeys) add on top.
"""

from __future__ import annotations

import statistics
import time

from luma.core.render import canvas
from PIL import ImageFont

from offhook.board.display import make_dummy_display
from offhook.board.fake import FakeGPIO
from offhook.board.keypad import MatrixKeypad
from offhook.board.profile import load_profile
from offhook.contract.config import parse_config
from offhook.firmware.events import HookChanged, KeyPressed, Render
from offhook.firmware.phone import Phone
from offhook.firmware.screens import render_to_device

PRESSES = 400
GOAL_MS = 30.0


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> int:
    profile = load_profile("offhook-v1")
    gpio = FakeGPIO()
    gpio.setmode(gpio.BCM)
    gpio.attach_matrix(profile.keypad.rows, profile.keypad.cols)
    config = parse_config(
        {"accounts": [{"user": "1001", "domain": "pbx.test"}], "dialplan": {"digit_map": "x.T"}}
    )
    phone = Phone(config)
    device = make_dummy_display()
    now = 1_700_000_000.0
    phone.start(now)
    phone.handle(HookChanged(True), now)
    screens: list = []
    phone_ms: list[float] = []
    render_ms: list[float] = []

    def on_key(key: str) -> None:
        t0 = time.perf_counter()
        commands = phone.handle(KeyPressed(key), now)
        t1 = time.perf_counter()
        for command in commands:
            if isinstance(command, Render):
                render_to_device(command.screen, device)
                screens.append(command.screen)
        phone_ms.append((t1 - t0) * 1000)
        render_ms.append((time.perf_counter() - t1) * 1000)

    pad = MatrixKeypad(
        gpio,
        profile.keypad.rows,
        profile.keypad.cols,
        profile.keypad.keys,
        on_key=on_key,
        debounce_scans=profile.keypad.debounce_scans,
    )
    pad.setup()
    ours: list[float] = []
    for i in range(PRESSES):
        key = "5" if i % 2 == 0 else "cancel"
        row, col = profile.key_positions[key]
        rendered = len(screens)
        start = time.perf_counter()
        gpio.press(row, col)
        while len(screens) == rendered:
            pad.scan_once()
        ours.append((time.perf_counter() - start) * 1000)
        gpio.release(row, col)
        for _ in range(profile.keypad.debounce_scans):
            pad.scan_once()

    font = ImageFont.load_default_imagefont()
    peer: list[float] = []
    for screen in screens[:PRESSES]:
        start = time.perf_counter()
        with canvas(device) as draw:
            for n, line in enumerate(screen.lines):
                draw.text((0, 13 + 11 * n), line, font=font, fill="white")
        peer.append((time.perf_counter() - start) * 1000)

    ours_med, ours_p99 = statistics.median(ours), percentile(ours, 99)
    peer_med, peer_p99 = statistics.median(peer), percentile(peer, 99)
    wait_ms = (profile.keypad.debounce_scans - 1) * 1000 / profile.keypad.scan_hz
    print(f"presses: {PRESSES} (profile {profile.name}, debounce {profile.keypad.debounce_scans})")
    render_med = statistics.median(render_ms)
    print(f"key->screen processing: median {ours_med:.3f} ms, p99 {ours_p99:.3f} ms")
    print(
        f"  of which Phone.handle median {statistics.median(phone_ms):.3f} ms, "
        f"render median {render_med:.3f} ms; the rest is scanning the modelled matrix "
        f"({profile.keypad.debounce_scans} scans x {len(profile.keypad.rows)} rows)"
    )
    print(f"peer luma canvas text only: median {peer_med:.3f} ms, p99 {peer_p99:.3f} ms")
    print(
        f"ratio to peer: whole path median {ours_med / peer_med:.1f}x, "
        f"p99 {ours_p99 / peer_p99:.1f}x"
    )
    print(f"  our render alone vs peer: median {render_med / peer_med:.1f}x")
    total_p99 = ours_p99 + wait_ms
    print(
        f"on hardware add {wait_ms:.1f} ms of scan periods: p99 {total_p99:.1f} ms "
        f"(goal <= {GOAL_MS:.0f} ms: {'met' if total_p99 <= GOAL_MS else 'MISSED'})"
    )
    return 0 if total_p99 <= GOAL_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
