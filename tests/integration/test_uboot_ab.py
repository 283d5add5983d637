"""The Pi card's A/B slot choice (image/uboot.py) run by a real U-Boot, Debian's u-boot-qemu
(qemu_arm64) under qemu-system-aarch64 -M virt: the same boot script the Pi's U-Boot
(u-boot-rpi) runs from the card's boot partition, with the slot state that RAUC's uboot backend
edits through libubootenv's fw_setenv.

The slots hold no kernel here, so U-Boot says which slot it boots, fails to load it and resets,
which ends QEMU (-no-reboot): a few seconds per power-on. The last test drives the state with
the real ``rauc service`` (bootloader=uboot) between power-ons, as the phone does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.contract.signing import development_pair
from offhook.image import uboot
from offhook.image.assemble import Contents, assemble
from offhook.image.layout import MIB, Layout, plan_layout
from tests.fixtures import rauc_system
from tests.fixtures.rauc_system import RaucSystem

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-system-aarch64") and uboot.QEMU_UBOOT.is_file()
         and shutil.which("fw_printenv") and shutil.which("mkimage")),
    reason="needs qemu-system-arm, u-boot-qemu, u-boot-tools, libubootenv-tool (scripts/setup.sh)",
)  # fmt: skip
BOOTING = re.compile(r"offhook-uboot: booting slot (\w) ")
BOOTARGS = re.compile(r"offhook-uboot: bootargs ([^\r\n]*)")
MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
CONSOLE = "console=ttyS1,115200"


class Card:
    """A small A/B card: the boot partition as the build makes it for the Pi, empty slots."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        boot = tmp / "boot"
        boot.mkdir()
        root = tmp / "root"
        (root / "etc").mkdir(parents=True)
        uboot.boot_tree(boot, CONSOLE)
        self.layout: Layout = plan_layout(boot_size=64 * MIB, root_size=8 * MIB,
                                          data_size=8 * MIB, slot_b=True)  # fmt: skip
        self.disk = tmp / "card.img"
        assemble(self.disk, self.layout, Contents(boot=boot, root=root, data=None), tmp / "parts")
        self.env_file = tmp / "ab.env"
        self.fw_config = tmp / "fw_env.config"
        self.fw_config.write_text(uboot.fw_env_config(str(self.env_file)))

    @property
    def _fat(self) -> str:
        return f"{self.disk}@@{self.layout.partition('boot').start}"

    def pull_env(self) -> Path:
        """The card's slot state file, copied out of the FAT partition."""
        self.env_file.unlink(missing_ok=True)
        subprocess.run(["mcopy", "-i", self._fat, f"::/{uboot.ENV_FILE}", str(self.env_file)],
                       check=True, env=MTOOLS)  # fmt: skip
        return self.env_file

    def push_env(self) -> None:
        subprocess.run(["mcopy", "-o", "-i", self._fat, str(self.env_file),
                        f"::/{uboot.ENV_FILE}"], check=True, env=MTOOLS)  # fmt: skip

    def env(self) -> dict[str, str]:
        self.pull_env()
        listed = subprocess.run(["fw_printenv", "-c", str(self.fw_config)], capture_output=True,
                                text=True, check=True).stdout  # fmt: skip
        return dict(line.split("=", 1) for line in listed.splitlines() if "=" in line)

    def set_env(self, **values: str) -> None:
        """What RAUC's uboot backend does: fw_setenv on the state file."""
        self.pull_env()
        for name, value in values.items():
            subprocess.run(["fw_setenv", "-c", str(self.fw_config), name, value], check=True)
        self.push_env()

    def power_on(self) -> str:
        """One power-on; U-Boot's console up to the script's reset."""
        proc = subprocess.run(
            ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-m", "256",
             "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
             "-bios", str(uboot.QEMU_UBOOT),
             "-drive", f"file={self.disk},format=raw,if=virtio"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        return proc.stdout


def booted(console: str) -> str:
    match = BOOTING.search(console)
    assert match, f"U-Boot's script chose no slot:\n{console[-3000:]}"
    return match.group(1)


@pytest.fixture
def card(tmp_path: Path) -> Card:
    return Card(tmp_path)


def test_factory_card_boots_a_from_its_partition_and_counts_the_attempt(card: Card) -> None:
    assert card.env() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    console = card.power_on()
    assert booted(console) == "A"
    args = BOOTARGS.search(console)
    assert args, console[-2000:]
    partuuid = f"{card.layout.disk_id[2:]}-02"  # read from the partition table by U-Boot
    assert f"root=PARTUUID={partuuid} " in args.group(1)
    assert "rauc.slot=A" in args.group(1) and CONSOLE in args.group(1)
    assert "Failed to load '/vmlinuz'" in console  # it went on to load slot A's own kernel
    assert card.env()["BOOT_A_LEFT"] == "2"  # saved before booting: until mark-good


def test_installed_slot_gets_its_attempts_then_the_old_one_comes_back(card: Card) -> None:
    # what RAUC leaves after installing into B: B first with its attempts
    card.set_env(BOOT_ORDER="B A", BOOT_A_LEFT="3", BOOT_B_LEFT="2")
    console = card.power_on()
    assert booted(console) == "B"
    assert f"root=PARTUUID={card.layout.disk_id[2:]}-04 " in console
    assert booted(card.power_on()) == "B"
    # B never marked itself good (it hung, failed its check, lost power twice): A comes back
    assert booted(card.power_on()) == "A"
    assert card.env() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}


