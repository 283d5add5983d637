"""Flashing to image files: sparse verified copy, seeding, batch, and refusals before writing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.image.cli import flash_main
from offhook.image.flash import Flasher, FlashError
from offhook.image.layout import MIB
from offhook.image.sample import make_sample_image
from offhook.image.seed import read_seed

SEED = """hostname = "desk-7"

[provisioning]
url = "https://prov.example.net"
enrollment_token = "tok-123"

[sip]
user = "1001"
password = "pw"
domain = "10.0.2.2:5060"
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image, _ = make_sample_image(tmp_path_factory.mktemp("flash"), payload_bytes=2 * MIB)
    return image


@pytest.fixture
def image(built: Path, tmp_path: Path) -> Path:
    """A private copy (sparse, with its bmap) that a test may damage."""
    copy = tmp_path / "in" / "phone.img"
    copy.parent.mkdir()
    with open(built, "rb") as src, open(copy, "wb") as dst:
        dst.truncate(built.stat().st_size)
        for start, end in _extents(src.fileno(), built.stat().st_size):
            dst.seek(start)
            dst.write(os.pread(src.fileno(), end - start, start))
    shutil.copy(built.with_name(built.name + ".bmap"), copy.with_name(copy.name + ".bmap"))
    return copy


def _extents(fd: int, size: int):
    from offhook.image.bmap import mapped_extents

    return mapped_extents(fd, size)


