"""A simulator whose phone cannot start says why on its terminal and stops; a phone process that
failed to start exits at once (it used to hang in the control API's shutdown, deaf to SIGTERM).

Real processes, real alsa-lib: this machine has no sound card, so ALSA's ``default`` PCM really
fails to open here, as it does on a PC without one.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offhook.contract.config import parse_config, save_config
from offhook.firmware.phone_process import EXIT_START_FAILED
from offhook.firmware.sim import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def has_sound_card() -> bool:
    import alsaaudio

    return bool(alsaaudio.cards())


def docs_config(tmp_path: Path, **sections: dict) -> Path:
    """The simulator config of docs/simulator.md, on free loopback ports."""
    data = {
        "device": {"name": "desk sim"},
        "accounts": [{"user": "1001", "password": "secret", "domain": "127.0.0.1:9"}],
        "sip": {"port": free_port(), "bind_address": "127.0.0.1"},
        "audio": {"playback": "default", "capture": "default"},
        "control": {"listen": f"127.0.0.1:{free_port()}", "token": "change-me"},
        **sections,
    }
    path = tmp_path / "phone.toml"
    save_config(parse_config(data), path)
    return path


def run(cmd: list[str], tmp_path: Path, timeout: float = 90.0) -> tuple[int, str, float]:
    """Run a command in its own session; (returncode, stderr, seconds). A command still running
    after ``timeout`` is killed and fails the test."""
    env = {**os.environ, "OFFHOOK_LOG_FILE": str(tmp_path / "offhook.log")}
    env.pop("OFFHOOK_LOG", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        log = (tmp_path / "offhook.log").read_text(errors="replace")[-3000:]
        pytest.fail(f"still running after {timeout}s; stderr {err.decode()!r}; log:\n{log}")
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - started


def run_in_terminal(cmd: list[str], tmp_path: Path, timeout: float = 90.0) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, as a person at a PC does: (returncode, what the
    terminal showed). The simulator draws there and puts it in raw mode for the keyboard."""
    env = {**os.environ}
    env.pop("OFFHOOK_LOG", None)
    env.pop("OFFHOOK_LOG_FILE", None)  # the simulator picks its log file itself
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has gone
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"still running after {timeout}s; the terminal showed {shown!r}")
        return proc.wait(timeout=30), shown.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "offhook.log").read_text(errors="replace")


@pytest.mark.skipif(has_sound_card(), reason="needs a machine without a sound card")
def test_sim_in_a_terminal_without_a_sound_card_says_why_and_stops(tmp_path: Path) -> None:
    config = docs_config(tmp_path)
    cmd = [sys.executable, "-m", "offhook.firmware.cli", "sim", "--config", str(config)]
    code, shown = run_in_terminal([*cmd, "--state-dir", str(tmp_path / "state")], tmp_path)
    assert code != 0
    assert "cannot open ALSA playback PCM 'default'" in shown, shown
    assert "no sound card" in shown and '"null"' in shown, shown
    assert "ALSA lib" not in shown, shown
    assert "the phone could not start" in shown, shown
    log = (tmp_path / "state" / "offhook.log").read_text(errors="replace")
    assert log.count("phone process started") == 1


@pytest.mark.skipif(has_sound_card(), reason="needs a machine without a sound card")
@pytest.mark.parametrize("headless", [False, True], ids=["piped", "headless"])
def test_sim_without_a_sound_card_says_why_and_stops(tmp_path: Path, headless: bool) -> None:
    config = docs_config(tmp_path)
    cmd = [sys.executable, "-m", "offhook.firmware.cli", "sim", "--config", str(config)]
    cmd += ["--state-dir", str(tmp_path / "state")] + (["--headless"] if headless else [])
    code, err, _ = run(cmd, tmp_path)
    assert code != 0
    # the reason, on the terminal, with what to do about it
    assert "cannot open ALSA playback PCM 'default'" in err, err
    assert "no sound card" in err and '"null"' in err, err
    assert "ALSA lib" not in err, err  # alsa-lib's own noise is not printed over it
    # and the phone was started once, not restarted
    assert log_text(tmp_path).count("phone process started") == 1


@pytest.mark.skipif(has_sound_card(), reason="needs a machine without a sound card")
def test_phone_process_that_cannot_start_exits_at_once(tmp_path: Path) -> None:
    config = docs_config(tmp_path)
    cmd = [sys.executable, "-m", "offhook.firmware.phone_process", "--config", str(config)]
    cmd += ["--board", "emulated", "--headless", "--state-dir", str(tmp_path / "state")]
    code, err, seconds = run(cmd, tmp_path, timeout=60)
    assert code == EXIT_START_FAILED
    assert "cannot open ALSA playback PCM 'default'" in err, err
    assert seconds < 30, seconds  # the supervisor's start-up limit: it must not be what ends it


def test_a_busy_control_address_is_named_and_the_sim_stops(tmp_path: Path) -> None:
    config = docs_config(tmp_path, audio={"playback": "null", "capture": "null"})
    listen = parse_config_file(config).control.listen
    host, port = listen.rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        cmd = [
            sys.executable,
            "-m",
            "offhook.firmware.cli",
            "sim",
            "--headless",
            "--config",
            str(config),
        ]
        code, err, _ = run([*cmd, "--state-dir", str(tmp_path / "state")], tmp_path)
    assert code != 0
    assert f"control.listen {listen}: cannot listen: Address already in use" in err, err
    assert log_text(tmp_path).count("phone process started") == 1


def test_a_busy_sip_port_is_named_and_the_sim_stops(tmp_path: Path) -> None:
    config = docs_config(tmp_path, audio={"playback": "null", "capture": "null"})
    sip_port = parse_config_file(config).sip.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", sip_port))
        cmd = [
            sys.executable,
            "-m",
            "offhook.firmware.cli",
            "sim",
            "--headless",
            "--config",
            str(config),
        ]
        code, err, _ = run([*cmd, "--state-dir", str(tmp_path / "state")], tmp_path)
    assert code != 0
    assert f"127.0.0.1:{sip_port}" in err and "Address already in use" in err, err
    assert log_text(tmp_path).count("phone process started") == 1


def parse_config_file(path: Path):
    from offhook.contract.config import load_config

    return load_config(path)
