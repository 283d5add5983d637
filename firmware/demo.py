"""``offhook demo`` / ``make demo``: Kamailio and three simulated phones calling each other.

Starts a Kamailio registrar and the provisioning server (SQLite) on loopback, both through
firmware.devtools as subprocesses, three
``offhook sim --headless`` phones that enroll and get their SIP lines from it (Alice 1001,
Bob 1002, Carol 1003; Carol has call waiting off so a second call finds her busy), shows their
OLED screens side by side in the terminal and plays a scripted scenario, driving the phones only
through their control APIs. Kamailio runs its presence modules, and every phone has a BLF key
for each of the others, so their lamps show the scripted calls ringing and talking. Then it
stays up as a playground until Ctrl-C (or ``q``): ``r`` replays the scripted calls (SIGUSR1
too, without a terminal), the phones answer on their control APIs (printed), and
``offhook sim --config <demo dir>/you.toml`` (the command is printed) joins the demo's
registrar as one more, interactive phone, extension 1009, that can call the others.
Without a terminal it prints each step and the screens as plain text.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import select
import signal
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from offhook.contract.config import PhoneConfig, save_config
from offhook.firmware.devtools.kamailio import KamailioServer
from offhook.firmware.devtools.provisioning_server import ProvisioningServerProcess
from offhook.firmware.provisioning.identity import sim_identity
from offhook.firmware.sim import SimPhone, is_registered, sim_config, stop_all

STEP_TIMEOUT_S = 20.0
OLED_WIDTH = 128


@dataclass(frozen=True)
class Person:
    name: str
    user: str
    password: str
    call_waiting: bool = True


PEOPLE = (
    Person("Alice", "1001", "pw1001"),
    Person("Bob", "1002", "pw1002"),
    Person("Carol", "1003", "pw1003", call_waiting=False),
)
GUEST = Person("You", "1009", "pw1009")  # the registrar's line for an interactive offhook sim


class Stopped(Exception):
    """Ctrl-C or SIGTERM during the scenario."""


class Demo:
    def __init__(self, console: Console, root: Path, count: int) -> None:
        self.console = console
        self.root = root
        self.people = PEOPLE[:count]
        self.phones: dict[str, SimPhone] = {}
        self.kamailio: KamailioServer | None = None
        self.step = "starting"
        self.stop_event = threading.Event()
        self.live = console.is_terminal
        self.use_server = True
        self.server: ProvisioningServerProcess | None = None
        self.server_info = ""
        self.replay = threading.Event()  # r (or SIGUSR1): play the scripted calls again
        self.join_command = ""

    # --- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        # the same code the tests use; presence serves the BLF keys' dialog subscriptions
        self.kamailio = KamailioServer(self.root / "kamailio", presence=True)
        for person in (*self.people, GUEST):
            self.kamailio.add_user(person.user, person.password)
        self.kamailio.start()
        self.say(f"Kamailio registrar on {self.kamailio.domain} (UDP/TCP, presence for BLF)")
        self.write_join_config()
        if self.use_server:
            self.start_server()
        for person in self.people:
            phone = self.provisioned_phone(person) if self.server else self.local_phone(person)
            phone.start()
            self.phones[person.name] = phone
        for person in self.people:
            phone = self.phones[person.name]
            self.wait(phone, is_registered, "registered", timeout=40)
            ctl = phone.config.control
            self.say(
                f"{person.name} ({person.user}) registered; control API http://{ctl.listen}/api/v1"
                f" token {ctl.token}"
            )

    def write_join_config(self) -> None:
        """The config an interactive ``offhook sim`` joins the demo with (line 1009)."""
        assert self.kamailio is not None
        config = sim_config(
            GUEST.name, GUEST.user, GUEST.password, self.kamailio.domain, display_name="You"
        )
        path = self.root / "you.toml"
        save_config(config, path)
        self.join_command = f"{sys.executable} -m offhook.firmware.cli sim --config {path}"
        self.say(f"join the demo as 1009: {self.join_command}")

    def start_server(self) -> None:
        self.set_step("starting the provisioning server (SQLite)")
        server = ProvisioningServerProcess(self.root / "server")
        try:
            server.start()
        except Exception as exc:  # the phones still work with local accounts
            self.say(f"provisioning server did not start ({exc}); phones use local accounts")
            server.stop()
            return
        self.server = server
        self.server_info = (
            f"{server.base_url}/  admin {server.admin_user} / {server.admin_password}"
        )
        self.say(f"provisioning server {self.server_info}")

    def local_phone(self, person: Person) -> SimPhone:
        assert self.kamailio is not None
        config = sim_config(
            person.name, person.user, person.password, self.kamailio.domain,
            display_name=person.name,
        )  # fmt: skip
        config.features.call_waiting = person.call_waiting
        config = PhoneConfig.model_validate({**config.model_dump(), "blf": self.blf_keys(person)})
        return SimPhone(self.root / person.name.lower(), config)

    def blf_keys(self, person: Person) -> list[dict[str, str]]:
        """A BLF key (blf1, blf2...) for each of the other demo phones."""
        return [
            {"extension": other.user, "label": other.name}
            for other in self.people
            if other is not person
        ]

    def provisioned_phone(self, person: Person) -> SimPhone:
        """A phone with no account: it enrolls and the server hands it its line."""

        server, kamailio = self.server, self.kamailio
        assert server is not None and kamailio is not None
        provisioning = {
            "url": server.base_url,
            "enrollment_token": server.enrollment_token(max_uses=1),
            "poll_interval_s": 3600,
        }
        config = sim_config(person.name, "", "", "", provisioning=provisioning)
        phone = SimPhone(self.root / person.name.lower(), config)
        local = config.model_dump(mode="json")
        # SIP address and port and the ALSA devices stay the simulator's own (phone-local)
        settings = {"dialplan": local["dialplan"]}
        settings["features"] = {"call_waiting": person.call_waiting}
        settings["blf"] = self.blf_keys(person)
        mac = sim_identity(phone.config_path).mac
        server.add_device(mac, name=person.name, settings=settings)
        line = {
            "extension": person.user,
            "registrar": kamailio.domain,
            "password": person.password,
            "display_name": person.name,
        }
        server.add_line(mac, **line)
        return phone

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            stop_all(list(self.phones.values()))
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
        if self.kamailio is not None:
            with contextlib.suppress(Exception):
                self.kamailio.stop()

    # --- scenario -----------------------------------------------------------------------------

    def playground(self, once: bool) -> None:
        """After the scenario: stay up, and replay it whenever asked, until stopped."""
        while not once and not self.stop_event.is_set():
            if self.replay.wait(0.5):
                self.replay.clear()
                self.idle_all()
                self.scenario()

    def idle_all(self) -> None:
        """Every demo phone back on the hook with no call, before a replay."""
        for phone in self.phones.values():
            phone.client.hook(False)
        for phone in self.phones.values():
            self.wait(phone, lambda s: not s["calls"], "back to idle")

    def scenario(self) -> None:
        alice, bob = self.phones["Alice"], self.phones["Bob"]
        self.set_step("Alice lifts the handset and dials Bob (1002)")
        alice.client.hook(True)
        self.pause(1.0)
        alice.client.keys("1002")
        self.wait(bob, lambda s: call_state(s) == "incoming", "Bob's phone rings")
        # the third phone (Alice herself in a two-phone demo) watches Bob's line on a BLF key
        watcher = self.phones.get("Carol", alice)
        self.watch_lamp(watcher, "1002", "ringing")
        self.pause(1.5)
        self.set_step("Bob answers")
        bob.client.hook(True)
        self.wait(alice, lambda s: call_state(s) == "confirmed", "Alice talking")
        self.wait(bob, lambda s: call_state(s) == "confirmed", "Bob talking")
        self.watch_lamp(watcher, "1002", "busy")
        self.set_step("Alice and Bob talk")
        self.pause(4.0)
        self.set_step("Alice hangs up")
        alice.client.hook(False)
        self.wait(bob, lambda s: not s["calls"], "call ended at Bob")
        self.watch_lamp(watcher, "1002", "idle")
        self.pause(1.0)
        bob.client.hook(False)
        if "Carol" not in self.phones:
            self.set_step("scenario done")
            return
        carol = self.phones["Carol"]
        self.set_step("Alice calls Carol (1003); Carol answers")
        alice.client.hook(True)
        alice.client.keys("1003")
        self.wait(carol, lambda s: call_state(s) == "incoming", "Carol's phone rings")
        self.pause(1.0)
        carol.client.hook(True)
        self.wait(alice, lambda s: call_state(s) == "confirmed", "Alice talking to Carol")
        self.pause(1.5)
        self.set_step("Bob calls Carol: busy (Carol has no call waiting)")
        bob.client.hook(True)
        bob.client.keys("1003")
        self.wait(bob, lambda s: any("usy" in line for line in s["screen"]), "Bob hears busy")
        self.pause(2.5)
        self.set_step("Bob hangs up; Alice and Carol finish their call")
        bob.client.hook(False)
        self.pause(1.5)
        carol.client.hook(False)
        self.wait(alice, lambda s: not s["calls"], "call ended at Alice")
        alice.client.hook(False)
        self.set_step("scenario done: phones stay up (r replays, q or Ctrl-C quits)")

    def watch_lamp(self, phone: SimPhone, extension: str, lamp: str) -> None:
        """Wait until ``phone``'s BLF key for ``extension`` shows ``lamp``, and say so with its
        LED."""
        state = self.wait(
            phone, lambda s: blf_key(s, extension).get("lamp") == lamp,
            f"BLF lamp for {extension} {lamp}",
        )  # fmt: skip
        key = blf_key(state, extension)
        led = state.get("device", {}).get("leds", {}).get(key["key"], "?")
        self.say(f"{phone.name}'s BLF key {key['key']} ({key['label']}): {lamp}, LED {led}")

    # --- helpers ------------------------------------------------------------------------------

    def set_step(self, text: str) -> None:
        self.step = text
        self.say(f"step: {text}")
        if not self.live:
            self.print_screens()

    def say(self, text: str) -> None:
        if not self.live:
            self.console.print(text, soft_wrap=True)  # commands and paths stay on one line

    def pause(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopped

    def wait(
        self,
        phone: SimPhone,
        cond: Callable[[dict], bool],
        what: str,
        timeout: float = STEP_TIMEOUT_S,
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = phone.state()
            if state is not None and cond(state):
                return state
            if self.stop_event.wait(0.1):
                raise Stopped
        raise TimeoutError(f"{phone.name}: {what} did not happen within {timeout:.0f}s")

    def print_screens(self) -> None:
        for name, phone in self.phones.items():
            screen = screen_of(phone)
            lines = " | ".join(screen.get("lines", []))
            status = " ".join(f"{k}={v}" for k, v in screen.get("status", {}).items())
            lamps = " ".join(f"{k['label']}={k['lamp']}" for k in blf_keys_of(phone))
            self.console.print(f"  [{name}] {status} :: {lines} || BLF {lamps}")

    def render(self) -> Group:
        # the real OLED pixels when the terminal is wide enough for all panels, else text
        pixels = self.console.width >= len(self.phones) * (OLED_WIDTH + 5)
        panel = oled_panel if pixels else phone_panel
        panels = [panel(name, phone) for name, phone in self.phones.items()]
        header = Text(f"offhook demo - {self.step}", style="bold")
        footer = Text("", style="dim")
        if self.server_info:
            footer.append(f"provisioning server: {self.server_info}\n", style="dim")
        footer.append("control APIs (Bearer token):\n", style="dim")
        for name, phone in self.phones.items():
            ctl = phone.config.control
            footer.append(f"  {name}: http://{ctl.listen}/api/v1  {ctl.token}\n", style="dim")
        if self.join_command:
            footer.append(f"join as 1009 (another terminal): {self.join_command}\n")
        footer.append("keys: r replay the calls   q quit", style="bold")
        return Group(header, Columns(panels, padding=(0, 1)), footer)


def blf_key(state: dict, extension: str) -> dict[str, str]:
    """The control API's BLF entry (key, extension, label, lamp) for ``extension``, or {}."""
    return next((k for k in state.get("blf") or [] if k.get("extension") == extension), {})


