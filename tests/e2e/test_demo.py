"""``offhook demo --once`` without a terminal: the whole scripted scenario runs and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


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
