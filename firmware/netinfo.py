"""The device's own IP addresses (status menu) and its link (fleet status): ioctl, procfs, sysfs."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SIOCGIFADDR = 0x8915  # <linux/sockios.h>: get an interface's IPv4 address
IF_INET6 = Path("/proc/net/if_inet6")
SCOPE_GLOBAL = 0x00  # if_inet6 scope column; link-local (0x20) is of no use to a helpdesk


def ipv4_addresses() -> list[str]:
    """IPv4 address of every interface that has one, loopback excluded."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            address = socket.inet_ntoa(reply[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                found.append(address)
    return found


def parse_if_inet6(text: str) -> list[str]:
    """Global IPv6 addresses from the text of /proc/net/if_inet6, loopback excluded."""
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            scope = int(fields[3], 16)
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        except ValueError:
            continue
        if scope == SCOPE_GLOBAL and not address.is_loopback:
            found.append(str(address))
    return found


def ip_addresses() -> tuple[str, ...]:
    """IPv4 then global IPv6 addresses of this device."""
    addresses = ipv4_addresses()
    with contextlib.suppress(OSError):
        addresses += parse_if_inet6(IF_INET6.read_text(encoding="ascii"))
    return tuple(addresses)


SYS_CLASS_NET = Path("/sys/class/net")
PROC_NET_WIRELESS = Path("/proc/net/wireless")
ARPHRD_ETHER = "1"  # /sys/class/net/<if>/type of Ethernet (and of Wi-Fi) links


@dataclass(frozen=True)
class LinkInfo:
    """What the phone can cheaply read about the link it talks on (for the fleet's status)."""

    interface: str
    kind: str  # "ethernet", "wifi", "other" (loopback, tunnel...) or "" (no such interface)
    speed_mbps: int | None = None  # Ethernet: negotiated speed (None: down or not reported)
    duplex: str = ""  # Ethernet: "full", "half" or "" (unknown)
    signal_dbm: float | None = None  # Wi-Fi: received signal level
    link_quality: float | None = None  # Wi-Fi: the driver's link quality figure


def interface_with_address(address: str) -> str:
    """The interface holding IPv4 ``address`` ("" if none does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue
            if socket.inet_ntoa(reply[20:24]) == address:
                return name
    return ""


def _read(path: Path) -> str:
    """A sysfs attribute's text; "" when absent or unreadable (speed of a down link: EINVAL)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def parse_wireless(text: str, interface: str) -> tuple[float | None, float | None]:
    """(signal dBm, link quality) of ``interface`` from the text of /proc/net/wireless."""
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() != interface or len(fields) < 3:
            continue
        try:
            quality, level = float(fields[1].rstrip(".")), float(fields[2].rstrip("."))
        except ValueError:
            return None, None
        return level, quality
    return None, None


def link_info(
    interface: str, sys_net: Path = SYS_CLASS_NET, wireless: Path = PROC_NET_WIRELESS
) -> LinkInfo:
    """Speed and duplex of an Ethernet link, or signal and quality of a Wi-Fi one."""
    if not interface or not (sys_net / interface).exists():
        return LinkInfo(interface, "")
    if (sys_net / interface / "wireless").exists():
        signal, quality = parse_wireless(_read(wireless), interface)
        return LinkInfo(interface, "wifi", signal_dbm=signal, link_quality=quality)
    if _read(sys_net / interface / "type") != ARPHRD_ETHER:
        return LinkInfo(interface, "other")  # loopback, a tunnel, PPP...
    speed_text = _read(sys_net / interface / "speed")
    speed = int(speed_text) if speed_text.lstrip("-").isdigit() else None
    duplex = _read(sys_net / interface / "duplex")
    return LinkInfo(
        interface,
        "ethernet",
        speed_mbps=speed if speed is not None and speed > 0 else None,  # -1: unknown
        duplex=duplex if duplex in ("full", "half") else "",
    )
