"""Checks made before anything is written to a flash target.

A target is either a regular file (always allowed; it becomes the image copy) or a whole block
device. A block device is refused when it, or one of its partitions, is mounted or used as swap,
when it holds the running system's root filesystem, when it is too small for the image, and, unless
``force``, when the kernel does not report it as removable. These are facts read from ``/proc`` and
``/sys``; both roots can be replaced so the checks run against prepared trees in tests.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512


class UnsafeTarget(RuntimeError):
    """Writing to this target could destroy data that is in use or not meant to be written."""


@dataclass(frozen=True)
class Target:
    path: Path
    kind: str  # "file" | "block"
    size: int | None  # bytes, for block devices
    name: str = ""  # kernel name of the disk, e.g. "sdb" or "mmcblk0"


@dataclass(frozen=True)
class SystemView:
    """Where to read OS facts from (the real /sys and /proc unless a test says otherwise)."""

    sysfs: Path = Path("/sys")
    proc: Path = Path("/proc")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def disk_of(majmin: str, view: SystemView) -> str:
    """Kernel name of the whole disk that device ``major:minor`` belongs to."""
    node = view.sysfs / "dev" / "block" / majmin
    if not node.exists():
        raise UnsafeTarget(f"block device {majmin} is not known to sysfs ({node})")
    real = node.resolve()
    if (real / "partition").exists():
        return real.parent.name
    return real.name


def _disk_dir(disk: str, view: SystemView) -> Path:
    return view.sysfs / "block" / disk


def devices_of_disk(disk: str, view: SystemView) -> dict[str, str]:
    """{major:minor: name} for the disk and each of its partitions."""
    base = _disk_dir(disk, view)
    found = {_read(base / "dev"): disk}
    for child in sorted(base.iterdir()):
        if (child / "partition").exists() and (child / "dev").exists():
            found[_read(child / "dev")] = child.name
    return found


def mounted_devices(view: SystemView) -> dict[str, str]:
    """{major:minor: mount point} from mountinfo (field 3 is the device number)."""
    mounts: dict[str, str] = {}
    for line in _read(view.proc / "self" / "mountinfo").splitlines():
        fields = line.split()
        if len(fields) >= 5:
            mounts.setdefault(fields[2], fields[4].replace("\\040", " "))
    return mounts


def swap_devices(view: SystemView) -> set[str]:
    swaps = view.proc / "swaps"
    if not swaps.exists():
        return set()
    names = set()
    for line in _read(swaps).splitlines()[1:]:
        if line.split():
            names.add(Path(line.split()[0]).name)
    return names


def root_majmin(view: SystemView) -> str | None:
    for line in _read(view.proc / "self" / "mountinfo").splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4] == "/":
            return fields[2]
    return None


def check_block_device(
    majmin: str, image_size: int, *, force: bool = False, view: SystemView | None = None,
    path: Path | None = None,
) -> Target:  # fmt: skip
    """Refuse a disk that is in use, holds the system, is too small, or (unless force) fixed."""
    view = view or SystemView()
    disk = disk_of(majmin, view)
    label = f"{path or '/dev/' + disk} ({disk})"
    base = _disk_dir(disk, view)
    if (view.sysfs / "dev" / "block" / majmin / "partition").exists():
        raise UnsafeTarget(f"{label}: is a partition; flash the whole disk /dev/{disk}")
    members = devices_of_disk(disk, view)
    root_dev = root_majmin(view)
    root_known = root_dev is not None and (view.sysfs / "dev" / "block" / root_dev).exists()
    if root_dev in members or (root_known and disk_of(str(root_dev), view) == disk):
        raise UnsafeTarget(f"{label}: holds the running system's root filesystem; refusing")
    mounts = mounted_devices(view)
    busy = [f"/dev/{name} on {mounts[dev]}" for dev, name in members.items() if dev in mounts]
    if busy:
        raise UnsafeTarget(f"{label}: mounted ({', '.join(busy)}); unmount it first")
    swapping = sorted(swap_devices(view) & set(members.values()))
    if swapping:
        raise UnsafeTarget(f"{label}: in use as swap ({', '.join(swapping)}); swapoff it first")
    holders = base / "holders"
    if holders.exists() and any(holders.iterdir()):
        raise UnsafeTarget(f"{label}: in use by {sorted(p.name for p in holders.iterdir())}")
    size = int(_read(base / "size")) * SECTOR
    if size < image_size:
        raise UnsafeTarget(f"{label}: too small ({size} bytes) for the image ({image_size} bytes)")
    removable = _read(base / "removable") == "1" if (base / "removable").exists() else False
    if not removable and not disk.startswith("mmcblk") and not force:
        raise UnsafeTarget(
            f"{label}: not a removable disk; pass --force if you really mean to overwrite it"
        )
    return Target(path=path or Path("/dev") / disk, kind="block", size=size, name=disk)


def check_target(
    path: Path, image: Path, image_size: int, *, force: bool = False,
    view: SystemView | None = None,
) -> Target:  # fmt: skip
    """Classify ``path`` and run the checks for its kind; raise UnsafeTarget to refuse."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.resolve().is_relative_to("/dev"):
            raise UnsafeTarget(
                f"{path}: no such device (a new file is never created under /dev: check the name)"
            ) from None
        if not path.parent.is_dir():
            raise UnsafeTarget(f"{path}: directory {path.parent} does not exist") from None
        return Target(path=path, kind="file", size=None)
    if stat.S_ISBLK(st.st_mode):
        majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        return check_block_device(majmin, image_size, force=force, view=view, path=path)
    if stat.S_ISREG(st.st_mode):
        if path.resolve() == image.resolve() or os.path.samefile(path, image):
            raise UnsafeTarget(f"{path}: is the image itself")
        return Target(path=path, kind="file", size=st.st_size)
    raise UnsafeTarget(f"{path}: neither a block device nor a regular file")
