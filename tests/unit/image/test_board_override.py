"""The rpi overlay's offhook-board-override run for real (sh) against a given kernel command line:
the emulated board's environment and ALSA default, the raspi3b loopback echo, and a Pi's own
command line leaving everything as it is; the ALSA configuration it writes is read by alsa-lib."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[3] / "image/overlay/rpi/usr/local/sbin/offhook-board-override"
PI = "console=ttyS1,115200 root=PARTUUID=19852b1c-02 ro rootwait quiet"


def run_override(tmp_path: Path, cmdline: str) -> tuple[str, Path]:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    run = tmp_path / "run"
    env = {**os.environ, "OFFHOOK_CMDLINE": str(tmp_path / "cmdline"), "OFFHOOK_RUN_DIR": str(run)}
    proc = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, check=True)
    return proc.stdout, run


def alsa_pcms(config: Path) -> list[str]:
    """The PCM names alsa-lib sees with the override's ALSA_CONFIG_PATH (parse errors fail)."""
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{config}"}
    proc = subprocess.run(
        [sys.executable, "-c", "import alsaaudio; print('\\n'.join(alsaaudio.pcms()))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.split()


def test_a_pi_command_line_leaves_board_and_alsa_alone(tmp_path: Path) -> None:
    out, run = run_override(tmp_path, PI)
    assert (run / "board.env").read_text() == ""
    assert not (run / "asound.conf").exists() and out == ""


def test_emulated_board_plays_and_captures_on_the_emulated_card(tmp_path: Path) -> None:
    out, run = run_override(tmp_path, f"{PI} offhook.board=emulated")
    env = (run / "board.env").read_text().splitlines()
    assert "OFFHOOK_BOARD=emulated" in env and "OFFHOOK_STARTUP_TIMEOUT_S=180" in env
    assert "OFFHOOK_HUNG_AFTER_S=30" in env
    assert f"ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:{run}/asound.conf" in env
    conf = (run / "asound.conf").read_text()
    assert 'slave.pcm "hw:0,0"' in conf and "Loopback" not in conf
    assert "selects the emulated board" in out and "loopback" not in out


@pytest.mark.skipif(not Path("/usr/share/alsa/alsa.conf").exists(), reason="no alsa-lib config")
def test_raspi3b_loopback_plays_into_one_side_and_captures_the_other(tmp_path: Path) -> None:
    out, run = run_override(tmp_path, f"{PI} offhook.board=emulated offhook.audio=loopback")
    conf = (run / "asound.conf").read_text()
    # snd-aloop: what is played to device 0 is captured from device 1 (same subdevice)
    assert 'playback.pcm { type plug slave.pcm "hw:Loopback,0,0" }' in conf
    assert 'capture.pcm { type plug slave.pcm "hw:Loopback,1,0" }' in conf
    assert "(audio: loopback)" in out
    assert "default" in alsa_pcms(run / "asound.conf")


def test_loopback_alone_is_not_the_emulated_board(tmp_path: Path) -> None:
    _, run = run_override(tmp_path, f"{PI} offhook.audio=loopback")
    assert (run / "board.env").read_text() == "" and not (run / "asound.conf").exists()
