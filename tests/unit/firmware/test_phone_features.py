"""The Phone's directory search, caller names, admin settings menu and server trust prompt:
events in, commands out, as a user at the keypad sees them."""

from __future__ import annotations

import pytest

from offhook.firmware.events import (
    CallIncoming,
    CallState,
    CallStateChanged,
    HookChanged,
    KeyPressed,
    MakeCall,
    StartTimer,
    TimerFired,
)
from offhook.firmware.features.events import (
    CERTIFICATE_REFUSED,
    ApplyNetwork,
    CallerNameFound,
    DirectoryEntry,
    DirectoryResults,
    FactoryReset,
    FactoryResetDone,
    LookupCaller,
    NetworkApplied,
    NetworkStatus,
    ProvisioningStatus,
    SearchDirectory,
    ServerDiscovered,
    TrustServer,
)
from offhook.firmware.features.settings import lock_seconds
from offhook.firmware.features.t9 import tap
from tests.unit.firmware.test_phone import Driver, make_config

DIRECTORY = {"url": "ldap://ldap.example", "base_dn": "dc=example"}
FINGERPRINT = "ab" * 32


def of(out: list, kind: type) -> list:
    return [c for c in out if isinstance(c, kind)]


def press(d: Driver, *keys: str) -> list:
    out: list = []
    for key in keys:
        out += d(KeyPressed(key))
    return out


def open_directory(d: Driver) -> None:
    press(d, "phonebook", "right")
    assert d.phone.screen.kind == "directory"


# --- multi-tap letters -----------------------------------------------------------------------


def test_multi_tap_cycles_a_keys_letters_then_its_digit() -> None:
    state = ("", "", 0)
    for _ in range(3):
        state = tap(*state, "2")
    assert state == ("", "2", 2)  # c
    state = tap(*state, "2")
    assert state == ("", "2", 3)  # the digit itself
    state = tap(*state, "2")
    assert state == ("", "2", 0)  # round again: a
    assert tap(*state, "5") == ("a", "5", 0)  # another key keeps the letter


# --- directory search ------------------------------------------------------------------------


def test_letters_typed_search_the_directory_and_a_result_is_dialled() -> None:
    d = Driver(make_config(directory=DIRECTORY))
    open_directory(d)
    assert d.lines[:2] == ("Directory", "Name: _")
    press(d, "2")
    assert d.lines[1] == "Name: [a]"
    out = press(d, "5", "5", "5")  # "a" kept by the new key; then j k l
    assert of(out, SearchDirectory) == [SearchDirectory(1, "a")]
    assert d.lines[1:] == ("Name: a[l]", "Searching...")
    out = d(TimerFired("t9"))  # a pause keeps "l": the newest text is asked
    assert of(out, SearchDirectory) == [SearchDirectory(2, "al")]
    d(DirectoryResults(1, (DirectoryEntry("Zed", "1"),)))  # an old answer is ignored
    assert d.lines[2] == "Searching..."
    d(DirectoryResults(2, (DirectoryEntry("Alan Abbott", "1005"), DirectoryEntry("Alice", "1001"))))
    assert d.lines == ("Name: al_", "Alan Abbott 1005", "2 found, down: list")
    assert d.phone.screen.softkeys == ("Back", "", "Search")
    press(d, "down")
    assert d.lines == ("Directory", "> Alan Abbott 1005", "  Alice 1001")
    press(d, "down")
    out = press(d, "ok")
    assert of(out, MakeCall) == [MakeCall(0, "1001")]


def test_directory_that_does_not_answer_says_so_and_cancel_deletes_then_leaves() -> None:
    d = Driver(make_config(directory={**DIRECTORY, "timeout_s": 2}))
    open_directory(d)
    out = press(d, "2", "ok")
    assert of(out, SearchDirectory) == [SearchDirectory(1, "a")]
    assert StartTimer("directory", 4.0) in out
    d(TimerFired("directory"))
    assert d.lines[2] == "No answer"
    d(DirectoryResults(1, (), "ldap://ldap.example: LDAPSocketOpenError"))  # late: still shown
    assert d.lines[2] == "Directory unavailable"
    press(d, "cancel")
    assert d.lines[1] == "Name: _"
    press(d, "cancel")
    assert d.phone.screen.kind == "phonebook"