LAMP_LOOKS = {  # how a BLF lamp is drawn under a phone's screen: mark and style
    "idle": ("○", "green"),
    "ringing": ("◉", "bold yellow blink"),
    "busy": ("●", "bold red"),
    "unknown": ("?", "dim"),
}


def blf_keys_of(phone: SimPhone) -> list[dict[str, str]]:
    try:
        state = phone.state()
    except (OSError, RuntimeError, ValueError):
        return []
    return list((state or {}).get("blf") or [])


def blf_text(phone: SimPhone) -> Text:
    """The phone's BLF lamps as one line: a mark per key, coloured like its LED."""
    text = Text()
    for key in blf_keys_of(phone):
        mark, style = LAMP_LOOKS.get(key["lamp"], ("?", "dim"))
        text.append(f"{mark} {key['label']}  ", style=style)
    return text


def call_state(state: dict) -> str:
    calls = state.get("calls") or []
    return calls[0]["state"] if calls else ""


def screen_of(phone: SimPhone) -> dict:
    try:
        return phone.client.screen()
    except (OSError, RuntimeError, ValueError):
        return {"lines": ["(restarting)"], "status": {}}


def phone_panel(name: str, phone: SimPhone) -> Panel:
    """One phone's OLED as text: status bar, a rule, the screen lines."""
    screen = screen_of(phone)
    status = screen.get("status", {})
    bar = f"{status.get('line', name)}  {status.get('reg', '')}  {status.get('time', '')}"
    body = Text(bar[:21].ljust(21) + "\n" + "-" * 21 + "\n", style="bold")
    lines = list(screen.get("lines", []))[:4]
    body.append("\n".join(line[:21] for line in lines).ljust(21))
    body.append("\n" * (4 - len(lines)))
    return Panel(Group(body, blf_text(phone)), title=name, width=25, border_style="cyan")


