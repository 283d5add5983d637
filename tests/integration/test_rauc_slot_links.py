"""offhook-rauc-slots (the Pi card's overlay), run for real by sh: RAUC's slot devices must be
partitions 2 and 4 of the disk the running root is on, whatever the disk is called (mmcblk0 on a
Pi, vda under QEMU, and never a USB stick's sda).

The root is a real mount (a tmpfs: ``mountpoint -d`` gives its device number); the block devices
behind that number are a sysfs tree laid out as the kernel lays out an SD card's (this host's
loop devices do not scan partitions, and the SD card is the Pi's hardware). The booted image
runs the script on the real card (tests/integration/test_image_rpi.py, opt-in)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "image/overlay/rpi/usr/local/sbin/offhook-rauc-slots"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs as the root")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "root"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def sd_card(sysfs: Path, root_number: str, root_partition: int, disk: str = "mmcblk0") -> None:
    """/sys/devices/.../block/<disk>/<disk>pN/partition for N = 1..4, and /sys/dev/block/M:m of
    the root's device number pointing at partition ``root_partition`` (plus a USB stick)."""
    for name, partitions in ((disk, 4), ("sda", 4)):
        base = sysfs / "devices/platform/soc" / name / "block" / name
        for number in range(1, partitions + 1):
            part = base / f"{name}p{number}" if name != "sda" else base / f"{name}{number}"
            part.mkdir(parents=True)
            (part / "partition").write_text(f"{number}\n")
    (sysfs / "dev/block").mkdir(parents=True)
    target = sysfs / "devices/platform/soc" / disk / "block" / disk / f"{disk}p{root_partition}"
    (sysfs / "dev/block" / root_number).symlink_to(target)


def links(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "OFFHOOK_ROOT_MOUNT": str(root),
        "OFFHOOK_SYSFS": str(tmp_path / "sys"),
        "OFFHOOK_SLOT_LINKS": str(tmp_path / "slots"),
    }
    return subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, env=env,
                          check=False)  # fmt: skip


def device_number(path: Path) -> str:
    return subprocess.run(["mountpoint", "-d", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


@pytest.mark.parametrize("booted", [2, 4])
def test_slots_are_partitions_2_and_4_of_the_booted_disk(
    root: Path, tmp_path: Path, booted: int
) -> None:
    sd_card(tmp_path / "sys", device_number(root), booted)
    proc = links(root, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.readlink(tmp_path / "slots/A") == "/dev/mmcblk0p2"
    assert os.readlink(tmp_path / "slots/B") == "/dev/mmcblk0p4"
    assert "slot B is /dev/mmcblk0p4" in proc.stdout
    # again at the next boot: the links are replaced, not nested
    assert links(root, tmp_path).returncode == 0
    assert os.readlink(tmp_path / "slots/A") == "/dev/mmcblk0p2"


def test_a_virtio_disk_names_its_partitions_without_p(root: Path, tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    base = sysfs / "devices/pci/virtio1/block/vda"
    for number in range(1, 5):
        (base / f"vda{number}").mkdir(parents=True)
        (base / f"vda{number}/partition").write_text(f"{number}\n")
    (sysfs / "dev/block").mkdir(parents=True)
    (sysfs / "dev/block" / device_number(root)).symlink_to(base / "vda2")
    proc = links(root, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.readlink(tmp_path / "slots/B") == "/dev/vda4"


def test_a_root_that_is_not_a_partition_is_refused(root: Path, tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    whole = sysfs / "devices/virtual/block/zram0"
    whole.mkdir(parents=True)
    (sysfs / "dev/block").mkdir(parents=True)
    (sysfs / "dev/block" / device_number(root)).symlink_to(whole)
    proc = links(root, tmp_path)
    assert proc.returncode == 1
    assert "is not a partition" in proc.stdout
    assert not (tmp_path / "slots/A").exists()


def test_a_disk_without_slot_b_is_refused(root: Path, tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    base = sysfs / "devices/platform/soc/mmcblk0/block/mmcblk0"
    for number in range(1, 4):  # a card from before A/B: boot, root, data
        (base / f"mmcblk0p{number}").mkdir(parents=True)
        (base / f"mmcblk0p{number}/partition").write_text(f"{number}\n")
    (sysfs / "dev/block").mkdir(parents=True)
    (sysfs / "dev/block" / device_number(root)).symlink_to(base / "mmcblk0p2")
    proc = links(root, tmp_path)
    assert proc.returncode == 1
    assert "has no partition 4 for slot B" in proc.stdout