def test_a_refused_directory_certificate_is_named_on_the_screen() -> None:
    d = Driver(make_config(directory={**DIRECTORY, "url": "ldaps://ldap.example"}))
    open_directory(d)
    press(d, "2", "ok")
    reason = f"{CERTIFICATE_REFUSED}: ldaps://ldap.example: certificate verify failed: ..."
    d(DirectoryResults(1, (), reason))
    assert d.lines[2] == "Certificate refused"


def test_no_directory_configured_keeps_the_contacts_list() -> None:
    d = Driver(make_config())
    press(d, "phonebook", "right")
    assert d.phone.screen.kind == "phonebook"


def test_caller_without_a_name_is_looked_up_and_named_on_screen_and_in_history() -> None:
    d = Driver(make_config(directory=DIRECTORY))
    out = d(CallIncoming(3, 0, "sip:1005@pbx.example", ""))
    assert of(out, LookupCaller) == [LookupCaller(3, "1005")]
    assert d.lines == ("Incoming call", "1005")
    d(CallerNameFound(3, "1005", "Alan Abbott"))
    assert d.lines == ("Incoming call", "Alan Abbott", "1005")
    d(CallStateChanged(3, CallState.DISCONNECTED, 487, "Request Terminated"))
    assert d.recorded[-1].remote_name == "Alan Abbott"


def test_no_lookup_when_the_caller_sent_a_name_or_the_phonebook_knows_it() -> None:
    phonebook = [{"name": "Desk", "number": "2000"}]
    d = Driver(make_config(directory=DIRECTORY, phonebook=phonebook))
    assert not of(d(CallIncoming(1, 0, "sip:1005@pbx", "Alan")), LookupCaller)
    d(CallStateChanged(1, CallState.DISCONNECTED, 487))
    assert not of(d(CallIncoming(2, 0, "sip:2000@pbx", "")), LookupCaller)
    d(CallStateChanged(2, CallState.DISCONNECTED, 487))
    off = Driver(make_config(directory={**DIRECTORY, "lookup_incoming": False}))
    assert not of(off(CallIncoming(1, 0, "sip:1005@pbx", "")), LookupCaller)


def test_a_name_for_a_call_that_is_gone_or_renumbered_changes_nothing() -> None:
    d = Driver(make_config(directory=DIRECTORY))
    d(CallIncoming(3, 0, "sip:1005@pbx.example", ""))
    d(CallerNameFound(3, "9999", "Someone Else"))
    assert d.lines == ("Incoming call", "1005")
    d(CallerNameFound(4, "1005", "Nobody"))
    assert d.lines == ("Incoming call", "1005")


# --- admin settings menu -----------------------------------------------------------------------


def open_settings(d: Driver) -> None:
    press(d, "menu", "up", "ok")  # the status menu's last row
    assert d.phone.screen.kind == "settings"


def unlock(d: Driver, pin: str = "2468") -> None:
    open_settings(d)
    press(d, *pin, "ok")
    assert d.lines[0] == "Settings"


def test_settings_need_the_provisioned_pin_and_wrong_pins_lock_longer_each_time() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    open_settings(d)
    assert d.lines[0] == "Admin PIN"
    press(d, "1", "2")
    assert d.lines[1] == "**"
    out = press(d, "ok")
    assert StartTimer("admin_lock", 1.0) in out
    assert d.lines == ("Settings locked", "Wrong PIN (1)", "Try again in 1 s")
    press(d, *"2468", "ok")  # ignored while locked
    assert d.lines[0] == "Settings locked"
    d(TimerFired("admin_lock"))
    out = press(d, "9", "ok")
    assert StartTimer("admin_lock", 2.0) in out
    assert d.lines[1] == "Wrong PIN (2)"
    press(d, "cancel", "cancel")  # leaving and coming back does not clear the lock
    open_settings(d)
    assert d.lines[0] == "Settings locked"
    d(TimerFired("admin_lock"))
    press(d, *"2468", "ok")
    assert d.lines == ("Settings", "> Network", "  Provisioning", "  Accounts")
    assert d.phone.state.admin_lock.failures == 0


def test_lock_grows_to_five_minutes() -> None:
    assert [lock_seconds(n) for n in (1, 2, 3, 9, 10, 50)] == [1, 2, 4, 256, 300, 300]


def test_without_a_pin_the_settings_stay_locked() -> None:
    d = Driver(make_config())
    open_settings(d)
    assert d.lines == ("Settings locked", "No admin PIN set", "Provision admin.pin")
    d(TimerFired("admin_lock"))
    press(d, "1", "ok")
    assert d.lines[0] == "Settings locked"


