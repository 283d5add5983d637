"""Two simulated phones provisioned by the real server call each other through a real Kamailio;
each reports its own leg, and the server shows them as one call: both records carry the same
SIP Call-ID (the phone reads it from pjsua2), and ``GET /calls`` joins them with caller, callee
and both legs' quality."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from offhook.firmware.provisioning.identity import sim_identity
from offhook.firmware.sim import SimPhone, is_registered, sim_config
from tests.fixtures import waiting
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

wait_until = partial(waiting.wait_until, timeout=45.0, interval=0.3)


def _phone(tmp_path: Path, server: ProvisioningServer, name: str, extension: str, domain: str):
    config = sim_config(
        name,
        "",
        "",
        "",
        provisioning={
            "url": server.base_url,
            "enrollment_token": server.enrollment_token(),
            "poll_interval_s": 3600,
        },
    )
    phone = SimPhone(tmp_path / name, config)
    mac = sim_identity(phone.config_path).mac
    local = config.model_dump(mode="json")
    server.add_device(mac, name=name, settings={"dialplan": local["dialplan"]})
    body = {"extension": extension, "registrar": domain, "password": f"pw{extension}"}
    server.admin.post(f"/devices/{mac}/lines", json=body).raise_for_status()
    return phone, mac


def _calls(state: dict, wanted: str) -> bool:
    return len(state["calls"]) == 1 and state["calls"][0]["state"] == wanted


def test_a_call_between_two_fleet_phones_is_one_joined_call(
    tmp_path: Path, kamailio_server, phone_logs_on_failure
) -> None:
    with ProvisioningServer(tmp_path / "server") as server:
        domain = kamailio_server.domain
        alice, alice_mac = _phone(tmp_path, server, "alice-desk", "1001", domain)
        bob, bob_mac = _phone(tmp_path, server, "bob-desk", "1002", domain)
        phone_logs_on_failure += [alice, bob]
        try:
            for phone in (alice, bob):
                phone.start()
            for phone in (alice, bob):
                phone.wait_for(is_registered, timeout=90, what="provisioned line registered")
            alice.client.hook(True)
            alice.client.keys("1002")
            bob.wait_for(lambda s: _calls(s, "incoming"), what="incoming call")
            bob.client.hook(True)
            for phone in (alice, bob):
                phone.wait_for(lambda s: _calls(s, "confirmed"), what="confirmed call")
            time.sleep(6)  # past the engine's 5 s quality interval: each leg has a sample
            alice.client.hook(False)
            bob.wait_for(lambda s: s["calls"] == [], what="call gone at the callee")
            bob.client.hook(False)
            for phone in (alice, bob):
                assert phone.client.resync()["resync"]  # pushes the outbox now

            def both_legs() -> list[dict] | None:
                legs = [
                    *server.admin.get("/cdrs", params={"device": alice_mac}).json(),
                    *server.admin.get("/cdrs", params={"device": bob_mac}).json(),
                ]
                return legs if len(legs) == 2 else None

            legs = wait_until(both_legs, what="both phones' CDRs on the server")
            joined = wait_until(
                lambda: [
                    c
                    for c in server.admin.get("/calls").json()
                    if len(c["legs"]) == 2 and None not in (c["caller_mos"], c["callee_mos"])
                ],
                what="the two legs joined into one call, with both legs' quality",
            )
            quality = server.admin.get("/quality").json()
        finally:
            for phone in (alice, bob):
                phone.stop()
    assert len(joined) == 1
    call = joined[0]
    assert sorted(call["legs"]) == sorted(leg["id"] for leg in legs)
    assert call["direction"] == "internal" and call["disposition"] == "answered"
    assert (call["caller"]["number"], call["caller"]["device"]) == ("1001", "alice-desk")
    assert (call["callee"]["number"], call["callee"]["device"]) == ("1002", "bob-desk")
    # the Call-ID is pjsip's own (random text, not the record id)
    assert call["call"] and call["call"] not in call["legs"]
    assert {leg["sip_call_id"] for leg in legs} == {call["call"]}
    assert call["duration_s"] >= 5
    by_leg = {q["call_record_id"]: q["mos"] for q in quality}
    assert call["caller_mos"] == round(by_leg[call["legs"][0]], 2)