def test_no_attempts_left_tries_the_slot_active_before_again(card: Card) -> None:
    card.set_env(BOOT_ORDER="B A", BOOT_A_LEFT="0", BOOT_B_LEFT="0")
    console = card.power_on()
    assert "no slot has attempts left; trying A again" in console
    assert booted(console) == "A"


def test_damaged_state_boots_the_factory_slot(card: Card) -> None:
    card.set_env(BOOT_ORDER="B A", BOOT_B_LEFT="3")
    env = card.pull_env()
    data = bytearray(env.read_bytes())
    data[10] ^= 0xFF  # a torn write: the CRC no longer matches
    env.write_bytes(bytes(data))
    card.push_env()
    console = card.power_on()
    assert "is damaged; factory slot state" in console
    assert booted(console) == "A"
    # and the script wrote a whole state back
    assert card.env() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}


def test_machine_id_and_extra_arguments_reach_the_command_line(card: Card) -> None:
    card.set_env(MACHINE_ID="0123456789abcdef0123456789abcdef",
                 EXTRA_CMDLINE="systemd.mask=offhook.service")  # fmt: skip
    console = card.power_on()
    args = BOOTARGS.search(console)
    assert args, console[-2000:]
    assert "systemd.machine_id=0123456789abcdef0123456789abcdef" in args.group(1)
    assert args.group(1).rstrip().endswith("systemd.mask=offhook.service")
    assert card.env()["MACHINE_ID"] == "0123456789abcdef0123456789abcdef"


@pytest.mark.skipif(bool(rauc_system.available()), reason=rauc_system.available() or "-")
def test_real_rauc_and_real_uboot_agree_on_the_slot_protocol(card: Card, tmp_path: Path) -> None:
    """RAUC 1.8's uboot backend writes the state, U-Boot's script reads it: install (mark-active
    of the other slot), the trial boot, mark-good, and mark-bad sending the phone back."""
    pair = development_pair(tmp_path / "keys")
    system = RaucSystem(root=tmp_path / "rauc", keyring=pair.cert, bootloader="uboot")
    system.root.mkdir()
    system.setup()
    try:

        def rauc(*args: str) -> str:
            proc = subprocess.run(["rauc", *args], capture_output=True, text=True, check=False,
                                  env={**os.environ, **system.env})  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        def sync_to_card() -> None:
            shutil.copyfile(system.uboot_env_path, card.env_file)
            card.push_env()

        def sync_from_card(booted_slot: str) -> None:
            shutil.copyfile(card.pull_env(), system.uboot_env_path)
            system.stop_service()
            system.booted = booted_slot
            system.start_service()

        rauc("status", "mark-active", "other")  # what an installation into B ends with
        sync_to_card()
        assert card.env()["BOOT_ORDER"] == "B A"
        assert card.env()["BOOT_B_LEFT"] == str(uboot.BOOT_ATTEMPTS)
        assert booted(card.power_on()) == "B"
        sync_from_card("B")
        rauc("status", "mark-good", "booted")  # the phone's health check passed
        sync_to_card()
        assert card.env()["BOOT_B_LEFT"] == str(uboot.BOOT_ATTEMPTS)
        assert booted(card.power_on()) == "B"
        sync_from_card("B")
        rauc("status", "mark-bad", "booted")  # the slot watchdog gave up on B
        sync_to_card()
        assert card.env()["BOOT_B_LEFT"] == "0"
        assert booted(card.power_on()) == "A"
    finally:
        system.close()
