"""U-Boot for the Raspberry Pi card: A/B slot choice by a boot script, in RAUC's ``uboot`` protocol.

The Pi's firmware loads Debian's U-Boot (``u-boot-rpi``, ``rpi_arm64``: Pi 3 and 4 in 64-bit
mode) as its kernel (``config.txt``: ``kernel=u-boot.bin``). U-Boot's distro boot finds
``boot.scr`` on the FAT boot partition and runs it; the same script runs unchanged under
Debian's ``u-boot-qemu`` (``qemu_arm64``) on ``qemu-system-aarch64 -M virt``, which is how the
tests boot it. The script:

- reads the slot state from ``offhook/ab.env`` on the boot partition: a U-Boot environment
  block (CRC32 and ``name=value`` pairs, ``ENV_SIZE`` bytes), the format ``fw_printenv`` and
  ``fw_setenv`` (``libubootenv-tool``) read and write on Linux through ``/etc/fw_env.config``,
  which is how RAUC's ``uboot`` backend changes it;
- holds ``BOOT_ORDER`` (slots by preference) and ``BOOT_<slot>_LEFT`` (boot attempts left): the
  first slot of the order with attempts left is booted and its count is decremented and saved
  before the kernel starts. ``rauc status mark-good`` puts the count back, ``mark-bad`` sets it
  to 0, an installation puts the new slot first (``mark-active``). A slot that never marks
  itself good (it hangs, fails the phone's health check, loses power) runs out of attempts and
  the next slot of the order boots: the previous firmware;
- when no slot has attempts left, gives the last slot of the order (the one that was active
  before the latest installation) one more attempt rather than stopping: the card has no
  rescue system, and a Pi without a display gives no other sign of life.

The kernel and initramfs come from the chosen slot's ext4 (``/vmlinuz``, ``/initrd.img``), so an
update brings its own kernel; the device tree is the one the firmware (or QEMU) passed to U-Boot.
The root is named by PARTUUID, read from the partition table at boot (``part uuid``), so the same
script boots any build's card. The environment is kept in a file of our own, not U-Boot's
``uboot.env``: ``saveenv`` would write every default variable of the U-Boot build there, and
``env export`` of the three slot variables is the same on every board.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from offhook.contract.errors import OffhookError

ENV_DIR = "offhook"  # on the boot partition
ENV_NAME = "ab.env"
ENV_FILE = f"{ENV_DIR}/{ENV_NAME}"
ENV_SIZE = 0x4000  # bytes: what fw_env.config and the script's import/export both say
SCRIPT_NAME = "boot.scr"  # what U-Boot's distro boot looks for on the boot partition
SLOT_PARTITIONS = {"A": 2, "B": 4}  # bootname -> partition number (layout.py)
# what the script keeps in the file: RAUC's slot state, and what the first boot and the boot
# test add to the command line
STATE_VARIABLES = ("BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "MACHINE_ID", "EXTRA_CMDLINE")
BOOT_ATTEMPTS = 3  # RAUC's boot-attempts: tries a slot gets after mark-good or mark-active
FW_ENV_CONFIG = "/etc/fw_env.config"
BOOT_MOUNT = "/boot/firmware"
# Debian's u-boot-rpi in the card's root tree: the 64-bit build for the Pi 3 and 4
RPI_UBOOT = "usr/lib/u-boot/rpi_arm64/u-boot.bin"
QEMU_UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")  # Debian's u-boot-qemu on the host
UBOOT_KERNEL_NAME = "u-boot.bin"  # on the boot partition, named by config.txt


class UbootError(OffhookError, RuntimeError):
    """The boot script or the slot environment cannot be made."""


def boot_cmd(console: str) -> str:
    """The boot script's source (compiled by ``mkimage`` into ``boot.scr``)."""
    a, b = SLOT_PARTITIONS["A"], SLOT_PARTITIONS["B"]
    kept = " ".join(STATE_VARIABLES)
    bootargs = (
        "root=PARTUUID=${rootuuid} rootfstype=ext4 ro rootwait fsck.repair=yes net.ifnames=0 "
        f"panic=-1 {console} rauc.slot=${{slot}} ${{mid}} ${{EXTRA_CMDLINE}}"
    )
    state = "BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
    return f"""\
# offhook A/B boot (RAUC's uboot backend: BOOT_ORDER, BOOT_A_LEFT, BOOT_B_LEFT in {ENV_FILE})
setenv BOOT_ORDER A
setenv BOOT_A_LEFT {BOOT_ATTEMPTS}
setenv BOOT_B_LEFT 0
setenv MACHINE_ID
setenv EXTRA_CMDLINE
setexpr offhook_env ${{kernel_addr_r}} + 0
if load ${{devtype}} ${{devnum}}:1 ${{offhook_env}} {ENV_FILE}; then
  if env import -c ${{offhook_env}} {ENV_SIZE:#x} {kept}; then
    echo "offhook-uboot: slot state read"
  else
    echo "offhook-uboot: {ENV_FILE} is damaged; factory slot state"
  fi
else
  echo "offhook-uboot: no {ENV_FILE}; factory slot state"
fi

setenv slot
setenv last
for s in ${{BOOT_ORDER}}; do
  setenv last ${{s}}
  if test -z "${{slot}}"; then
    if test "${{s}}" = A && test ${{BOOT_A_LEFT}} -gt 0; then
      setexpr BOOT_A_LEFT ${{BOOT_A_LEFT}} - 1
      setenv slot A
    elif test "${{s}}" = B && test ${{BOOT_B_LEFT}} -gt 0; then
      setexpr BOOT_B_LEFT ${{BOOT_B_LEFT}} - 1
      setenv slot B
    fi
  fi
done
if test -z "${{slot}}"; then
  if test "${{last}}" = B; then setenv slot B; else setenv slot A; fi
  echo "offhook-uboot: no slot has attempts left; trying ${{slot}} again"
fi
if test "${{slot}}" = A; then setenv part {a}; else setenv part {b}; fi

env export -c -s {ENV_SIZE:#x} ${{offhook_env}} {kept}
if fatwrite ${{devtype}} ${{devnum}}:1 ${{offhook_env}} {ENV_FILE} {ENV_SIZE:#x}; then
  true
else
  echo "offhook-uboot: slot state not saved"
fi

part uuid ${{devtype}} ${{devnum}}:${{part}} rootuuid
setenv mid
if test -n "${{MACHINE_ID}}"; then setenv mid systemd.machine_id=${{MACHINE_ID}}; fi
setenv bootargs "{bootargs}"
echo "offhook-uboot: booting slot ${{slot}} {state}"
echo "offhook-uboot: bootargs ${{bootargs}}"
# the initramfs 64 MiB above the kernel: Debian's arm64 kernel is ~33 MiB unpacked
setexpr offhook_initrd ${{kernel_addr_r}} + 0x4000000
if load ${{devtype}} ${{devnum}}:${{part}} ${{kernel_addr_r}} /vmlinuz; then
  if load ${{devtype}} ${{devnum}}:${{part}} ${{offhook_initrd}} /initrd.img; then
    booti ${{kernel_addr_r}} ${{offhook_initrd}}:${{filesize}} ${{fdt_addr}}
  fi
fi
echo "offhook-uboot: slot ${{slot}} did not boot; resetting"
sleep 3
reset
"""


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UbootError(f"{cmd[0]} not found: install Debian's u-boot-tools") from None
    if proc.returncode != 0:
        raise UbootError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()}")


