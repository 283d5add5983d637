"""Every refusal of the flash safety checks, against prepared /sys and /proc trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offhook.image.flash import Flasher, FlashError
from offhook.image.layout import MIB
from offhook.image.safety import SystemView, UnsafeTarget, check_block_device, check_target
from offhook.image.sample import make_sample_image

GIB = 1 << 30


class FakeSystem:
    """A /sys and /proc with disks vda (system, fixed) and sdb (removable card reader)."""

    def __init__(self, root: Path) -> None:
        self.view = SystemView(sysfs=root / "sys", proc=root / "proc")
        self.mounts = ["22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw"]
        self.swaps: list[str] = []
        self.add_disk("vda", "254:0", 64 * GIB, removable=False, parts=1)
        self.add_disk("sdb", "8:16", 16 * GIB, removable=True, parts=2)
        self.write()

    def add_disk(self, name: str, majmin: str, size: int, removable: bool, parts: int) -> None:
        sysfs = self.view.sysfs
        disk = sysfs / "block" / name
        (disk / "holders").mkdir(parents=True)
        (disk / "dev").write_text(majmin + "\n")
        (disk / "size").write_text(f"{size // 512}\n")
        (disk / "removable").write_text("1\n" if removable else "0\n")
        (sysfs / "dev" / "block").mkdir(parents=True, exist_ok=True)
        (sysfs / "dev" / "block" / majmin).symlink_to(disk)
        major, minor = majmin.split(":")
        for n in range(1, parts + 1):
            part = disk / f"{name}{n}"
            part.mkdir()
            (part / "partition").write_text(f"{n}\n")
            (part / "dev").write_text(f"{major}:{int(minor) + n}\n")
            (sysfs / "dev" / "block" / f"{major}:{int(minor) + n}").symlink_to(part)

    def write(self) -> None:
        proc = self.view.proc / "self"
        proc.mkdir(parents=True, exist_ok=True)
        (proc / "mountinfo").write_text("\n".join(self.mounts) + "\n")
        (self.view.proc / "swaps").write_text(
            "Filename Type Size Used Priority\n" + "".join(s + "\n" for s in self.swaps)
        )


@pytest.fixture
def system(tmp_path: Path) -> FakeSystem:
    return FakeSystem(tmp_path)


def test_removable_unused_disk_is_accepted(system: FakeSystem) -> None:
    target = check_block_device("8:16", 4 * GIB, view=system.view)
    assert (target.kind, target.name, target.size) == ("block", "sdb", 16 * GIB)


def test_refuses_disk_with_mounted_partition(system: FakeSystem) -> None:
    system.mounts.append("40 22 8:18 / /media/card rw - ext4 /dev/sdb2 rw")
    system.write()
    with pytest.raises(UnsafeTarget, match=r"mounted \(/dev/sdb2 on /media/card\)"):
        check_block_device("8:16", 4 * GIB, view=system.view)


def test_refuses_disk_used_as_swap(system: FakeSystem) -> None:
    system.swaps.append("/dev/sdb1 partition 1048572 0 -2")
    system.write()
    with pytest.raises(UnsafeTarget, match="swap"):
        check_block_device("8:16", 4 * GIB, view=system.view)


def test_refuses_system_disk_even_with_force(system: FakeSystem) -> None:
    with pytest.raises(UnsafeTarget, match="running system"):
        check_block_device("254:0", 4 * GIB, force=True, view=system.view)


def test_refuses_non_removable_unless_forced(system: FakeSystem) -> None:
    system.add_disk("sdc", "8:32", 32 * GIB, removable=False, parts=0)
    with pytest.raises(UnsafeTarget, match=r"not a removable disk.*--force"):
        check_block_device("8:32", 4 * GIB, view=system.view)
    assert check_block_device("8:32", 4 * GIB, force=True, view=system.view).name == "sdc"


def test_sd_slot_counts_as_removable(system: FakeSystem) -> None:
    system.add_disk("mmcblk0", "179:0", 8 * GIB, removable=False, parts=0)
    assert check_block_device("179:0", 4 * GIB, view=system.view).name == "mmcblk0"


def test_refuses_too_small_disk(system: FakeSystem) -> None:
    with pytest.raises(UnsafeTarget, match="too small"):
        check_block_device("8:16", 32 * GIB, view=system.view)


def test_refuses_a_partition_instead_of_the_disk(system: FakeSystem) -> None:
    with pytest.raises(UnsafeTarget, match="is a partition; flash the whole disk /dev/sdb"):
        check_block_device("8:17", 4 * GIB, view=system.view)


def test_refuses_disk_held_by_another_device(system: FakeSystem) -> None:
    (system.view.sysfs / "block" / "sdb" / "holders" / "md0").mkdir()
    with pytest.raises(UnsafeTarget, match="in use by"):
        check_block_device("8:16", 4 * GIB, view=system.view)


def test_refuses_unknown_device(system: FakeSystem) -> None:
    with pytest.raises(UnsafeTarget, match="not known to sysfs"):
        check_block_device("9:9", 4 * GIB, view=system.view)


def test_refuses_odd_targets(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"x")
    with pytest.raises(UnsafeTarget, match="neither a block device nor a regular file"):
        check_target(tmp_path, image, 1)
    with pytest.raises(UnsafeTarget, match="does not exist"):
        check_target(tmp_path / "nodir" / "card.img", image, 1)


def test_block_node_goes_through_sysfs_checks_and_nothing_is_written(tmp_path: Path) -> None:
    """A real block device node (of the fake mounted card) reaches the checks via stat()."""
    system = FakeSystem(tmp_path / "os")
    system.mounts.append("40 22 8:17 / /media/card rw - vfat /dev/sdb1 rw")
    system.write()
    node = tmp_path / "sdb"
    try:
        os.mknod(node, 0o600 | 0o060000, os.makedev(8, 16))
    except PermissionError:
        pytest.skip("cannot create device nodes here")
    image, _ = make_sample_image(tmp_path / "img", payload_bytes=MIB)
    with pytest.raises(FlashError, match=r"nothing written.*mounted"):
        Flasher(image, view=system.view).flash(node)


def test_missing_device_name_is_not_created_as_a_file(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"x")
    with pytest.raises(UnsafeTarget, match="no such device"):
        check_target(Path("/dev/offhook-no-such-card"), image, 1)
    assert not Path("/dev/offhook-no-such-card").exists()
