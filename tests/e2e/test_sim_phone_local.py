"""Phone-local settings with real simulated phones: what a provisioned config may not change.

- Two provisioned simulators on one PC, given the same SIP port by the server, both register on
  their own ports (the server's port used to replace theirs: the second crash-looped and was
  rolled back as "apply interrupted 2 times").
- A provisioned config that names a serial console (``socket://``: the phone would dial out and
  hand over a console) is applied without it.
"""

from __future__ import annotations

import socket
import time
from functools import partial
from pathlib import Path

import pytest

from offhook.contract.config import parse_config
from offhook.firmware.provisioning.identity import sim_identity
from offhook.firmware.provisioning.store import ConfigStore, StoredConfig
from offhook.firmware.sim import SimPhone, free_port, is_registered, sim_config, stop_all
from tests.fixtures import waiting
from tests.fixtures.kamailio import DEFAULT_USERS
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


wait_until = partial(waiting.wait_until, timeout=60.0, interval=0.2)


def test_two_provisioned_sims_on_one_pc_keep_their_own_sip_ports(
    tmp_path: Path, kamailio_server, phone_logs_on_failure
) -> None:
    with ProvisioningServer(tmp_path / "server") as server:
        # what a fleet might hand every phone: one SIP port (fine on Pis, one phone each)
        shared_port = free_port()
        fleet = server.admin.patch("/settings/fleet", json={"set": {"sip.port": shared_port}})
        fleet.raise_for_status()
        phones: list[SimPhone] = []
        for name, user in (("left", "1001"), ("right", "1002")):
            provisioning = {
                "url": server.base_url,
                "enrollment_token": server.enrollment_token(),
                "poll_interval_s": 3600,
            }
            phone = SimPhone(
                tmp_path / name, sim_config(name, "", "", "", provisioning=provisioning)
            )
            mac = sim_identity(phone.config_path).mac
            server.add_device(mac, name=name)
            server.add_line(
                mac, extension=user, registrar=kamailio_server.domain, password=DEFAULT_USERS[user]
            )
            phones.append(phone)
            phone_logs_on_failure.append(phone)
        try:
            for phone in phones:
                phone.start()
            for phone in phones:
                state = phone.wait_for(is_registered, timeout=90, what="provisioned line")
                assert state["device"]["sip_ports"]["udp"] == phone.config.sip.port
                assert phone.config.sip.port != shared_port
            for phone in phones:
                mac = sim_identity(phone.config_path).mac
                events = wait_until(
                    lambda mac=mac: server.admin.get("/events", params={"device": mac}).json(),
                    what="the phone's events at the server",
                )
                kinds = [e["type"] for e in events]
                assert "config_applied" in kinds and "config_rolled_back" not in kinds, events
                pid = phone.state()["device"]["pid"]
                time.sleep(3)  # a crash loop would have shown a new process by now
                assert phone.state()["device"]["pid"] == pid
        finally:
            stop_all(phones)


def test_a_provisioned_serial_console_is_not_opened(tmp_path: Path, phone_logs_on_failure) -> None:
    with socket.socket() as attacker:
        attacker.bind(("127.0.0.1", 0))
        attacker.listen()
        attacker.setblocking(False)
        url = f"socket://127.0.0.1:{attacker.getsockname()[1]}"
        closed = free_port()  # the provisioning server is away: the phone boots on its cache
        config = sim_config(
            "console", "", "", "", provisioning={"url": f"http://127.0.0.1:{closed}"}
        )
        phone = SimPhone(tmp_path / "phone", config)
        phone_logs_on_failure.append(phone)
        # the last config a (hostile) server gave this phone, as the phone cached it
        own = config.model_dump(mode="json")
        cached = parse_config(
            {
                "device": {"name": "cached"},
                "board": {"serial_console": url},
                **{k: own[k] for k in ("sip", "audio")},  # the rest as the phone has it
            }
        )
        store = ConfigStore(tmp_path / "phone" / "state" / "provisioning" / "config")
        store.finish_apply(StoredConfig('"7-x"', 7, cached))
        phone.start()
        try:
            # the console is opened while the phone is set up, before its control API answers
            phone.wait_for(lambda s: s["device"]["name"] == "cached", timeout=60, what="cache")
            with pytest.raises(BlockingIOError):
                attacker.accept()
            assert "provisioned phone-local settings ignored" in phone.log_text()
        finally:
            phone.stop()
