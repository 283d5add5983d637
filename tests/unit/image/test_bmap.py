"""Block maps: mapped ranges vs holes, checksums, and format compatibility with bmaptool."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from offhook.image.bmap import (
    BmapError,
    create_bmap,
    load_bmap,
    parse_bmap,
    render_bmap,
    verify_image,
    write_bmap,
)
from offhook.image.sample import make_sample_image

BS = 4096


def sparse_file(path: Path, size: int, chunks: dict[int, bytes]) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in chunks.items():
            fh.seek(offset)
            fh.write(data)
    return path


def test_ranges_cover_data_and_skip_holes(tmp_path: Path) -> None:
    image = sparse_file(
        tmp_path / "x.img",
        64 * BS * 16,
        {0: b"A" * BS, 10 * BS * 16: b"B" * (3 * BS), 20 * BS * 16 + 100: b"C"},
    )
    bmap = create_bmap(image)
    assert bmap.blocks_count == 64 * 16
    mapped = {b for r in bmap.ranges for b in range(r.first, r.last + 1)}
    assert {0, 160, 161, 162, 320} <= mapped
    # the filesystem may map a little more than written, but never the big holes
    assert not mapped & set(range(40, 150))
    assert not mapped & set(range(170, 310))
    for r in bmap.ranges:
        with open(image, "rb") as fh:
            fh.seek(r.first * BS)
            data = fh.read((r.last - r.first + 1) * BS)
        assert hashlib.sha256(data).hexdigest() == r.checksum


def test_render_parse_round_trip(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "x.img", 1 << 20, {8192: b"z" * 5000})
    bmap = create_bmap(image)
    assert parse_bmap(render_bmap(bmap)) == bmap


def test_edited_bmap_is_rejected(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "x.img", 1 << 20, {0: b"z" * 5000})
    text = render_bmap(create_bmap(image))
    with pytest.raises(BmapError, match="own checksum"):
        parse_bmap(text.replace("<ImageSize> 1048576", "<ImageSize> 1048577"))
    with pytest.raises(BmapError, match="not valid XML"):
        parse_bmap(text[: len(text) // 2])
    with pytest.raises(BmapError, match="not a bmap"):
        parse_bmap("<foo version='2.0'/>")


def test_verify_detects_corruption_and_truncation(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "x.img", 1 << 20, {0: b"z" * 5000, 500_000: b"q" * 10})
    bmap = create_bmap(image)
    verify_image(image, bmap)
    with open(image, "r+b") as fh:
        fh.seek(500_003)
        fh.write(b"!")
    with pytest.raises(BmapError, match="checksum mismatch"):
        verify_image(image, bmap)
    os.truncate(image, 600_000)
    with pytest.raises(BmapError, match="truncated"):
        verify_image(image, bmap)


def test_bmaptool_accepts_our_bmap_and_we_accept_its(tmp_path: Path) -> None:
    image, _ = make_sample_image(tmp_path, with_bmap=False)
    ours = tmp_path / "ours.bmap"
    write_bmap(create_bmap(image), ours)
    copy = tmp_path / "copy.img"
    subprocess.run(
        ["bmaptool", "copy", "--bmap", str(ours), str(image), str(copy)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(image.read_bytes()).digest()
    theirs = tmp_path / "theirs.bmap"
    subprocess.run(
        ["bmaptool", "create", "-o", str(theirs), str(image)], check=True, capture_output=True
    )
    parsed = load_bmap(theirs)
    verify_image(image, parsed)
    assert parsed.mapped_blocks == create_bmap(image).mapped_blocks
