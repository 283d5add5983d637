"""Rootless image assembly: no loop devices, no mounts.

Each filesystem is made in its own sparse file (``mkfs.vfat -C`` + ``mcopy`` for FAT,
``mke2fs -d`` for ext4), then placed into the disk image with ``dd conv=notrunc,sparse`` after
``sfdisk`` wrote the partition table. Runs of zeros stay holes, which is what makes the block map
small and flashing fast.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.image.layout import MIB, Layout, Partition

log = logging.getLogger(__name__)

DEFAULT_EPOCH = 1_700_000_000  # used when SOURCE_DATE_EPOCH is not set


class AssembleError(OffhookError, RuntimeError):
    """A tool failed while making a filesystem or writing the disk image."""


def run(cmd: list[str], *, env: dict[str, str] | None = None, what: str = "") -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise AssembleError(f"{what or cmd[0]} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return DEFAULT_EPOCH
    if not value.isdigit():
        raise AssembleError(f"SOURCE_DATE_EPOCH must be an integer, got {value!r}")
    return int(value)


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes in 4 KiB blocks, number of entries) of a directory tree, symlinks not followed."""
    blocks, entries = 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        entries += 1
        blocks += 1
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            entries += 1
            st = os.lstat(os.path.join(dirpath, name))
            blocks += -(-st.st_size // 4096) if st.st_size > 60 else 0
    return blocks * 4096, entries


def ext4_size_for(tree: Path, *, slack: float = 0.15, extra: int = 64 * MIB) -> int:
    """A filesystem size that holds ``tree`` with room for metadata and some slack."""
    data, entries = tree_bytes(tree)
    inode_tables = entries * 256 * 2
    journal = 16 * MIB
    return int((data + inode_tables + journal) * (1 + slack)) + extra


def normalise_mtimes(tree: Path, epoch: int) -> None:
    """Give every entry the same mtime so filesystem contents do not depend on build time."""
    for dirpath, dirnames, filenames in os.walk(tree, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def make_ext4(part_file: Path, part: Partition, tree: Path | None, epoch: int) -> None:
    """ext4 from a directory (``mke2fs -d``); fixed UUID, hash seed and time: reproducible."""
    part_file.unlink(missing_ok=True)
    cmd = [
        "mke2fs", "-q", "-F", "-t", "ext4",
        "-L", part.label,
        "-U", part.uuid,
        "-E", f"hash_seed={part.uuid},root_owner=0:0,nodiscard",
        "-I", "256",
        "-b", "4096",
    ]  # fmt: skip
    if tree is not None:
        cmd += ["-d", str(tree)]
    cmd += [str(part_file), f"{part.size // 1024}k"]
    run(cmd, env={"E2FSPROGS_FAKE_TIME": str(epoch)}, what=f"mke2fs for {part.name}")
    if tree is not None:
        fix_ctimes(part_file, tree, epoch)


def fix_ctimes(part_file: Path, tree: Path, epoch: int) -> None:
    """mke2fs -d copies each source inode's ctime and atime (build-time values); pin them."""
    commands = [f"sif / ctime @{epoch}", f"sif / atime @{epoch}"]
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in sorted(dirnames + filenames):
            rel = "/" + os.path.relpath(os.path.join(dirpath, name), tree)
            if '"' in rel or "\n" in rel:
                raise AssembleError(f"cannot handle file name {rel!r} (quote or line break)")
            commands.append(f'sif "{rel}" ctime @{epoch}')
            commands.append(f'sif "{rel}" atime @{epoch}')  # walking the tree touched atimes
    script = part_file.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n", encoding="utf-8")
    try:
        proc = subprocess.run(
            ["debugfs", "-w", "-f", str(script), str(part_file)],
            env={**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch)},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        script.unlink(missing_ok=True)
    # debugfs exits 0 even when a command fails; failures are the stderr lines naming a path.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("/")]
    if proc.returncode != 0 or errors:
        raise AssembleError(f"debugfs could not pin times: {(errors or [proc.stderr])[:5]}")


def make_fat(part_file: Path, part: Partition, tree: Path | None, epoch: int) -> None:
    """FAT32 with ``mkfs.vfat -C`` and contents copied in with ``mcopy`` (mtools, no mount)."""
    part_file.unlink(missing_ok=True)
    run(
        [
            "mkfs.vfat", "-C", "-F", "32", "-n", part.label, "-i", part.uuid, "--invariant",
            str(part_file), str(part.size // 1024),
        ],
        what="mkfs.vfat",
    )  # fmt: skip
    if tree is None:
        return
    entries = sorted(tree.iterdir())
    if not entries:
        return
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch)}
    run(
        ["mcopy", "-i", str(part_file), "-s", "-p", "-m", "-Q", *map(str, entries), "::/"],
        env=env,
        what="mcopy into boot partition",
    )


def place(image: Path, part_file: Path, offset: int) -> None:
    """Copy a partition file into the image at ``offset``; zero blocks stay holes."""
    if offset % MIB:
        raise AssembleError(f"partition offset {offset} is not MiB aligned")
    run(
        [
            "dd", f"if={part_file}", f"of={image}", "bs=1M", f"seek={offset // MIB}",
            "conv=notrunc,sparse", "status=none",
        ],
        what="dd",
    )  # fmt: skip


@dataclass(frozen=True)
class Contents:
    boot: Path | None
    root: Path | None
    data: Path | None


def assemble(
    image: Path,
    layout: Layout,
    contents: Contents,
    workdir: Path,
    *,
    epoch: int | None = None,
) -> None:
    """Write ``image``: partition table, then the three filesystems at their offsets."""
    epoch = source_date_epoch() if epoch is None else epoch
    workdir.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    with open(image, "wb") as fh:
        fh.truncate(layout.disk_size)
    proc = subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never", str(image)],
        input=layout.sfdisk_script(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssembleError(f"sfdisk failed: {proc.stderr.strip()}")
    for part in layout.partitions:
        if part.name == "root_b":
            continue  # the second root slot stays a hole until RAUC writes an update into it
        part_file = workdir / f"{part.name}.part"
        tree = getattr(contents, part.name)
        if part.name == "boot":
            make_fat(part_file, part, tree, epoch)
        else:
            make_ext4(part_file, part, tree, epoch)
        place(image, part_file, part.start)
        part_file.unlink()
        log.info("partition placed", extra=kv(name=part.name, start=part.start, size=part.size))
    shutil.rmtree(workdir, ignore_errors=True)
