"""Partition table of an offhook image: boot (FAT32), root (ext4, read-only), data (ext4), and
on boards with A/B updates a second root slot (partition 4, between root A and data on the disk,
so data stays last and can grow to the end of the card and keeps its number, 3).

The layout is plain data; ``assemble.py`` turns it into an image file and ``flash.py``/``seed.py``
use it (or the table read back from an image) to find the boot partition inside a target.
An MBR (dos) table is used because every Raspberry Pi boot ROM reads it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError

MIB = 1024 * 1024
SECTOR = 512
ALIGN = 4 * MIB  # SD cards erase in 4 MiB units; aligning partitions to them avoids split writes

BOOT_LABEL = "OFFHOOK-BOOT"  # FAT labels are at most 11 characters; the FAT one is cut below
ROOT_LABEL = "OFFHOOK-ROOT"
ROOT_B_LABEL = "OFFHOOK-ROOT"  # a slot holds whatever root filesystem RAUC wrote: same label
DATA_LABEL = "OFFHOOK-DATA"
FAT_LABEL = "OFFHOOKBOOT"

MBR_TYPE_FAT32_LBA = "c"
MBR_TYPE_LINUX = "83"


class LayoutError(OffhookError, ValueError):
    """A layout that cannot be built, or a partition table that is not ours."""


@dataclass(frozen=True)
class Partition:
    number: int
    name: str  # boot | root | data | root_b
    start: int  # bytes from the start of the disk
    size: int  # bytes
    mbr_type: str
    label: str
    uuid: str  # ext4 UUID, or FAT volume id as 8 hex digits

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    disk_id: str  # MBR disk identifier, 0x + 8 hex digits
    disk_size: int
    partitions: tuple[Partition, ...]

    def partition(self, name: str) -> Partition:
        for part in self.partitions:
            if part.name == name:
                return part
        raise LayoutError(f"layout has no {name!r} partition")

    def sfdisk_script(self) -> str:
        lines = ["label: dos", f"label-id: {self.disk_id}", "unit: sectors", ""]
        for part in self.partitions:
            lines.append(
                f"start={part.start // SECTOR}, size={part.size // SECTOR}, type={part.mbr_type}"
                + (", bootable" if part.name == "boot" else "")
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, object]:
        return {
            "disk_id": self.disk_id,
            "disk_size": self.disk_size,
            "partitions": [vars(p) | {"end": p.end} for p in self.partitions],
        }


def _align_up(value: int, align: int = ALIGN) -> int:
    return -(-value // align) * align


def derived_ids(seed: str) -> dict[str, str]:
    """Stable disk/filesystem identifiers from a seed, so the same inputs give the same image."""
    digest = hashlib.sha256(f"offhook-image:{seed}".encode()).digest()
    return {
        "disk_id": "0x" + digest[0:4].hex(),
        "boot": digest[4:8].hex().upper(),
        "root": str(uuid.UUID(bytes=digest[8:24], version=4)),
        "data": str(uuid.UUID(bytes=hashlib.sha256(digest).digest()[:16], version=4)),
    }


def plan_layout(
    *,
    boot_size: int,
    root_size: int,
    data_size: int,
    disk_size: int | None = None,
    id_seed: str = "offhook",
    slot_b: bool = False,
) -> Layout:
    """Place boot, root (and with ``slot_b`` an equal second root slot) and data back to back on
    ALIGN boundaries.

    ``disk_size`` (for example 4 GiB) lets the data partition fill the disk; without it the data
    partition keeps ``data_size`` and the first boot grows it to the card. Slot B is left
    unwritten (a hole in the image): RAUC writes it at the first update.
    """
    for name, value in (("boot", boot_size), ("root", root_size), ("data", data_size)):
        if value <= 0:
            raise LayoutError(f"{name} partition size must be positive, got {value}")
    ids = derived_ids(id_seed)
    boot_start = ALIGN
    root_start = boot_start + _align_up(boot_size)
    root_b_start = root_start + _align_up(root_size)
    data_start = root_b_start + (_align_up(root_size) if slot_b else 0)
    minimum = data_start + _align_up(data_size)
    if disk_size is None:
        disk_size = minimum
    if disk_size % MIB:
        raise LayoutError(f"disk size {disk_size} is not a whole number of MiB")
    if disk_size < minimum:
        raise LayoutError(
            f"disk size {disk_size // MIB} MiB is too small: partitions need {minimum // MIB} MiB"
        )
    parts: tuple[Partition, ...] = (
        Partition(1, "boot", boot_start, root_start - boot_start, MBR_TYPE_FAT32_LBA, FAT_LABEL,
                  ids["boot"]),
        Partition(2, "root", root_start, root_b_start - root_start, MBR_TYPE_LINUX, ROOT_LABEL,
                  ids["root"]),
        Partition(3, "data", data_start, disk_size - data_start, MBR_TYPE_LINUX, DATA_LABEL,
                  ids["data"]),
    )  # fmt: skip
    if slot_b:
        parts += (Partition(4, "root_b", root_b_start, data_start - root_b_start,
                            MBR_TYPE_LINUX, ROOT_B_LABEL, ids["root"]),)  # fmt: skip
    return Layout(disk_id=ids["disk_id"], disk_size=disk_size, partitions=parts)


@dataclass(frozen=True)
class TableEntry:
    number: int
    start: int
    size: int
    mbr_type: str


def read_partition_table(path: Path) -> list[TableEntry]:
    """Partition table of an image file or device, read with sfdisk (no loop device needed)."""
    proc = subprocess.run(
        ["sfdisk", "--json", str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LayoutError(f"{path}: no readable partition table ({proc.stderr.strip()})")
    table = json.loads(proc.stdout)["partitiontable"]
    entries = []
    for index, part in enumerate(table.get("partitions", []), start=1):
        entries.append(
            TableEntry(
                number=index,
                start=int(part["start"]) * SECTOR,
                size=int(part["size"]) * SECTOR,
                mbr_type=str(part["type"]).lower(),
            )
        )
    return entries


def check_offhook_table(path: Path, size: int) -> list[TableEntry]:
    """Check that ``path`` (``size`` bytes) carries our partition table (boot, root, data and
    optionally root slot B), within bounds."""
    entries = read_partition_table(path)
    if len(entries) not in (3, 4):
        raise LayoutError(
            f"{path}: expected 3 partitions (boot, root, data) or 4 (and root slot B), "
            f"found {len(entries)}"
        )
    if entries[0].mbr_type not in ("c", "b", "e"):
        raise LayoutError(f"{path}: partition 1 is type {entries[0].mbr_type}, not FAT")
    for entry in entries:
        if entry.start + entry.size > size:
            raise LayoutError(
                f"{path}: partition {entry.number} ends at byte {entry.start + entry.size}, "
                f"beyond the image's {size} bytes (truncated image?)"
            )
    return entries


def boot_partition_offset(path: Path) -> int:
    """Byte offset of the FAT boot partition inside an image or flashed card."""
    return read_partition_table(path)[0].start