def oled_text(png: bytes) -> Text:
    """A 1-bit OLED image as half-block characters: one text row per two pixel rows."""

    image = Image.open(io.BytesIO(png)).convert("1")
    width, height = image.size
    pixel = image.load()
    assert pixel is not None  # load() is None only for an image without data
    glyphs = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
    rows = []
    for y in range(0, height - 1, 2):
        rows.append(
            "".join(glyphs[(bool(pixel[x, y]), bool(pixel[x, y + 1]))] for x in range(width))
        )
    return Text("\n".join(rows))


def oled_panel(name: str, phone: SimPhone) -> Panel:
    try:
        body = oled_text(phone.client.screen_png())
    except (OSError, RuntimeError, ValueError):
        body = Text("(restarting)")
    return Panel(
        Group(body, blf_text(phone)), title=name, width=OLED_WIDTH + 4, border_style="cyan"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="offhook demo", description="Kamailio + simulated phones calling each other"
    )
    parser.add_argument("--phones", type=int, choices=(2, 3), default=3)
    parser.add_argument(
        "--once", action="store_true", help="exit after the scenario instead of staying up"
    )
    parser.add_argument(
        "--no-server",
        action="store_true",
        help="no provisioning server: phones get their accounts from local config files",
    )
    args = parser.parse_args(argv)
    console = Console()
    stop_event = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop_event.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)  # always clean up: phones and servers are children
    with tempfile.TemporaryDirectory(prefix="offhook-demo-") as tmp:
        demo = Demo(console, Path(tmp), args.phones)
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: demo.replay.set())
        demo.stop_event = stop_event
        demo.use_server = not args.no_server
        try:
            return run(demo, console, args.once)
        except Stopped:
            console.print("stopping")
            return 0
        except Exception as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            for phone in demo.phones.values():
                console.print(f"--- {phone.name} log tail\n{phone.log_text()[-1500:]}")
            return 1
        finally:
            demo.stop()


def read_keys(demo: Demo, done: threading.Event) -> None:
    """The playground's keys on the terminal (cbreak, so no Enter): r replays, q quits."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            key = os.read(fd, 16).decode("utf-8", "ignore").lower()
            if "r" in key:
                demo.replay.set()
            if "q" in key:
                demo.stop_event.set()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(demo: Demo, console: Console, once: bool) -> int:
    if not demo.live:
        demo.start()
        demo.scenario()
        demo.playground(once)
        return 0
    with Live(Text("starting Kamailio and phones..."), console=console, screen=False) as live:
        done = threading.Event()

        def refresh() -> None:
            while not done.wait(0.25):
                if demo.phones:
                    live.update(demo.render())

        painter = threading.Thread(target=refresh, name="demo-ui", daemon=True)
        painter.start()
        keys = threading.Thread(target=read_keys, args=(demo, done), name="demo-keys", daemon=True)
        keys.start()
        try:
            demo.start()
            demo.scenario()
            demo.playground(once)
        finally:
            done.set()
            painter.join(2)
            keys.join(2)
            if demo.phones:
                live.update(demo.render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