def test_flash_to_file_is_identical_and_sparse(image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    target.write_bytes(b"\xff" * (3 * MIB))  # stale contents must not survive
    result = Flasher(image).flash(target)
    assert sha(target) == sha(image)
    assert result.verified
    assert result.bytes_written < image.stat().st_size // 4
    assert os.stat(target).st_blocks * 512 < image.stat().st_size // 2


def test_flash_writes_seed_that_reads_back(image: Path, tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.toml"
    seed_file.write_text(SEED)
    target = tmp_path / "card.img"
    assert flash_main([str(image), str(target), "--seed", str(seed_file)]) == 0
    seed = read_seed(target, 4 * MIB)
    assert seed is not None
    assert seed.hostname == "desk-7"
    assert seed.provisioning.enrollment_token == "tok-123"
    assert seed.sip is not None and seed.sip.domain == "10.0.2.2:5060"
    assert read_seed(image, 4 * MIB) is None  # the image itself is untouched


def test_batch_gives_each_card_its_own_seed(image: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text("hostname,enrollment_token\nphone-a,tok-a\nphone-b,tok-b\n")
    base = tmp_path / "base.toml"
    base.write_text('hostname = "x"\n[provisioning]\nurl = "https://prov.example.net"\n')
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    argv = [str(image), "--seed", str(base), "--batch", str(csv_file), "--targets", f"{a},{b}"]
    assert flash_main(argv) == 0
    seeds = [read_seed(t, 4 * MIB) for t in (a, b)]
    assert [(s.hostname, s.provisioning.enrollment_token) for s in seeds] == [
        ("phone-a", "tok-a"),
        ("phone-b", "tok-b"),
    ]
    assert all(s.provisioning.url == "https://prov.example.net" for s in seeds)


def test_batch_row_count_must_match_targets(image: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text("hostname\nphone-a\nphone-b\n")
    a = tmp_path / "a.img"
    assert flash_main([str(image), "--batch", str(csv_file), "--targets", str(a)]) == 1
    assert not a.exists()


def test_bad_seed_is_rejected_before_writing(image: Path, tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.toml"
    seed_file.write_text('hostname = "bad name!"\n')
    target = tmp_path / "card.img"
    assert flash_main([str(image), str(target), "--seed", str(seed_file)]) == 1
    assert not target.exists()


def test_corrupt_image_is_rejected_before_writing(image: Path, tmp_path: Path) -> None:
    flasher = Flasher(image)
    offset, _ = flasher.bmap.byte_span(flasher.bmap.ranges[-1])
    with open(image, "r+b") as fh:
        fh.seek(offset + 17)
        fh.write(b"\x00corrupt")
    target = tmp_path / "card.img"
    with pytest.raises(FlashError, match=r"nothing written.*checksum mismatch"):
        Flasher(image).flash(target)
    assert not target.exists()


def test_truncated_image_is_rejected_before_writing(image: Path, tmp_path: Path) -> None:
    os.truncate(image, image.stat().st_size - MIB)
    target = tmp_path / "card.img"
    target.write_bytes(b"keep")
    with pytest.raises(FlashError, match="truncated"):
        Flasher(image).flash(target)
    assert target.read_bytes() == b"keep"


def test_bad_partition_table_is_rejected_before_writing(image: Path, tmp_path: Path) -> None:
    from offhook.image.bmap import create_bmap, write_bmap

    with open(image, "r+b") as fh:  # wipe the MBR signature, then make a matching bmap
        fh.seek(510)
        fh.write(b"\x00\x00")
    write_bmap(create_bmap(image), image.with_name(image.name + ".bmap"))
    target = tmp_path / "card.img"
    with pytest.raises(FlashError, match=r"nothing written.*partition"):
        Flasher(image).flash(target)
    assert not target.exists()


def test_missing_or_damaged_bmap_is_a_clear_error(image: Path, tmp_path: Path) -> None:
    bmap = image.with_name(image.name + ".bmap")
    bmap.write_text(bmap.read_text().replace("<BlockSize> 4096", "<BlockSize> 8192"))
    with pytest.raises(FlashError, match="own checksum"):
        Flasher(image)
    bmap.unlink()
    with pytest.raises(FlashError, match="no block map"):
        Flasher(image)


def test_refuses_to_flash_image_onto_itself(image: Path) -> None:
    with pytest.raises(FlashError, match="image itself"):
        Flasher(image).flash(image)


def test_cli_bmap_and_seed_subcommands(image: Path, tmp_path: Path) -> None:
    from offhook.image.cli import image_main

    bmap = image.with_name(image.name + ".bmap")
    bmap.unlink()
    assert image_main(["bmap", str(image)]) == 0
    target = tmp_path / "card.img"
    assert flash_main([str(image), str(target)]) == 0
    seed_file = tmp_path / "seed.toml"
    seed_file.write_text(SEED)
    assert image_main(["seed", str(target), str(seed_file)]) == 0
    assert read_seed(target, 4 * MIB).hostname == "desk-7"
    seed_file.write_text('hostname = "no good"\n')
    assert image_main(["seed", str(target), str(seed_file)]) == 1
    assert read_seed(target, 4 * MIB).hostname == "desk-7"


def test_image_changed_after_check_is_caught_while_writing(image: Path, tmp_path: Path) -> None:
    flasher = Flasher(image)
    flasher.check_image()
    offset, _ = flasher.bmap.byte_span(flasher.bmap.ranges[-1])
    with open(image, "r+b") as fh:
        fh.seek(offset + 5)
        fh.write(b"\x01changed")
    with pytest.raises(FlashError, match="image changed while writing"):
        flasher.flash(tmp_path / "card.img")


def _compress(image: Path, kind: str) -> Path:
    """The image compressed as the build does (zstd --sparse) or as xz; its bmap stays beside it
    under the uncompressed name (X.img.bmap), as the build leaves it."""
    out = image.with_name(image.name + (".zst" if kind == "zstd" else ".xz"))
    cmd = ["zstd", "-q", "-f", "--sparse", str(image), "-o", str(out)] if kind == "zstd" else [
        "xz", "-0", "-q", "-k", "-f", "-T1", str(image)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return out


@pytest.mark.parametrize("kind", ["zstd", "xz"])
def test_compressed_image_flashes_directly(image: Path, tmp_path: Path, kind: str) -> None:
    """The .img.zst the build writes (and an .img.xz) flash as they are, streamed: the card equals
    the uncompressed image, stays sparse, is verified and seeded."""
    compressed = _compress(image, kind)
    expected = sha(image)
    image.unlink()  # only the compressed file and the bmap are left
    seed_file = tmp_path / "seed.toml"
    seed_file.write_text(SEED)
    target = tmp_path / "card.img"
    assert flash_main([str(compressed), str(target), "--seed", str(seed_file)]) == 0
    assert read_seed(target, 4 * MIB).hostname == "desk-7"
    plain = tmp_path / "plain.img"
    result = Flasher(compressed).flash(plain)
    assert result.verified
    assert sha(plain) == expected
    assert os.stat(plain).st_blocks * 512 < plain.stat().st_size // 2


@pytest.mark.parametrize("kind", ["zstd", "xz"])
def test_corrupt_compressed_image_is_rejected_before_writing(
    image: Path, tmp_path: Path, kind: str
) -> None:
    """Checksums of the bmap are checked on the decompressed stream before the first write."""
    flasher = Flasher(image)
    offset, _ = flasher.bmap.byte_span(flasher.bmap.ranges[-1])
    with open(image, "r+b") as fh:
        fh.seek(offset + 17)
        fh.write(b"\x00corrupt")
    compressed = _compress(image, kind)
    target = tmp_path / "card.img"
    target.write_bytes(b"keep")
    with pytest.raises(FlashError, match=r"nothing written.*checksum mismatch"):
        Flasher(compressed).flash(target)
    assert target.read_bytes() == b"keep"


def test_truncated_compressed_image_is_rejected_before_writing(image: Path, tmp_path: Path) -> None:
    compressed = _compress(image, "zstd")
    os.truncate(compressed, compressed.stat().st_size // 2)
    target = tmp_path / "card.img"
    with pytest.raises(FlashError, match=r"nothing written.*(truncated|ended)"):
        Flasher(compressed).flash(target)
    assert not target.exists()


def test_missing_image_says_not_found(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere" / "offhook-qemu-amd64.img.zst"
    with pytest.raises(FlashError, match="not found"):
        Flasher(missing)
    assert flash_main([str(missing), str(tmp_path / "card.img")]) == 1
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "card.img").exists()


def test_flash_shows_board_and_version_before_writing(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from offhook.image.manifest import write_manifest

    write_manifest(image.with_name("offhook-qemu-amd64.manifest.json"), outputs=[image],
                   board="qemu-amd64", offhook_version="1.2.3")  # fmt: skip
    assert flash_main([str(image), str(tmp_path / "card.img")]) == 0
    err = capsys.readouterr().err
    assert "board qemu-amd64" in err and "offhook 1.2.3" in err
    assert err.index("offhook 1.2.3") < err.index("wrote")
