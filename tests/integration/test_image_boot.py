"""A real (small) boot in CI: Debian's kernel boots our disk layout under QEMU.

A sample image goes through the same assembly, block map, verified flash and seeding as a full
image; the guest kernel must read the partition table, mount the labelled filesystems, read the
seed from the FAT boot partition and write to the data partition. About 25 s (package download
cached in ~/.cache/offhook-image/debs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offhook.image.flash import Flasher
from offhook.image.layout import MIB
from offhook.image.miniboot import MinibootError, build_minisystem, miniboot
from offhook.image.sample import make_sample_image
from offhook.image.seed import parse_seed

pytestmark = [pytest.mark.image, pytest.mark.integration, pytest.mark.timeout(600)]


def debugfs_cat(disk: Path, start: int, size: int, path: str, workdir: Path) -> str:
    part = workdir / "part.ext4"
    with open(disk, "rb") as src, open(part, "wb") as dst:
        src.seek(start)
        dst.write(src.read(size))
    return subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(part)], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def minisystem(tmp_path_factory: pytest.TempPathFactory):
    if not shutil.which("qemu-system-x86_64"):
        pytest.fail("qemu-system-x86_64 is missing (scripts/setup.sh installs it)")
    cache = Path(os.environ.get("OFFHOOK_IMAGE_CACHE", Path.home() / ".cache" / "offhook-image"))
    return build_minisystem(cache / "debs", tmp_path_factory.mktemp("mini"))


def test_kernel_boots_layout_and_reads_seed(minisystem, tmp_path: Path) -> None:
    image, layout = make_sample_image(tmp_path / "img", payload_bytes=MIB)
    disk = tmp_path / "card.img"
    Flasher(image).flash(disk, seed=parse_seed({"hostname": "desk-42"}))
    hostname, root, _console = miniboot(disk, minisystem)
    assert (hostname, root) == ("desk-42", "/dev/vda2")
    data = layout.partition("data")
    written = debugfs_cat(disk, data.start, data.size, "/offhook/miniboot-hostname", tmp_path)
    assert written == "desk-42\n"
    from_root = debugfs_cat(disk, data.start, data.size, "/offhook/miniboot-root-hostname",
                            tmp_path)  # fmt: skip
    assert from_root == "offhook\n"  # the guest read it from the read-only root partition


def test_unseeded_card_is_reported_by_the_guest(minisystem, tmp_path: Path) -> None:
    image, _ = make_sample_image(tmp_path / "img", payload_bytes=MIB)
    disk = tmp_path / "card.img"
    Flasher(image).flash(disk)
    with pytest.raises(MinibootError, match="no seed on the boot partition"):
        miniboot(disk, minisystem)
