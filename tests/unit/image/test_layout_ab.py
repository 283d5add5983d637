"""The A/B layout: slot B as partition 4 between root A and data, data last and still number 3."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from offhook.image.assemble import Contents, assemble
from offhook.image.layout import (
    MIB,
    LayoutError,
    check_offhook_table,
    plan_layout,
    read_partition_table,
)


def test_slot_b_sits_between_root_and_data_with_number_four() -> None:
    layout = plan_layout(boot_size=128 * MIB, root_size=1024 * MIB, data_size=64 * MIB,
                         slot_b=True)  # fmt: skip
    root, data, slot_b = (layout.partition(n) for n in ("root", "data", "root_b"))
    assert (root.number, data.number, slot_b.number) == (2, 3, 4)
    assert slot_b.start == root.end and slot_b.size == root.size
    assert data.start == slot_b.end and data.end == layout.disk_size  # last: it can grow
    assert plan_layout(boot_size=128 * MIB, root_size=MIB, data_size=MIB).partitions[-1].name == (
        "data"
    )


def test_assembled_ab_image_table_reads_back(tmp_path: Path) -> None:
    layout = plan_layout(boot_size=128 * MIB, root_size=16 * MIB, data_size=8 * MIB, slot_b=True)
    root = tmp_path / "root"
    root.mkdir()
    image = tmp_path / "card.img"
    assemble(image, layout, Contents(boot=None, root=root, data=None), tmp_path / "parts")
    entries = check_offhook_table(image, image.stat().st_size)
    assert [(e.number, e.start, e.size) for e in entries] == [
        (p.number, p.start, p.size) for p in sorted(layout.partitions, key=lambda p: p.number)
    ]
    with open(image, "rb") as fh:  # slot B is left unwritten: RAUC fills it
        fh.seek(layout.partition("root_b").start)
        assert fh.read(MIB) == bytes(MIB)
    assert len(read_partition_table(image)) == 4


def test_a_table_without_the_fat_boot_partition_is_not_ours(tmp_path: Path) -> None:
    image = tmp_path / "other.img"
    with open(image, "wb") as fh:
        fh.truncate(64 * MIB)
    script = "label: dos\n" + "".join(f"start={2048 + i * 8192}, size=8192, type=83\n"
                                      for i in range(3))  # fmt: skip
    subprocess.run(["sfdisk", "-q", str(image)], input=script, text=True, check=True)
    with pytest.raises(LayoutError, match="partition 1 is type 83"):
        check_offhook_table(image, image.stat().st_size)
