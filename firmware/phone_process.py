"""``offhook phone``: one phone process — runtime, SIP engine, audio, board and control API.

Normally started by the supervisor (``offhook run`` / ``offhook sim``), which passes the write end
of a pipe as ``--heartbeat-fd``. A heartbeat byte (firmware/heartbeat.py) goes out while both
the runtime loop and the SIP engine's owner loop have run recently; if either hangs, the
heartbeats stop and the supervisor kills and restarts this process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offhook.board.base import Board, Display
from offhook.contract.config import ConfigError, PhoneConfig, load_config
from offhook.contract.logs import kv, setup_logging
from offhook.firmware import events as ev
from offhook.firmware.fault_hooks import EngineHangHook
from offhook.firmware.heartbeat import PREVIOUS_EXIT_ENV, Heartbeat, stale_after_from_env
from offhook.firmware.provisioned_apply import apply_and_wait_registered
from offhook.firmware.provisioning.identity import sim_identity

if TYPE_CHECKING:
    from offhook.board.emulated import EmulatedBoard
    from offhook.board.serial_console import Port, SerialConsole
    from offhook.contract.config import DirectorySettings
    from offhook.firmware.device_services import DeviceServices
    from offhook.firmware.features.events import ProvisioningStatus
    from offhook.firmware.provisioning import DeviceIdentity, ProvisioningClient
    from offhook.firmware.provisioning.discovery import Found
    from offhook.firmware.provisioning.zero_touch import ZeroTouch

log = logging.getLogger("offhook.phone")

TEST_HOOKS_ENV = "OFFHOOK_TEST_HOOKS"
DEVICE_INFO_EVERY_S = 30.0  # addresses change with DHCP; the status menu should follow
# Exit status of a phone that could not be set up or started (sysexits' EX_CONFIG): a missing
# sound card, a port in use, a bad pin profile. Restarting at once would fail the same way, so the
# supervisor backs off (and the simulator stops, showing the reason).
EXIT_START_FAILED = 78


def make_emulated_board(headless: bool) -> EmulatedBoard:
    """The emulated board: luma's dummy display headless, else the terminal."""
    from offhook.board.emulated import EmulatedBoard

    return EmulatedBoard(display="dummy" if headless else "asciiblock")


def make_board(kind: str, config: PhoneConfig, headless: bool) -> Board:
    """The emulated board (terminal or headless) or the real Pi board from its pin profile."""
    if kind == "emulated":
        return make_emulated_board(headless)
    from offhook.board.display import apply_settings, make_display
    from offhook.board.pi import PiBoard
    from offhook.board.profile import load_profile

    profile = load_profile(config.board.profile)
    display = None if headless else make_display(apply_settings(profile.display, config.board))
    return PiBoard(profile, display=display)


def screen_renderer(device: Display) -> Callable[[ev.Screen], None]:
    """Draw a Screen on a luma device (the board's OLED or the terminal)."""
    from offhook.firmware.screens import render_to_device

    def draw(screen: ev.Screen) -> None:
        render_to_device(screen, device)

    return draw


def png_renderer(width: int = 128, height: int = 64) -> Callable[[ev.Screen | None], bytes]:
    """Screen -> PNG of what the OLED shows (drawn on a private image, not the panel)."""
    from PIL import Image

    from offhook.firmware.control.png import png_of
    from offhook.firmware.screens import render_image

    def png(screen: ev.Screen | None) -> bytes:
        if screen is None:
            return png_of(Image.new("1", (width, height), 0))
        return png_of(render_image(screen, width, height))

    return png


def gather_device_info(sip_ports: dict[str, int]) -> ev.DeviceInfo:
    """What the Phone's status menu shows about this device (addresses, version, SIP ports)."""
    from offhook.firmware.netinfo import ip_addresses
    from offhook.firmware.provisioning.identity import firmware_version

    return ev.DeviceInfo(
        addresses=ip_addresses(),
        firmware_version=firmware_version(),
        sip_ports=tuple(sorted(sip_ports.items())),
    )


ZERO_TOUCH_ENV = "OFFHOOK_ZERO_TOUCH"  # "1": discover on the simulator too; "dns": DNS only
# Name servers ("host:port,...") and domains ("a,b") to discover with instead of resolv.conf's:
# for a lab, and for tests that run the DNS server on a port of their own.
DISCOVERY_DNS_ENV = "OFFHOOK_DISCOVERY_NAMESERVERS"
DISCOVERY_DOMAINS_ENV = "OFFHOOK_DISCOVERY_DOMAINS"
DATA_DIR_ENV = "OFFHOOK_STATE_DIR"  # the image's data directory (offhook.service sets it)


