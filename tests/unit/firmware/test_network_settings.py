"""The network page's adapter on a temporary root: networkd and ifupdown files, read back."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offhook.firmware.features.events import ApplyNetwork
from offhook.firmware.network_settings import (
    NetworkSettings,
    NetworkSettingsError,
    default_gateway,
)

STATIC = ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53 10.0.0.54")
ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\n"
    "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\n"
)


def root_with(tmp_path: Path, manager: str) -> Path:
    (tmp_path / "sys/class/net/eth0").mkdir(parents=True)
    (tmp_path / "sys/class/net/lo").mkdir(parents=True)
    (tmp_path / "sys/class/net/eth0/address").write_text("b8:27:eb:12:34:56\n")
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text(ROUTE)
    directory = "etc/systemd/network" if manager == "networkd" else "etc/network/interfaces.d"
    (tmp_path / directory).mkdir(parents=True)
    return tmp_path


def test_networkd_static_then_dhcp(tmp_path: Path) -> None:
    reloaded: list[str] = []
    net = NetworkSettings(root_with(tmp_path, "networkd"), reload=reloaded.append)
    status = net.status(("10.0.0.9",))
    assert (status.interface, status.mode, status.address) == ("eth0", "dhcp", "10.0.0.9")
    assert (status.gateway, status.writable, status.mac) == ("10.0.0.1", True, "b8:27:eb:12:34:56")
    net.apply(STATIC)
    path = tmp_path / "etc/systemd/network/10-offhook-eth0.network"
    text = path.read_text()
    assert "[Match]\nName=eth0\n" in text
    assert "Address=10.0.0.5/24\nGateway=10.0.0.1\nDNS=10.0.0.53\nDNS=10.0.0.54\n" in text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert reloaded == ["eth0"]
    status = net.status()
    assert (status.mode, status.address, status.gateway) == ("static", "10.0.0.5/24", "10.0.0.1")
    assert status.dns == "10.0.0.53 10.0.0.54"
    net.apply(ApplyNetwork("dhcp"))
    assert "DHCP=yes" in path.read_text()
    assert net.status().mode == "dhcp"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_ifupdown_stanza(tmp_path: Path) -> None:
    net = NetworkSettings(root_with(tmp_path, "ifupdown"), reload=lambda _: None)
    net.apply(STATIC)
    text = (tmp_path / "etc/network/interfaces.d/offhook-eth0").read_text()
    assert "iface eth0 inet static\n    address 10.0.0.5/24\n    gateway 10.0.0.1\n" in text
    assert "dns-nameservers 10.0.0.53 10.0.0.54" in text
    assert net.status().mode == "static"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (ApplyNetwork("static", "10.0.0.5", "10.0.0.1"), "prefix length"),
        (ApplyNetwork("static", "10.0.0.5/24", "10.1.0.1"), "not in 10.0.0.0/24"),
        (ApplyNetwork("static", "10.0.0.500/24", "10.0.0.1"), "static address"),
        (ApplyNetwork("bridge"), "unknown network mode"),
    ],
)
def test_bad_settings_are_refused_and_nothing_written(
    tmp_path: Path, command: ApplyNetwork, message: str
) -> None:
    net = NetworkSettings(root_with(tmp_path, "networkd"), reload=lambda _: None)
    with pytest.raises(NetworkSettingsError, match=message):
        net.apply(command)
    assert not list((tmp_path / "etc/systemd/network").iterdir())


def test_no_network_manager_directory_is_shown_read_only(tmp_path: Path) -> None:
    net = NetworkSettings(tmp_path, interface="eth0", reload=lambda _: None)
    assert not net.status().writable
    with pytest.raises(NetworkSettingsError, match="no network manager"):
        net.apply(STATIC)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only directories anyway")
def test_read_only_config_directory(tmp_path: Path) -> None:
    root = root_with(tmp_path, "networkd")
    (root / "etc/systemd/network").chmod(0o500)
    net = NetworkSettings(root, reload=lambda _: None)
    assert not net.status().writable
    with pytest.raises(NetworkSettingsError, match="read-only"):
        net.apply(STATIC)


def test_default_gateway_from_the_route_table() -> None:
    assert default_gateway(ROUTE) == "10.0.0.1"
    assert default_gateway(ROUTE.splitlines()[0]) == ""


def test_the_simulator_shows_the_network_but_never_changes_it(tmp_path: Path) -> None:
    root = root_with(tmp_path, "networkd")
    net = NetworkSettings(root, reload=lambda _: None, allow_changes=False)
    assert not net.status().writable
    with pytest.raises(NetworkSettingsError, match="not the phone's to change"):
        net.apply(STATIC)
    assert not list((root / "etc/systemd/network").iterdir())


def in_read_only_mount(directory: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``directory`` mounted read-only (as the image's root is), in a mount
    namespace of its own: root ignores permission bits, not a read-only mount."""
    script = (
        f"mount --bind {directory} {directory} && mount -o remount,bind,ro {directory} && "
        f"{sys.executable} -c {shlex.quote(code)}"
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a mount namespace"
)
def test_a_read_only_root_shows_the_network_as_set_by_the_os(tmp_path: Path) -> None:
    root = root_with(tmp_path, "networkd")
    code = (
        "from pathlib import Path\n"
        "from offhook.firmware.features.events import ApplyNetwork\n"
        "from offhook.firmware.network_settings import NetworkSettings, NetworkSettingsError\n"
        f"net = NetworkSettings(Path({str(root)!r}), reload=lambda _: None)\n"
        "assert not net.status().writable\n"
        "try:\n"
        "    net.apply(ApplyNetwork('static', '10.0.0.5/24', '10.0.0.1'))\n"
        "except NetworkSettingsError as exc:\n"
        "    print(exc)\n"
    )
    done = in_read_only_mount(root / "etc/systemd/network", code)
    assert done.returncode == 0, done.stderr
    assert "read-only: the network is set by the OS" in done.stdout
    assert not list((root / "etc/systemd/network").iterdir())


