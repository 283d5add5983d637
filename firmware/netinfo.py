"""The device's own IP addresses, for the status menu (Linux: ioctl for IPv4, procfs for IPv6)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
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
