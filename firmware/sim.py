"""``offhook sim``: the real firmware on a PC, under the same supervisor as on the phone.

The emulated board turns the keyboard into the keypad and hook switch and draws the OLED in the
terminal; ``--headless`` drops the terminal UI and leaves the control API as the only way in
(that is how the end-to-end tests and the demo drive simulated phones). Audio uses the PC's ALSA
devices named in the config's [audio] section. See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offhook.contract.config import ConfigError, PhoneConfig, load_config, parse_config, save_config
from offhook.contract.logs import kv, setup_logging
from offhook.firmware.control.client import ControlClient
from offhook.firmware.control.protocol import ControlError, check_exposure
from offhook.firmware.phone_process import TEST_HOOKS_ENV, default_state_dir
from offhook.firmware.processes import wait_or_kill
from offhook.firmware.supervisor import Supervisor, install_signal_handlers, log, phone_argv


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="offhook sim", description="run a simulated phone (emulated board) on this PC"
    )
    parser.add_argument("--config", required=True, type=Path, help="phone config (TOML)")
    parser.add_argument("--headless", action="store_true", help="no terminal UI: control API only")
    parser.add_argument("--state-dir", type=Path, default=None, help="call history etc.")
    parser.add_argument(
        "--test-hooks",
        action="store_true",
        help="enable fault injection endpoints (/api/v1/test/*); for tests only",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        check_exposure(config.control.listen, config.control.token)
    except (ConfigError, ControlError) as exc:
        print(f"offhook sim: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or default_state_dir(config, args.config)
    state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not args.headless and "OFFHOOK_LOG_FILE" not in env:
        # the terminal belongs to the emulated OLED and keypad; logs go to a file
        env["OFFHOOK_LOG_FILE"] = str(state_dir / "offhook.log")
        os.environ["OFFHOOK_LOG_FILE"] = env["OFFHOOK_LOG_FILE"]
    if args.test_hooks:
        env[TEST_HOOKS_ENV] = "1"
    setup_logging(config.logging.level)
    extra = ["--state-dir", str(state_dir)]
    command = phone_argv(args.config, "emulated", args.headless, extra)
    supervisor = Supervisor(command, env=env, stop_on_start_failure=True)
    install_signal_handlers(supervisor)
    log.info(
        "simulator started",
        extra=kv(config=args.config, headless=args.headless, control=config.control.listen),
    )
    if not args.headless:
        print(
            f"offhook sim: control API on http://{config.control.listen}/api/v1/state;"
            f" log in {env['OFFHOOK_LOG_FILE']}",
            file=sys.stderr,
        )
    code = supervisor.run()
    if code:  # the phone printed its reason above
        where = f"; log in {env['OFFHOOK_LOG_FILE']}" if "OFFHOOK_LOG_FILE" in env else ""
        print(f"offhook sim: the phone could not start{where}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- simulated phones as child processes (the demo and the end-to-end tests use these) --------

SIM_DIGIT_MAP = "1xxx|[2-9]xxx|0|911|112|999|x.T"  # four-digit extensions dial at once


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 50 tries")


def sim_config(
    name: str,
    user: str,
    password: str,
    domain: str,
    *,
    display_name: str = "",
    token: str = "",
    audio: dict[str, str] | None = None,
    provisioning: dict[str, object] | None = None,
) -> PhoneConfig:
    """A config for a simulated phone on loopback: fixed free SIP and control ports.

    With ``user`` empty the phone has no account of its own (it gets them by provisioning)."""
    data: dict[str, Any] = {
        "device": {"name": name},
        "accounts": [],
        "control": {
            "listen": f"127.0.0.1:{free_port()}",
            "token": token or secrets.token_urlsafe(16),
        },
        "provisioning": provisioning or {},
        **sim_settings(audio),
    }
    if user:
        account = {"user": user, "password": password, "domain": domain}
        data["accounts"] = [{**account, "display_name": display_name, "register_expires_s": 60}]
    return parse_config(data, source=name)


def sim_settings(audio: dict[str, str] | None = None) -> dict[str, dict]:
    """The sections that keep a simulated phone on loopback and off the sound card. A provisioned
    config leaves the SIP address and port and the ALSA devices alone (phone-local settings; see
    firmware.config.PHONE_LOCAL_KEYS); only the dial plan is the server's to hand out."""
    return {
        # Codecs and rate stay the product defaults (G722 > PCMU > PCMA, 16 kHz): the simulator
        # should show what a desk phone negotiates, not a cheaper test setting.
        "sip": {"port": free_port(), "bind_address": "127.0.0.1"},
        "audio": audio or {"playback": "null", "capture": "null"},
        "dialplan": {"digit_map": SIM_DIGIT_MAP},
    }


class SimPhone:
    """``offhook sim --headless`` in its own session, driven through its control API."""

    def __init__(
        self,
        directory: Path,
        config: PhoneConfig,
        *,
        test_hooks: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.name = config.device.name
        self.test_hooks = test_hooks
        self.env = env
        self.config_path = directory / "phone.toml"
        self.log_path = directory / "sim.log"
        self.client = ControlClient(config.control.listen, config.control.token)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.config_path)
        cmd = [sys.executable, "-m", "offhook.firmware.cli", "sim", "--headless"]
        cmd += ["--config", str(self.config_path)]
        if self.test_hooks:
            cmd.append("--test-hooks")
        env = dict(self.env or os.environ)
        env["OFFHOOK_LOG"] = "stderr"
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )

    def state(self) -> dict | None:
        """The phone's state, or None while no phone process answers."""
        try:
            return self.client.state()
        except (OSError, RuntimeError, ValueError):
            return None

    def wait_for(
        self, predicate: Callable[[dict], bool], timeout: float = 20.0, what: str = "condition"
    ) -> dict:
        deadline = time.monotonic() + timeout
        state: dict | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name}: simulator exited ({self.process.returncode})")
            state = self.state()
            if state is not None and predicate(state):
                return state
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: {what} not reached in {timeout}s; last state {state}")

    def wait_registered(self, timeout: float = 20.0) -> dict:
        return self.wait_for(is_registered, timeout, "registration")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """Ask the simulator (supervisor and phone) to stop; ``stop()`` waits for it."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        self.terminate()
        process, self.process = self.process, None
        if process is not None:  # terminate() above asked it already; do not ask twice
            wait_or_kill(process, grace_s=timeout, group=True)


def stop_all(phones: list[SimPhone]) -> None:
    """Stop several simulators at once (each un-registers, which takes a moment)."""
    for phone in phones:
        phone.terminate()
    for phone in phones:
        phone.stop()


def is_registered(state: dict) -> bool:
    accounts = state.get("registration") or []
    return bool(accounts) and all(a.get("registered") for a in accounts)
