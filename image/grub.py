"""GRUB for the qemu-amd64 card: BIOS (SeaBIOS) boot from the MBR, A/B slot choice from grubenv.

Written without ``grub-install`` (which wants a block device and mounts): ``grub-mkimage``
makes ``core.img`` with every module the configuration needs and the boot partition as prefix,
then the MBR gets GRUB's ``boot.img`` (the first 440 bytes: the partition table and disk id
stay) pointing at ``core.img`` in the gap before the first partition (sector 1 on; the 4 MiB
alignment leaves 8191 sectors). This is what ``grub-bios-setup`` does for an embedded core.

The configuration (``grub/grub.cfg`` on the FAT boot partition) implements the protocol of
RAUC's grub backend (docs/updates.md): ``ORDER`` lists the slots by preference, ``<slot>_OK=1``
says a slot may be booted, ``<slot>_TRY=1`` that it was started and has not been marked good
since. Each boot takes the first slot of ORDER that is OK and not tried, sets its TRY before
booting it (``save_env``), and ``rauc status mark-good`` clears it again. A slot that does not
mark itself good (it hung, the phone failed its health check, the power was cut) is skipped at
the next boot, so the previous slot comes back.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.image.layout import ALIGN, SECTOR, Layout

GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")  # Debian's grub-pc-bin
# biosdisk/part_msdos/fat find the configuration; ext2/linux load a slot's kernel; loadenv
# keeps the slot state; serial puts GRUB's lines on the console log the boot test reads.
CORE_MODULES = (
    "biosdisk", "part_msdos", "fat", "ext2", "normal", "configfile", "linux", "loadenv",
    "test", "echo", "serial", "terminal", "reboot", "sleep",
)  # fmt: skip
BOOT_IMG_CODE = 440  # boot.img bytes that go into the MBR: the rest is disk id and table
KERNEL_SECTOR_OFFSET = 0x5C  # boot.img: LBA of core.img's first sector (GRUB_BOOT_MACHINE_...)
DRIVE_CHECK_OFFSET = 0x66  # boot.img: jump over the BIOS drive number workaround
GRUBENV_SIZE = 1024
SLOT_PARTITIONS = {"A": 2, "B": 4}  # bootname -> partition number (layout.py)
GRUB_DIR = "grub"  # on the boot partition


class GrubError(OffhookError, RuntimeError):
    """GRUB's images cannot be made or do not fit the disk."""


def grub_cfg(disk_id: str, console: str) -> str:
    """grub.cfg for the A/B card; ``disk_id`` as the layout gives it (0x + 8 hex digits)."""
    partuuid = disk_id.removeprefix("0x")
    return f"""\
# offhook A/B boot (RAUC grub backend: ORDER, A_OK, A_TRY, B_OK, B_TRY in grub/grubenv)
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set ORDER="A B"
set A_OK=0
set A_TRY=0
set B_OK=0
set B_TRY=0
set MACHINE_ID=""
set EXTRA_CMDLINE=""
load_env --file=(hd0,msdos1)/{GRUB_DIR}/grubenv

set slot=""
for s in $ORDER; do
  if [ -z "$slot" -a "$s" = "A" -a "$A_OK" = "1" -a "$A_TRY" = "0" ]; then
    set slot=A
    set A_TRY=1
  fi
  if [ -z "$slot" -a "$s" = "B" -a "$B_OK" = "1" -a "$B_TRY" = "0" ]; then
    set slot=B
    set B_TRY=1
  fi
done
if [ -z "$slot" ]; then
  # Every good slot was tried without being marked good: start over with the first good one
  # of ORDER, and give the other its turn next time (no rescue system on this card).
  for s in $ORDER; do
    if [ -z "$slot" -a "$s" = "A" -a "$A_OK" = "1" ]; then set slot=A; fi
    if [ -z "$slot" -a "$s" = "B" -a "$B_OK" = "1" ]; then set slot=B; fi
  done
  if [ -z "$slot" ]; then set slot=A; fi
  echo "offhook-grub: no untried good slot; trying $slot again"
  if [ "$slot" = "A" ]; then set A_TRY=1; set B_TRY=0; else set B_TRY=1; set A_TRY=0; fi
fi
save_env --file=(hd0,msdos1)/{GRUB_DIR}/grubenv A_TRY A_OK B_TRY B_OK ORDER

if [ "$slot" = "A" ]; then set part={SLOT_PARTITIONS["A"]}; else set part={SLOT_PARTITIONS["B"]}; fi
if [ -n "$MACHINE_ID" ]; then set mid="systemd.machine_id=$MACHINE_ID"; else set mid=""; fi
echo "offhook-grub: booting slot $slot ORDER=$ORDER A_OK=$A_OK A_TRY=$A_TRY B_OK=$B_OK B_TRY=$B_TRY"
linux (hd0,msdos$part)/vmlinuz root=PARTUUID={partuuid}-0$part rootfstype=ext4 ro panic=-1 \
{console} rauc.slot=$slot $mid $EXTRA_CMDLINE
initrd (hd0,msdos$part)/initrd.img
boot
echo "offhook-grub: slot $slot did not boot; rebooting"
sleep 3
reboot
"""


