"""The image's RAUC configuration and the bundle manifest the build writes."""

from __future__ import annotations

import configparser
from pathlib import Path

from offhook.contract.signing import development_pair
from offhook.image import uboot
from offhook.image.boards import board
from offhook.image.bundle import install_rauc_config, manifest, system_conf


def test_system_conf_for_the_ab_card() -> None:
    target = board("qemu-amd64", "http://deb.debian.org/debian")
    conf = configparser.ConfigParser()
    conf.read_string(system_conf(target))
    system = conf["system"]
    assert system["compatible"] == "offhook-qemu-amd64"
    assert system["bootloader"] == "grub"
    assert system["grubenv"] == "/boot/firmware/grub/grubenv"  # outside both slots
    assert system["data-directory"].startswith("/data/")  # survives updates
    assert system["mountprefix"].startswith("/run/")  # the root is read-only
    assert system["bundle-formats"] == "-plain"  # verity only
    assert conf["keyring"]["path"] == "/etc/rauc/keyring.pem"
    slots = {conf[s]["bootname"]: conf[s]["device"] for s in ("slot.rootfs.0", "slot.rootfs.1")}
    assert slots == {"A": "/dev/vda2", "B": "/dev/vda4"}  # partitions 2 and 4 (layout.py)


def test_system_conf_for_the_pi_card_uses_uboot() -> None:
    target = board("rpi", "http://deb.debian.org/debian")
    conf = configparser.ConfigParser()
    conf.read_string(system_conf(target))
    system = conf["system"]
    assert system["compatible"] == "offhook-rpi"  # a qemu-amd64 bundle is refused, and back
    assert system["bootloader"] == "uboot"
    # the attempts U-Boot's script counts down, given back by mark-good and mark-active
    assert system["boot-attempts"] == system["boot-attempts-primary"] == str(uboot.BOOT_ATTEMPTS)
    assert "grubenv" not in system
    slots = {conf[s]["bootname"]: conf[s]["device"] for s in ("slot.rootfs.0", "slot.rootfs.1")}
    # links offhook-rauc-slots makes to the booted card's partitions 2 and 4
    assert slots == {"A": "/run/offhook/slots/A", "B": "/run/offhook/slots/B"}


def test_both_boards_have_two_slots_and_a_bootloader() -> None:
    for name, bootloader in (("qemu-amd64", "grub"), ("rpi", "uboot")):
        target = board(name, "m")
        assert target.ab_slots and target.bootloader == bootloader


def test_install_writes_fw_env_config_only_for_uboot(tmp_path: Path) -> None:
    pair = development_pair(tmp_path / "keys")
    for name in ("rpi", "qemu-amd64"):
        tree = tmp_path / name
        install_rauc_config(tree, board(name, "m"), pair)
        assert (tree / "etc/rauc/keyring.pem").read_bytes() == pair.cert.read_bytes()
    assert (tmp_path / "rpi/etc/fw_env.config").read_text().splitlines()[-1].split() == [
        "/boot/firmware/offhook/ab.env", "0x0000", "0x4000"]  # fmt: skip
    assert not (tmp_path / "qemu-amd64/etc/fw_env.config").exists()


def test_manifest() -> None:
    conf = configparser.ConfigParser()
    conf.read_string(manifest("offhook-qemu-amd64", "0.2.0", "rootfs.ext4"))
    assert dict(conf["update"]) == {"compatible": "offhook-qemu-amd64", "version": "0.2.0"}
    assert conf["bundle"]["format"] == "verity"
    assert conf["image.rootfs"]["filename"] == "rootfs.ext4"
