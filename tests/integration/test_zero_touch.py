"""Zero-touch discovery on real servers: dnsmasq hands DHCP options 43/160/66 to the phone's own
DHCPINFORM in a network namespace, and answers the DNS SRV and TXT records; the discovered
real provisioning server's CA is shown for trust on first use, and the phone then enrolls."""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from functools import partial
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig, ProvisioningSettings, load_config, save_config
from offhook.firmware.features.events import ProvisioningStatus, ServerDiscovered, TrustServer
from offhook.firmware.provisioning import DeviceIdentity, ProvisioningClient
from offhook.firmware.provisioning.backoff import Backoff
from offhook.firmware.provisioning.discovery import Found, from_srv
from offhook.firmware.provisioning.zero_touch import TrustError, ZeroTouch, presented_ca_fingerprint
from tests.fixtures import waiting
from tests.fixtures.dnsmasq import dhcp_network, dns_server
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration
wait_until = partial(waiting.wait_until, timeout=60, interval=0.05)
PYTHON = sys.executable


def vendor_option(*suboptions: tuple[int, str]) -> str:
    raw = b"".join(bytes([code, len(v.encode())]) + v.encode() for code, v in suboptions)
    return "43," + ":".join(f"{b:02x}" for b in raw)


def discover_in(network_client, address: str) -> dict | None:  # type: ignore[no-untyped-def]
    done = network_client(
        PYTHON, "-m", "offhook.firmware.provisioning.discovery", "--address", address,
        "--timeout", "2", "--nameserver", "127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            [
                vendor_option((1, "https://prov43.example.test:8443"), (2, "tok-43")),
                "160,https://prov160.example.test",
                "66,prov66.example.test",
            ],
            {
                "url": "https://prov43.example.test:8443",
                "source": "dhcp option 43",
                "enrollment_token": "tok-43",
            },
        ),
        (
            ["160,https://prov160.example.test:8443/", "66,prov66.example.test"],
            {
                "url": "https://prov160.example.test:8443",
                "source": "dhcp option 160",
                "enrollment_token": "",
            },
        ),
        (
            ["66,prov66.example.test"],
            {
                "url": "https://prov66.example.test",
                "source": "dhcp option 66",
                "enrollment_token": "",
            },
        ),
    ],
    ids=["option43-first", "option160-over-66", "option66-host"],
)
def test_dhcpinform_reads_the_provisioning_options_dnsmasq_hands_out(
    options: list[str], expected: dict
) -> None:
    with dhcp_network(options) as network:
        found = discover_in(network.client, network.client_address)
        assert found == expected
        assert "DHCPINFORM(srv0)" in network.log_text()  # dnsmasq saw our INFORM


def test_no_provisioning_option_and_no_dns_finds_nothing() -> None:
    with dhcp_network(["42,192.0.2.1"]) as network:  # only an NTP server on offer
        assert discover_in(network.client, network.client_address) is None


def test_dns_srv_and_txt_records_from_dnsmasq() -> None:
    records = [
        "srv-host=_offhook._tcp.example.test,backup.example.test,9443,20,0",
        "srv-host=_offhook._tcp.example.test,prov.example.test,8443,10,0",
        "txt-record=_offhook._tcp.example.test,token=tok-dns",
    ]
    with dns_server(records) as dns:
        found = from_srv(["nowhere.test", "example.test"], [dns.address])
    assert found == Found(
        "https://prov.example.test:8443", "dns srv _offhook._tcp.example.test", "tok-dns"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = ProvisioningServer(tmp_path_factory.mktemp("zero-touch"), tls=True)
    if os.environ.get("OFFHOOK_TEST_PROV_PORT"):  # a port range of one's own on a shared host
        server.port = int(os.environ["OFFHOOK_TEST_PROV_PORT"])
    with server as running:
        assert running.ca_fingerprint
        yield running


def test_fingerprint_shown_is_the_servers_ca(server: ProvisioningServer) -> None:
    url = f"https://localhost:{server.port}"
    assert presented_ca_fingerprint(url) == server.ca_fingerprint.replace(":", "").lower()
    with pytest.raises(TrustError, match="https"):
        presented_ca_fingerprint(f"http://localhost:{server.port}")


def test_discovered_server_is_trusted_on_first_use_then_the_phone_enrolls(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    token = server.enrollment_token()
    records = [
        f"srv-host=_offhook._tcp.example.test,localhost,{server.port}",
        f"txt-record=_offhook._tcp.example.test,token={token}",
    ]
    config_path = tmp_path / "phone.toml"
    save_config(PhoneConfig(), config_path)
    mac = "02:" + ":".join(uuid.uuid4().hex[i : i + 2] for i in range(0, 10, 2))
    posted: list[object] = []
    trusted = threading.Event()
    with dns_server(records) as dns:
        zero = ZeroTouch(
            config_path,
            PhoneConfig(),
            mac,
            lambda: from_srv(["example.test"], [dns.address]),
            posted.append,
            trusted.set,
            interval_s=30,
        )
        offered = threading.Thread(target=zero.round)
        offered.start()
        found = wait_until(lambda: [e for e in posted if isinstance(e, ServerDiscovered)])
        assert found[0].url == f"https://localhost:{server.port}"
        assert found[0].fingerprint == server.ca_fingerprint.replace(":", "").lower()
        assert found[0].source == "dns srv _offhook._tcp.example.test"
        assert load_config(config_path) == PhoneConfig()  # nothing trusted before the key press
        assert not trusted.is_set()
        zero.trust(TrustServer(found[0].url, found[0].fingerprint, True))
        offered.join(30)
    assert trusted.is_set()
    states = [e.state for e in posted if isinstance(e, ProvisioningStatus)]
    assert states == ["discovering", "trust", "pending"]
    written = load_config(config_path).provisioning
    assert written.url == f"https://localhost:{server.port}"
    assert written.ca_fingerprint == found[0].fingerprint
    assert written.enrollment_token == token
    # the restarted phone enrolls with what was written, pinned to the trusted CA
    settings = ProvisioningSettings.model_validate(written.model_dump())
    client = ProvisioningClient(
        settings,
        tmp_path / "state",
        DeviceIdentity(mac=mac, serial="SER" + mac.replace(":", "")),
        lambda _config: None,
        lambda: {"lines": []},
        notify_host="127.0.0.1",
        backoff=Backoff(base_s=0.05, cap_s=0.5),
    )
    client.start()
    try:
        wait_until(lambda: client.state == "pending", "enrollment pending")
        assert server.admin.get(f"/devices/{mac}").json()["status"] == "pending"
    finally:
        client.stop()


def test_a_rejected_server_is_not_offered_again(server: ProvisioningServer, tmp_path: Path) -> None:
    url = f"https://localhost:{server.port}"
    posted: list[object] = []
    zero = ZeroTouch(
        tmp_path / "phone.toml",
        PhoneConfig(),
        "02:00:00:00:00:01",
        lambda: Found(url, "dhcp option 66"),
        posted.append,
        lambda: None,
        interval_s=30,
    )
    fingerprint = server.ca_fingerprint.replace(":", "").lower()
    zero.trust(TrustServer(url, fingerprint, False))  # the admin's answer, ready before it asks
    assert not zero.round()
    assert not (tmp_path / "phone.toml").exists()
    posted.clear()
    assert not zero.round()
    assert not [e for e in posted if isinstance(e, ServerDiscovered)]
    assert posted[-1] == ProvisioningStatus(
        "refused", url, "02:00:00:00:00:01", "rejected on this phone"
    )
