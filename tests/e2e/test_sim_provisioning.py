"""A simulated phone with no account of its own enrolls with the real provisioning server,
pulls its SIP line, registers to Kamailio, and reports its calls back to the server."""

from __future__ import annotations

from functools import partial

import pytest

from offhook.firmware.provisioning.identity import sim_identity
from offhook.firmware.sim import SimPhone, is_registered, sim_config
from tests.fixtures import waiting
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


wait_until = partial(waiting.wait_until, timeout=30.0, interval=0.2)


def test_phone_enrolls_pulls_its_line_registers_and_reports(
    tmp_path, kamailio_server, phone_logs_on_failure
) -> None:
    with ProvisioningServer(tmp_path / "server") as server:
        config = sim_config(
            "front-desk",
            "",
            "",
            "",
            provisioning={
                "url": server.base_url,
                "enrollment_token": server.enrollment_token(),
                "poll_interval_s": 3600,
            },
        )
        phone = SimPhone(tmp_path / "phone", config)
        phone_logs_on_failure.append(phone)
        mac = sim_identity(phone.config_path).mac
        # the sim keeps its own SIP address and port and ALSA devices (phone-local settings);
        # the server hands out the sim's short-extension dial plan
        local = config.model_dump(mode="json")
        server.add_device(mac, name="front-desk", settings={"dialplan": local["dialplan"]})
        reply = server.admin.post(
            f"/devices/{mac}/lines",
            json={"extension": "1004", "registrar": kamailio_server.domain, "password": "pw1004"},
        )
        reply.raise_for_status()
        line_id = reply.json()["id"]

        phone.start()
        state = phone.wait_for(is_registered, timeout=60, what="provisioned line registered")
        assert [r["user"] for r in state["registration"]] == ["1004"]

        with BaresipPeer(
            tmp_path / "baresip", user="1005", password="pw1005", registrar=kamailio_server.domain
        ) as peer:
            peer.dial(f"sip:1004@{kamailio_server.domain}")
            phone.wait_for(lambda s: any(c["state"] == "incoming" for c in s["calls"]))
            phone.client.hook(True)
            peer.wait_event("CALL_ESTABLISHED", timeout=15)
            phone.client.hook(False)
            peer.wait_event("CALL_CLOSED", timeout=15)

        assert phone.client.resync()["resync"]  # pushes the outbox on the next cycle now
        cdrs = wait_until(
            lambda: server.admin.get("/cdrs", params={"device": mac}).json(),
            what="the call's CDR on the server",
        )
        assert "1005" in cdrs[0]["remote_uri"]
        status = wait_until(
            lambda: server.admin.get(f"/devices/{mac}/status").json(), what="a status report"
        )
        assert status[0]["lines"][0]["registered"] is True

        # A wrong password for the line: Kamailio refuses the new registration, so the apply
        # fails and the phone goes back to the last config that worked (and registers with it).
        server.admin.patch(f"/lines/{line_id}", json={"password": "wrong"}).raise_for_status()
        assert phone.client.resync()["resync"]
        rolled_back = wait_until(
            lambda: [
                e
                for e in server.admin.get("/events", params={"device": mac}).json()
                if e["type"] == "config_rolled_back"
            ],
            timeout=45,
            what="the failed apply reported as rolled back",
        )
        assert "registration failed 40" in rolled_back[0]["detail"]
        phone.wait_for(is_registered, timeout=30, what="registered again with the old password")
        phone.stop()
