"""``offhook phone``: one phone process — runtime, SIP engine, audio, board and control API.

Normally started by the supervisor (``offhook run`` / ``offhook sim``), which passes the write end
of a pipe as ``--heartbeat-fd``. A heartbeat byte goes out every HEARTBEAT_INTERVAL_S while both
the runtime loop and the SIP engine's owner loop have run recently; if either hangs, the
heartbeats stop and the supervisor kills and restarts this process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware import events as ev
from firmware.config import ConfigError, PhoneConfig, load_config
from firmware.logs import kv, setup_logging
from firmware.supervisor import PREVIOUS_EXIT_ENV

log = logging.getLogger("offhook.phone")

HEARTBEAT_INTERVAL_S = 0.5
STALE_AFTER_S = 3.0  # a loop that has not turned for this long counts as hung
TEST_HOOKS_ENV = "OFFHOOK_TEST_HOOKS"
APPLY_POLL_S = 0.1
DEVICE_INFO_EVERY_S = 30.0  # addresses change with DHCP; the status menu should follow
APPLY_TIMEOUT_S = 15.0
# Exit status of a phone that could not be set up or started (sysexits' EX_CONFIG): a missing
# sound card, a port in use, a bad pin profile. Restarting at once would fail the same way, so the
# supervisor backs off (and the simulator stops, showing the reason).
EXIT_START_FAILED = 78


class Heartbeat:
    """Writes one byte to the supervisor's pipe per interval while every check is fresh."""

    def __init__(self, fd: int, sources: dict[str, Any], stale_after_s: float = STALE_AFTER_S):
        self.fd = fd
        self.sources = sources  # name -> callable returning a time.monotonic() stamp
        self.stale_after_s = stale_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._reported_stale: str | None = None
        self.supervisor_gone = threading.Event()

    def start(self) -> None:
        os.set_blocking(self.fd, False)  # a stalled supervisor must not block this thread
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def stale(self) -> str | None:
        now = time.monotonic()
        for name, stamp in self.sources.items():
            age = now - stamp()
            if age > self.stale_after_s:
                return f"{name} ({age:.1f}s)"
        return None

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            stale = self.stale()
            if stale:
                if stale.split()[0] != self._reported_stale:
                    log.error("loop stalled; withholding heartbeat", extra=kv(stalled=stale))
                    self._reported_stale = stale.split()[0]
                continue
            self._reported_stale = None
            try:
                os.write(self.fd, b".")
            except BrokenPipeError:
                log.error("supervisor gone; stopping")
                self.supervisor_gone.set()
                return
            except BlockingIOError:
                pass  # the supervisor is slow to read; the next beat will do


def make_board(kind: str, config: PhoneConfig, headless: bool) -> Any:
    """The emulated board (terminal or headless) or the real Pi board from its pin profile."""
    if kind == "emulated":
        from board.emulated import EmulatedBoard

        return EmulatedBoard(display="dummy" if headless else "asciiblock")
    from board.display import apply_settings, make_display
    from board.pi import PiBoard
    from board.profile import load_profile

    profile = load_profile(config.board.profile)
    display = None if headless else make_display(apply_settings(profile.display, config.board))
    return PiBoard(profile, display=display)


def screen_renderer(device: Any):
    """Draw a Screen on a luma device (the board's OLED or the terminal)."""
    from firmware.screens import render_to_device

    def draw(screen: ev.Screen) -> None:
        render_to_device(screen, device)

    return draw


def png_renderer(width: int = 128, height: int = 64):
    """Screen -> PNG of what the OLED shows (drawn on a private image, not the panel)."""
    from PIL import Image

    from firmware.control import png_of
    from firmware.screens import render_image

    def png(screen: ev.Screen | None) -> bytes:
        if screen is None:
            return png_of(Image.new("1", (width, height), 0))
        return png_of(render_image(screen, width, height))

    return png


class EngineHangHook:
    """Test hook: make the SIP engine's owner thread block for good (a hung pjsua2 stand-in).

    The engine calls our event callback on its owner thread. Once armed, the next such call
    sleeps forever; a MakeCall with an empty target makes the engine report a failure at once,
    which is that call. The engine loop then stops turning and the heartbeats stop.
    """

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.engine: Any = None

    def wrap(self, on_event: Any) -> Any:
        def on_engine_event(event: Any) -> None:
            if self.armed.is_set() and threading.current_thread().name == "sip-engine":
                log.warning("test hook: SIP engine thread now hangs")
                threading.Event().wait()
            on_event(event)

        return on_engine_event

    def __call__(self) -> str:
        self.armed.set()
        self.engine.submit(ev.MakeCall(0, ""))
        return "sip engine hang requested"


