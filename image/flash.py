"""Sparse, verified flashing of an image to a card (block device) or an image file.

Order of work, so that a bad image or a wrong target never costs a card's contents:
1. read the block map, check the image's size, partition table and every range checksum;
2. validate the seed(s) and run the safety checks on the target;
3. write only the mapped ranges, hashing what is written and comparing with the block map;
4. flush, drop the target's cached pages and read every range back to verify it;
5. write the seed file into the flashed boot partition.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from image.bmap import CHUNK, BlockMap, BmapError, hash_span, load_bmap, verify_image
from image.layout import LayoutError, check_offhook_table
from image.safety import SystemView, Target, UnsafeTarget, check_target
from image.seed import Seed, write_seed

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with bytes just processed


class FlashError(RuntimeError):
    """Flashing stopped; the message says why and whether the target was touched."""


@dataclass(frozen=True)
class FlashResult:
    target: Path
    bytes_written: int
    seconds: float
    verified: bool
    seeded: bool


def bmap_path_for(image: Path) -> Path:
    candidates = [image.with_name(image.name + ".bmap"), image.with_suffix(".bmap")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FlashError(
        f"{image}: no block map found (looked for {candidates[0].name} and "
        f"{candidates[1].name}); create one with `offhook image bmap {image}`"
    )


def check_image(image: Path, bmap: BlockMap, progress: Progress | None = None) -> None:
    """Everything about the image that can be checked before writing; raise FlashError."""
    if not image.is_file():
        raise FlashError(f"{image}: image file not found")
    try:
        verify_image(image, bmap)
    except BmapError as exc:
        raise FlashError(f"refusing to flash, nothing written: {exc}") from None
    try:
        check_offhook_table(image, bmap.image_size)
    except LayoutError as exc:
        raise FlashError(f"refusing to flash, nothing written: {exc}") from None
    if progress:
        progress(bmap.mapped_bytes)


def _open_target(target: Target, image_size: int) -> int:
    if target.kind == "file":
        fd = os.open(target.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.ftruncate(fd, 0)  # old contents would survive in the holes otherwise
        os.ftruncate(fd, image_size)
        return fd
    # O_EXCL on a block device fails if anything (a mount, another flasher) holds it.
    try:
        return os.open(target.path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        raise FlashError(f"{target.path}: cannot open exclusively: {exc}") from None


def _write_ranges(
    src_fd: int, dst_fd: int, bmap: BlockMap, progress: Progress | None, rehash: bool
) -> int:
    """Copy the mapped ranges; with ``rehash``, check each range's checksum again on the way."""
    written = 0
    for block_range in bmap.ranges:
        offset, length = bmap.byte_span(block_range)
        digest = hashlib.new(bmap.checksum_type) if rehash else None
        done = 0
        while done < length:
            chunk = os.pread(src_fd, min(CHUNK, length - done), offset + done)
            if not chunk:
                raise FlashError(f"image ended early at byte {offset + done} while writing")
            if digest is not None:
                digest.update(chunk)
            view = memoryview(chunk)
            while view:
                n = os.pwrite(dst_fd, view, offset + done)
                view = view[n:]
                done += n
                written += n
            if progress:
                progress(len(chunk))
        if digest is not None and digest.hexdigest() != block_range.checksum:
            raise FlashError(
                f"image changed while writing: blocks {block_range.first}-{block_range.last} "
                "no longer match the block map; the target is incomplete"
            )
    return written


def verify_target(path: Path, bmap: BlockMap, progress: Progress | None = None) -> None:
    """Read every mapped range back from the target (page cache dropped first) and compare."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for block_range in bmap.ranges:
            offset, length = bmap.byte_span(block_range)
            try:
                actual = hash_span(fd, offset, length, bmap.checksum_type)
            except BmapError as exc:
                raise FlashError(f"{path}: read-back failed: {exc}") from None
            if actual != block_range.checksum:
                raise FlashError(
                    f"{path}: read-back mismatch in blocks {block_range.first}-"
                    f"{block_range.last}: the card is faulty or was changed during flashing"
                )
            if progress:
                progress(length)
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Flasher:
    """Flashes one image; create once, then ``flash`` it to one target or many."""

    image: Path
    bmap_file: Path | None = None
    view: SystemView | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        self.bmap_file = self.bmap_file or bmap_path_for(self.image)
        try:
            self.bmap = load_bmap(self.bmap_file)
        except BmapError as exc:
            raise FlashError(f"refusing to flash, nothing written: {exc}") from None
        self._checked_identity: tuple[int, int, int] | None = None

    def check_image(self, progress: Progress | None = None) -> None:
        if self._checked_identity is None:
            check_image(self.image, self.bmap, progress)
            self._checked_identity = self._identity()

    def _identity(self) -> tuple[int, int, int]:
        st = os.stat(self.image)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _unchanged_since_check(self) -> bool:
        return self._checked_identity == self._identity()

    def check_target(self, path: Path, force: bool = False) -> Target:
        try:
            return check_target(path, self.image, self.bmap.image_size, force=force, view=self.view)
        except UnsafeTarget as exc:
            raise FlashError(f"refusing to flash, nothing written: {exc}") from None

    def flash(
        self,
        path: Path,
        *,
        seed: Seed | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> FlashResult:
        self.check_image()
        target = self.check_target(path, force)
        started = time.monotonic()
        src_fd = os.open(self.image, os.O_RDONLY | os.O_CLOEXEC)
        dst_fd = _open_target(target, self.bmap.image_size)
        try:
            # The image was fully verified just before; hash again only if it was touched since.
            rehash = not self._unchanged_since_check()
            written = _write_ranges(src_fd, dst_fd, self.bmap, progress, rehash)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
            os.close(src_fd)
        log.info("flash written target=%s bytes=%d", path, written)
        if self.verify:
            verify_target(path, self.bmap, progress)
        seeded = False
        if seed is not None:
            entries = check_offhook_table(path, self.bmap.image_size)
            write_seed(path, entries[0].start, seed)
            _fsync_path(path)
            seeded = True
        seconds = time.monotonic() - started
        log.info("flash done target=%s seconds=%.2f verified=%s", path, seconds, self.verify)
        return FlashResult(path, written, seconds, self.verify, seeded)
