"""The VLAN files the settings menu writes, read by a real systemd-networkd in a network and
mount namespace of its own (root only): a veth stands in for the phone's eth0, the files are
bind-mounted on /etc/systemd/network, and networkd's debug log and the links it made are what
is checked. Bringing the tagged interface up needs the kernel's 8021q; where a kernel lacks it
(some VMs), that test says so and skips, the files' reading is still tested."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.firmware.features.events import ApplyNetwork
from offhook.firmware.network_settings import NetworkSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare"),
        reason="needs root for network and mount namespaces",
    ),
]

NETWORKD = Path("/lib/systemd/systemd-networkd")


def _kernel_has_vlan() -> bool:
    probe = "ip link add p0 type veth peer name p1 && ip link add link p0 name p0.9 type vlan id 9"
    return subprocess.run(["unshare", "-n", "sh", "-c", probe], capture_output=True).returncode == 0


def run_networkd(config_dir: Path, seconds: float = 6.0) -> tuple[str, str, str]:
    """networkd on ``config_dir`` in fresh namespaces with a veth ``eth0``: (its log, ``ip -d
    link``, ``ip addr``) once it ran for ``seconds``. /sys is mounted read-only, which tells
    networkd there is no udev to wait for (as in a container)."""
    script = f"""
set -e
mount -t tmpfs none /run
mount -t sysfs -o ro sysfs /sys
mkdir -p /run/systemd/netif/links /run/systemd/netif/leases /run/systemd/netif/lldp
chown -R systemd-network: /run/systemd/netif
mount --bind {config_dir} /etc/systemd/network
ip link add eth0 type veth peer name peer0
ip link set peer0 up
SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console timeout {seconds} {NETWORKD} \
    > {config_dir.parent}/networkd.log 2>&1 || true
ip -d link > {config_dir.parent}/links.txt
ip addr > {config_dir.parent}/addrs.txt
"""
    done = subprocess.run(
        ["unshare", "-n", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    parent = config_dir.parent
    return tuple(  # type: ignore[return-value]
        (parent / name).read_text() for name in ("networkd.log", "links.txt", "addrs.txt")
    )


def written(tmp_path: Path, command: ApplyNetwork) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/network").mkdir(parents=True)
    NetworkSettings(root, interface="eth0", reload=lambda _: None).apply(command)
    return root / "etc/systemd/network"


@pytest.mark.skipif(not NETWORKD.exists(), reason="systemd-networkd is not installed")
def test_networkd_reads_the_vlan_files_and_stacks_the_vlan_on_the_parent(tmp_path: Path) -> None:
    config = written(tmp_path, ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "", vlan=42))
    log, _, addrs = run_networkd(config)
    assert 'eth0.42: loaded "vlan"' in log  # the .netdev: Kind=vlan, Name=eth0.42
    assert "eth0: found matching network '/etc/systemd/network/10-offhook-eth0.network'" in log
    assert "eth0: Requested stacked netdev 'eth0.42'" in log  # the parent's VLAN=
    assert "10.0.0.5" not in addrs.split("eth0.42")[0]  # the parent carries no address
    assert (
        "Failed to parse" not in log and "Unknown key" not in log and "Unknown section" not in log
    )


@pytest.mark.skipif(not NETWORKD.exists(), reason="systemd-networkd is not installed")
def test_the_vlan_comes_up_with_its_address(tmp_path: Path) -> None:
    if not _kernel_has_vlan():
        pytest.skip("this kernel has no 8021q: ip link add ... type vlan says Unknown device type")
    config = written(tmp_path, ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "", vlan=42))
    _, links, addrs = run_networkd(config)
    assert "eth0.42@eth0" in links and "vlan protocol 802.1Q id 42" in links
    assert "inet 10.0.0.5/24" in addrs.split("eth0.42@eth0", 1)[1]


def ifupdown_plan(tmp_path: Path, command: ApplyNetwork, iface: str) -> str:
    """What ifupdown would run to bring ``iface`` up from the written stanza (``ifup -n``)."""
    root = tmp_path / "root"
    (root / "etc/network/interfaces.d").mkdir(parents=True)
    NetworkSettings(root, interface="eth0", reload=lambda _: None).apply(command)
    stanza = root / "etc/network/interfaces.d/offhook-eth0"
    done = subprocess.run(
        ["ifup", "-n", "-v", "-i", str(stanza), f"--state-dir={tmp_path / 'state'}", iface],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.skipif(not shutil.which("ifup"), reason="ifupdown is not installed")
def test_ifupdown_makes_the_vlan_on_the_parent_and_addresses_it(tmp_path: Path) -> None:
    plan = ifupdown_plan(
        tmp_path, ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "", vlan=100), "eth0.100"
    )
    assert "ip link add link eth0 name eth0.100 type vlan id 100" in plan
    assert "ip addr add 10.0.0.5/255.255.255.0 broadcast 10.0.0.255" in plan
    assert "dev eth0.100" in plan.split("ip addr add", 1)[1].splitlines()[0]
    assert "ip route add default via 10.0.0.1  dev eth0.100" in plan
    dhcp = ifupdown_plan(tmp_path / "dhcp", ApplyNetwork("dhcp", vlan=7), "eth0.7")
    assert "ip link add link eth0 name eth0.7 type vlan id 7" in dhcp
    dhclient = next(line for line in dhcp.splitlines() if "dhclient -4" in line)
    assert dhclient.split()[-1] == "eth0.7"  # DHCP asked on the VLAN, not the parent


@pytest.mark.skipif(not shutil.which("ifup"), reason="ifupdown is not installed")
def test_the_commands_ifupdown_plans_bring_the_vlan_up(tmp_path: Path) -> None:
    if not _kernel_has_vlan():
        pytest.skip("this kernel has no 8021q: ip link add ... type vlan says Unknown device type")
    plan = ifupdown_plan(
        tmp_path, ApplyNetwork("static", "10.0.0.5/24", "10.0.0.1", "", vlan=100), "eth0.100"
    )
    commands = [line.strip() for line in plan.splitlines() if line.strip().startswith("ip ")]
    commands = [c.replace("2>/dev/null || true", "") for c in commands if "route" not in c]
    add = "ip link add link eth0 name eth0.100 type vlan id 100"
    script = "ip link add eth0 type veth peer name peer0\n" + f"{add}\n" + "\n".join(commands)
    script += "\nip -d addr show eth0.100"
    done = subprocess.run(["unshare", "-n", "sh", "-ec", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "vlan protocol 802.1Q id 100" in done.stdout and "inet 10.0.0.5/24" in done.stdout