def zero_touch_wanted(config: PhoneConfig, board: str) -> bool:
    """A phone without a provisioning server looks for one: on real boards always, on the
    simulator only when asked (its DHCPINFORM needs port 68, and a PC's LAN is not the fleet's).
    """
    if config.provisioning.url:
        return False
    return board != "emulated" or os.environ.get(ZERO_TOUCH_ENV) in ("1", "dns")


def data_dir(config_path: Path) -> Path | None:
    """The data partition's phone directory, where a factory reset may erase everything: only
    when the service names it and the config lives in it (never a developer's own folder)."""
    named = os.environ.get(DATA_DIR_ENV, "")
    if named and Path(named).resolve() == config_path.resolve().parent:
        return Path(named)
    return None


def finish_interrupted_reset(config_path: Path) -> None:
    from offhook.firmware.factory_reset import FactoryResetter

    data = data_dir(config_path)
    if data is not None:
        FactoryResetter(data).finish_interrupted()


def make_device_services(
    post: Callable[[Any], None],
    directory: Callable[[], DirectorySettings],
    config_path: Path | None,
    after_reset: Callable[[], None],
    simulated: bool,
) -> DeviceServices:
    from offhook.firmware.device_services import DeviceServices
    from offhook.firmware.factory_reset import FactoryResetter
    from offhook.firmware.network_settings import NetworkSettings

    data = data_dir(config_path) if config_path is not None else None
    resetter = FactoryResetter(data) if data is not None else None
    network = NetworkSettings(allow_changes=not simulated)  # a PC's network is not the sim's
    return DeviceServices(post, directory, network, resetter, after_reset)


def make_zero_touch(
    config_path: Path,
    config: PhoneConfig,
    mac: str,
    post: Callable[[Any], None],
    on_trusted: Callable[[], None],
) -> ZeroTouch:
    from offhook.firmware.netinfo import ipv4_addresses
    from offhook.firmware.provisioning.discovery import discover
    from offhook.firmware.provisioning.zero_touch import ZeroTouch

    servers: list[tuple[str, int]] | None = None
    if os.environ.get(DISCOVERY_DNS_ENV):
        servers = []
        for item in os.environ[DISCOVERY_DNS_ENV].split(","):
            host, _, port = item.strip().rpartition(":")
            servers.append((host, int(port)))
    domains = [d for d in os.environ.get(DISCOVERY_DOMAINS_ENV, "").split(",") if d]
    dhcp = os.environ.get(ZERO_TOUCH_ENV) != "dns"  # "dns": never a DHCP packet on the PC's LAN

    def find() -> Found | None:
        addresses = ipv4_addresses() if dhcp else []
        address = addresses[0] if addresses else ""
        mac_bytes = bytes.fromhex(mac.replace(":", ""))
        return discover(address, mac_bytes, nameservers=servers, domains=domains)

    return ZeroTouch(config_path, config, mac, find, post, on_trusted)


