"""Zero-touch with a real phone process: an ``offhook sim`` without a provisioning server finds
one by DNS SRV/TXT (dnsmasq), shows the CA fingerprint the real server presents and waits; the
admin trusts it on the phone, the phone restarts, enrolls (pending, with its MAC in the status
menu), is approved at the server and registers its provisioned line on Kamailio.

DNS only (``OFFHOOK_ZERO_TOUCH=dns``): a test never sends DHCP on this PC's network; the DHCP
side is tested in network namespaces (tests/integration/test_zero_touch.py).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

from offhook.contract.config import load_config
from offhook.firmware.provisioning.identity import sim_identity
from offhook.firmware.sim import SimPhone, is_registered, sim_config
from tests.fixtures import waiting
from tests.fixtures.dnsmasq import dns_server
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
wait_until = partial(waiting.wait_until, timeout=60.0, interval=0.2)


def test_unseeded_sim_discovers_asks_for_trust_enrolls_and_registers(
    tmp_path: Path, kamailio_server: KamailioServer, phone_logs_on_failure: list[SimPhone]
) -> None:
    server = ProvisioningServer(tmp_path / "server", tls=True)
    if os.environ.get("OFFHOOK_TEST_PROV_PORT"):
        server.port = int(os.environ["OFFHOOK_TEST_PROV_PORT"])
    with server:
        fingerprint = server.ca_fingerprint.replace(":", "").lower()
        records = [
            f"srv-host=_offhook._tcp.example.test,localhost,{server.port}",
            f"txt-record=_offhook._tcp.example.test,token={server.enrollment_token()}",
        ]
        with dns_server(records) as dns:
            env = dict(os.environ)
            env["OFFHOOK_ZERO_TOUCH"] = "dns"
            env["OFFHOOK_DISCOVERY_NAMESERVERS"] = f"{dns.address[0]}:{dns.address[1]}"
            env["OFFHOOK_DISCOVERY_DOMAINS"] = "example.test"
            phone = SimPhone(tmp_path / "phone", sim_config("new", "", "", ""), env=env)
            phone_logs_on_failure.append(phone)
            phone.start()
            try:
                state = phone.wait_for(
                    lambda s: s["screen"][:1] == ["UNVERIFIED server"], 60, "the trust prompt"
                )
                assert state["screen"][1] == f"localhost:{server.port}"
                assert state["screen"][2] == f"1/4 {fingerprint[:16]}"
                assert not load_config(phone.config_path).provisioning.url  # not before Trust
                pid = state["device"]["pid"]
                phone.client.keys(["softkey3"])  # Trust
                phone.wait_for(
                    lambda s: s["device"]["pid"] != pid, 60, "the phone process restarted"
                )
                written = load_config(phone.config_path).provisioning
                assert written.url == f"https://localhost:{server.port}"
                assert written.ca_fingerprint == fingerprint
                mac = sim_identity(phone.config_path).mac
                device = wait_until(
                    lambda: (
                        server.admin.get(f"/devices/{mac}").json()
                        if server.admin.get(f"/devices/{mac}").status_code == 200
                        else None
                    ),
                    "the enrollment at the server",
                )
                assert device["status"] == "pending"
                phone.client.keys(["menu", "up", "up", "up", "ok"])
                phone.wait_for(
                    lambda s: f"MAC {mac}" in " ".join(s["screen"]), 30, "pending, with the MAC"
                )
                phone.client.keys(["cancel", "cancel"])
                server.add_line(
                    mac,
                    extension="1003",
                    registrar=kamailio_server.domain,
                    password=DEFAULT_USERS["1003"],
                )
                server.admin.post(f"/devices/{mac}/approve").raise_for_status()
                phone.client.resync()
                phone.wait_for(is_registered, 90, "the provisioned line registered")
            finally:
                phone.stop()
