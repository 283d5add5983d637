"""Block maps: which blocks of a sparse image hold data, with a checksum per range.

The file format is bmaptool's version 2.0 XML (``bmaptool copy`` accepts our files and we accept
its files): ``ImageSize``, ``BlockSize``, ``BlocksCount``, ``MappedBlocksCount``, ``ChecksumType``,
``BmapFileChecksum`` (checksum of the whole file computed with this field set to zeros) and
``<Range chksum="...">first-last</Range>`` entries, inclusive block numbers.
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError

BLOCK_SIZE = 4096
CHUNK = 4 * 1024 * 1024
SUPPORTED_MAJOR = 2


class BmapError(OffhookError, ValueError):
    """A block map that is malformed, or that does not match its image."""


@dataclass(frozen=True)
class BlockRange:
    first: int  # inclusive block numbers
    last: int
    checksum: str

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class BlockMap:
    image_size: int
    block_size: int
    blocks_count: int
    checksum_type: str
    ranges: tuple[BlockRange, ...]

    @property
    def mapped_blocks(self) -> int:
        return sum(r.blocks for r in self.ranges)

    @property
    def mapped_bytes(self) -> int:
        return sum(self.byte_span(r)[1] for r in self.ranges)

    def byte_span(self, block_range: BlockRange) -> tuple[int, int]:
        """(offset, length) in bytes; the last block may be short when the size is not aligned."""
        start = block_range.first * self.block_size
        end = min((block_range.last + 1) * self.block_size, self.image_size)
        return start, end - start


def mapped_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) byte extents holding data, found with SEEK_DATA / SEEK_HOLE."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def _block_ranges(fd: int, size: int, block_size: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for start, end in mapped_extents(fd, size):
        first, last = start // block_size, (end - 1) // block_size
        if ranges and first <= ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], max(last, ranges[-1][1]))
        else:
            ranges.append((first, last))
    return ranges


def hash_span(fd: int, offset: int, length: int, algo: str = "sha256") -> str:
    digest = hashlib.new(algo)
    done = 0
    while done < length:
        chunk = os.pread(fd, min(CHUNK, length - done), offset + done)
        if not chunk:
            raise BmapError(f"image ends at byte {offset + done}, expected data up to "
                            f"{offset + length} (truncated image?)")  # fmt: skip
        digest.update(chunk)
        done += len(chunk)
    return digest.hexdigest()


def create_bmap(image: Path, block_size: int = BLOCK_SIZE, algo: str = "sha256") -> BlockMap:
    size = image.stat().st_size
    fd = os.open(image, os.O_RDONLY)
    try:
        ranges = []
        for first, last in _block_ranges(fd, size, block_size):
            start = first * block_size
            length = min((last + 1) * block_size, size) - start
            ranges.append(BlockRange(first, last, hash_span(fd, start, length, algo)))
    finally:
        os.close(fd)
    return BlockMap(
        image_size=size,
        block_size=block_size,
        blocks_count=-(-size // block_size),
        checksum_type=algo,
        ranges=tuple(ranges),
    )


def render_bmap(bmap: BlockMap) -> str:
    """The bmap XML, with BmapFileChecksum filled in as bmaptool expects."""
    zeros = "0" * len(hashlib.new(bmap.checksum_type).hexdigest())
    percent = 100.0 * bmap.mapped_blocks / bmap.blocks_count if bmap.blocks_count else 0.0
    lines = [
        '<?xml version="1.0" ?>',
        "<!-- Block map of an offhook image: only the listed blocks need to be written. -->",
        '<bmap version="2.0">',
        f"    <ImageSize> {bmap.image_size} </ImageSize>",
        f"    <BlockSize> {bmap.block_size} </BlockSize>",
        f"    <BlocksCount> {bmap.blocks_count} </BlocksCount>",
        f"    <!-- Mapped: {percent:.1f}% -->",
        f"    <MappedBlocksCount> {bmap.mapped_blocks} </MappedBlocksCount>",
        f"    <ChecksumType> {bmap.checksum_type} </ChecksumType>",
        f"    <BmapFileChecksum> {zeros} </BmapFileChecksum>",
        "    <BlockMap>",
    ]
    for r in bmap.ranges:
        span = f"{r.first}-{r.last}" if r.last != r.first else f"{r.first}"
        lines.append(f'        <Range chksum="{r.checksum}"> {span} </Range>')
    lines += ["    </BlockMap>", "</bmap>", ""]
    text = "\n".join(lines)
    checksum = hashlib.new(bmap.checksum_type, text.encode()).hexdigest()
    return text.replace(zeros, checksum, 1)


def write_bmap(bmap: BlockMap, path: Path) -> None:
    path.write_text(render_bmap(bmap), encoding="utf-8")


def _field(root: ET.Element, name: str, source: str) -> str:
    node = root.find(name)
    if node is None or node.text is None:
        raise BmapError(f"{source}: missing <{name}>")
    return node.text.strip()


def _int_field(root: ET.Element, name: str, source: str) -> int:
    text = _field(root, name, source)
    if not text.isdigit():
        raise BmapError(f"{source}: <{name}> is not a number: {text!r}")
    return int(text)


def parse_bmap(text: str, source: str = "bmap") -> BlockMap:
    """Parse and self-check a bmap (ours or bmaptool's, format 2.x)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BmapError(f"{source}: not valid XML: {exc}") from None
    version = root.get("version", "")
    if root.tag != "bmap" or not re.fullmatch(r"\d+\.\d+", version):
        raise BmapError(f"{source}: not a bmap file (root <{root.tag}> version {version!r})")
    if int(version.split(".")[0]) != SUPPORTED_MAJOR:
        raise BmapError(f"{source}: bmap version {version} is not supported (need 2.x)")
    algo = _field(root, "ChecksumType", source)
    if algo not in hashlib.algorithms_available:
        raise BmapError(f"{source}: unknown checksum type {algo!r}")
    stored = _field(root, "BmapFileChecksum", source)
    zeroed = text.replace(stored, "0" * len(stored), 1)
    if hashlib.new(algo, zeroed.encode()).hexdigest() != stored:
        raise BmapError(f"{source}: the bmap file's own checksum does not match (corrupt file)")
    image_size = _int_field(root, "ImageSize", source)
    block_size = _int_field(root, "BlockSize", source)
    blocks_count = _int_field(root, "BlocksCount", source)
    if block_size <= 0 or blocks_count != -(-image_size // block_size):
        raise BmapError(f"{source}: BlocksCount {blocks_count} does not fit ImageSize/BlockSize")
    block_map = root.find("BlockMap")
    if block_map is None:
        raise BmapError(f"{source}: missing <BlockMap>")
    ranges = []
    previous_last = -1
    for node in block_map.findall("Range"):
        span = (node.text or "").strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", span)
        if not match:
            raise BmapError(f"{source}: bad range {span!r}")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first > last or first <= previous_last or last >= blocks_count:
            raise BmapError(f"{source}: range {span} is out of order or beyond the image")
        checksum = node.get("chksum", "")
        if not checksum:
            raise BmapError(f"{source}: range {span} has no checksum")
        ranges.append(BlockRange(first, last, checksum))
        previous_last = last
    result = BlockMap(image_size, block_size, blocks_count, algo, tuple(ranges))
    mapped = _int_field(root, "MappedBlocksCount", source)
    if mapped != result.mapped_blocks:
        raise BmapError(f"{source}: MappedBlocksCount {mapped} but ranges hold "
                        f"{result.mapped_blocks}")  # fmt: skip
    return result


def load_bmap(path: Path) -> BlockMap:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BmapError(f"{path}: cannot read: {exc}") from None
    return parse_bmap(text, str(path))


def verify_image(image: Path, bmap: BlockMap) -> None:
    """Check size and every range checksum of ``image`` against ``bmap``; raise BmapError."""
    size = image.stat().st_size
    if size != bmap.image_size:
        raise BmapError(
            f"{image}: size {size} bytes, the block map expects {bmap.image_size} "
            + ("(truncated image)" if size < bmap.image_size else "(wrong image for this bmap)")
        )
    fd = os.open(image, os.O_RDONLY)
    try:
        for r in bmap.ranges:
            offset, length = bmap.byte_span(r)
            if hash_span(fd, offset, length, bmap.checksum_type) != r.checksum:
                raise BmapError(
                    f"{image}: checksum mismatch in blocks {r.first}-{r.last} "
                    f"(bytes {offset}-{offset + length}): corrupt image or wrong block map"
                )
    finally:
        os.close(fd)
