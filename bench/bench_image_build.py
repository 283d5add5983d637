"""Image build: time per step and sizes, for the qemu-amd64 board.

Peer: the single `mke2fs -d` of the same root tree, the least any image assembly must do,
measured in the same run against our whole rootless assembly (table, FAT, ext4 x2, dd, bmap).
Uses the root filesystem cache (~/.cache/offhook-image) when present; the first run is cold.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from offhook.image.assemble import Contents, assemble, ext4_size_for
from offhook.image.bmap import create_bmap, write_bmap
from offhook.image.build import BuildOptions, build
from offhook.image.layout import MIB, plan_layout
from offhook.image.sample import make_tree


def assembly_vs_mke2fs(work: Path) -> None:
    tree = work / "tree"
    make_tree(tree, 256 * MIB)
    layout = plan_layout(
        boot_size=64 * MIB, root_size=ext4_size_for(tree, extra=8 * MIB), data_size=16 * MIB
    )
    started = time.monotonic()
    assemble(work / "x.img", layout, Contents(None, tree, None), work / "parts")
    write_bmap(create_bmap(work / "x.img"), work / "x.img.bmap")
    ours = time.monotonic() - started
    part = work / "root.ext4"
    started = time.monotonic()
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(part),
         f"{layout.partition('root').size // 1024}k"],
        check=True, capture_output=True,
    )  # fmt: skip
    peer = time.monotonic() - started
    print(f"rootless assembly + block map of a 256 MiB tree: {ours:.2f} s")
    print(f"peer: mke2fs -d of the same tree alone: {peer:.2f} s; ratio {ours / peer:.1f}x")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="offhook-bench-build-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        assembly_vs_mke2fs(work)
        if os.geteuid() != 0:
            print("full build skipped: needs root")
            return 0
        started = time.monotonic()
        manifest = build(BuildOptions(board="qemu-amd64", out=work / "out"))
        total = time.monotonic() - started
        outputs = manifest["outputs"]
        img = outputs["offhook-qemu-amd64.img"]["bytes"]
        zst = outputs["offhook-qemu-amd64.img.zst"]["bytes"]
        print(f"full qemu-amd64 build: {total:.1f} s (root filesystem cache used: "
              f"{manifest['rootfs_cache_used']})")  # fmt: skip
        for step, secs in manifest["step_seconds"].items():
            print(f"  {step}: {secs} s")
        print(f"image {img / MIB:.0f} MiB, mapped {manifest['mapped_bytes'] / MIB:.0f} MiB "
              f"({manifest['mapped_bytes'] / img:.0%}), .zst {zst / MIB:.0f} MiB "
              f"(ratio to image {zst / img:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
