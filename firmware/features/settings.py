"""The phone-side settings menu behind the admin PIN (pure).

Opened from the last row of the status menu. The PIN is ``admin.pin`` from the (provisioned)
config; without one the menu stays locked. Every wrong PIN is counted, and the prompt then stays
locked for 2^(n-1) seconds (1, 2, 4... up to LOCK_MAX_S): guessing a 4-digit PIN takes days.
The count and the lock's end leave as SaveAdminLock and come back through ``Phone(admin_lock=)``,
so a restart or a power cut keeps them.
Pages: network (shown, and DHCP, a static address or a VLAN ID written through ApplyNetwork
when the OS lets the phone), provisioning (server, state, pending approval with the MAC to give
the admin), accounts (registration of each line), factory reset (FactoryReset, after a
confirmation).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import replace
from typing import TYPE_CHECKING

from offhook.firmware.events import Command
from offhook.firmware.features.events import (
    ApplyNetwork,
    FactoryReset,
    FactoryResetDone,
    NetworkApplied,
    NetworkStatus,
    ProvisioningStatus,
    SaveAdminLock,
)
from offhook.firmware.features.state import (
    NETWORK_FIELDS,
    AdminLock,
    SettingsMenu,
    SettingsPage,
)
from offhook.firmware.phone_state import Mode, PhoneState
from offhook.firmware.screens.lists import SETTINGS_ROW  # noqa: F401 (the Phone opens it)

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

T_LOCK = "admin_lock"
VLAN_MAX = 4094  # IEEE 802.1Q: 0 and 4095 are reserved
LOCK_MAX_S = 300.0
PIN_MAX = 12
MAIN_ROWS = ("Network", "Provisioning", "Accounts", "Factory reset")


def vlan_problem(vlan: int) -> str:
    """Why a VLAN ID cannot be used ("" when it can; 0 means none)."""
    if vlan == 0 or 1 <= vlan <= VLAN_MAX:
        return ""
    return f"VLAN must be 1-{VLAN_MAX}"  # fits the panel's line


def lock_seconds(failures: int) -> float:
    return min(LOCK_MAX_S, 2.0 ** (failures - 1)) if failures > 0 else 0.0


def restored_lock(lock: AdminLock, now: float) -> AdminLock:
    """A lock kept from before a restart, ending no later than LOCK_MAX_S from now: a Pi has no
    real-time clock, and a clock set back at boot must not stretch the lock without bound."""
    return replace(lock, locked_until=min(lock.locked_until, now + LOCK_MAX_S))


def open_menu(phone: Phone, back: Mode, out: list[Command]) -> None:
    state = phone.state
    remaining = state.admin_lock.locked_until - state.now
    page = SettingsPage.LOCKED if remaining > 0 else SettingsPage.PIN
    if remaining > 0:
        # the lock may come from before a restart, when no timer runs for it
        phone._start_timer(T_LOCK, remaining, out)
    message = ""
    if not state.config.admin.pin:
        page, message = SettingsPage.LOCKED, "No admin PIN set"
    state.settings = SettingsMenu(page=page, back=back.value, message=message)
    state.mode = Mode.SETTINGS


def leave(phone: Phone, out: list[Command]) -> None:
    state = phone.state
    back = Mode(state.settings.back)
    state.settings = SettingsMenu()  # forget the PIN typed
    state.mode = back if (back is not Mode.DIALING or state.hook_off) else Mode.IDLE


def check_pin(phone: Phone, entered: str, out: list[Command]) -> bool:
    """True for the right PIN; a wrong one counts and locks the prompt for a while."""
    state = phone.state
    pin = state.config.admin.pin
    if pin and hmac.compare_digest(entered.encode(), pin.encode()):
        if state.admin_lock != AdminLock():
            out.append(SaveAdminLock(0, 0.0))
        state.admin_lock = AdminLock()
        return True
    failures = state.admin_lock.failures + 1
    delay = lock_seconds(failures)
    state.admin_lock = AdminLock(failures, state.now + delay)
    out.append(SaveAdminLock(failures, state.now + delay))
    phone._start_timer(T_LOCK, delay, out)
    return False


def lock_timeout(phone: Phone, _: str, out: list[Command]) -> None:
    menu = phone.state.settings
    unlockable = bool(phone.state.config.admin.pin)
    if phone.state.mode is Mode.SETTINGS and menu.page is SettingsPage.LOCKED and unlockable:
        phone.state.settings = replace(menu, page=SettingsPage.PIN, entry="")


def key(phone: Phone, key: str, out: list[Command]) -> None:
    _PAGE_KEYS[phone.state.settings.page](phone, key, out)


def _key_pin(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    menu = state.settings
    if key.isdigit() and len(menu.entry) < PIN_MAX:
        state.settings = replace(menu, entry=menu.entry + key, message="")
    elif key in ("ok", "#") and menu.entry:
        if check_pin(phone, menu.entry, out):
            state.settings = replace(menu, page=SettingsPage.MAIN, entry="", index=0, message="")
        else:
            failures = state.admin_lock.failures
            state.settings = replace(
                menu, page=SettingsPage.LOCKED, entry="", message=f"Wrong PIN ({failures})"
            )
    elif key in ("cancel", "left"):
        if menu.entry:
            state.settings = replace(menu, entry=menu.entry[:-1])
        else:
            leave(phone, out)
    elif key == "menu":
        leave(phone, out)


def _key_locked(phone: Phone, key: str, out: list[Command]) -> None:
    if key in ("cancel", "left", "menu"):
        leave(phone, out)


def _move(index: int, key: str, rows: int) -> int:
    return (index + (-1 if key == "up" else 1)) % rows if rows else 0


def _key_main(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    menu = state.settings
    if key in ("up", "down"):
        state.settings = replace(menu, index=_move(menu.index, key, len(MAIN_ROWS)), message="")
    elif key in ("ok", "right"):
        page = (
            SettingsPage.NETWORK,
            SettingsPage.PROVISIONING,
            SettingsPage.ACCOUNTS,
            SettingsPage.RESET_CONFIRM,
        )[menu.index % len(MAIN_ROWS)]
        state.settings = replace(menu, page=page, index=0, message="")
    elif key in ("cancel", "left", "menu"):
        leave(phone, out)


def network_rows(state: PhoneState) -> tuple[str, ...]:
    net = state.setup.network
    if not net.writable:
        return ()
    return ("Use DHCP", "Set static address", f"VLAN ID {net.vlan or 'none'}")


def _key_network(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    menu = state.settings
    rows = network_rows(state)
    if key in ("up", "down") and rows:
        state.settings = replace(menu, index=_move(menu.index, key, len(rows)))
    elif key in ("ok", "right") and rows:
        net = state.setup.network
        if menu.index == 0:
            out.append(ApplyNetwork("dhcp", vlan=net.vlan))
            state.settings = replace(menu, message="Saving...")
        elif menu.index == 2:
            entry = str(net.vlan) if net.vlan else ""
            state.settings = replace(menu, page=SettingsPage.VLAN_EDIT, entry=entry, message="")
        else:
            net = state.setup.network
            fields = (net.address, net.gateway, net.dns) if net.mode == "static" else ("", "", "")
            state.settings = replace(
                menu, page=SettingsPage.NETWORK_EDIT, index=0, fields=fields, entry=fields[0]
            )
    elif key in ("cancel", "left", "menu"):
        _back_to_main(phone, 0)


def static_problem(fields: tuple[str, ...]) -> str:
    """Why a typed static address cannot be used ("" when it can)."""
    address, gateway, dns = fields
    try:
        interface = ipaddress.IPv4Interface(address)
    except ValueError:
        return "Address: need a.b.c.d/nn"
    if "/" not in address or interface.network.prefixlen in (0, 32):
        return "Address: need a.b.c.d/nn"
    for label, value in (("Gateway", gateway), ("DNS", dns)):
        if not value and label == "DNS":
            continue
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return f"{label}: need a.b.c.d"
    if ipaddress.IPv4Address(gateway) not in interface.network:
        return "Gateway not in subnet"
    return ""


def _key_network_edit(phone: Phone, key: str, out: list[Command]) -> None:
    """Digits, ``*`` for the dot and ``#`` for the prefix slash; ``ok`` goes to the next field
    and on the last one saves; ``cancel`` deletes, then goes back a field."""
    state = phone.state
    menu = state.settings
    entry = menu.entry
    if key.isdigit() or key in ("*", "#"):
        char = {"*": ".", "#": "/"}.get(key, key)
        if char == "/" and (menu.index != 0 or "/" in entry):
            return
        if len(entry) < 18:
            state.settings = replace(menu, entry=entry + char, message="")
        return
    fields = list(menu.fields)
    fields[menu.index] = entry
    if key in ("ok", "down"):
        if menu.index + 1 < len(NETWORK_FIELDS):
            nxt = menu.index + 1
            state.settings = replace(menu, fields=tuple(fields), index=nxt, entry=fields[nxt])
            return
        if key == "down":
            return
        problem = static_problem(tuple(fields))
        if problem:
            state.settings = replace(menu, fields=tuple(fields), message=problem)
            return
        vlan = state.setup.network.vlan  # a new address keeps the VLAN it is on
        out.append(ApplyNetwork("static", fields[0], fields[1], fields[2], vlan))
        state.settings = replace(
            menu, page=SettingsPage.NETWORK, fields=tuple(fields), index=1, message="Saving..."
        )
    elif key in ("cancel", "left"):
        if entry:
            state.settings = replace(menu, entry=entry[:-1], message="")
        elif menu.index > 0:
            prev = menu.index - 1
            state.settings = replace(menu, fields=tuple(fields), index=prev, entry=fields[prev])
        else:
            state.settings = replace(menu, page=SettingsPage.NETWORK, index=1, message="")
    elif key == "menu":
        leave(phone, out)


def _key_vlan_edit(phone: Phone, key: str, out: list[Command]) -> None:
    """Digits; ``ok`` saves (empty: no VLAN) with the interface's addressing as it is;
    ``cancel`` deletes, then goes back to the network page."""
    state = phone.state
    menu = state.settings
    if key.isdigit():
        if len(menu.entry) < 4:
            state.settings = replace(menu, entry=menu.entry + key, message="")
    elif key == "ok":
        vlan = int(menu.entry) if menu.entry else 0
        problem = vlan_problem(vlan)
        if problem:
            state.settings = replace(menu, message=problem)
            return
        net = state.setup.network
        if net.mode == "static":
            command = ApplyNetwork("static", net.address, net.gateway, net.dns, vlan)
        else:
            command = ApplyNetwork("dhcp", vlan=vlan)
        out.append(command)
        state.settings = replace(menu, page=SettingsPage.NETWORK, index=2, message="Saving...")
    elif key in ("cancel", "left"):
        if menu.entry:
            state.settings = replace(menu, entry=menu.entry[:-1], message="")
        else:
            state.settings = replace(menu, page=SettingsPage.NETWORK, index=2, message="")
    elif key == "menu":
        leave(phone, out)


def _back_to_main(phone: Phone, index: int) -> None:
    menu = phone.state.settings
    phone.state.settings = replace(menu, page=SettingsPage.MAIN, index=index, message="")


def _key_info(phone: Phone, key: str, out: list[Command]) -> None:
    """Provisioning and accounts: read-only pages."""
    if key in ("cancel", "left", "ok", "menu"):
        page = phone.state.settings.page
        _back_to_main(phone, 1 if page is SettingsPage.PROVISIONING else 2)


def _key_reset_confirm(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    if key == "ok":
        out.append(FactoryReset())
        state.settings = replace(state.settings, page=SettingsPage.RESETTING, message="")
    elif key in ("cancel", "left", "menu"):
        _back_to_main(phone, 3)


def _key_resetting(phone: Phone, key: str, out: list[Command]) -> None:
    if phone.state.settings.message and key in ("cancel", "ok", "left"):
        _back_to_main(phone, 3)  # the reset failed: the message said why


_PAGE_KEYS = {
    SettingsPage.PIN: _key_pin,
    SettingsPage.LOCKED: _key_locked,
    SettingsPage.MAIN: _key_main,
    SettingsPage.NETWORK: _key_network,
    SettingsPage.NETWORK_EDIT: _key_network_edit,
    SettingsPage.VLAN_EDIT: _key_vlan_edit,
    SettingsPage.PROVISIONING: _key_info,
    SettingsPage.ACCOUNTS: _key_info,
    SettingsPage.RESET_CONFIRM: _key_reset_confirm,
    SettingsPage.RESETTING: _key_resetting,
}


# --- reports from the phone process --------------------------------------------------------


def on_network_status(phone: Phone, ev: NetworkStatus, out: list[Command]) -> None:
    phone.state.setup = replace(phone.state.setup, network=ev)


def on_network_applied(phone: Phone, ev: NetworkApplied, out: list[Command]) -> None:
    state = phone.state
    state.setup = replace(state.setup, network_error=ev.error)
    if state.mode is Mode.SETTINGS and state.settings.page is SettingsPage.NETWORK:
        state.settings = replace(state.settings, message=ev.error or "Saved")


def on_provisioning_status(phone: Phone, ev: ProvisioningStatus, out: list[Command]) -> None:
    phone.state.setup = replace(phone.state.setup, provisioning=ev)


def on_reset_done(phone: Phone, ev: FactoryResetDone, out: list[Command]) -> None:
    state = phone.state
    state.setup = replace(state.setup, reset_error=ev.error)
    if state.mode is Mode.SETTINGS and state.settings.page is SettingsPage.RESETTING:
        state.settings = replace(state.settings, message=ev.error or "Done, restarting")
