"""The lists the user scrolls through: the status menu and the history/contacts browser.

The Phone moves a cursor over these rows (and dials a browsed number); the views draw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from firmware.calls import history_kind, number_from_uri
from firmware.config import PhoneConfig
from firmware.events import CallRecord, DeviceInfo

HISTORY_MARKS = {"missed": "!", "received": "<", "dialled": ">"}


def browse_entries(
    which: str, history: Sequence[CallRecord], config: PhoneConfig
) -> list[tuple[str, str]]:
    """(label, number) pairs of the list being browsed: "phonebook" or "history" (newest first)."""
    if which == "phonebook":
        return [(e.name, e.number) for e in config.phonebook]
    entries = []
    for r in history:
        number = number_from_uri(r.remote_uri)
        entries.append((f"{HISTORY_MARKS[history_kind(r)]} {r.remote_name or number}", number))
    return entries


def status_menu_items(
    device: DeviceInfo,
    config: PhoneConfig,
    registration: Mapping[int, tuple[bool, int, str]],
    volume: Mapping[str, int],
) -> list[tuple[str, str]]:
    """The status menu: (list label, full text when opened) per row."""
    items = [(f"IP {a}", f"IP address: {a}") for a in device.addresses]
    if not items:
        items.append(("IP none", "IP address: none (no network)"))
    version = device.firmware_version or "unknown"
    items.append((f"Version {version}", f"Firmware version: {version}"))
    for i, acc in enumerate(config.accounts):
        registered, code, reason = registration.get(i, (False, 0, ""))
        if not acc.enabled:
            state = "disabled"
        elif registered:
            state = f"ok {code}"
        else:
            state = f"fail {code}" if code else "none"
        items.append(
            (
                f"L{i + 1} {acc.user} {state}",
                f"Line {i + 1}: {acc.user}@{acc.domain} {state} {reason}".strip(),
            )
        )
    ports = " ".join(f"{t} {p}" for t, p in device.sip_ports)
    ports = ports or f"{config.sip.port}"
    items.append((f"SIP {ports}", f"SIP port: {ports}"))
    server = config.provisioning.url or "none"
    items.append((f"Prov {server}", f"Provisioning server: {server}"))
    speaker, ring = volume["speaker"], volume["ring"]
    items.append((f"Vol spk {speaker} ring {ring}", f"Volume: speaker {speaker}, ring {ring}"))
    return items


def window(labels: Sequence[str], index: int, rows: int = 3) -> list[str]:
    """Up to ``rows`` labels around the selected one, the selection marked with "> "."""
    first = max(0, min(index - 1, len(labels) - rows))
    return [
        ("> " if i == index else "  ") + labels[i]
        for i in range(first, min(first + rows, len(labels)))
    ]
