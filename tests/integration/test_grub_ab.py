"""The A/B card's real GRUB (i386-pc, from Debian's grub-pc-bin, installed into the MBR by
image/grub.py) under QEMU's SeaBIOS: which slot it picks from grubenv and what it saves back.

The slots hold no kernel here, so GRUB says which slot it boots, fails to load it and reboots,
which ends QEMU (-no-reboot): a few seconds per power-on. The full image boots a real kernel the
same way (tests/integration/test_image_full.py, test_update_qemu.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.image import grub
from offhook.image.assemble import Contents, assemble
from offhook.image.layout import MIB, plan_layout, read_partition_table

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-system-x86_64") and (grub.GRUB_PC_DIR / "boot.img").is_file()),
    reason="needs qemu-system-x86 and grub-pc-bin (scripts/setup.sh)",
)
BOOTING = re.compile(r"offhook-grub: booting slot (\w)")
MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@pytest.fixture
def card(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    layout = plan_layout(boot_size=128 * MIB, root_size=16 * MIB, data_size=8 * MIB, slot_b=True)
    grub.boot_tree(boot, layout.disk_id, "console=ttyS0,115200")
    disk = tmp_path / "card.img"
    assemble(disk, layout, Contents(boot=boot, root=root, data=None), tmp_path / "parts")
    grub.install_mbr(disk, layout, grub.core_image(tmp_path / "core.img"))
    return disk


def offset(disk: Path) -> int:
    return read_partition_table(disk)[0].start


def env_of(disk: Path, tmp: Path) -> dict[str, str]:
    dest = tmp / "grubenv.out"
    dest.unlink(missing_ok=True)
    subprocess.run(["mcopy", "-i", f"{disk}@@{offset(disk)}", "::/grub/grubenv", str(dest)],
                   check=True, env=MTOOLS)  # fmt: skip
    listed = subprocess.run(["grub-editenv", str(dest), "list"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in listed.splitlines())


def set_env(disk: Path, tmp: Path, **values: str) -> None:
    env = tmp / "grubenv.in"
    env.unlink(missing_ok=True)
    subprocess.run(["mcopy", "-i", f"{disk}@@{offset(disk)}", "::/grub/grubenv", str(env)],
                   check=True, env=MTOOLS)  # fmt: skip
    subprocess.run(["grub-editenv", str(env), "set", *(f"{k}={v}" for k, v in values.items())],
                   check=True)  # fmt: skip
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{offset(disk)}", str(env), "::/grub/grubenv"],
                   check=True, env=MTOOLS)  # fmt: skip


def power_on(disk: Path) -> str:
    """One power-on; the console up to GRUB's reboot."""
    proc = subprocess.run(
        ["qemu-system-x86_64", "-m", "128", "-nodefaults", "-display", "none", "-no-reboot",
         "-serial", "stdio", "-drive", f"file={disk},format=raw,if=virtio"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.stdout


def booted(console: str) -> str:
    match = BOOTING.search(console)
    assert match, f"GRUB chose no slot:\n{console[-2000:]}"
    return match.group(1)


def test_factory_card_boots_a_and_marks_it_tried(card: Path, tmp_path: Path) -> None:
    assert env_of(card, tmp_path) == {"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0",
                                      "B_TRY": "0"}  # fmt: skip
    console = power_on(card)
    assert booted(console) == "A"
    assert "/vmlinuz' not found" in console  # it went on to load slot A's kernel
    assert env_of(card, tmp_path)["A_TRY"] == "1"  # saved before booting: until mark-good


def test_installed_slot_is_tried_once_then_skipped(card: Path, tmp_path: Path) -> None:
    # what RAUC leaves after installing into B, with A marked good on its last boot
    set_env(card, tmp_path, ORDER="B A", A_OK="1", A_TRY="0", B_OK="1", B_TRY="0")
    assert booted(power_on(card)) == "B"
    assert env_of(card, tmp_path)["B_TRY"] == "1"
    # B never marked itself good (it hung, failed its check, lost power): A comes back
    assert booted(power_on(card)) == "A"
    env = env_of(card, tmp_path)
    assert (env["ORDER"], env["B_TRY"], env["A_TRY"]) == ("B A", "1", "1")


def test_slot_marked_bad_is_never_booted(card: Path, tmp_path: Path) -> None:
    set_env(card, tmp_path, ORDER="B A", A_OK="1", A_TRY="0", B_OK="0", B_TRY="0")
    assert booted(power_on(card)) == "A"


def test_every_good_slot_tried_starts_over_with_the_first(card: Path, tmp_path: Path) -> None:
    set_env(card, tmp_path, ORDER="B A", A_OK="1", A_TRY="1", B_OK="1", B_TRY="1")
    console = power_on(card)
    assert "no untried good slot; trying B again" in console
    assert booted(console) == "B"
    env = env_of(card, tmp_path)
    assert (env["B_TRY"], env["A_TRY"]) == ("1", "0")  # A gets its turn next
    assert booted(power_on(card)) == "A"


def test_machine_id_and_extra_arguments_reach_the_command_line(card: Path, tmp_path: Path) -> None:
    set_env(card, tmp_path, MACHINE_ID="0123456789abcdef0123456789abcdef",
            EXTRA_CMDLINE="systemd.mask=offhook.service")  # fmt: skip
    console = power_on(card)
    assert booted(console) == "A"
    # GRUB echoes nothing of the linux line; the saved env must not have lost the id
    assert env_of(card, tmp_path)["MACHINE_ID"] == "0123456789abcdef0123456789abcdef"
