"""Zero-touch discovery of the provisioning server: DHCP options, then DNS SRV.

A phone flashed without a seed has no ``provisioning.url``. It asks the network, the way
Yealink RPS / Poly ZTP deployments expect:

1. **DHCP.** The image's DHCP client (systemd-networkd) keeps neither option 66 nor 160 in its
   lease, so the phone asks the DHCP server itself with a DHCPINFORM (RFC 2131 3.4: a client
   that already has its address asks for configuration only) from its address, port 68, and
   reads the DHCPACK. Options, most specific first:
   - 43 (vendor-specific), sub-option 1: the URL (the whole option as text is accepted too),
     sub-option 2: the fleet's enrollment token;
   - 160 (Polycom's provisioning server): a URL or host;
   - 66 (TFTP server name, which Yealink and others use for the provisioning URL): a URL or host.
   A bare host becomes ``https://<host>``.
2. **DNS SRV** ``_offhook._tcp.<domain>`` (RFC 2782), the domain from DHCP option 15, else the
   ``search``/``domain`` of resolv.conf: ``https://<target>:<port>``; a TXT record of the same
   name ``token=<enrollment token>`` gives the token. We chose our own service
   name rather than a vendor's (``_yealink-rps``...): a vendor's record points at that vendor's
   redirect service, which speaks another protocol.

Nothing found here is trusted: the server's CA fingerprint is shown for the admin's approval
(firmware/features/trust.py) unless the config pins one.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
MAGIC = b"\x63\x82\x53\x63"
DHCPINFORM, DHCPACK = 8, 5
OPT_DOMAIN, OPT_VENDOR, OPT_TFTP_NAME, OPT_POLYCOM = 15, 43, 66, 160
OPT_MSG_TYPE, OPT_PARAMS, OPT_END, OPT_PAD = 53, 55, 255, 0
REQUESTED = bytes([1, 3, 6, OPT_DOMAIN, OPT_VENDOR, OPT_TFTP_NAME, OPT_POLYCOM])
VENDOR_URL_SUBOPTION = 1
VENDOR_TOKEN_SUBOPTION = 2
SRV_SERVICE = "_offhook._tcp"
RESOLV_CONF = Path("/etc/resolv.conf")
DNS_TYPE_SRV = 33
DNS_TYPE_TXT = 16


class DiscoveryError(OffhookError, ValueError):
    """A DHCP or DNS answer that cannot be read; the message says what was wrong with it."""


@dataclass(frozen=True)
class DhcpAnswer:
    server: str  # the DHCP server's address
    options: dict[int, bytes] = field(default_factory=dict)

    def text(self, code: int) -> str:
        return self.options.get(code, b"").rstrip(b"\0").decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class Found:
    url: str
    source: str  # "dhcp option 160", "dns srv _offhook._tcp.example.test", ...
    enrollment_token: str = ""  # from option 43 sub-option 2 or the TXT record; "" when none


# --- DHCP ------------------------------------------------------------------------------------


def inform_packet(xid: int, address: str, mac: bytes) -> bytes:
    """A DHCPINFORM from ``address`` asking for the options discovery reads."""
    chaddr = mac[:16].ljust(16, b"\0")
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1,  # BOOTREQUEST
        1,  # Ethernet
        6,
        0,
        xid,
        0,
        0,  # no broadcast flag: the answer comes to ciaddr (RFC 2131 4.4.3)
        socket.inet_aton(address),
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 4,
        chaddr,
        b"\0" * 64,
        b"\0" * 128,
    )
    options = bytes([OPT_MSG_TYPE, 1, DHCPINFORM, OPT_PARAMS, len(REQUESTED)]) + REQUESTED
    return header + MAGIC + options + bytes([OPT_END])


def parse_options(data: bytes) -> dict[int, bytes]:
    """The options of a DHCP message's option field; repeated options are concatenated
    (RFC 3396)."""
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            break
        if i + 1 >= len(data):
            raise DiscoveryError(f"DHCP option {code} is cut short")
        length = data[i + 1]
        value = data[i + 2 : i + 2 + length]
        if len(value) != length:
            raise DiscoveryError(f"DHCP option {code} is cut short")
        options[code] = options.get(code, b"") + value
        i += 2 + length
    return options


def parse_ack(packet: bytes, xid: int) -> dict[int, bytes] | None:
    """The options of a DHCPACK answering ``xid``; None for any other packet."""
    if len(packet) < 240 or packet[0] != 2 or packet[236:240] != MAGIC:
        return None
    if struct.unpack("!I", packet[4:8])[0] != xid:
        return None
    options = parse_options(packet[240:])
    if options.get(OPT_MSG_TYPE) != bytes([DHCPACK]):
        return None
    return options


def dhcp_inform(
    address: str,
    mac: bytes = b"",
    server: str = "255.255.255.255",
    timeout_s: float = 3.0,
    attempts: int = 2,
) -> DhcpAnswer | None:
    """Ask the DHCP server from ``address`` (this host's, bound) with DHCPINFORM; None when no
    server answered. Needs port 68 (root, or CAP_NET_BIND_SERVICE)."""
    xid = secrets.randbits(32)
    packet = inform_packet(xid, address, mac)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("", DHCP_CLIENT_PORT))
        for attempt in range(attempts):
            sock.sendto(packet, (server, DHCP_SERVER_PORT))
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    reply, sender = sock.recvfrom(4096)
                except TimeoutError:
                    break
                try:
                    options = parse_ack(reply, xid)
                except DiscoveryError as exc:
                    log.warning("unreadable DHCP answer", extra=kv(sender=sender[0], error=exc))
                    continue
                if options is not None:
                    return DhcpAnswer(sender[0], options)
            log.info("no DHCP answer to INFORM", extra=kv(attempt=attempt + 1, address=address))
    return None


def vendor_suboptions(option43: bytes) -> dict[int, str]:
    """Option 43's TLV sub-options as text; {} when it is not TLVs."""
    found: dict[int, str] = {}
    i = 0
    while i + 2 <= len(option43):
        code, length = option43[i], option43[i + 1]
        value = option43[i + 2 : i + 2 + length]
        if len(value) != length:
            return {}
        found[code] = value.decode("utf-8", "replace").strip()
        i += 2 + length
    return found


def vendor_url(option43: bytes) -> str:
    """The URL in option 43: sub-option 1 of its TLVs, else the whole option as text."""
    url = vendor_suboptions(option43).get(VENDOR_URL_SUBOPTION, "")
    if url:
        return url
    text = option43.decode("utf-8", "replace").strip()
    return text if text.startswith(("https://", "http://")) else ""


def as_url(value: str) -> str:
    """A URL from an option that holds a URL or a host (a host means https)."""
    value = value.strip()
    if not value:
        return ""
    if value.startswith(("https://", "http://")):
        return value.rstrip("/")
    if "://" in value:  # tftp://, ftp://: not a protocol the phone speaks
        return ""
    return f"https://{value.rstrip('/')}"


def from_dhcp(answer: DhcpAnswer) -> Found | None:
    token = vendor_suboptions(answer.options.get(OPT_VENDOR, b"")).get(VENDOR_TOKEN_SUBOPTION, "")
    candidates = (
        (vendor_url(answer.options.get(OPT_VENDOR, b"")), "dhcp option 43"),
        (as_url(answer.text(OPT_POLYCOM)), "dhcp option 160"),
        (as_url(answer.text(OPT_TFTP_NAME)), "dhcp option 66"),
    )
    for url, source in candidates:
        if url:
            return Found(url, source, token)
    return None


# --- DNS SRV ---------------------------------------------------------------------------------


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise DiscoveryError(f"bad DNS name {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    for _ in range(128):  # compression loops are cut off
        if offset >= len(message):
            raise DiscoveryError("DNS name runs past the message")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise DiscoveryError("DNS pointer runs past the message")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end >= 0 else offset + 1)
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    raise DiscoveryError("DNS name compression loops")


def dns_query(qid: int, name: str, rtype: int = DNS_TYPE_SRV) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return header + _encode_name(name) + struct.pack("!HH", rtype, 1)


def parse_srv_answer(message: bytes, qid: int) -> list[tuple[int, int, int, str]]:
    """(priority, weight, port, target) of each SRV record in the answer section."""
    return [r for r in parse_answer(message, qid) if isinstance(r, tuple)]


def parse_txt_answer(message: bytes, qid: int) -> list[str]:
    """The strings of each TXT record in the answer section (joined per record)."""
    return [r for r in parse_answer(message, qid) if isinstance(r, str)]


def parse_answer(message: bytes, qid: int) -> list[tuple[int, int, int, str] | str]:
    """The SRV (as tuples) and TXT (as text) records of a DNS answer section."""
    if len(message) < 12:
        raise DiscoveryError("DNS answer shorter than its header")
    rid, flags, qdcount, ancount = struct.unpack("!HHHH", message[:8])
    if rid != qid:
        raise DiscoveryError("DNS answer to another query")
    if flags & 0x000F not in (0, 3):  # NOERROR or NXDOMAIN are answers; others are failures
        raise DiscoveryError(f"DNS server answered rcode {flags & 0x000F}")
    offset = 12
    for _ in range(qdcount):
        _, offset = _read_name(message, offset)
        offset += 4
    records: list[tuple[int, int, int, str] | str] = []
    for _ in range(ancount):
        _, offset = _read_name(message, offset)
        if offset + 10 > len(message):
            raise DiscoveryError("DNS record runs past the message")
        rtype, _, _, rdlength = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if rtype == DNS_TYPE_SRV and rdlength >= 7:
            priority, weight, port = struct.unpack("!HHH", message[offset : offset + 6])
            target, _ = _read_name(message, offset + 6)
            records.append((priority, weight, port, target))
        elif rtype == DNS_TYPE_TXT:
            data, i, text = message[offset : offset + rdlength], 0, b""
            while i < len(data):
                text += data[i + 1 : i + 1 + data[i]]
                i += 1 + data[i]
            records.append(text.decode("utf-8", "replace"))
        offset += rdlength
    return records


def _ask(
    name: str, rtype: int, nameservers: Sequence[tuple[str, int]], timeout_s: float
) -> bytes | None:
    """The first answer of any name server to the query, with its id checked; None if none."""
    for server in nameservers:
        qid = secrets.randbits(16)
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.sendto(dns_query(qid, name, rtype), server)
                reply, _ = sock.recvfrom(4096)
                parse_answer(reply, qid)
            except (OSError, DiscoveryError) as exc:
                log.info("DNS query failed", extra=kv(server=server[0], name=name, error=exc))
                continue
        return reply
    return None


def lookup_srv(
    name: str, nameservers: Sequence[tuple[str, int]], timeout_s: float = 2.0
) -> list[tuple[int, int, int, str]]:
    """SRV records of ``name``, best first (lowest priority, then highest weight)."""
    reply = _ask(name, DNS_TYPE_SRV, nameservers, timeout_s)
    if reply is None:
        return []
    records = parse_srv_answer(reply, int.from_bytes(reply[:2], "big"))
    return sorted(records, key=lambda r: (r[0], -r[1]))


def lookup_token(name: str, nameservers: Sequence[tuple[str, int]], timeout_s: float = 2.0) -> str:
    """The enrollment token of a ``token=...`` TXT record of ``name`` ("" when none)."""
    reply = _ask(name, DNS_TYPE_TXT, nameservers, timeout_s)
    if reply is None:
        return ""
    for text in parse_txt_answer(reply, int.from_bytes(reply[:2], "big")):
        key, _, value = text.partition("=")
        if key.strip() == "token":
            return value.strip()
    return ""


def resolv_conf(text: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(name servers, search domains) of a resolv.conf."""
    servers: list[tuple[str, int]] = []
    domains: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                servers.append((str(ipaddress.ip_address(words[1])), 53))
            except ValueError:
                continue
        elif words and words[0] in ("search", "domain"):
            domains += words[1:]
    return servers, domains


def from_srv(domains: Sequence[str], nameservers: Sequence[tuple[str, int]]) -> Found | None:
    for domain in domains:
        name = f"{SRV_SERVICE}.{domain.strip('.')}"
        for _, _, port, target in lookup_srv(name, nameservers):
            if target and target != ".":
                host = target.rstrip(".")
                token = lookup_token(name, nameservers)
                return Found(f"https://{host}:{port}", f"dns srv {name}", token)
    return None


# --- both ------------------------------------------------------------------------------------


def discover(
    address: str,
    mac: bytes = b"",
    *,
    dhcp_server: str = "255.255.255.255",
    nameservers: Sequence[tuple[str, int]] | None = None,
    domains: Sequence[str] = (),
    timeout_s: float = 3.0,
) -> Found | None:
    """The provisioning server's URL from DHCP (INFORM from ``address``), else DNS SRV."""
    answer = None
    if address:
        try:
            answer = dhcp_inform(address, mac, dhcp_server, timeout_s)
        except OSError as exc:  # no route for the broadcast, port 68 not ours...
            log.warning("DHCPINFORM not sent", extra=kv(address=address, error=exc))
    if answer is not None:
        found = from_dhcp(answer)
        if found is not None:
            log.info("provisioning server found", extra=kv(url=found.url, source=found.source))
            return found
    conf_servers: list[tuple[str, int]] = []
    conf_domains: list[str] = []
    if nameservers is None or not domains:
        with contextlib.suppress(OSError):
            conf_servers, conf_domains = resolv_conf(RESOLV_CONF.read_text(encoding="utf-8"))
    search = list(domains)
    if answer is not None and answer.text(OPT_DOMAIN):
        search.insert(0, answer.text(OPT_DOMAIN))
    search += [d for d in conf_domains if d not in search]
    found = from_srv(search, nameservers if nameservers is not None else conf_servers)
    if found is not None:
        log.info("provisioning server found", extra=kv(url=found.url, source=found.source))
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m offhook.firmware.provisioning.discovery``: what this network offers."""
    parser = argparse.ArgumentParser(prog="python -m offhook.firmware.provisioning.discovery")
    parser.add_argument("--address", required=True, help="this host's IPv4 address (ciaddr)")
    parser.add_argument("--dhcp-server", default="255.255.255.255")
    parser.add_argument("--nameserver", action="append", default=[], help="host:port")
    parser.add_argument("--domain", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    servers = []
    for item in args.nameserver:
        host, _, port = item.rpartition(":")
        servers.append((host, int(port)))
    found = discover(
        args.address,
        dhcp_server=args.dhcp_server,
        nameservers=servers or None,
        domains=args.domain,
        timeout_s=args.timeout,
    )
    json.dump(asdict(found) if found else None, sys.stdout)
    sys.stdout.write("\n")
    return 0 if found else 1


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("OFFHOOK_LOG", "WARNING"))
    sys.exit(main())
