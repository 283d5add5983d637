"""``offhook demo --once`` without a terminal: the whole scripted scenario runs and exits 0, and
the phones' BLF lamps (Kamailio's presence) follow the scripted calls."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from offhook.contract.config import load_config
from offhook.firmware.sim import SimPhone
from tests.fixtures import waiting

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
wait_until = partial(waiting.wait_until, timeout=60, interval=0.2)


def test_demo_runs_its_scenario_without_a_tty() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "offhook.firmware.demo", "--once"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = demo.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        demo.terminate()  # SIGTERM: the demo stops its phones, Kamailio and server itself
        out, _ = demo.communicate(timeout=60)
        pytest.fail(f"demo did not finish in time:\n{out[-4000:]}")
    assert demo.returncode == 0, out[-4000:]
    assert "provisioning server http://127.0.0.1:" in out
    for name in ("Alice", "Bob", "Carol"):
        assert f"{name} (" in out and "registered" in out
    assert "Incoming call" in out  # Bob's screen while ringing
    assert "486 Busy Here" in out  # Bob calling Carol, who has no call waiting
    assert "scenario done" in out
    # Carol's second BLF key watches Bob: its LED blinks while he rings, is on while he talks
    # with Alice and goes off when they hang up, in that order
    seen = [
        out.index(f"Carol's BLF key blf2 (Bob): {lamp}, LED {led}")
        for lamp, led in (("ringing", "fast_blink"), ("busy", "on"), ("idle", "off"))
    ]
    assert seen == sorted(seen), out[-4000:]
    assert "BLF Alice=" in out and "Bob=busy" in out  # the lamps printed with the screens


def test_demo_stays_up_as_a_playground_replays_and_lets_a_sim_join(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "offhook.firmware.demo", "--phones", "2", "--no-server"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    joined: SimPhone | None = None

    def seen(text: str) -> bool:
        return any(text in line for line in list(lines))

    try:
        wait_until(lambda: seen("scenario done"), "the first scenario", timeout=180)
        # two phones: Alice watches Bob, the one she calls
        assert seen("Alice's BLF key blf1 (Bob): ringing, LED fast_blink")
        command = next(line for line in lines if "join the demo as 1009:" in line)
        config_path = Path(command.split("--config", 1)[1].strip())
        # the printed command's config joins the demo's registrar (headless here, no terminal)
        config = load_config(config_path)
        joined = SimPhone(tmp_path / "you", config)
        joined.start()
        joined.wait_registered(60)
        joined.client.hook(True)
        joined.client.keys("1001")
        wait_until(lambda: seen("step:"), "demo still printing")
        joined.wait_for(lambda s: bool(s["calls"]), 30, "a call from the joined phone")
        joined.client.hook(False)
        joined.wait_for(lambda s: not s["calls"], 30, "the call ended")
        demo.send_signal(signal.SIGUSR1)  # replay the scripted calls
        wait_until(lambda: sum("scenario done" in line for line in lines) >= 2, "the replay")
        assert demo.poll() is None  # still up
    finally:
        if joined is not None:
            joined.stop()
        demo.terminate()
        demo.wait(60)
        reader.join(10)
    assert demo.returncode == 0, "".join(lines)[-4000:]
