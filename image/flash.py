"""Sparse, verified flashing of an image to a card (block device) or an image file.

Order of work, so that a bad image or a wrong target never costs a card's contents:
1. read the block map, check the image's size, partition table and every range checksum;
   a compressed image (zstd, xz) is streamed through its decompressor for this check and again
   for the write, so it is flashed as it is, never unpacked to disk (as bmaptool does);
2. validate the seed(s) and run the safety checks on the target;
3. write only the mapped ranges, hashing what is written and comparing with the block map;
4. flush, drop the target's cached pages and read every range back to verify it;
5. write the seed file into the flashed boot partition.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.image.bmap import (
    CHUNK,
    BlockMap,
    BlockRange,
    BmapError,
    hash_span,
    load_bmap,
    verify_image,
)
from offhook.image.layout import LayoutError, check_offhook_table
from offhook.image.safety import SystemView, Target, UnsafeTarget, check_target
from offhook.image.seed import Seed, write_seed

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with bytes just processed


class FlashError(OffhookError, RuntimeError):
    """Flashing stopped; the message says why and whether the target was touched."""


@dataclass(frozen=True)
class FlashResult:
    target: Path
    bytes_written: int
    seconds: float
    verified: bool
    seeded: bool


def bmap_path_for(image: Path) -> Path:
    """X.img.bmap beside X.img, X.img.zst or X.img.xz (the build writes X.img.bmap)."""
    candidates = [image.with_name(image.name + ".bmap"), image.with_suffix(".bmap")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FlashError(
        f"{image}: no block map found (looked for {candidates[0].name} and "
        f"{candidates[1].name}); create one with `offhook image bmap {image}`"
    )


# Magic numbers at the start of a compressed image, and the decompressor that streams it.
DECOMPRESSORS = {
    "zstd": (b"\x28\xb5\x2f\xfd", ["zstd", "-d", "-c", "-q", "--no-progress"]),
    "xz": (b"\xfd7zXZ\x00", ["xz", "-d", "-c", "-q"]),
}
_TABLE_BYTES = 64 * 1024  # the MBR and then some: what the partition-table check needs


def compression_of(image: Path) -> str | None:
    """ "zstd", "xz" or None (a plain image), from the file's first bytes, not its name."""
    with open(image, "rb") as fh:
        head = fh.read(8)
    for kind, (magic, _) in DECOMPRESSORS.items():
        if head.startswith(magic):
            return kind
    return None


