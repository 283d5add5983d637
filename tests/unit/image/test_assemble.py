"""Partition layout and rootless assembly, checked with sfdisk, fsck.vfat, e2fsck and debugfs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from offhook.image.assemble import Contents, assemble, ext4_size_for, normalise_mtimes
from offhook.image.layout import (
    ALIGN,
    MIB,
    LayoutError,
    check_offhook_table,
    plan_layout,
    read_partition_table,
)
from offhook.image.sample import make_sample_image, make_tree


def extract(image: Path, start: int, size: int, out: Path) -> Path:
    with open(image, "rb") as src, open(out, "wb") as dst:
        src.seek(start)
        dst.write(src.read(size))
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    return make_sample_image(tmp_path_factory.mktemp("img"), payload_bytes=3 * MIB)


def test_layout_aligns_partitions_and_fills_disk() -> None:
    layout = plan_layout(
        boot_size=100 * MIB, root_size=300 * MIB + 5, data_size=8 * MIB, disk_size=1024 * MIB
    )
    boot, root, data = layout.partitions
    assert [p.start % ALIGN for p in layout.partitions] == [0, 0, 0]
    assert boot.end <= root.start and root.end <= data.start
    assert root.size >= 300 * MIB + 5
    assert data.end == 1024 * MIB
    assert "label: dos" in layout.sfdisk_script()


def test_layout_rejects_small_disk_and_bad_sizes() -> None:
    with pytest.raises(LayoutError, match="too small"):
        plan_layout(boot_size=64 * MIB, root_size=64 * MIB, data_size=64 * MIB, disk_size=64 * MIB)
    with pytest.raises(LayoutError, match="must be positive"):
        plan_layout(boot_size=0, root_size=64 * MIB, data_size=64 * MIB)


def test_ids_are_derived_from_the_seed() -> None:
    a = plan_layout(boot_size=MIB, root_size=MIB, data_size=MIB, id_seed="x")
    b = plan_layout(boot_size=MIB, root_size=MIB, data_size=MIB, id_seed="x")
    c = plan_layout(boot_size=MIB, root_size=MIB, data_size=MIB, id_seed="y")
    assert a == b
    assert a.disk_id != c.disk_id and a.partition("root").uuid != c.partition("root").uuid


def test_partition_table_matches_layout(sample) -> None:
    image, layout = sample
    entries = read_partition_table(image)
    assert [(e.start, e.size) for e in entries] == [(p.start, p.size) for p in layout.partitions]
    assert [e.mbr_type for e in entries] == ["c", "83", "83"]
    assert check_offhook_table(image, image.stat().st_size) == entries


def test_image_is_sparse(sample) -> None:
    image, _ = sample
    assert os.stat(image).st_blocks * 512 < image.stat().st_size // 2


def test_filesystems_pass_fsck_and_hold_the_tree(sample, tmp_path: Path) -> None:
    image, layout = sample
    boot = layout.partition("boot")
    fat = extract(image, boot.start, boot.size, tmp_path / "boot.fat")
    subprocess.run(["fsck.vfat", "-n", str(fat)], check=True, capture_output=True)
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(fat), "::/"], check=True, capture_output=True, text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout  # fmt: skip
    assert "::/config.txt" in listing.split()
    for name in ("root", "data"):
        part = layout.partition(name)
        ext4 = extract(image, part.start, part.size, tmp_path / f"{name}.ext4")
        subprocess.run(["e2fsck", "-fn", str(ext4)], check=True, capture_output=True)
        label = subprocess.run(
            ["e2label", str(ext4)], check=True, capture_output=True, text=True
        ).stdout.strip()
        assert label == part.label
    root = extract(image, layout.partition("root").start, layout.partition("root").size,
                   tmp_path / "root.ext4")  # fmt: skip
    hostname = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", str(root)], check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    assert hostname == "offhook\n"
    blob = subprocess.run(
        ["debugfs", "-R", "cat /opt/blobs/blob000.bin", str(root)], check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    expected = (image.parent / "tree-root" / "opt" / "blobs" / "blob000.bin").read_bytes()
    assert hashlib.sha256(blob).digest() == hashlib.sha256(expected).digest()
    link = subprocess.run(
        ["debugfs", "-R", "stat /usr/bin/hostname-link", str(root)], check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "Type: symlink" in link


def test_same_tree_gives_identical_root_filesystem(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        time.sleep(1.05 if run == "b" else 0)  # source ctimes differ by a second: must not leak
        tree = tmp_path / run / "root"
        make_tree(tree, 256 * 1024)
        normalise_mtimes(tree, 1_600_000_000)
        layout = plan_layout(
            boot_size=40 * MIB, root_size=ext4_size_for(tree, extra=8 * MIB), data_size=8 * MIB
        )
        image = tmp_path / run / "x.img"
        assemble(
            image, layout, Contents(None, tree, None), tmp_path / run / "w", epoch=1_600_000_000
        )
        root = layout.partition("root")
        with open(image, "rb") as fh:
            fh.seek(root.start)
            digests.append(hashlib.sha256(fh.read(root.size)).hexdigest())
    assert digests[0] == digests[1]
