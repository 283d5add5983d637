"""Phone process pieces that need no SIP: heartbeat gating, apply outcome, simulator identity."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from offhook.contract.config import parse_config
from offhook.firmware.heartbeat import Heartbeat
from offhook.firmware.phone import registration_outcome
from offhook.firmware.phone_state import LineRegistration
from offhook.firmware.provisioning.identity import sim_identity

TWO_ACCOUNTS = parse_config(
    {
        "accounts": [
            {"user": "1001", "domain": "127.0.0.1"},
            {"user": "1002", "domain": "127.0.0.1"},
            {"user": "1003", "domain": "127.0.0.1", "enabled": False},
        ]
    }
)


def row(account: int, registered: bool, status: int) -> tuple[int, LineRegistration]:
    return account, LineRegistration(registered, status)


def test_apply_outcome_waits_then_reports_refusal_or_success() -> None:
    pending = dict([row(0, True, 200), row(1, False, 0), row(2, False, 0)])
    assert registration_outcome(pending, TWO_ACCOUNTS) == "pending"
    refused = dict([row(0, True, 200), row(1, False, 403), row(2, False, 0)])
    error = registration_outcome(refused, TWO_ACCOUNTS)
    assert error is not None and "accounts[1]" in error and "403" in error
    done = dict([row(0, True, 200), row(1, True, 200), row(2, False, 0)])
    assert registration_outcome(done, TWO_ACCOUNTS) is None  # the disabled one does not count


def test_sim_identity_is_stable_per_config_path(tmp_path: Path) -> None:
    a1, a2 = sim_identity(tmp_path / "a.toml"), sim_identity(tmp_path / "a.toml")
    b = sim_identity(tmp_path / "b.toml")
    assert a1 == a2
    assert a1.mac != b.mac and a1.serial != b.serial
    assert int(a1.mac.split(":")[0], 16) & 0x02  # locally administered


def beats_within(fd: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = 0
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            count += len(os.read(fd, 1024))
    return count


def test_heartbeat_stops_while_a_loop_is_stale() -> None:
    read_fd, write_fd = os.pipe()
    stamps = {"runtime": time.monotonic(), "sip": time.monotonic()}
    fresh = True

    def runtime_stamp() -> float:
        return time.monotonic() if fresh else stamps["runtime"]

    beat = Heartbeat(write_fd, {"runtime": runtime_stamp, "sip": time.monotonic}, 0.3)
    beat.start()
    try:
        assert beats_within(read_fd, 1.2) >= 1
        stamps["runtime"] = time.monotonic()
        fresh = False  # the runtime loop stops turning
        beats_within(read_fd, 0.6)  # drain what was sent before it went stale
        assert beats_within(read_fd, 1.2) == 0
        assert beat.stale() is not None and beat.stale().startswith("runtime")
    finally:
        beat.stop()
        os.close(read_fd)
        os.close(write_fd)


def test_heartbeat_notices_the_supervisor_is_gone() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    beat = Heartbeat(write_fd, {"runtime": time.monotonic})
    beat.start()
    try:
        assert beat.supervisor_gone.wait(5)
    finally:
        beat.stop()
        os.close(write_fd)


def test_device_info_has_this_machines_addresses_version_and_ports() -> None:
    import ipaddress
    import shutil
    import subprocess

    from offhook.firmware.netinfo import ipv4_addresses
    from offhook.firmware.phone_process import gather_device_info
    from offhook.firmware.provisioning.identity import firmware_version

    info = gather_device_info({"udp": 5071, "tcp": 5072})
    assert info.sip_ports == (("tcp", 5072), ("udp", 5071))
    assert info.firmware_version == firmware_version() != ""
    assert all(not ipaddress.ip_address(a).is_loopback for a in info.addresses)
    assert set(ipv4_addresses()) <= set(info.addresses)
    ip_tool = shutil.which("ip")
    if ip_tool:  # iproute2 sees the same IPv4 addresses
        listing = subprocess.run(
            [ip_tool, "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
        expected = {line.split()[3].split("/")[0] for line in listing.splitlines()}
        assert set(ipv4_addresses()) == {a for a in expected if not a.startswith("127.")}


def test_if_inet6_parsing_keeps_global_addresses_only() -> None:
    from offhook.firmware.netinfo import parse_if_inet6

    text = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fd000000000000000000000000000002 04 40 00 82     eth0\n"
        "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"
        "garbage line\n"
    )
    assert parse_if_inet6(text) == ["fd00::2"]