def boot_script(out: Path, console: str) -> Path:
    """``boot.scr``: the script wrapped for U-Boot's ``source`` (``mkimage -T script``)."""
    source = out.with_suffix(".cmd")
    source.write_text(boot_cmd(console))
    _run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none",
          "-n", "offhook A/B", "-d", str(source), str(out)], "mkimage")  # fmt: skip
    source.unlink()
    return out


def env_pairs(values: dict[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def write_env(path: Path, values: dict[str, str]) -> Path:
    """A U-Boot environment block holding ``values`` (``mkenvimage``: CRC32 and the pairs)."""
    source = path.with_suffix(".txt")
    source.write_text(env_pairs(values))
    _run(["mkenvimage", "-s", str(ENV_SIZE), "-o", str(path), str(source)], "mkenvimage")
    source.unlink()
    return path


FACTORY_STATE = {"BOOT_ORDER": "A", "BOOT_A_LEFT": str(BOOT_ATTEMPTS), "BOOT_B_LEFT": "0"}


def fw_env_config(env_path: str = f"{BOOT_MOUNT}/{ENV_FILE}") -> str:
    """/etc/fw_env.config: libubootenv's fw_printenv/fw_setenv on the boot partition's file."""
    return (
        "# offhook: the A/B slot state U-Boot's boot script reads (image/uboot.py)\n"
        f"{env_path} 0x0000 {ENV_SIZE:#06x}\n"
    )


def boot_tree(boot: Path, console: str) -> None:
    """boot.scr and the factory slot state on the boot partition's tree."""
    boot_script(boot / SCRIPT_NAME, console)
    (boot / ENV_DIR).mkdir(parents=True, exist_ok=True)
    write_env(boot / ENV_FILE, FACTORY_STATE)
