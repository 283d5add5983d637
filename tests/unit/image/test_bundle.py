"""The image's RAUC configuration and the bundle manifest the build writes."""

from __future__ import annotations

import configparser

from offhook.image.boards import board
from offhook.image.bundle import manifest, system_conf


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


def test_only_the_ab_board_has_slots() -> None:
    assert board("qemu-amd64", "m").ab_slots
    assert not board("rpi", "m").ab_slots


def test_manifest() -> None:
    conf = configparser.ConfigParser()
    conf.read_string(manifest("offhook-qemu-amd64", "0.2.0", "rootfs.ext4"))
    assert dict(conf["update"]) == {"compatible": "offhook-qemu-amd64", "version": "0.2.0"}
    assert conf["bundle"]["format"] == "verity"
    assert conf["image.rootfs"]["filename"] == "rootfs.ext4"
