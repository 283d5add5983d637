"""Small real images made from generated trees, for tests and flash benchmarks.

They go through the same assembly path as a full build (sfdisk, mkfs.vfat + mcopy, mke2fs -d,
dd sparse), only with a few generated files instead of a Debian root filesystem.
"""

from __future__ import annotations

import random
from pathlib import Path

from offhook.image.assemble import Contents, assemble, ext4_size_for
from offhook.image.bmap import create_bmap, write_bmap
from offhook.image.layout import MIB, Layout, plan_layout


def make_tree(root: Path, payload_bytes: int, files: int = 8, seed: int = 1) -> None:
    """A small root-like tree with ``payload_bytes`` of incompressible data in ``files`` files."""
    rng = random.Random(seed)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hostname").write_text("offhook\n")
    (root / "etc" / "os-release").write_text('NAME="offhook sample"\n')
    (root / "opt" / "blobs").mkdir(parents=True, exist_ok=True)
    per_file = payload_bytes // files if files else 0
    for i in range(files):
        (root / "opt" / "blobs" / f"blob{i:03d}.bin").write_bytes(rng.randbytes(per_file))
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    link = root / "usr" / "bin" / "hostname-link"
    if not link.is_symlink():
        link.symlink_to("/etc/hostname")


def make_sample_image(
    workdir: Path,
    *,
    payload_bytes: int = 4 * MIB,
    disk_size: int | None = 128 * MIB,
    boot_size: int = 40 * MIB,
    data_size: int = 16 * MIB,
    with_bmap: bool = True,
) -> tuple[Path, Layout]:
    """workdir/sample.img (+ .bmap): boot with config.txt, root with payload, empty data."""
    boot, root = workdir / "tree-boot", workdir / "tree-root"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "config.txt").write_text("# sample\nenable_uart=1\n")
    (boot / "overlays").mkdir(exist_ok=True)
    (boot / "overlays" / "README").write_text("overlays\n")
    make_tree(root, payload_bytes)
    layout = plan_layout(
        boot_size=boot_size,
        root_size=ext4_size_for(root, extra=8 * MIB),
        data_size=data_size,
        disk_size=disk_size,
    )
    image = workdir / "sample.img"
    assemble(image, layout, Contents(boot=boot, root=root, data=None), workdir / "assemble")
    if with_bmap:
        write_bmap(create_bmap(image), image.with_name(image.name + ".bmap"))
    return image, layout