def test_network_page_sets_a_static_address_checked_before_it_is_written() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    d(NetworkStatus("eth0", "dhcp", "192.0.2.10/24", "192.0.2.1", "192.0.2.1", True, "aa:bb"))
    unlock(d)
    press(d, "ok")
    assert d.lines == ("eth0 DHCP 192.0.2.10~", "> Use DHCP", "  Set static address")
    press(d, "down", "ok")
    assert d.lines[0] == "Address/prefix"
    press(d, *"10*0*0*5#24", "ok")
    assert d.lines[0] == "Gateway"
    press(d, *"10*0*1*1", "ok")  # not in 10.0.0.0/24
    out = press(d, *"10*0*0*53", "ok")
    assert not of(out, ApplyNetwork)
    assert d.lines[2] == "Gateway not in subnet"
    press(d, *["cancel"] * len("10.0.0.53"))  # cancel deletes the DNS typed...
    assert d.lines[:2] == ("DNS server", "_")
    press(d, "cancel")  # ...then goes back to the gateway, as typed
    assert d.lines[:2] == ("Gateway", "10.0.1.1")
    press(d, *["cancel"] * len("10.0.1.1"), *"10*0*0*1", "ok")
    press(d, *"10*0*0*53")
    out = press(d, "ok")
    assert of(out, ApplyNetwork) == [ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53")]
    d(NetworkApplied(""))
    assert d.lines[-1] == "Saved"
    out = press(d, "up", "ok")
    assert of(out, ApplyNetwork) == [ApplyNetwork("dhcp")]
    d(NetworkApplied("/etc/systemd/network: Read-only file system"))
    assert d.lines[-1].startswith("/etc/systemd/network")


def test_network_the_os_keeps_is_shown_only() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    d(NetworkStatus("eth0", "dhcp", "192.0.2.10/24", "192.0.2.1", "", False))
    unlock(d)
    out = press(d, "ok", "ok", "down")
    assert not of(out, ApplyNetwork)
    assert d.lines[-1] == "Set by the OS"


def test_provisioning_page_shows_pending_approval_with_the_mac() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    d(ProvisioningStatus("pending", "https://prov.example", "b8:27:eb:00:00:01"))
    unlock(d)
    press(d, "down", "ok")
    assert d.lines == ("Pending approval", "MAC b8:27:eb:00:00:01", "Give the admin this")
    d(ProvisioningStatus("enrolled", "https://prov.example", "b8:27:eb:00:00:01"))
    assert d.lines == ("Enrolled", "https://prov.example", "MAC b8:27:eb:00:00:01")


def test_factory_reset_asks_first_then_reports() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    unlock(d)
    press(d, "up", "ok")
    assert d.lines[0] == "Factory reset?"
    assert not of(press(d, "cancel"), FactoryReset)
    press(d, "ok")
    out = press(d, "ok")
    assert of(out, FactoryReset) == [FactoryReset()]
    assert d.lines == ("Factory reset", "Erasing...")
    d(FactoryResetDone("/data/offhook: Permission denied"))
    assert d.lines[1].startswith("/data/offhook")


# --- trust on first use ------------------------------------------------------------------------


def test_discovered_server_is_trusted_only_by_a_key_press() -> None:
    d = Driver(make_config())
    found = ServerDiscovered("https://prov.example:8443", FINGERPRINT, "dhcp option 160")
    out = d(found)
    assert not of(out, TrustServer)
    assert d.lines == ("UNVERIFIED server", "prov.example:8443", "1/4 " + "ab" * 8)
    assert d.phone.screen.softkeys == ("Reject", "", "Trust")
    press(d, "down")
    assert d.lines[2].startswith("2/4 ")
    press(d, "menu")  # later: it waits on the idle screen
    assert d.phone.screen.kind == "idle"
    assert not of(d(found), TrustServer)  # discovery repeating itself changes nothing
    press(d, "ok")
    assert d.phone.screen.kind == "trust"
    out = press(d, "softkey3")
    assert of(out, TrustServer) == [TrustServer(found.url, FINGERPRINT, True)]
    assert d.phone.screen.kind == "idle"


def test_rejecting_a_server_says_so() -> None:
    d = Driver(make_config())
    d(ServerDiscovered("https://evil.example", FINGERPRINT, "dns srv"))
    out = press(d, "cancel")
    assert of(out, TrustServer) == [TrustServer("https://evil.example", FINGERPRINT, False)]


def test_with_an_admin_pin_trust_needs_it() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    d(ServerDiscovered("https://prov.example", FINGERPRINT, "dhcp option 66"))
    press(d, "ok")
    assert d.lines[0] == "Admin PIN to trust"
    out = press(d, "1", "1", "1", "1", "ok")
    assert not of(out, TrustServer)
    assert d.lines[-1] == "Wrong PIN"
    d(TimerFired("admin_lock"), advance=1.0)
    out = press(d, *"2468", "ok")
    assert of(out, TrustServer) == [TrustServer("https://prov.example", FINGERPRINT, True)]


def test_a_server_found_during_a_call_waits_for_the_idle_screen() -> None:
    d = Driver(make_config())
    d(HookChanged(True))
    d(ServerDiscovered("https://prov.example", FINGERPRINT, "dns srv"))
    assert d.phone.screen.kind == "dialing"
    d(HookChanged(False))
    press(d, "ok")
    assert d.phone.screen.kind == "trust"


@pytest.mark.parametrize("key", ["cancel", "left", "menu"])
def test_every_feature_screen_can_be_left(key: str) -> None:
    d = Driver(make_config(directory=DIRECTORY, admin={"pin": "2468"}))
    open_directory(d)
    press(d, key)
    assert d.phone.screen.kind in ("phonebook", "idle")


@pytest.mark.parametrize("wrong", ["2467", "24680", "246", "8642"])
def test_only_the_exact_pin_opens_the_settings(wrong: str) -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    open_settings(d)
    press(d, *wrong, "ok")
    assert d.lines[0] == "Settings locked"
    assert d.phone.state.admin_lock.failures == 1


def test_status_menu_shows_the_provisioning_state_and_mac_without_a_pin() -> None:
    d = Driver(make_config())
    d(ProvisioningStatus("pending", "https://prov.example", "b8:27:eb:00:00:01"))
    press(d, "menu", "up", "up", "up")  # Settings, Volume, then Provisioning
    assert "> Prov pending https://prov.example" in d.lines
    press(d, "ok")
    text = " ".join(d.lines)
    assert text == "MAC b8:27:eb:00:00:01 pending https://prov.example"


def test_network_page_vlan_id_typed_checked_and_shown() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    static = NetworkStatus("eth0", "static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53", True, "aa")
    d(static)
    unlock(d)
    press(d, "ok", "up")  # the list wraps to its last row
    assert d.lines == ("eth0 Static 10.0.0.5~", "  Set static address", "> VLAN ID none")
    press(d, "ok")
    assert d.lines == ("VLAN ID (1-4094)", "_", "empty = none")
    out = press(d, *"4095", "ok")
    assert not of(out, ApplyNetwork)
    assert d.lines == ("VLAN ID (1-4094)", "4095", "VLAN must be 1-4094")
    press(d, "1")  # four digits at most
    assert d.lines[1] == "4095"
    press(d, "cancel", "cancel")
    out = press(d, "2", "ok")
    assert of(out, ApplyNetwork) == [
        ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53", vlan=402)
    ]
    assert d.lines[1:] == ("> VLAN ID none", "Saving...")
    d(NetworkApplied(""))
    d(NetworkStatus("eth0", "static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53", True, "aa", 402))
    assert d.lines == ("eth0.402 Static 10.0~", "> VLAN ID 402", "Saved")
    out = press(d, "up", "up", "ok")  # DHCP keeps the VLAN
    assert of(out, ApplyNetwork) == [ApplyNetwork("dhcp", vlan=402)]
    press(d, "up", "ok")  # the VLAN row again (wrapping): emptied, it removes the VLAN
    assert d.lines[1] == "402"
    out = press(d, "cancel", "cancel", "cancel", "ok")
    assert of(out, ApplyNetwork) == [
        ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53", vlan=0)
    ]


def test_a_static_address_keeps_the_vlan_it_is_on() -> None:
    d = Driver(make_config(admin={"pin": "2468"}))
    d(NetworkStatus("eth0", "dhcp", "", "", "", True, "aa", 42))
    unlock(d)
    press(d, "ok", "down", "ok", *"10*0*0*5#24", "ok", *"10*0*0*1", "ok")
    out = press(d, "ok")
    assert of(out, ApplyNetwork) == [ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "", 42)]
