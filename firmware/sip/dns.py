"""Name servers for pjsip's asynchronous resolver.

Without one, pjsip resolves host names with the blocking system call inside the owner thread: an
unreachable DNS server would then freeze the engine (and its heartbeat) for seconds. With one,
resolution is asynchronous and follows RFC 3263 (NAPTR/SRV), as SIP servers expect.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from offhook.contract.config import PhoneConfig

RESOLV_CONF = Path("/etc/resolv.conf")
MAX_NAMESERVERS = 3  # pjsip's resolver takes up to this many in practice


def parse_resolv_conf(text: str) -> list[str]:
    """IPv4 ``nameserver`` entries, in order (pjsip wants plain addresses)."""
    servers = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1])
            except ValueError:
                continue
            if address.version == 4:
                servers.append(str(address))
    return servers[:MAX_NAMESERVERS]


def _is_ip_literal(host_port: str) -> bool:
    host = host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def needs_resolver(config: PhoneConfig) -> bool:
    """True when an enabled account names its server by host name."""
    hosts = [
        host
        for account in config.accounts
        if account.enabled
        for host in (account.domain, account.outbound_proxy)
        if host
    ]
    return any(not _is_ip_literal(host) for host in hosts)


def nameservers(config: PhoneConfig, resolv_conf: Path = RESOLV_CONF) -> list[str]:
    if not needs_resolver(config):
        return []
    try:
        return parse_resolv_conf(resolv_conf.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []
