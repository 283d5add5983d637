"""The lists the user scrolls through: the status menu and the history/contacts browser.

The Phone moves a cursor over these rows (and dials a browsed number); the views draw them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

from offhook.contract.config import PhoneConfig
from offhook.firmware.calls import history_kind, number_from_uri
from offhook.firmware.events import CallRecord
from offhook.firmware.phone_state import BrowseList, PhoneState, VolumeTarget

SETTINGS_ROW = "Settings (admin)"  # the status menu's last row opens the admin settings menu

HISTORY_MARKS = {"missed": "!", "received": "<", "dialled": ">"}


LIST_LABEL_WIDTH = 19  # 21 characters of the panel less the "> " of the selected row


def history_label(record: CallRecord, tz: tzinfo = UTC) -> str:
    """``<14:02 Bob Smith 3:25``: the kind, the time, the name (cut to fit) and, for an
    answered call, how long it lasted; ``!09:41 Alice x3`` for three missed calls in a row."""
    stamp = datetime.fromtimestamp(record.start, tz).strftime("%H:%M")
    head = f"{HISTORY_MARKS[history_kind(record)]}{stamp} "
    if record.answer is not None:
        seconds = int(max(0.0, record.end - record.answer))
        minutes, secs = divmod(seconds, 60)
        tail = f" {minutes}:{secs:02d}" if minutes < 100 else f" {minutes // 60}h"
    else:
        tail = f" x{record.count}" if record.count > 1 else ""
    name = record.remote_name or number_from_uri(record.remote_uri)
    room = LIST_LABEL_WIDTH - len(head) - len(tail)
    if len(name) > room:
        name = name[: max(1, room - 1)] + "~"
    return head + name + tail


def browse_entries(
    which: BrowseList, history: Sequence[CallRecord], config: PhoneConfig, tz: tzinfo = UTC
) -> list[tuple[str, str]]:
    """(label, number) pairs of the list being browsed: the phonebook or the history (newest
    first, each with its time, name and duration)."""
    if which is BrowseList.PHONEBOOK:
        return [(e.name, e.number) for e in config.phonebook]
    return [(history_label(r, tz), number_from_uri(r.remote_uri)) for r in history]


def status_menu_items(phone: PhoneState) -> list[tuple[str, str]]:
    """The status menu: (list label, full text when opened) per row."""
    device, config = phone.device, phone.config
    items = [(f"IP {a}", f"IP address: {a}") for a in device.addresses]
    if not items:
        items.append(("IP none", "IP address: none (no network)"))
    version = device.firmware_version or "unknown"
    items.append((f"Version {version}", f"Firmware version: {version}"))
    for i, acc in enumerate(config.accounts):
        reg = phone.registration_of(i)
        registered, code, reason = reg.registered, reg.status_code, reg.reason
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
    prov = phone.setup.provisioning  # what the client (or zero-touch discovery) reports
    if prov.state == "none":
        items.append((f"Prov {server}", f"Provisioning server: {server}"))
    else:
        # no PIN needed to read this: a new phone's admin needs its MAC to approve it
        where = prov.url or server
        mac = f"MAC {prov.mac} " if prov.mac else ""  # first: the opened row shows 4 lines
        detail = f" ({prov.detail})" if prov.detail else ""
        items.append((f"Prov {prov.state} {where}", f"{mac}{prov.state}{detail} {where}"))
    speaker, ring = phone.volume[VolumeTarget.SPEAKER], phone.volume[VolumeTarget.RING]
    items.append((f"Vol spk {speaker} ring {ring}", f"Volume: speaker {speaker}, ring {ring}"))
    items.append((SETTINGS_ROW, "Settings: network, provisioning, accounts, reset (admin PIN)"))
    return items


def window(labels: Sequence[str], index: int, rows: int = 3) -> list[str]:
    """Up to ``rows`` labels around the selected one, the selection marked with "> "."""
    first = max(0, min(index - 1, len(labels) - rows))
    return [
        ("> " if i == index else "  ") + labels[i]
        for i in range(first, min(first + rows, len(labels)))
    ]
