"""SIP URI helpers: dial targets to request URIs, and name/URI out of a From/To header value."""

from __future__ import annotations

import re

from offhook.contract.config import Account
from offhook.contract.errors import OffhookError

# Dialled strings the engine turns into sip:<target>@<domain>: digits, * and #, and SIP user chars.
_DIALLABLE = re.compile(r"^[A-Za-z0-9*#+._~\-!$&'()]+$")
_NAME_ADDR = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<([^>]*)>')


class TargetError(OffhookError, ValueError):
    """A dial target that cannot become a SIP URI."""


def transport_param(transport: str) -> str:
    return "" if transport == "udp" else f";transport={transport}"


def target_uri(account: Account, target: str) -> str:
    """``1002`` -> ``sip:1002@domain`` (with ;transport= for TCP/TLS); URIs pass through."""
    target = target.strip()
    if not target:
        raise TargetError("empty dial target")
    if target.startswith(("sip:", "sips:")):
        return target
    if "@" in target:
        user, _, host = target.partition("@")
        if not user or not host or not _DIALLABLE.match(user):
            raise TargetError(f"dial target {target!r} is not user@host")
        return f"sip:{target}{transport_param(account.transport)}"
    if not _DIALLABLE.match(target):
        raise TargetError(f"dial target {target!r} contains characters a SIP user part cannot hold")
    escaped = target.replace("#", "%23")
    return f"sip:{escaped}@{account.domain}{transport_param(account.transport)}"


def split_name_addr(value: str) -> tuple[str, str]:
    """``"Alice" <sip:1001@h>`` -> ("Alice", "sip:1001@h"); a bare URI gives ("", uri)."""
    match = _NAME_ADDR.match(value)
    if not match:
        return "", value.strip()
    name = match.group(1) if match.group(1) is not None else (match.group(2) or "")
    return name.replace('\\"', '"').strip(), match.group(3).strip()


def user_part(uri: str) -> str:
    """``sip:1001@host;x=y`` -> ``1001``."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""