def sim_identity(config_path: Path) -> Any:
    """A stable made-up MAC and serial for a simulated phone (derived from its config path)."""
    from firmware.provisioning import DeviceIdentity

    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()
    mac = "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))  # locally administered
    return DeviceIdentity(mac=mac, serial=digest[:16], model="offhook-sim")


def registration_outcome(state: dict, config: PhoneConfig) -> str | None:
    """None when every enabled account is registered, an error text when one was refused,
    "pending" while waiting."""
    rows = {row["account"]: row for row in state.get("registration", [])}
    pending = False
    for index, account in enumerate(config.accounts):
        if not account.enabled:
            continue
        row = rows.get(index, {})
        if row.get("registered"):
            continue
        status = int(row.get("status") or 0)
        if status >= 300:
            return (
                f"accounts[{index}] ({account.user}@{account.domain}): registration failed {status}"
            )
        pending = True
    return "pending" if pending else None


def apply_and_wait_registered(
    runtime: Any,
    config: PhoneConfig,
    timeout_s: float = APPLY_TIMEOUT_S,
    transports: Callable[[PhoneConfig], str | None] | None = None,
) -> str | None:
    """Apply ``config`` and judge it by registration: None once every enabled line is registered,
    else why not. The Phone forgets the registration state of every line whose account changed
    (and the snapshot is taken on the loop after ConfigApplied), so a changed line counts only
    once a fresh RegistrationChanged for the new settings has arrived: a 401/403 after a password
    change fails the apply instead of passing on the old registration.

    ``transports(config)`` (optional) judges the SIP engine the same way: "pending" until its
    sockets are bound as configured, an error text once it has failed (a port in use ends the
    engine: that is the cause to report, not the restart that follows)."""
    runtime.post(ev.ConfigApplied(config))
    deadline = time.monotonic() + timeout_s
    outcome: str | None = "pending"
    while time.monotonic() < deadline:
        outcome = transports(config) if transports is not None else None
        if outcome is None:
            outcome = registration_outcome(runtime.snapshot(), config)
        if outcome != "pending":
            break
        time.sleep(APPLY_POLL_S)
    if outcome == "pending":
        outcome = f"not registered within {timeout_s:.0f}s"
    log.info("provisioned config applied", extra=kv(result=outcome or "registered"))
    return outcome


def gather_device_info(sip_ports: dict[str, int]) -> ev.DeviceInfo:
    """What the Phone's status menu shows about this device (addresses, version, SIP ports)."""
    from firmware.netinfo import ip_addresses
    from firmware.provisioning.identity import firmware_version

    return ev.DeviceInfo(
        addresses=ip_addresses(),
        firmware_version=firmware_version(),
        sip_ports=tuple(sorted(sip_ports.items())),
    )


def open_serial_console(url: str, actions: Any) -> tuple[Any, Any]:
    """The bench console on a serial port: ``key``, ``hook``, ``screen``, ``state``, ``help``.

    Inputs go through the same PhoneActions as the control API (so an emulated board's own hook
    state follows). Returns (console, port); the caller starts the console and closes the port."""
    from board.serial_console import SerialConsole, open_port, phone_commands

    def press(key: str) -> None:
        if key not in ev.DIGIT_KEYS and key not in ev.FUNCTION_KEYS:
            valid = "0-9 * # " + " ".join(sorted(ev.FUNCTION_KEYS))
            raise ValueError(f"unknown key {key!r}; valid keys: {valid}")
        actions.press([key])

    def set_hook(offhook: bool) -> None:
        actions.set_hook(offhook)

    port = open_port(url)
    return SerialConsole(port, phone_commands(press, set_hook, actions.state)), port


def default_state_dir(config: PhoneConfig, config_path: Path) -> Path:
    if config.provisioning.state_dir:
        return Path(config.provisioning.state_dir)
    return config_path.resolve().parent / "state"


