"""The network part of the status report: the link from the kernel's own sysfs (a veth pair in
network namespaces reports 10000 Mbit/s full duplex), Wi-Fi from a sysfs/procfs tree laid out as
the kernel does (no Wi-Fi hardware here), and the round trip to a real Kamailio by OPTIONS."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.config import parse_config
from offhook.firmware.netinfo import LinkInfo, link_info, parse_wireless
from offhook.firmware.network_status import network_status
from offhook.firmware.sip.options_ping import options_rtt_ms, registrar_address
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.tls import tls_certificates  # noqa: F401

pytestmark = pytest.mark.integration

WIRELESS = """Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0      0        0
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def veth_namespace() -> Iterator[str]:
    """A network namespace whose eth0 is one end of a veth pair, addressed 10.77.0.2/24."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"offhook-link-{secrets.token_hex(3)}"
    peer = f"ohpeer{secrets.token_hex(2)}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", peer, "up")
        _ip("-n", name, "addr", "add", "10.77.0.2/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", peer], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _in_namespace(namespace: str, code: str) -> dict:
    """Run ``code`` in the namespace (``ip netns exec`` mounts that namespace's sysfs)."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_an_ethernet_link_reports_its_speed_and_duplex_from_sysfs(veth_namespace: str) -> None:
    code = (
        "import json, dataclasses\n"
        "from offhook.firmware.netinfo import interface_with_address, link_info\n"
        "print(json.dumps(dataclasses.asdict(link_info(interface_with_address('10.77.0.2')))))"
    )
    assert _in_namespace(veth_namespace, code) == {
        "interface": "eth0",
        "kind": "ethernet",
        "speed_mbps": 10000,  # what the veth driver reports
        "duplex": "full",
        "signal_dbm": None,
        "link_quality": None,
    }


def test_a_down_link_reports_no_speed(veth_namespace: str) -> None:
    _ip("-n", veth_namespace, "link", "set", "eth0", "down")
    code = (
        "import json, dataclasses\n"
        "from offhook.firmware.netinfo import link_info\n"
        "print(json.dumps(dataclasses.asdict(link_info('eth0'))))"
    )
    link = _in_namespace(veth_namespace, code)
    assert link["kind"] == "ethernet" and link["speed_mbps"] is None


def test_a_wifi_link_reports_its_signal(tmp_path: Path) -> None:
    sys_net = tmp_path / "sys/class/net"
    (sys_net / "wlan0" / "wireless").mkdir(parents=True)
    (sys_net / "wlan0" / "speed").write_text("-1\n")
    (sys_net / "wlan0" / "type").write_text("1\n")
    wireless = tmp_path / "wireless"
    wireless.write_text(WIRELESS)
    assert link_info("wlan0", sys_net, wireless) == LinkInfo(
        "wlan0", "wifi", signal_dbm=-56.0, link_quality=54.0
    )
    assert parse_wireless(WIRELESS, "wlan1") == (None, None)
    assert parse_wireless("garbage\n\n wlan0: x y z\n", "wlan0") == (None, None)
    assert link_info("", sys_net, wireless) == LinkInfo("", "")
    assert link_info("eth9", sys_net, wireless) == LinkInfo("eth9", "")


def test_the_round_trip_to_a_real_registrar(kamailio_server: KamailioServer) -> None:  # noqa: F811
    kam = kamailio_server
    rtt = options_rtt_ms(kam.host, kam.udp_port)
    assert rtt is not None and 0 < rtt < 2000
    config = parse_config({"accounts": [{"user": "1001", "domain": kam.domain}]})
    assert registrar_address(config) == (kam.host, kam.udp_port)
    report = network_status(config, "127.0.0.1")
    assert report["registrar_rtt_ms"] is not None
    assert report["interface"] == "lo" and report["kind"] == "other"


def test_no_registrar_no_round_trip() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))  # bound and never answering
        port = quiet.getsockname()[1]
        assert options_rtt_ms("127.0.0.1", port, timeout_s=0.3) is None
    assert options_rtt_ms("name.invalid", 5060, timeout_s=0.3) is None
    proxied = parse_config(
        {"accounts": [{"user": "1", "domain": "pbx", "outbound_proxy": "[::1]:5070"}]}
    )
    assert registrar_address(proxied) == ("::1", 5070)
    assert registrar_address(parse_config({"accounts": []})) is None