def test_networkd_vlan_netdev_tagged_network_and_parent_then_removed(tmp_path: Path) -> None:
    root = root_with(tmp_path, "networkd")
    net = NetworkSettings(root, reload=lambda _: None)
    directory = root / "etc/systemd/network"
    net.apply(ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "10.0.0.53", vlan=42))
    netdev = (directory / "10-offhook-eth0.42.netdev").read_text()
    assert "[NetDev]\nName=eth0.42\nKind=vlan\n\n[VLAN]\nId=42\n" in netdev
    parent = (directory / "10-offhook-eth0.network").read_text()
    assert "Name=eth0\n" in parent and "VLAN=eth0.42\n" in parent
    assert "Address=" not in parent and "DHCP=no" in parent
    tagged = (directory / "10-offhook-eth0.42.network").read_text()
    assert "Name=eth0.42\n" in tagged and "Address=10.0.0.5/24\n" in tagged
    status = net.status()
    assert (status.vlan, status.mode, status.address, status.gateway) == (
        42,
        "static",
        "10.0.0.5/24",
        "10.0.0.1",
    )
    net.apply(ApplyNetwork("dhcp", vlan=7))  # another VLAN: the old one's files go
    assert sorted(p.name for p in directory.iterdir()) == [
        "10-offhook-eth0.7.netdev",
        "10-offhook-eth0.7.network",
        "10-offhook-eth0.network",
    ]
    assert (net.status().vlan, net.status().mode) == (7, "dhcp")
    net.apply(ApplyNetwork("dhcp"))  # no VLAN: the .netdev is removed
    assert [p.name for p in directory.iterdir()] == ["10-offhook-eth0.network"]
    assert "DHCP=yes" in (directory / "10-offhook-eth0.network").read_text()
    assert net.status().vlan == 0


def test_ifupdown_vlan_stanza(tmp_path: Path) -> None:
    root = root_with(tmp_path, "ifupdown")
    net = NetworkSettings(root, reload=lambda _: None)
    net.apply(ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "", vlan=100))
    text = (root / "etc/network/interfaces.d/offhook-eth0").read_text()
    assert (
        "auto eth0\niface eth0 inet manual\n\nauto eth0.100\niface eth0.100 inet static\n" in text
    )
    assert text.endswith("    vlan-raw-device eth0\n")
    status = net.status()
    assert (status.vlan, status.mode, status.address) == (100, "static", "10.0.0.5/24")


@pytest.mark.parametrize("vlan", [-1, 4095, 5000])
def test_a_vlan_out_of_range_is_refused_and_nothing_written(tmp_path: Path, vlan: int) -> None:
    root = root_with(tmp_path, "networkd")
    net = NetworkSettings(root, reload=lambda _: None)
    with pytest.raises(NetworkSettingsError, match="VLAN must be 1-4094"):
        net.apply(ApplyNetwork("dhcp", vlan=vlan))
    assert not list((root / "etc/systemd/network").iterdir())