class PhoneProcess:
    """Everything one phone needs, started and stopped in a safe order."""

    def __init__(
        self,
        config: PhoneConfig,
        *,
        board_kind: str,
        headless: bool,
        state_dir: Path,
        test_hooks: bool,
        identity: Any = None,
    ) -> None:
        from firmware.audio.bridge import AlsaAudio
        from firmware.control import ControlServer, PhoneActions
        from firmware.phone import Phone
        from firmware.runtime import Runtime
        from firmware.sip.engine import SipEngine
        from firmware.state_files import CallHistoryFile, VolumeFile

        self.local_config = config
        # how the phone process before this one ended, as the supervisor saw it ("" if first)
        self.previous_exit = os.environ.get(PREVIOUS_EXIT_ENV, "")
        self.simulated = board_kind == "emulated"  # keeps its SIP port local (see config.py)
        self.provisioning: Any = None
        if config.provisioning.url:
            from firmware.provisioning import ProvisioningClient, effective_config

            self.provisioning = ProvisioningClient(
                config.provisioning,
                state_dir / "provisioning",
                identity,
                apply=self.apply_provisioned,
                status=self.status_report,
                # the check-sync NOTIFY listener lives where SIP does
                notify_host=config.sip.bind_address or "0.0.0.0",
                previous_exit=self.previous_exit,
            )
            # boot with the last config the server gave us (accounts etc.), if any
            config = effective_config(config, self.provisioning.cached_config(), self.simulated)
        self.config = config
        self.interactive = board_kind == "emulated" and not headless and sys.stdin.isatty()
        self.stopped = threading.Event()
        self.board = make_board(board_kind, config, headless)
        self.audio = AlsaAudio(config.audio)
        display = self.board.display
        volumes = VolumeFile(state_dir / "volume.json")
        history = CallHistoryFile(state_dir / "history.jsonl")
        self.runtime = Runtime(
            Phone(config, history=history.call_records(), volumes=volumes.levels()),
            audio=self.audio,
            board=self.board,
            render=screen_renderer(display) if display is not None else None,
            history=history,
            outbox=self.provisioning,
            volumes=volumes,
        )
        self.hang_hook = EngineHangHook()
        on_event = self.hang_hook.wrap(self.runtime.post) if test_hooks else self.runtime.post
        self.engine = SipEngine(config, on_event, self.audio)
        self.runtime.engine = self.engine
        self.hang_hook.engine = self.engine
        width, height = _display_size(display)
        # the emulated board takes presses itself, so its hook state stays the phone's
        inputs = self.board if hasattr(self.board, "press") else None
        actions = PhoneActions(
            self.runtime,
            png_renderer(width, height),
            inputs=inputs,
            resync=self.resync if self.provisioning is not None else None,
            test_hooks={"hang-engine": self.hang_hook} if test_hooks else {},
            device_info=self.device_info,
        )
        self.control = ControlServer(config.control.listen, config.control.token, actions)
        self.console: Any = None
        self.console_port: Any = None
        if config.board.serial_console:
            try:
                self.console, self.console_port = open_serial_console(
                    config.board.serial_console, actions
                )
            except RuntimeError as exc:  # a debug aid: the phone works without it
                log.error("serial console unavailable", extra=kv(error=exc))
        self.heartbeat: Heartbeat | None = None
        self.started_at = time.time()

    def apply_provisioned(self, provisioned: PhoneConfig | None) -> str | None:
        """The provisioning client's apply callback (its thread): None once registered.
        ``None`` goes back to the phone's own config (a refused first config's rollback)."""
        from firmware.provisioning import effective_config

        config = effective_config(self.local_config, provisioned, self.simulated)
        self.config = config
        return apply_and_wait_registered(self.runtime, config, transports=self.transports_outcome)

    def transports_outcome(self, config: PhoneConfig) -> str | None:
        """None once the SIP engine listens as ``config`` says, "pending" before, else why not."""
        if not self.engine.running:
            return f"sip engine stopped: {self.engine.failure or 'not running'}"
        wanted = config.sip.port
        if wanted and self.engine.ports.get("udp") != wanted:
            return "pending"
        return None

    def status_report(self) -> dict:
        return {"lines": self.runtime.snapshot()["registration"]}

    def resync(self) -> str:
        self.provisioning.resync_now()
        return "resync requested"

    def device_info(self) -> dict:
        """Process facts for the control API's state (which process answers, since when)."""
        info = {
            "name": self.config.device.name,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "previous_exit": self.previous_exit,
            "sip_ports": self.engine.ports,
            "audio": self.audio.stats,
        }
        # what the emulated board shows of its LEDs and ringer (a Pi board drives real ones)
        if hasattr(self.board, "leds"):
            info["leds"] = self.board.leds
        if hasattr(self.board, "ringing"):
            info["ringer"] = self.board.ringing
        return info

    def post_device_info(self) -> None:
        try:
            self.runtime.post(gather_device_info(self.engine.ports))
        except OSError as exc:
            log.warning("cannot read the device's addresses", extra=kv(error=exc))

    def start(self, heartbeat_fd: int | None) -> None:
        self.audio.start()
        self.runtime.start()
        self.engine.start()
        self.post_device_info()
        self.board.on_key(lambda key: self.runtime.post(ev.KeyPressed(key)))
        self.board.on_hook(lambda offhook: self.runtime.post(ev.HookChanged(offhook)))
        self.board.start()
        if self.interactive and hasattr(self.board, "run_keyboard"):
            self.board.run_keyboard()
        self.control.start()
        if self.console is not None:
            self.console.start()
            log.info("serial console open", extra=kv(port=self.config.board.serial_console))
        if self.provisioning is not None:
            self.provisioning.start()
        if heartbeat_fd is not None:
            self.heartbeat = Heartbeat(
                heartbeat_fd,
                {
                    "runtime": lambda: self.runtime.last_beat,
                    "sip": lambda: self.engine.last_heartbeat,
                },
            )
            self.heartbeat.start()
        log.info(
            "phone started",
            extra=kv(
                accounts=len(self.config.accounts),
                control=self.config.control.listen,
                sip_ports=self.engine.ports,
                previous_exit=self.previous_exit,
            ),
        )

    def _stop_console(self) -> None:
        self.console.stop()
        self.console_port.close()

    def wait(self) -> None:
        next_info = time.monotonic() + DEVICE_INFO_EVERY_S
        while not self.stopped.wait(0.5):
            if self.heartbeat is not None and self.heartbeat.supervisor_gone.is_set():
                return
            if time.monotonic() >= next_info:
                next_info = time.monotonic() + DEVICE_INFO_EVERY_S
                self.post_device_info()

    def stop(self) -> None:
        steps = [
            ("heartbeat", self.heartbeat.stop if self.heartbeat else None),
            ("provisioning", self.provisioning.stop if self.provisioning else None),
            ("control", self.control.stop),
            ("console", self._stop_console if self.console is not None else None),
            ("board", self.board.stop),
            ("runtime", self.runtime.stop),
            ("sip", self.engine.stop),
            ("audio", self.audio.stop),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception:
                log.exception("stop failed", extra=kv(part=name))


def _display_size(device: Any) -> tuple[int, int]:
    return int(getattr(device, "width", 128)), int(getattr(device, "height", 64))


def start_failed(exc: Exception) -> int:
    """Say why on stderr too: under ``offhook sim`` that is the terminal (the log is a file)."""
    print(f"offhook phone: cannot start: {exc}", file=sys.stderr, flush=True)
    return EXIT_START_FAILED


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="offhook phone", description="run one phone process")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--board", choices=("rpi", "emulated"), default="rpi")
    parser.add_argument("--headless", action="store_true", help="no terminal/OLED output")
    parser.add_argument("--heartbeat-fd", type=int, default=None, help="pipe to the supervisor")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument(
        "--test-hooks",
        action="store_true",
        help=f"enable /api/v1/test/* faults (also {TEST_HOOKS_ENV}=1); never in production",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"offhook phone: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level)
    test_hooks = args.test_hooks or os.environ.get(TEST_HOOKS_ENV) == "1"
    state_dir = args.state_dir or default_state_dir(config, args.config)
    identity = None
    if config.provisioning.url:
        from firmware.provisioning import DeviceIdentity

        pi = args.board == "rpi"
        try:
            identity = DeviceIdentity.from_pi() if pi else sim_identity(args.config)
        except Exception as exc:
            log.error("cannot read the device identity", extra=kv(error=exc))
            return start_failed(exc)
    try:
        phone = PhoneProcess(
            config,
            board_kind=args.board,
            headless=args.headless,
            state_dir=state_dir,
            test_hooks=test_hooks,
            identity=identity,
        )
    except Exception as exc:  # missing hardware, bad profile, a busy control address...
        log.error("cannot set up the phone", extra=kv(error=exc, board=args.board))
        log.debug("set-up failure", exc_info=True)
        return start_failed(exc)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra=kv(signal=signal.Signals(signum).name))
        phone.stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        phone.start(args.heartbeat_fd)
    except Exception as exc:  # an unusable ALSA device, a busy SIP port...
        log.error("phone failed to start", extra=kv(error=exc))
        log.debug("start failure", exc_info=True)
        phone.stop()
        return start_failed(exc)
    try:
        phone.wait()
    finally:
        phone.stop()
    with contextlib.suppress(Exception):
        logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
