"""The signed RAUC update bundle written beside the image, and the image's RAUC configuration.

A bundle holds one image, the new root filesystem (``rootfs.ext4``: the root partition of the
image just built, byte for byte), for the slot class ``rootfs``. Format ``verity``: the
squashfs carries a dm-verity hash tree whose root hash is in the signed manifest, so the phone
checks every block it reads while installing (and RAUC can stream it). The manifest's
``compatible`` is the board's (``offhook-qemu-amd64``): a phone refuses another board's bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.contract.signing import SigningPair
from offhook.image import uboot
from offhook.image.boards import Board
from offhook.image.uboot import FW_ENV_CONFIG

KEYRING = "/etc/rauc/keyring.pem"
SYSTEM_CONF = "/etc/rauc/system.conf"
GRUBENV = "/boot/firmware/grub/grubenv"
RAUC_DATA = "/data/rauc"  # RAUC's slot status (installed bundle versions) survives updates
# zstd: several times faster to build than squashfs's default gzip, smaller, and read by
# Debian's kernel (CONFIG_SQUASHFS_ZSTD)
MKSQUASHFS_ARGS = "-comp zstd -Xcompression-level 9"


class BundleError(OffhookError, RuntimeError):
    """``rauc bundle`` or ``rauc info`` failed, or a bundle is not what it should be."""


def bootloader_lines(target: Board) -> str:
    """system.conf's backend: GRUB's grubenv, or U-Boot's environment through fw_setenv
    (/etc/fw_env.config names the file; image/uboot.py) with the attempts its script counts."""
    if target.bootloader == "grub":
        return f"bootloader=grub\ngrubenv={GRUBENV}\n"
    if target.bootloader == "uboot":
        return (
            "bootloader=uboot\n"
            f"boot-attempts={uboot.BOOT_ATTEMPTS}\nboot-attempts-primary={uboot.BOOT_ATTEMPTS}\n"
        )
    raise BundleError(f"board {target.name}: no RAUC backend for bootloader {target.bootloader!r}")


def system_conf(target: Board) -> str:
    """/etc/rauc/system.conf: two root slots chosen by the board's bootloader, bundles checked
    against the keyring."""
    slot_a, slot_b = target.slot_devices
    return (
        "[system]\n"
        f"compatible={target.compatible}\n"
        + bootloader_lines(target)
        + f"data-directory={RAUC_DATA}\n"
        # RAUC mounts bundles under /mnt/rauc by default, which it cannot create on a read-only
        # root: /run is a tmpfs
        "mountprefix=/run/rauc\n"
        "bundle-formats=-plain\n"
        "\n[keyring]\n"
        f"path={KEYRING}\n"
        "\n[slot.rootfs.0]\n"
        f"device={slot_a}\ntype=ext4\nbootname=A\n"
        "\n[slot.rootfs.1]\n"
        f"device={slot_b}\ntype=ext4\nbootname=B\n"
    )


def install_rauc_config(tree: Path, target: Board, pair: SigningPair) -> None:
    """system.conf and the keyring (the signing certificate) into the root tree."""
    rauc = tree / "etc/rauc"
    rauc.mkdir(parents=True, exist_ok=True)
    (rauc / "system.conf").write_text(system_conf(target))
    shutil.copyfile(pair.cert, rauc / "keyring.pem")
    if target.bootloader == "uboot":
        (tree / FW_ENV_CONFIG.lstrip("/")).write_text(uboot.fw_env_config())


def manifest(compatible: str, version: str, image_name: str, fmt: str = "verity") -> str:
    return (
        f"[update]\ncompatible={compatible}\nversion={version}\n"
        f"\n[bundle]\nformat={fmt}\n"
        f"\n[image.rootfs]\nfilename={image_name}\n"
    )


def _rauc(args: list[str], what: str) -> str:
    proc = subprocess.run(["rauc", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BundleError(f"{what} failed (exit {proc.returncode}): {' '.join(detail[-3:])}")
    return proc.stdout


def write_bundle(
    rootfs: Path,
    out: Path,
    *,
    compatible: str,
    version: str,
    pair: SigningPair,
    workdir: Path,
    fmt: str = "verity",
) -> Path:
    """``rauc bundle`` of ``rootfs`` (moved into the bundle's content directory) into ``out``."""
    content = workdir / "bundle-content"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    shutil.move(str(rootfs), content / "rootfs.ext4")
    (content / "manifest.raucm").write_text(manifest(compatible, version, "rootfs.ext4", fmt))
    out.unlink(missing_ok=True)
    try:
        _rauc(
            [
                "bundle",
                f"--cert={pair.cert}",
                f"--key={pair.key}",
                f"--mksquashfs-args={MKSQUASHFS_ARGS}",
                str(content),
                str(out),
            ],
            "rauc bundle",
        )
    finally:
        shutil.rmtree(content, ignore_errors=True)
    return out


def bundle_info(bundle: Path, keyring: Path) -> dict:
    """``rauc info`` checked against ``keyring``: raises BundleError when the signature fails."""
    text = _rauc(["info", "--output-format=json", f"--keyring={keyring}", str(bundle)], "rauc info")
    return json.loads(text[text.index("{") :])