def initial_grubenv(path: Path) -> None:
    """The factory state: slot A good and first, slot B empty (not bootable)."""
    path.unlink(missing_ok=True)
    for args in (["create"], ["set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"]):
        proc = subprocess.run(
            ["grub-editenv", str(path), *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise GrubError(f"grub-editenv {args[0]} failed: {proc.stderr.strip()}")
    if path.stat().st_size != GRUBENV_SIZE:
        raise GrubError(f"{path} is {path.stat().st_size} bytes; GRUB writes only 1024-byte envs")


def boot_tree(boot: Path, disk_id: str, console: str) -> None:
    """grub.cfg and grubenv on the boot partition's tree."""
    directory = boot / GRUB_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "grub.cfg").write_text(grub_cfg(disk_id, console))
    initial_grubenv(directory / "grubenv")


def core_image(out: Path, modules_dir: Path = GRUB_PC_DIR) -> Path:
    """core.img (i386-pc) with the boot partition's grub directory as prefix."""
    if not (modules_dir / "boot.img").is_file():
        raise GrubError(f"{modules_dir}/boot.img not found: install Debian's grub-pc-bin")
    proc = subprocess.run(
        [
            "grub-mkimage", "-O", "i386-pc", "-d", str(modules_dir), "-o", str(out),
            "-p", f"(hd0,msdos1)/{GRUB_DIR}", *CORE_MODULES,
        ],
        capture_output=True, text=True, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "1700000000")},
    )  # fmt: skip
    if proc.returncode != 0:
        raise GrubError(f"grub-mkimage failed: {proc.stderr.strip()}")
    return out


def install_mbr(image: Path, layout: Layout, core: Path, modules_dir: Path = GRUB_PC_DIR) -> None:
    """boot.img into the MBR's code area and core.img from sector 1, as grub-bios-setup does
    for a core embedded after the MBR."""
    boot_img = bytearray((modules_dir / "boot.img").read_bytes())
    core_img = bytearray(core.read_bytes())
    first = min(part.start for part in layout.partitions)
    if SECTOR + len(core_img) > first or first < ALIGN:
        raise GrubError(f"core.img ({len(core_img)} bytes) does not fit before the first partition")
    # The core's first sector (diskboot) loads the rest: its blocklist names sectors 2.. here.
    boot_img[KERNEL_SECTOR_OFFSET : KERNEL_SECTOR_OFFSET + 8] = (1).to_bytes(8, "little")
    boot_img[DRIVE_CHECK_OFFSET : DRIVE_CHECK_OFFSET + 2] = b"\x90\x90"  # a hard disk, not floppy
    sectors = -(-len(core_img) // SECTOR)
    blocklist = SECTOR - 12  # struct grub_pc_bios_boot_blocklist {u64 start; u16 len; u16 seg}
    core_img[blocklist : blocklist + 8] = (2).to_bytes(8, "little")
    core_img[blocklist + 8 : blocklist + 10] = (sectors - 1).to_bytes(2, "little")
    with open(image, "r+b") as fh:
        fh.seek(0)
        fh.write(boot_img[:BOOT_IMG_CODE])
        fh.seek(SECTOR)
        fh.write(core_img)
