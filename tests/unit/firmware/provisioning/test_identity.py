"""Device identity: MAC/serial normalisation and reading them from a Pi's /proc and /sys."""

from __future__ import annotations

from pathlib import Path

import pytest

from offhook.firmware.provisioning.identity import DeviceIdentity, IdentityError, normalise_mac


def test_mac_forms_are_normalised() -> None:
    assert normalise_mac("B8-27-EB-12-34-56") == "b8:27:eb:12:34:56"
    assert normalise_mac("b827eb123456") == "b8:27:eb:12:34:56"
    with pytest.raises(IdentityError, match="6 hex octets"):
        normalise_mac("b8:27:eb:12:34")
    with pytest.raises(IdentityError, match="serial"):
        DeviceIdentity(mac="b8:27:eb:12:34:56", serial="no spaces!")


def test_identity_read_from_a_pi_tree(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 10000000ABCDEF01\nModel\t: x\n"
    )
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    for name, mac in (("lo", "00:00:00:00:00:00"), ("wlan0", "dc:a6:32:00:00:02"),
                      ("eth0", "DC:A6:32:00:00:01")):  # fmt: skip
        (tmp_path / "sys/class/net" / name).mkdir(parents=True)
        (tmp_path / "sys/class/net" / name / "address").write_text(mac + "\n")
    identity = DeviceIdentity.from_pi(tmp_path)
    assert identity.mac == "dc:a6:32:00:00:01"  # the wired port, as on the label
    assert identity.serial == "10000000abcdef01"
    assert identity.model == "offhook-pi4"


def test_missing_serial_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor: 0\n")
    with pytest.raises(IdentityError, match="no serial number"):
        DeviceIdentity.from_pi(tmp_path)
