"""The settings menu's network page on the OS: read how the interface is set up, write DHCP or a
static address as a systemd-networkd ``.network`` file (the image's network manager) or an
ifupdown stanza, atomically, and ask the network manager to reload.

With a VLAN ID the addressing moves to the tagged interface ``<if>.<id>``: for networkd a
``.netdev`` (Kind=vlan) and that interface's own ``.network``, and the parent's ``.network``
names it with ``VLAN=``; for ifupdown an ``iface <if>.<id>`` stanza with ``vlan-raw-device``.
The new files are written first and the parent's last (each atomically), so a power cut leaves
the old set-up or the new one working; a VLAN removed takes its ``.netdev`` with it.

Everything is under ``root`` so tests (and a chroot) use a temporary tree. The phone writes only
where the OS lets it: on the image the root filesystem is read-only, so the page shows the
network and says it is set by the OS (``NetworkStatus.writable`` False).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from offhook.contract.atomic import atomic_write_text
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.features.events import ApplyNetwork, NetworkStatus
from offhook.firmware.features.settings import vlan_problem

log = logging.getLogger(__name__)

NETWORKD_DIR = "etc/systemd/network"
IFUPDOWN_DIR = "etc/network/interfaces.d"
# Sorts before the image's 80-offhook.network: networkd uses the first file that matches a link.
NETWORKD_FILE = "10-offhook-{interface}.network"
NETDEV_FILE = "10-offhook-{interface}.netdev"  # the VLAN device, named <if>.<id>
IFUPDOWN_FILE = "offhook-{interface}"
MARK = "# written by the offhook settings menu"


class NetworkSettingsError(OffhookError, ValueError):
    """A network setting that cannot be used or written; the message says which and why."""


def _check(command: ApplyNetwork) -> None:
    problem = vlan_problem(command.vlan)
    if problem:
        raise NetworkSettingsError(f"{problem}, not {command.vlan}")
    if command.mode == "dhcp":
        return
    if command.mode != "static":
        raise NetworkSettingsError(f"unknown network mode {command.mode!r} (dhcp or static)")
    try:
        interface = ipaddress.IPv4Interface(command.address)
        gateway = ipaddress.IPv4Address(command.gateway)
        dns = [ipaddress.IPv4Address(d) for d in command.dns.split()]
    except ValueError as exc:
        raise NetworkSettingsError(f"static address: {exc}") from None
    if "/" not in command.address:
        raise NetworkSettingsError("static address needs a prefix length (a.b.c.d/nn)")
    if gateway not in interface.network:
        raise NetworkSettingsError(f"gateway {gateway} is not in {interface.network}")
    del dns


def networkd_file(interface: str, command: ApplyNetwork) -> str:
    lines = [MARK, "[Match]", f"Name={interface}", "", "[Network]"]
    if command.mode == "dhcp":
        lines += ["DHCP=yes", "", "[DHCPv4]", "UseDomains=yes"]
    else:
        lines += [f"Address={command.address}", f"Gateway={command.gateway}"]
        lines += [f"DNS={d}" for d in command.dns.split()]
    return "\n".join(lines) + "\n"


def vlan_name(interface: str, vlan: int) -> str:
    return f"{interface}.{vlan}"


def networkd_parent_file(interface: str, vlan: int) -> str:
    """The untagged interface only carries the VLAN: no address of its own."""
    lines = [MARK, "[Match]", f"Name={interface}", "", "[Network]"]
    lines += [f"VLAN={vlan_name(interface, vlan)}", "LinkLocalAddressing=no", "DHCP=no"]
    return "\n".join(lines) + "\n"


def networkd_netdev_file(interface: str, vlan: int) -> str:
    lines = [MARK, "[NetDev]", f"Name={vlan_name(interface, vlan)}", "Kind=vlan", ""]
    lines += ["[VLAN]", f"Id={vlan}"]
    return "\n".join(lines) + "\n"


def networkd_files(interface: str, command: ApplyNetwork) -> dict[str, str]:
    """File name -> text, in the order they are written (the parent's ``.network`` last)."""
    parent = NETWORKD_FILE.format(interface=interface)
    if not command.vlan:
        return {parent: networkd_file(interface, command)}
    tagged = vlan_name(interface, command.vlan)
    return {
        NETDEV_FILE.format(interface=tagged): networkd_netdev_file(interface, command.vlan),
        NETWORKD_FILE.format(interface=tagged): networkd_file(tagged, command),
        parent: networkd_parent_file(interface, command.vlan),
    }


def ifupdown_file(interface: str, command: ApplyNetwork) -> str:
    lines = [MARK, f"auto {interface}"]
    name = interface
    if command.vlan:
        name = vlan_name(interface, command.vlan)
        lines += [f"iface {interface} inet manual", "", f"auto {name}"]
    if command.mode == "dhcp":
        lines.append(f"iface {name} inet dhcp")
    else:
        lines += [
            f"iface {name} inet static",
            f"    address {command.address}",
            f"    gateway {command.gateway}",
        ]
        if command.dns:
            lines.append(f"    dns-nameservers {command.dns}")
    if command.vlan:
        lines.append(f"    vlan-raw-device {interface}")
    return "\n".join(lines) + "\n"


def parse_written(text: str) -> dict[str, str]:
    """What one of our files says: mode, address, gateway, dns (either format)."""
    found = {"mode": "", "address": "", "gateway": "", "dns": "", "vlan": ""}
    dns: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        key, _, value = line.partition("=") if "=" in line else line.partition(" ")
        key, value = key.strip(), value.strip()
        if key == "DHCP" or (key == "iface" and value.endswith(" dhcp")):
            found["mode"] = "dhcp"
        elif key == "iface" and value.endswith(" static"):
            found["mode"] = "static"
        elif key in ("Address", "address"):
            found["mode"], found["address"] = "static", value
        elif key in ("Gateway", "gateway"):
            found["gateway"] = value
        elif key == "DNS" or key == "dns-nameservers":
            dns += value.split()
        elif key == "VLAN" or key == "vlan-raw-device":
            found["vlan"] = "tagged"
        elif key == "Id":
            found["vlan"] = value
    found["dns"] = " ".join(dns)
    return found


def default_gateway(route_table: str) -> str:
    """The IPv4 default route's gateway from the text of /proc/net/route."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return ""


def first_interface(sys_class_net: Path) -> str:
    """The first wired (else wireless) interface, as the image's 80-offhook.network matches."""
    try:
        names = sorted(p.name for p in sys_class_net.iterdir())
    except OSError:
        return ""
    for prefixes in (("eth", "en"), ("wl",)):
        for name in names:
            if name.startswith(prefixes):
                return name
    return ""


class NetworkSettings:
    """The real adapter of the network page (NetworkPort in firmware/ports.py)."""

    def __init__(
        self,
        root: Path = Path("/"),
        interface: str = "",
        reload: Callable[[str], None] | None = None,
        allow_changes: bool = True,
    ) -> None:
        """``allow_changes`` False shows the network only (the simulator: a PC's network is
        not the phone's to change)."""
        self.root = root
        self.allow_changes = allow_changes
        self.interface = interface or first_interface(root / "sys/class/net") or "eth0"
        self._reload = reload if reload is not None else reload_network_manager

    # --- which network manager, and where its file goes -------------------------------------

    def _target(self) -> tuple[Path, Callable[[str, ApplyNetwork], str]] | None:
        networkd = self.root / NETWORKD_DIR
        ifupdown = self.root / IFUPDOWN_DIR
        if networkd.is_dir():
            return networkd / NETWORKD_FILE.format(interface=self.interface), networkd_file
        if ifupdown.is_dir():
            return ifupdown / IFUPDOWN_FILE.format(interface=self.interface), ifupdown_file
        return None

    def writable(self) -> bool:
        if not self.allow_changes:
            return False
        target = self._target()
        return target is not None and os.access(target[0].parent, os.W_OK)

    def _written(self) -> tuple[dict[str, str], int]:
        """What our files say, and the VLAN ID they put the addressing on (0 none)."""
        target = self._target()
        written = {"mode": "dhcp", "address": "", "gateway": "", "dns": "", "vlan": ""}
        if target is None or not target[0].exists():
            return written, 0
        text = target[0].read_text(encoding="utf-8")
        tagged = re.search(r"^(?:VLAN=|iface )\S+\.(\d+)\b", text, re.MULTILINE)
        vlan = int(tagged.group(1)) if tagged else 0
        if vlan and target[0].parent.name == "network":  # networkd: the VLAN's own file
            tagged_file = target[0].parent / NETWORKD_FILE.format(
                interface=vlan_name(self.interface, vlan)
            )
            text = tagged_file.read_text(encoding="utf-8") if tagged_file.exists() else ""
        return parse_written(text), vlan

    def status(self, addresses: tuple[str, ...] = ()) -> NetworkStatus:
        written, vlan = self._written()
        gateway = written["gateway"]
        if not gateway:
            try:
                gateway = default_gateway((self.root / "proc/net/route").read_text())
            except OSError:
                gateway = ""
        address = written["address"] or (addresses[0] if addresses else "")
        try:
            mac = (self.root / f"sys/class/net/{self.interface}/address").read_text().strip()
        except OSError:
            mac = ""
        return NetworkStatus(
            interface=self.interface,
            mode=written["mode"],
            address=address,
            gateway=gateway,
            dns=written["dns"],
            writable=self.writable(),
            mac=mac,
            vlan=vlan,
        )

    def apply(self, command: ApplyNetwork) -> None:
        """Write the interface's file atomically, then reload; NetworkSettingsError if not."""
        _check(command)
        if not self.allow_changes:
            raise NetworkSettingsError("this device's network is not the phone's to change")
        target = self._target()
        if target is None:
            raise NetworkSettingsError(
                f"no network manager config directory under {self.root} "
                f"({NETWORKD_DIR} or {IFUPDOWN_DIR})"
            )
        path, render = target
        if not os.access(path.parent, os.W_OK):
            raise NetworkSettingsError(f"{path.parent} is read-only: the network is set by the OS")
        if path.parent.name == "network":  # networkd: several files, the parent's last
            files = networkd_files(self.interface, command)
        else:
            files = {path.name: render(self.interface, command)}
        try:
            for name, text in files.items():
                atomic_write_text(path.parent / name, text, mode=0o644)
            self._remove_stale(path.parent, set(files))
        except OSError as exc:
            raise NetworkSettingsError(f"{path}: {exc.strerror or exc}") from exc
        log.info(
            "network settings written", extra=kv(path=path, mode=command.mode, vlan=command.vlan)
        )
        self._reload(self.interface)

    def _remove_stale(self, directory: Path, kept: set[str]) -> None:
        """A VLAN removed or changed: its .netdev and .network files go (after the parent no
        longer names it)."""
        prefix = f"10-offhook-{self.interface}."
        for stale in directory.glob(f"{prefix}*"):
            vlan_file = stale.name[len(prefix) :].split(".")[0].isdigit()
            if vlan_file and stale.name not in kept:
                stale.unlink()
                log.info("network file removed", extra=kv(path=stale))


def reload_network_manager(interface: str) -> None:
    """Ask systemd-networkd (or ifupdown) to pick the new file up; absent tools are skipped."""
    if shutil.which("networkctl"):
        commands = [["networkctl", "reload"], ["networkctl", "reconfigure", interface]]
    elif shutil.which("ifup"):
        commands = [["ifdown", interface], ["ifup", interface]]
    else:
        log.warning("no network manager tool to reload", extra=kv(interface=interface))
        return
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise NetworkSettingsError(f"{' '.join(command)}: {done.stderr.strip()}")
