"""Firmware update: the RAUC bundle's size against the image it updates, and the time RAUC
takes to install it against ``dd`` writing the same root filesystem to the same kind of slot.

Needs a built qemu-amd64 image with its bundle beside it: OFFHOOK_BENCH_UPDATE_IMAGE=
path/to/offhook-qemu-amd64.img (``offhook image build --board qemu-amd64``). The install runs on
this host against Debian's ``rauc service`` on a private D-Bus bus with file-backed slots
(tests/fixtures/rauc_system.py): the image's verity bundle needs device-mapper, which a container
may lack, so the root filesystem is installed from a ``plain`` bundle of the same content; the
peer is ``dd bs=4M conv=fsync`` of that file into a slot file of the same size.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from offhook.contract.signing import make_signing_pair
from offhook.image.layout import MIB, read_partition_table
from tests.fixtures import rauc_system
from tests.fixtures.rauc_system import RaucSystem, grubenv


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.monotonic() - started


def main() -> int:
    image = Path(os.environ.get("OFFHOOK_BENCH_UPDATE_IMAGE", ""))
    if not image.is_file():
        print("skipped: set OFFHOOK_BENCH_UPDATE_IMAGE to a built offhook-qemu-amd64.img")
        return 0
    bundle = image.with_suffix(".raucb")
    bmap = image.with_name(image.name + ".bmap")
    zst = image.with_name(image.name + ".zst")
    mapped = 0
    if bmap.is_file():
        text = bmap.read_text()
        mapped_blocks = int(text.split("<MappedBlocksCount>")[1].split("<")[0])
        mapped = mapped_blocks * int(text.split("<BlockSize>")[1].split("<")[0])
    size = image.stat().st_size
    raucb = bundle.stat().st_size
    print(f"image {size / MIB:.0f} MiB ({mapped / MIB:.0f} MiB mapped); bundle {raucb / MIB:.1f} "
          f"MiB = {raucb / size:.1%} of the image, {raucb / mapped:.1%} of its mapped bytes"
          if mapped else f"image {size / MIB:.0f} MiB; bundle {raucb / MIB:.1f} MiB")  # fmt: skip
    if zst.is_file():
        print(f"  vs the compressed image {zst.stat().st_size / MIB:.1f} MiB: "
              f"{raucb / zst.stat().st_size:.2f}x")  # fmt: skip
    why = rauc_system.available()
    if why:
        print(f"install time skipped: {why}")
        return 0
    root = read_partition_table(image)[1]
    with tempfile.TemporaryDirectory(prefix="offhook-bench-update-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs.ext4"
        cut = ["dd", f"if={image}", f"of={rootfs}", "bs=1M", f"skip={root.start // MIB}",
               f"count={root.size // MIB}", "conv=sparse", "status=none"]  # fmt: skip
        subprocess.run(cut, check=True)
        keys = make_signing_pair(work / "keys", "bench")
        content = work / "content"
        content.mkdir()
        os.link(rootfs, content / "rootfs.ext4")
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible={rauc_system.COMPATIBLE}\nversion=9.9.9\n\n[bundle]\n"
            "format=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n"
        )
        plain = work / "plain.raucb"
        made = _timed(["rauc", "bundle", f"--cert={keys.cert}", f"--key={keys.key}",
                       "--mksquashfs-args=-comp zstd -Xcompression-level 9", str(content),
                       str(plain)])  # fmt: skip
        rauc_system.SLOT_BYTES = root.size
        system = RaucSystem(work / "rauc", keyring=keys.cert)
        system.root.mkdir()
        try:
            system.setup()
            install = _timed(["rauc", "install", str(plain)], system.env)
            assert grubenv(system.grubenv_path)["ORDER"] == "B A"
        finally:
            system.close()
        peer = work / "dd-slot"
        subprocess.run(["truncate", "-s", str(root.size), str(peer)], check=True)
        dd = _timed(["dd", f"if={rootfs}", f"of={peer}", "bs=4M", "conv=fsync,notrunc",
                     "status=none"])  # fmt: skip
    print(f"bundle build (plain, same content, zstd) {made:.1f} s")
    print(
        f"install {root.size / MIB:.0f} MiB slot: rauc install {install:.1f} s, "
        f"dd bs=4M conv=fsync {dd:.1f} s: {install / dd:.2f}x dd's time"
    )
    print(json.dumps({"bundle_bytes": raucb, "image_bytes": size, "mapped_bytes": mapped,
                      "install_s": round(install, 2), "dd_s": round(dd, 2)}))  # fmt: skip
    return 0
