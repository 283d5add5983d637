"""Flash throughput: ours (sparse, verified, read back) vs `dd` and `bmaptool copy`.

One image of 4 GiB with 1 GiB used (random data, so nothing compresses or dedups), flashed to a
regular file on the same disk by each tool in turn; the target is deleted between runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from offhook.image.flash import Flasher
from offhook.image.layout import MIB
from offhook.image.sample import make_sample_image

GIB = 1 << 30


def _drop(path: Path) -> None:
    if path.exists():
        path.unlink()


def _timed(func) -> float:
    started = time.monotonic()
    func()
    return time.monotonic() - started


def main() -> int:
    base = Path(os.environ.get("OFFHOOK_BENCH_DIR", "/var/tmp"))
    with tempfile.TemporaryDirectory(prefix="offhook-bench-flash-", dir=base) as tmp:
        work = Path(tmp)
        started = time.monotonic()
        image, _ = make_sample_image(
            work / "img", payload_bytes=GIB, disk_size=4 * GIB, boot_size=128 * MIB
        )
        print(f"sample image: 4 GiB, 1 GiB used, made in {time.monotonic() - started:.1f} s")
        bmap = image.with_name(image.name + ".bmap")
        target = work / "target.img"
        flasher = Flasher(image)
        flasher.check_image()  # warms the page cache: every tool then reads the image from RAM
        ours = _timed(lambda: Flasher(image).flash(target))
        mapped = Flasher(image).bmap.mapped_bytes
        _drop(target)
        unverified = _timed(lambda: Flasher(image, verify=False).flash(target))
        _drop(target)
        dd = _timed(
            lambda: subprocess.run(
                ["dd", f"if={image}", f"of={target}", "bs=4M", "conv=fsync", "status=none"],
                check=True,
            )
        )
        _drop(target)
        bmaptool = None
        if shutil.which("bmaptool"):
            bmaptool = _timed(
                lambda: subprocess.run(
                    ["bmaptool", "-q", "copy", "--bmap", str(bmap), str(image), str(target)],
                    check=True,
                )
            )
            _drop(target)
        print(f"offhook flash (check + write {mapped / MIB:.0f} MiB + read-back): {ours:.2f} s "
              f"({mapped / MIB / ours:.0f} MiB/s of mapped data)")  # fmt: skip
        print(f"offhook flash --no-verify (check + write): {unverified:.2f} s")
        print(f"dd bs=4M conv=fsync (4096 MiB): {dd:.2f} s")
        print(f"ratio: offhook is {dd / ours:.1f}x faster than dd (goal >= 3x)")
        if bmaptool is not None:
            print(f"bmaptool copy (write + checksums, no read-back): {bmaptool:.2f} s")
            print(
                f"ratio: offhook takes {ours / bmaptool:.2f}x the time of bmaptool copy "
                f"({unverified / bmaptool:.2f}x without read-back, which bmaptool skips)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
