"""A quick real boot of an offhook disk layout: Debian's kernel, a busybox initramfs, QEMU.

The full boot test needs a full image (minutes to build). This one checks in seconds what the
layout promises to a real Linux kernel: the MBR table is read, the labelled filesystems mount
(root read-only, the FAT boot partition, the data partition read-write), the seed that ``flash``
wrote with mtools is readable by the kernel's vfat driver, and what the guest writes to the data
partition is there afterwards. The kernel and busybox come from Debian packages
(``apt-get download``, cached); the initramfs is a newc cpio archive written here.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError

KERNEL_META = "linux-image-cloud-amd64"
MODULES = ("virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii")
READY = re.compile(r"offhook-miniboot: ready hostname=(\S+) root=(\S+)")
FAILED = re.compile(r"offhook-miniboot: FAILED (.*)")


class MinibootError(OffhookError, RuntimeError):
    """Packages could not be fetched, or the guest did not reach its marker."""


def _run(cmd: list[str], cwd: Path | None = None, what: str = "") -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MinibootError(f"{what or cmd[0]} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def kernel_package() -> str:
    """The versioned kernel package the cloud metapackage points at."""
    shown = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", KERNEL_META],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    if not shown:
        _run(["apt-get", "update", "-q"], what="apt-get update")
        shown = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META], what="apt-cache")
    match = re.search(r"^Depends:.*?(linux-image-[\w.\-]+-cloud-amd64)", shown, re.M)
    if not match:
        raise MinibootError(f"cannot tell which kernel {KERNEL_META} depends on")
    return match.group(1)


def fetch_deb(name: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}_*.deb"))
    if not found:
        _run(["apt-get", "download", "-q", name], cwd=cache, what=f"apt-get download {name}")
        found = sorted(cache.glob(f"{name}_*.deb"))
    if not found:
        raise MinibootError(f"apt-get download {name} produced no .deb in {cache}")
    return found[-1]


def _newc_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    header = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
    entry = header + name.encode() + b"\0"
    entry += b"\0" * (-len(entry) % 4)
    entry += data + b"\0" * (-len(data) % 4)
    return entry


def write_cpio(files: dict[str, tuple[int, bytes]], out: Path) -> None:
    """newc archive (what the kernel unpacks as initramfs); parents listed before children."""
    blob = bytearray()
    for ino, (name, (mode, data)) in enumerate(sorted(files.items()), start=1):
        blob += _newc_entry(name, mode, data, ino)
    blob += _newc_entry("TRAILER!!!", 0, b"", 0)
    out.write_bytes(bytes(blob))


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "offhook-miniboot: FAILED $*"; poweroff -f; }
for m in {modules}; do modprobe "$m" || fail "modprobe $m"; done
for i in $(seq 100); do [ -b /dev/vda3 ] && break; sleep 0.1; done
[ -b /dev/vda3 ] || fail "no /dev/vda3 (partition table not read)"
mdev -s
ROOT=$(findfs LABEL=OFFHOOK-ROOT) || fail "no filesystem labelled OFFHOOK-ROOT"
BOOT=$(findfs LABEL=OFFHOOKBOOT) || fail "no filesystem labelled OFFHOOKBOOT"
DATA=$(findfs LABEL=OFFHOOK-DATA) || fail "no filesystem labelled OFFHOOK-DATA"
mkdir -p /mnt/root /mnt/boot /mnt/data
mount -t ext4 -o ro "$ROOT" /mnt/root || fail "mount root"
mount -t vfat "$BOOT" /mnt/boot || fail "mount boot (vfat)"
mount -t ext4 "$DATA" /mnt/data || fail "mount data"
[ -f /mnt/boot/offhook-seed.toml ] || fail "no seed on the boot partition"
HOST=$(sed -n 's/^hostname = "\\(.*\\)"$/\\1/p' /mnt/boot/offhook-seed.toml)
[ -n "$HOST" ] || fail "seed has no hostname"
mkdir -p /mnt/data/offhook
echo "$HOST" > /mnt/data/offhook/miniboot-hostname
cat /mnt/root/etc/hostname > /mnt/data/offhook/miniboot-root-hostname
sync
umount /mnt/data /mnt/boot /mnt/root
echo "offhook-miniboot: ready hostname=$HOST root=$ROOT"
poweroff -f
"""


@dataclass(frozen=True)
class MiniSystem:
    kernel: Path
    initrd: Path


def build_minisystem(cache: Path, workdir: Path) -> MiniSystem:
    kernel_deb = fetch_deb(kernel_package(), cache)
    busybox_deb = fetch_deb("busybox-static", cache)
    unpacked = workdir / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    for deb in (kernel_deb, busybox_deb):
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)], what=f"dpkg-deb -x {deb.name}")
    version = next((unpacked / "lib/modules").iterdir()).name
    _run(["depmod", "-b", str(unpacked), version], what="depmod")
    files: dict[str, tuple[int, bytes]] = {}
    for d in ("bin", "dev", "proc", "sys", "mnt", "lib", "lib/modules"):
        files[d] = (stat.S_IFDIR | 0o755, b"")
    files["bin/busybox"] = (stat.S_IFREG | 0o755, (unpacked / "bin/busybox").read_bytes())
    init = INIT.replace("{modules}", " ".join(MODULES))
    files["init"] = (stat.S_IFREG | 0o755, init.encode())
    mod_root = unpacked / "lib/modules" / version
    for path in sorted(mod_root.rglob("*")):
        rel = "lib/modules/" + version + "/" + str(path.relative_to(mod_root))
        if path.is_dir():
            files[rel] = (stat.S_IFDIR | 0o755, b"")
        elif (
            path.name.startswith("modules.")
            or "/kernel/drivers/virtio/" in rel
            or any(part in rel for part in ("/virtio_blk.ko", "/fs/fat/", "/fs/nls/"))
        ):
            files[rel] = (stat.S_IFREG | 0o644, path.read_bytes())
    files["lib/modules/" + version] = (stat.S_IFDIR | 0o755, b"")
    initrd = workdir / "mini-initrd.cpio"
    write_cpio(files, initrd)
    kernel = workdir / "vmlinuz"
    shutil.copy(unpacked / "boot" / f"vmlinuz-{version}", kernel)
    shutil.rmtree(unpacked)
    return MiniSystem(kernel=kernel, initrd=initrd)


def miniboot(disk: Path, system: MiniSystem, timeout: float = 180.0) -> tuple[str, str, str]:
    """Boot ``disk``; return (hostname from the seed, root device, console text)."""
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-monitor", "none",
        "-kernel", str(system.kernel), "-initrd", str(system.initrd),
        "-append", "console=ttyS0 panic=-1 quiet",
        "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe",
    ]  # fmt: skip
    if os.environ.get("OFFHOOK_QEMU_ACCEL"):
        cmd[1:3] = ["-accel", os.environ["OFFHOOK_QEMU_ACCEL"]]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        raise MinibootError(
            f"guest did not power off within {timeout:.0f} s:\n{out[-3000:]}"
        ) from None
    console = proc.stdout.decode(errors="replace")
    failed = FAILED.search(console)
    if failed:
        raise MinibootError(f"guest reported: {failed.group(1)}\n{console[-3000:]}")
    ready = READY.search(console)
    if not ready:
        raise MinibootError(f"no readiness marker after {time.monotonic() - started:.0f} s:\n"
                            f"{console[-3000:]}")  # fmt: skip
    return ready.group(1), ready.group(2), console
