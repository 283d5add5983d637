"""The boot tests read phone state from the card's data partition while or after the guest ran:
what the phone wrote atomically (new file, fsync, rename) must be what is read, though ext4
keeps it in its journal until a checkpoint. The data partition is mounted for real here (a loop
device at the partition's offset) and written as the phone's atomic writes do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from offhook.contract.atomic import atomic_write_text
from offhook.image.boottest import read_data_file
from offhook.image.layout import MIB, plan_layout

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists(),
    reason="mounts the data partition through a loop device",
)


def test_an_atomic_write_the_journal_holds_is_read_back(tmp_path: Path) -> None:
    layout = plan_layout(boot_size=8 * MIB, root_size=8 * MIB, data_size=32 * MIB)
    disk = tmp_path / "card.img"
    with disk.open("wb") as fh:
        fh.truncate(layout.disk_size)
    table = "label: dos\n" + "".join(
        f"start={p.start // 512}, size={p.size // 512}, type={p.mbr_type}\n"
        for p in sorted(layout.partitions, key=lambda p: p.number)
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=table, text=True, check=True)
    data = layout.partition("data")
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--offset", str(data.start), "--sizelimit",
         str(data.size), str(disk)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    mount = tmp_path / "data"
    mount.mkdir()
    try:
        subprocess.run(["mkfs.ext4", "-q", loop], check=True)
        subprocess.run(["mount", "-o", "commit=30", loop, str(mount)], check=True)
        try:
            record = mount / "offhook/state/update/state.json"
            atomic_write_text(record, '{"phase": "verifying"}')
            subprocess.run(["sync"], check=True)  # checkpointed: in place on the partition
            atomic_write_text(record, '{"phase": "idle"}')  # fsynced: in the journal only
            assert read_data_file(disk, "/offhook/state/update/state.json") == ('{"phase": "idle"}')
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