def provisioning_status(client: ProvisioningClient, mac: str) -> ProvisioningStatus:
    from offhook.firmware.features.events import ProvisioningStatus

    state = {"unenrolled": "error", "revoked": "refused"}.get(client.state, client.state)
    if client.state == "unenrolled" and not client.last_error:
        state = "pending"  # enrolling
    return ProvisioningStatus(state, client.settings.url, mac, client.last_error)


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
        identity: DeviceIdentity | None = None,
        config_path: Path | None = None,
    ) -> None:
        from offhook.firmware.audio.bridge import AlsaAudio
        from offhook.firmware.control.actions import PhoneActions
        from offhook.firmware.control.server import ControlServer
        from offhook.firmware.phone import Phone
        from offhook.firmware.runtime import Runtime
        from offhook.firmware.sip.engine import SipEngine
        from offhook.firmware.state_files import AdminLockFile, CallHistoryFile, VolumeFile

        self.local_config = config
        # how the phone process before this one ended, as the supervisor saw it ("" if first)
        self.previous_exit = os.environ.get(PREVIOUS_EXIT_ENV, "")
        self.simulated = board_kind == "emulated"  # keeps its SIP port local (see config.py)
        self.provisioning: ProvisioningClient | None = None
        if config.provisioning.url:
            from offhook.firmware.provisioning import ProvisioningClient, effective_config

            if identity is None:
                raise ValueError("provisioning.url is set but the device identity is unknown")
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
        # the emulated board takes presses itself (so its hook state stays the phone's), shows
        # its LEDs and ringer in the state, and reads the terminal's keyboard when interactive
        self.emulated = make_emulated_board(headless) if board_kind == "emulated" else None
        self.board: Board = self.emulated or make_board(board_kind, config, headless)
        self.audio = AlsaAudio(config.audio)
        display = self.board.display
        volumes = VolumeFile(state_dir / "volume.json")
        history = CallHistoryFile(state_dir / "history.jsonl")
        admin_lock = AdminLockFile(state_dir / "admin_lock.json")
        self.services = make_device_services(
            lambda event: self.runtime.post(event),
            lambda: self.config.directory,
            config_path,
            after_reset=self.stopped.set,  # the supervisor starts a fresh phone process
            simulated=self.simulated,
        )
        self.zero_touch: ZeroTouch | None = None
        if (
            config_path is not None
            and identity is not None
            and zero_touch_wanted(config, board_kind)
        ):
            self.zero_touch = make_zero_touch(
                config_path,
                config,
                identity.mac,
                lambda event: self.runtime.post(event),
                on_trusted=self.stopped.set,  # restarted, the phone enrolls with the new config
            )
            self.services.set_trust(self.zero_touch.trust)
        self.identity = identity
        self.runtime = Runtime(
            Phone(
                config,
                history=history.call_records(),
                volumes=volumes.levels(),
                admin_lock=admin_lock.load(time.time()),
            ),
            audio=self.audio,
            board=self.board,
            render=screen_renderer(display) if display is not None else None,
            history=history,
            outbox=self.provisioning,
            volumes=volumes,
            admin_lock=admin_lock,
            services=self.services.commands(),
        )
        # BLF subscriptions and action URLs: I/O of their own, off the runtime loop
        from offhook.firmware.action_url_sender import ActionUrlSender
        from offhook.firmware.sip.dialog_watch import DialogWatcher

        self.watcher = DialogWatcher(
            self.runtime.post,
            config.sip.bind_address or "0.0.0.0",
            user_agent=config.sip.user_agent,
        )
        self.action_urls = ActionUrlSender()
        self.runtime.watcher = self.watcher
        self.runtime.action_urls = self.action_urls
        self.hang_hook = EngineHangHook()
        on_event = self.hang_hook.wrap(self.runtime.post) if test_hooks else self.runtime.post
        self.engine = SipEngine(config, on_event, self.audio)
        self.runtime.engine = self.engine
        self.hang_hook.engine = self.engine
        width, height = _display_size(display)
        actions = PhoneActions(
            self.runtime,
            png_renderer(width, height),
            inputs=self.emulated,
            resync=self.resync if self.provisioning is not None else None,
            test_hooks={"hang-engine": self.hang_hook} if test_hooks else {},
            device_info=self.device_info,
        )
        self.control = ControlServer(config.control.listen, config.control.token, actions)
        self.console: SerialConsole | None = None
        self.console_port: Port | None = None
        if config.board.serial_console:
            from offhook.firmware.bench_console import open_serial_console

            try:
                self.console, self.console_port = open_serial_console(
                    config.board.serial_console, actions
                )
            except RuntimeError as exc:  # a debug aid: the phone works without it
                log.error("serial console unavailable", extra=kv(error=exc))
        self.heartbeat: Heartbeat | None = None
        self.started_at = time.time()
        from offhook.firmware.provisioning.identity import firmware_version
        from offhook.firmware.update.wiring import update_service

        # firmware updates (docs/updates.md): on a card with RAUC; without a provisioning server
        # there are no updates, but the service still marks the booted slot good
        self.updates = update_service(
            config, state_dir / "update", self.provisioning, self.runtime,
            identity.firmware_version if identity else firmware_version(),
        )  # fmt: skip

    def apply_provisioned(self, provisioned: PhoneConfig | None) -> str | None:
        """The provisioning client's apply callback (its thread): None once registered.
        ``None`` goes back to the phone's own config (a refused first config's rollback)."""
        from offhook.firmware.provisioning import effective_config

        config = effective_config(self.local_config, provisioned, self.simulated)
        self.config = config
        if self.updates is not None:
            self.updates.wanted(config.firmware)
        return apply_and_wait_registered(self.runtime, config)

    def status_report(self) -> dict:
        from offhook.firmware.network_status import network_status
        from offhook.firmware.provisioning.client import local_address_towards

        report: dict[str, Any] = {"lines": self.runtime.snapshot()["registration"]}
        # the link and the registrar's round trip (the provisioning client's thread: an
        # unanswered OPTIONS holds it up to 2 s)
        local_ip = local_address_towards(self.config.provisioning.url)
        report["network"] = network_status(self.config, local_ip)
        if self.updates is not None:
            report["firmware"] = self.updates.status()
        return report

    def resync(self) -> str:
        if self.provisioning is None:
            raise RuntimeError("provisioning is not configured")
        self.provisioning.resync_now()
        return "resync requested"

    def device_info(self) -> dict:
        """Process facts for the control API's state (which process answers, since when)."""
        info: dict[str, Any] = {
            "name": self.config.device.name,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "previous_exit": self.previous_exit,
            "sip_ports": self.engine.ports,
            "audio": self.audio.stats,
        }
        # what the emulated board shows of its LEDs and ringer (a Pi board drives real ones)
        if self.emulated is not None:
            info["leds"] = self.emulated.leds
            info["ringer"] = self.emulated.ringing
        return info

    def post_device_info(self) -> None:
        try:
            info = gather_device_info(self.engine.ports)
            self.runtime.post(info)
            self.services.post_network_status(info.addresses)
        except OSError as exc:
            log.warning("cannot read the device's addresses", extra=kv(error=exc))
        if self.provisioning is not None:
            mac = self.identity.mac if self.identity is not None else ""
            self.runtime.post(provisioning_status(self.provisioning, mac))

    def start(self, heartbeat_fd: int | None) -> None:
        self.audio.start()
        self.watcher.start()
        self.action_urls.start()
        self.runtime.start()
        self.engine.start()
        self.post_device_info()
        self.board.on_key(lambda key: self.runtime.post(ev.KeyPressed(key)))
        self.board.on_hook(lambda offhook: self.runtime.post(ev.HookChanged(offhook)))
        self.board.start()
        if self.interactive and self.emulated is not None:
            self.emulated.run_keyboard()
        self.control.start()
        if self.console is not None:
            self.console.start()
            log.info("serial console open", extra=kv(port=self.config.board.serial_console))
        if self.updates is not None:
            self.updates.start()  # before provisioning: its first config apply says what is wanted
        if self.provisioning is not None:
            self.provisioning.start()
        self.services.start()
        if self.zero_touch is not None:
            self.zero_touch.start()
        if heartbeat_fd is not None:
            self.heartbeat = Heartbeat(
                heartbeat_fd,
                {
                    "runtime": lambda: self.runtime.last_beat,
                    "sip": lambda: self.engine.last_heartbeat,
                },
                stale_after_s=stale_after_from_env(),
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
        if self.console is not None:
            self.console.stop()
        if self.console_port is not None:
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
        steps: list[tuple[str, Callable[[], None] | None]] = [
            ("heartbeat", self.heartbeat.stop if self.heartbeat else None),
            ("provisioning", self.provisioning.stop if self.provisioning else None),
            ("zero-touch", self.zero_touch.stop if self.zero_touch else None),
            ("services", self.services.stop),
            ("updates", self.updates.stop if self.updates else None),
            ("control", self.control.stop),
            ("console", self._stop_console if self.console is not None else None),
            ("board", self.board.stop),
            ("runtime", self.runtime.stop),
            ("blf", self.watcher.stop),
            ("action-urls", self.action_urls.stop),
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


def _display_size(device: Display | None) -> tuple[int, int]:
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
        finish_interrupted_reset(args.config)  # before the config is read: it may be the old one
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"offhook phone: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level)
    test_hooks = args.test_hooks or os.environ.get(TEST_HOOKS_ENV) == "1"
    state_dir = args.state_dir or default_state_dir(config, args.config)
    identity: DeviceIdentity | None = None
    if config.provisioning.url or zero_touch_wanted(config, args.board):
        from offhook.firmware.provisioning import DeviceIdentity

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
            config_path=args.config,
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
