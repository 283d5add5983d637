"""The screens of the directory search, the settings menu and the server trust prompt.

Pure functions of the Phone's state, like firmware/screens/views.py, which picks them by mode.
Lines fit the 21 characters of the 128-pixel panel; three lines show above the softkeys.
"""

from __future__ import annotations

import textwrap

from offhook.firmware.events import Screen
from offhook.firmware.features.events import CERTIFICATE_REFUSED
from offhook.firmware.features.settings import MAIN_ROWS, network_rows
from offhook.firmware.features.state import NETWORK_FIELDS, SettingsPage
from offhook.firmware.features.trust import FINGERPRINT_PAGE, pages
from offhook.firmware.phone_state import PhoneState
from offhook.firmware.screens.lists import window

WIDTH = 21
PROVISIONING_STATES = {
    "none": "No server",
    "discovering": "Looking for server",
    "trust": "Trust server? (TOFU)",
    "pending": "Pending approval",
    "enrolled": "Enrolled",
    "refused": "Refused by server",
    "error": "Server unreachable",
}


def _fit(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "~"


def directory_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    search = view.directory
    if search.index >= 0 and search.entries:
        labels = [_fit(f"{e.name} {e.number}") for e in search.entries]
        return Screen(
            "directory", ("Directory", *window(labels, search.index)), status, ("Back", "", "Dial")
        )
    typed = search.typed
    # The letter still being chosen shows in brackets: [c] until another key or a pause keeps it.
    shown = search.text + (f"[{search.pending_letter}]" if search.tap_key else "_")
    if search.waiting:
        third = "Searching..."
    elif search.error:
        if search.error == "no answer":
            third = "No answer"
        elif search.error.startswith(CERTIFICATE_REFUSED):
            third = "Certificate refused"
        else:
            third = "Directory unavailable"
    elif search.searched and search.searched == typed and not search.entries:
        third = "No match"
    elif search.entries:
        n = len(search.entries)
        third = f"{n} found, down: list"
        first = search.entries[0]
        # three lines, so the softkeys keep their row: the title gives way to the first match
        lines = (_fit(f"Name: {shown}"), _fit(f"{first.name} {first.number}"), third)
        return Screen("directory", lines, status, ("Back", "", "Search"))
    else:
        third = "Type a name (2=abc)"
    return Screen(
        "directory", ("Directory", _fit(f"Name: {shown}"), third), status, ("Back", "", "Search")
    )


def settings_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    menu = view.settings
    page = menu.page
    lines: tuple[str, ...]
    if page is SettingsPage.PIN:
        lines = ("Admin PIN", "*" * len(menu.entry) or "_", menu.message)
        return Screen("settings", _lines(lines), status, ("Back", "", "OK"))
    if page is SettingsPage.LOCKED:
        if not view.config.admin.pin:
            detail = "Provision admin.pin"
        else:
            wait = max(0, int(view.admin_lock.locked_until - view.now + 0.999))
            detail = f"Try again in {wait} s"
        return Screen("settings", _lines(("Settings locked", menu.message, detail)), status)
    if page is SettingsPage.MAIN:
        rows = window(list(MAIN_ROWS), menu.index)
        return Screen("settings", ("Settings", *rows), status, ("Back", "", "Open"))
    if page is SettingsPage.NETWORK:
        return _network_screen(view, status)
    if page is SettingsPage.VLAN_EDIT:
        hint = menu.message or "empty = none"
        lines = ("VLAN ID (1-4094)", menu.entry or "_", hint)
        return Screen("settings", _lines(lines), status, ("Back", "", "OK"))
    if page is SettingsPage.NETWORK_EDIT:
        label = ("Address/prefix", "Gateway", "DNS server")[menu.index]
        hint = "*=. #=/ ok=next" if menu.index == 0 else "*=. ok=next"
        if menu.index == len(NETWORK_FIELDS) - 1:
            hint = "*=. ok=save"
        lines = (label, (menu.entry or "_"), menu.message or hint)
        return Screen("settings", _lines(lines), status, ("Back", "", "Next"))
    if page is SettingsPage.PROVISIONING:
        prov = view.setup.provisioning
        url = prov.url or view.config.provisioning.url or "none"
        state = PROVISIONING_STATES.get(prov.state, prov.state)
        mac = prov.mac or view.setup.network.mac
        lines = (_fit(state), _fit(url), _fit(f"MAC {mac}" if mac else prov.detail))
        if prov.state == "pending":
            lines = ("Pending approval", _fit(f"MAC {mac}"), "Give the admin this")
        return Screen("settings", _lines(lines), status, ("Back", "", ""))
    if page is SettingsPage.ACCOUNTS:
        rows = []
        for i, acc in enumerate(view.config.accounts):
            reg = view.registration_of(i)
            state = (
                "ok"
                if reg.registered
                else (f"fail {reg.status_code}" if reg.status_code else "none")
            )
            rows.append(_fit(f"L{i + 1} {acc.user} {state if acc.enabled else 'off'}"))
        return Screen("settings", _lines(("Accounts", *(rows or ["No accounts"]))[:4]), status)
    if page is SettingsPage.RESET_CONFIRM:
        lines = ("Factory reset?", "Erases config, keys,", "history. ok = erase")
        return Screen("settings", lines, status, ("Back", "", "Erase"))
    message = menu.message or "Erasing..."
    return Screen("settings", ("Factory reset", *textwrap.wrap(message, WIDTH)[:3]), status)


def _network_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    menu = view.settings
    net = view.setup.network
    mode = {"dhcp": "DHCP", "static": "Static"}.get(net.mode, "unknown")
    name = net.interface or "net"
    if net.vlan:  # the addressing is on the tagged interface
        name = f"{name}.{net.vlan}"
    head = _fit(f"{name} {mode} {net.address or 'no address'}")
    rows = network_rows(view)
    lines: tuple[str, ...]
    if not rows:
        lines = (head, _fit(f"gw {net.gateway or '-'}"), "Set by the OS")
        return Screen("settings", lines, status, ("Back", "", ""))
    choices = window(list(rows), menu.index, rows=2)
    lines = (head, *choices)
    if menu.message:
        selected = next((c for c in choices if c.startswith("> ")), choices[0])
        lines = (head, selected, _fit(menu.message))
    return Screen("settings", lines, status, ("Back", "", "OK"))


def trust_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    prompt = view.trust
    if prompt is None:
        return Screen("trust", ("No server to trust",), status)
    server = prompt.server
    host = server.url.split("://", 1)[-1].split("/", 1)[0]
    if prompt.asking_pin:
        lines = ("Admin PIN to trust", "*" * len(prompt.entry) or "_", prompt.message)
        return Screen("trust", _lines(lines), status, ("Back", "", "OK"))
    start = prompt.page * FINGERPRINT_PAGE
    part = server.fingerprint[start : start + FINGERPRINT_PAGE]
    fp = f"{prompt.page + 1}/{pages(server.fingerprint)} {part}"
    # Marked as what it is: an unverified server, trusted only if this fingerprint is right.
    return Screen(
        "trust", ("UNVERIFIED server", _fit(host), _fit(fp)), status, ("Reject", "", "Trust")
    )


def _lines(lines: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_fit(line) for line in lines if line)
