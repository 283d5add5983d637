"""What differs between the boards an image can be built for: packages, kernel, boot files."""

from __future__ import annotations

from dataclasses import dataclass

from offhook.image.layout import MIB
from offhook.image.rootfs import INITRAMFS_MODULES, Recipe

# Debian's kernel uses the upstream device trees (config.txt: upstream_kernel=1): the GPIO 14/15
# UART is the mini UART, serial1 -> ttyS1, while serial0 (PL011, ttyAMA0) drives Bluetooth. The
# firmware would rewrite "serial0" to the downstream kernel's ttyS0, so the name is given.
PI_CONSOLES = "ttyS1,115200 tty1"


# The generic amd64 kernel's modules are ~390 MB; a QEMU guest needs virtio, ext4/vfat, netfilter
# and sound. dpkg leaves these directories out (written before apt installs the kernel, so depmod
# in its postinst sees only what is there): ~200 MB less on the card.
QEMU_MODULE_EXCLUDES = "/etc/dpkg/dpkg.cfg.d/offhook-kernel-modules"
QEMU_UNNEEDED_MODULE_DIRS = (
    "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/net/wireless",
    "drivers/net/ethernet", "drivers/isdn", "drivers/staging", "drivers/iio", "drivers/comedi",
    "drivers/bluetooth", "drivers/target", "drivers/mtd", "drivers/net/can",
    "net/bluetooth", "net/mac80211", "net/wireless", "sound/soc", "sound/firewire", "sound/usb",
    "fs/xfs", "fs/btrfs", "fs/ocfs2", "fs/nfs", "fs/nfsd", "fs/smb", "fs/gfs2", "fs/f2fs",
    "fs/jfs", "fs/ceph",
)  # fmt: skip


def qemu_module_excludes() -> str:
    return "".join(f"path-exclude=/lib/modules/*/kernel/{d}/*\n" for d in QEMU_UNNEEDED_MODULE_DIRS)


@dataclass(frozen=True)
class Board:
    name: str
    arch: str
    recipe: Recipe
    console: str  # kernel console argument
    boot_size: int
    # PyPI has pjsua2 wheels for x86_64 only; others get one given, cached or compiled.
    needs_pjsua2_wheel: bool
    firmware_extras: tuple[str, ...] = ()
    # A/B updates (docs/updates.md): each root slot's fixed size (an update must fit the slot of
    # every card already out there, so it does not follow the tree), and the slots' devices as
    # the running system sees them. 0: one root partition, no RAUC.
    slot_size: int = 0
    slot_devices: tuple[str, str] = ("", "")
    # what chooses the slot at power-on, and RAUC's backend for it: "grub" or "uboot"
    bootloader: str = ""

    @property
    def ab_slots(self) -> bool:
        return self.slot_size > 0

    @property
    def compatible(self) -> str:
        """RAUC's compatible string: a bundle for another board is refused by the phone."""
        return f"offhook-{self.name}"


def board(name: str, mirror: str) -> Board:
    if name == "qemu-amd64":
        return Board(
            name=name,
            arch="amd64",
            recipe=Recipe(
                arch="amd64",
                # Not the cloud kernel: it is built without sound (CONFIG_SOUND unset), and the
                # phone under QEMU plays and captures through a real kernel driver (intel-hda).
                kernel_packages=("linux-image-amd64",),
                # RAUC installs updates (rauc-service: its D-Bus daemon, unit and bus policy;
                # the rauc command is only the client); grub-editenv is how it reads and sets
                # the slot state.
                extra_packages=("rauc", "rauc-service", "grub-common", "squashfs-tools"),
                mirror=mirror,
                initramfs_modules=INITRAMFS_MODULES["amd64"],
                files={QEMU_MODULE_EXCLUDES: qemu_module_excludes()},
            ),
            console="console=ttyS0,115200",
            boot_size=128 * MIB,
            needs_pjsua2_wheel=False,
            slot_size=1024 * MIB,
            slot_devices=("/dev/vda2", "/dev/vda4"),
            bootloader="grub",
        )
    if name == "rpi":
        return Board(
            name=name,
            arch="arm64",
            recipe=Recipe(
                arch="arm64",
                kernel_packages=("linux-image-arm64", "raspi-firmware"),
                # wireless-regdb: cfg80211's regulatory.db, without which the seed's Wi-Fi
                # country cannot be applied (the kernel stays on the world domain).
                extra_packages=(
                    "firmware-brcm80211",
                    "wireless-regdb",
                    "wpasupplicant",
                    "i2c-tools",
                    # Opus in the compiled pjsua2 links against it.
                    "libopus0",
                    # A/B updates: RAUC's service and client; U-Boot (the Pi firmware loads it,
                    # its boot script picks the slot); fw_printenv/fw_setenv, through which
                    # RAUC's uboot backend reads and sets the slot state.
                    "rauc",
                    "rauc-service",
                    "squashfs-tools",
                    "u-boot-rpi",
                    "libubootenv-tool",
                ),
                components=("main", "non-free-firmware"),
                mirror=mirror,
                initramfs_modules=INITRAMFS_MODULES["arm64"],
                # raspi-firmware's kernel hook writes config.txt and cmdline.txt from these
                # settings (the build then writes its own cmdline.txt, same consoles).
                files={
                    "/etc/default/raspi-firmware": (
                        f'ROOTPART=LABEL=OFFHOOK-ROOT\nCONSOLES="{PI_CONSOLES}"\n'
                    ),
                    "/etc/default/raspi-extra-cmdline": "ro fsck.repair=yes\n",
                },
            ),
            console=" ".join(f"console={c}" for c in PI_CONSOLES.split()),
            boot_size=256 * MIB,
            needs_pjsua2_wheel=True,
            firmware_extras=("pi",),
            # 1.1 GiB of root today: room to grow, as the slot size is fixed for every card
            # flashed. The devices are links made at boot to the partitions of the card the
            # root is on (mmcblk0 on a Pi, vda under QEMU): offhook-rauc-slots.
            slot_size=1536 * MIB,
            slot_devices=("/run/offhook/slots/A", "/run/offhook/slots/B"),
            bootloader="uboot",
        )
    raise ValueError(f"unknown board {name!r}: choose rpi or qemu-amd64")