class _Decompressed:
    """The decompressed bytes of a compressed image, read front to back from the decompressor."""

    def __init__(self, image: Path, kind: str) -> None:
        self.image, self.kind = image, kind
        self.position = 0
        self._proc = subprocess.Popen(
            [*DECOMPRESSORS[kind][1], str(image)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end of the stream."""
        assert self._proc.stdout is not None
        parts, missing = [], size
        while missing:
            chunk = self._proc.stdout.read(missing)
            if not chunk:
                break
            parts.append(chunk)
            missing -= len(chunk)
        data = b"".join(parts)
        self.position += len(data)
        return data

    def skip_to(self, offset: int) -> None:
        while self.position < offset:
            if not self.read(min(CHUNK, offset - self.position)):
                return

    def failure(self) -> str:
        """The decompressor's complaint once the stream has ended ("" when it exited cleanly)."""
        assert self._proc.stderr is not None
        code = self._proc.wait()
        if code == 0:
            return ""
        detail = self._proc.stderr.read().decode(errors="replace").strip()
        return f"{self.kind} failed (exit {code}): {detail or 'no message'}"

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()


def _stream_ranges(
    stream: _Decompressed, bmap: BlockMap
) -> Iterator[tuple[int, bytes, BlockRange | None]]:
    """(offset, chunk, range-or-None) for the mapped ranges of a decompressed image, in order;
    the range is given with a range's last chunk, once its checksum has been checked."""
    for block_range in bmap.ranges:
        offset, length = bmap.byte_span(block_range)
        stream.skip_to(offset)
        if stream.position != offset:
            raise BmapError(_ended_early(stream, bmap))
        digest = hashlib.new(bmap.checksum_type)
        done = 0
        while done < length:
            chunk = stream.read(min(CHUNK, length - done))
            if not chunk:
                raise BmapError(_ended_early(stream, bmap))
            digest.update(chunk)
            done += len(chunk)
            yield offset + done - len(chunk), chunk, None
        if digest.hexdigest() != block_range.checksum:
            raise BmapError(
                f"{stream.image}: checksum mismatch in blocks {block_range.first}-"
                f"{block_range.last} (bytes {offset}-{offset + length} of the decompressed "
                "image): corrupt image or wrong block map"
            )
        yield offset + length, b"", block_range


def _ended_early(stream: _Decompressed, bmap: BlockMap) -> str:
    why = stream.failure()
    return (
        f"{stream.image}: the decompressed image ends at byte {stream.position}, the block map "
        f"expects {bmap.image_size} (truncated image?)" + (f"; {why}" if why else "")
    )


def _check_stream_size(stream: _Decompressed, bmap: BlockMap) -> None:
    """Read to the end: the decompressed size must be the map's ImageSize, the decompressor
    must be content (a truncated .zst fails only at its very end)."""
    stream.skip_to(bmap.image_size)
    extra = stream.read(1)
    why = stream.failure() if not extra else ""
    if stream.position < bmap.image_size or why:
        raise BmapError(_ended_early(stream, bmap))
    if extra:
        raise BmapError(
            f"{stream.image}: the decompressed image is larger than the block map's "
            f"{bmap.image_size} bytes (wrong image for this bmap)"
        )


def check_compressed_image(
    image: Path, kind: str, bmap: BlockMap, progress: Progress | None = None
) -> None:
    """Decompress once without writing: every range checksum, the size, the partition table."""
    stream = _Decompressed(image, kind)
    head = b""
    try:
        for offset, chunk, _ in _stream_ranges(stream, bmap):
            if offset < _TABLE_BYTES:
                head += chunk[: _TABLE_BYTES - offset]
            if progress and chunk:
                progress(len(chunk))
        _check_stream_size(stream, bmap)
    except BmapError as exc:
        raise FlashError(f"refusing to flash, nothing written: {exc}") from None
    finally:
        stream.close()
    with tempfile.TemporaryDirectory(prefix="offhook-table-") as tmp:
        probe = Path(tmp) / "head.img"  # the table's bytes in a sparse file of the image's size
        with open(probe, "wb") as fh:
            fh.write(head)
            fh.truncate(bmap.image_size)
        try:
            check_offhook_table(probe, bmap.image_size)
        except LayoutError as exc:
            raise FlashError(
                f"refusing to flash, nothing written: {image}: {str(exc).replace(str(probe), '')}"
            ) from None


def check_image(image: Path, bmap: BlockMap, progress: Progress | None = None) -> None:
    """Everything about the image that can be checked before writing; raise FlashError."""
    if not image.is_file():
        raise FlashError(f"{image}: image file not found")
    kind = compression_of(image)
    if kind is not None:
        check_compressed_image(image, kind, bmap, progress)
        return
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


def describe_image(image: Path) -> str:
    """Board and version of an image from the build manifest beside it (the one listing it)."""
    for manifest in sorted(image.parent.glob("*.manifest.json")):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        names = data.get("outputs", {}) if isinstance(data, dict) else {}
        base = image.name.removesuffix(".zst").removesuffix(".xz")
        if image.name in names or base in names:
            board, version = data.get("board", "?"), data.get("offhook_version", "?")
            return f"board {board}, offhook {version} ({manifest.name})"
    return "board and version unknown (no build manifest listing it beside the image)"


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


def _write_stream(
    image: Path, kind: str, dst_fd: int, bmap: BlockMap, progress: Progress | None
) -> int:
    """Copy the mapped ranges of a compressed image as they come out of the decompressor; each
    range's checksum is checked again on the way (the stream is read anew)."""
    stream = _Decompressed(image, kind)
    written = 0
    try:
        for offset, chunk, _ in _stream_ranges(stream, bmap):
            view = memoryview(chunk)
            at = offset
            while view:
                n = os.pwrite(dst_fd, view, at)
                view, at, written = view[n:], at + n, written + n
            if progress and chunk:
                progress(len(chunk))
    except BmapError as exc:
        raise FlashError(f"image changed while writing: {exc}; the target is incomplete") from None
    finally:
        stream.close()
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
        if not self.image.is_file():
            what = "not a regular file" if self.image.exists() else "not found"
            raise FlashError(f"{self.image}: image file {what}, nothing written")
        self.compression = compression_of(self.image)
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
        dst_fd = _open_target(target, self.bmap.image_size)
        try:
            if self.compression is not None:
                written = _write_stream(self.image, self.compression, dst_fd, self.bmap, progress)
            else:
                src_fd = os.open(self.image, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # Fully verified just before; hash again only if it was touched since.
                    rehash = not self._unchanged_since_check()
                    written = _write_ranges(src_fd, dst_fd, self.bmap, progress, rehash)
                finally:
                    os.close(src_fd)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
        log.info("flash written", extra=kv(target=path, bytes=written))
        if self.verify:
            verify_target(path, self.bmap, progress)
        seeded = False
        if seed is not None:
            entries = check_offhook_table(path, self.bmap.image_size)
            write_seed(path, entries[0].start, seed)
            _fsync_path(path)
            seeded = True
        seconds = time.monotonic() - started
        log.info(
            "flash done", extra=kv(target=path, seconds=round(seconds, 2), verified=self.verify)
        )
        return FlashResult(path, written, seconds, self.verify, seeded)
