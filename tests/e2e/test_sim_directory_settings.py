"""The remote phonebook and the admin settings menu in real simulated phones: ``offhook sim``
processes registered on Kamailio, the directory a real slapd, everything through the control API
as a user's key presses.

- A caller who sends no name is named from the directory on the ringing screen and in history.
- Letters typed by multi-tap find a person in the directory, and ``ok`` calls them.
- The settings menu opens only with the provisioned admin PIN; a wrong one locks it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import pytest

from offhook.contract.config import PhoneConfig
from offhook.firmware.sim import SimPhone, sim_config, stop_all
from tests.fixtures import waiting
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.slapd import SlapdServer, run_slapd

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
wait_until = partial(waiting.wait_until, timeout=30.0, interval=0.1)


@pytest.fixture(scope="module")
def slapd() -> Iterator[SlapdServer]:
    with run_slapd() as server:
        yield server


def with_features(config: PhoneConfig, slapd: SlapdServer) -> PhoneConfig:
    data = config.model_dump(mode="json")
    data["directory"] = {
        "url": slapd.url,
        "base_dn": slapd.base_dn,
        "bind_dn": slapd.reader_dn,
        "bind_password": slapd.reader_password,
    }
    data["admin"] = {"pin": "2468"}
    return PhoneConfig.model_validate(data)


@pytest.fixture(scope="module")
def phones(
    tmp_path_factory: pytest.TempPathFactory, kamailio_server: KamailioServer, slapd: SlapdServer
) -> Iterator[tuple[SimPhone, SimPhone]]:
    domain = kamailio_server.domain
    alice_config = with_features(sim_config("alice", "1001", DEFAULT_USERS["1001"], domain), slapd)
    # Bob's phone sends no display name: Alice's phone must find it in the directory
    bob_config = sim_config("bob", "1002", DEFAULT_USERS["1002"], domain)
    alice = SimPhone(tmp_path_factory.mktemp("alice"), alice_config)
    bob = SimPhone(tmp_path_factory.mktemp("bob"), bob_config)
    for phone in (alice, bob):
        phone.start()
    try:
        for phone in (alice, bob):
            phone.wait_registered(60)
        yield alice, bob
    finally:
        stop_all([alice, bob])


def screen(phone: SimPhone) -> list[str]:
    state = phone.state() or {}
    return list(state.get("screen") or [])


def idle(phone: SimPhone) -> None:
    phone.client.hook(False)
    phone.client.keys(["cancel", "cancel", "cancel"])
    phone.wait_for(lambda s: not s["calls"], 20, "no calls")


def test_caller_named_from_the_directory_on_screen_and_in_history(
    phones: tuple[SimPhone, SimPhone], phone_logs_on_failure: list[SimPhone]
) -> None:
    alice, bob = phones
    phone_logs_on_failure += [alice, bob]
    bob.client.hook(True)
    bob.client.keys(list("1001"))
    bob.client.keys(["#"])
    alice.wait_for(lambda s: s["screen"][:1] == ["Incoming call"], 30, "ringing")
    wait_until(lambda: screen(alice) == ["Incoming call", "Bob Baker", "1002"], "caller's name")
    bob.client.hook(False)
    state = alice.wait_for(lambda s: s["history"] and not s["calls"], 30, "missed call recorded")
    assert state["history"][0]["remote_name"] == "Bob Baker"
    idle(alice)
    idle(bob)


def test_multi_tap_search_then_call(
    phones: tuple[SimPhone, SimPhone], phone_logs_on_failure: list[SimPhone]
) -> None:
    alice, bob = phones
    phone_logs_on_failure += [alice, bob]
    alice.client.keys(["phonebook", "right"])
    wait_until(lambda: screen(alice)[:1] == ["Directory"], "directory search")
    alice.client.keys(["2", "2", "6", "6", "6"])  # b, then o (a new key keeps the b)
    wait_until(lambda: "Bob Baker 1002" in screen(alice), "a result for 'bo'")
    assert screen(alice)[0] in ("Name: b[o]", "Name: bo_")  # "o" kept once the pause ends
    alice.client.keys(["down"])
    wait_until(lambda: "> Bob Baker 1002" in screen(alice), "the result list")
    alice.client.keys(["ok"])
    bob.wait_for(lambda s: s["screen"][:1] == ["Incoming call"], 30, "Bob's phone rings")
    alice.client.keys(["cancel"])
    idle(alice)
    idle(bob)


def test_settings_need_the_admin_pin(
    phones: tuple[SimPhone, SimPhone], phone_logs_on_failure: list[SimPhone]
) -> None:
    alice, _ = phones
    phone_logs_on_failure.append(alice)
    alice.client.keys(["menu", "up", "ok"])
    wait_until(lambda: screen(alice)[:1] == ["Admin PIN"], "the PIN prompt")
    alice.client.keys(["1", "1", "1", "1", "ok"])
    wait_until(lambda: screen(alice)[:2] == ["Settings locked", "Wrong PIN (1)"], "locked")
    time.sleep(1.2)  # the first lock lasts a second
    wait_until(lambda: screen(alice)[:1] == ["Admin PIN"], "the prompt back")
    alice.client.keys([*"2468", "ok"])
    wait_until(lambda: screen(alice)[:1] == ["Settings"], "the settings menu")
    alice.client.keys(["ok"])  # Network: a simulator shows the PC's network, never changes it
    wait_until(lambda: screen(alice)[-1:] == ["Set by the OS"], "the network page")
    alice.client.keys(["cancel", "down", "down", "ok"])
    wait_until(lambda: screen(alice)[:1] == ["Accounts"], "the accounts page")
    assert screen(alice)[1] == "L1 1001 ok"
    alice.client.keys(["cancel", "down", "ok", "ok"])  # factory reset: only on the image
    wait_until(
        lambda: (
            screen(alice)
            == ["Factory reset", "factory reset works", "on the phone's data", "partition only"]
        ),
        "the reset refused on a sim",
    )
    alice.client.keys(["cancel", "cancel"])
    wait_until(lambda: (alice.state() or {}).get("screen", [""])[0] != "Settings", "left")
