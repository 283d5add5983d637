"""Boot to registered, and to a first call: power-on (QEMU started) to each milestone, under QEMU.

Peer, in the same run: the same image booted with offhook.service masked (``systemd.mask=`` on
the kernel command line), to multi-user.target: what Debian's boot costs without our phone. The
difference is what the phone adds on top of the operating system.

Images: ``OFFHOOK_BENCH_IMAGE`` (a qemu-amd64 .img), else one is built into a temporary directory
(root filesystem cache used when present); arm64: ``OFFHOOK_BENCH_RPI_IMAGE`` (an rpi .img, booted
under ``qemu-system-aarch64 -M virt``), skipped when not given. Run with
``.venv/bin/python -m bench boot``.

The Raspberry Pi 4 figure is an estimate, printed with its inputs: the phone's start-up (from
"Starting offhook.service" to READY, mostly Python imports and pjsua2's start) is timed in the
guest and the same start-up natively on this host (importing the phone process's modules and
starting pjsua2), which gives the emulation's slowdown; a Pi 4's Cortex-A72 at 1.5 GHz is taken
as PI4_VS_HOST times slower per core than this host natively (single-thread benchmark ratios of
such cores against current x86 server cores are about 3-5x).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from offhook.image.boottest import BootTestError, boot_test

PI4_VS_HOST = 4.0  # assumed per-core slowdown of a Pi 4 against this host, natively
STARTING = re.compile(r"\[\s*([0-9.]+)\] systemd\[1\]: Starting offhook\.service")
STARTED = re.compile(r"\[\s*([0-9.]+)\] systemd\[1\]: Started offhook\.service")
KERNEL_DONE = re.compile(r"\[\s*([0-9.]+)\] Run /init as init process")

HOST_STARTUP = """
import time
t = time.monotonic()
import offhook.firmware.phone_process, offhook.firmware.sip.engine, pjsua2 as pj
ep = pj.Endpoint(); ep.libCreate(); cfg = pj.EpConfig(); cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True; ep.libInit(cfg); ep.audDevManager().setNullDev()
ep.libStart(); ep.libDestroy()
print(time.monotonic() - t)
"""


def _image() -> tuple[Path, tempfile.TemporaryDirectory | None]:
    given = os.environ.get("OFFHOOK_BENCH_IMAGE", "")
    if given:
        return Path(given), None
    from offhook.image.build import BuildOptions, build

    tmp = tempfile.TemporaryDirectory(prefix="offhook-bench-boot-", dir="/var/tmp")
    build(BuildOptions(board="qemu-amd64", out=Path(tmp.name), compress=False))
    return Path(tmp.name) / "offhook-qemu-amd64.img", tmp


def _phone_startup_in_guest(console: str) -> float | None:
    starting, started = STARTING.search(console), STARTED.search(console)
    if not (starting and started):
        return None
    return float(started.group(1)) - float(starting.group(1))


def _phone_startup_on_host() -> float:
    proc = subprocess.run([sys.executable, "-c", HOST_STARTUP], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    return float(proc.stdout.strip().splitlines()[-1])


def bench_arch(label: str, image: Path, work: Path) -> dict[str, float]:
    """Both boots of one image; prints and returns the figures."""
    print(f"--- {label}: {image}")
    for name in ("os", "phone"):
        (work / f"{label}-{name}").mkdir()
    base = boot_test(image, phone=False, timeout=900, workdir=work / f"{label}-os")
    os_only = base.milestones["multi_user"]
    print(f"peer (offhook.service masked): power-on to multi-user.target {os_only:.1f} s")
    console_log = work / f"{label}-console.log"
    started = time.monotonic()
    result = boot_test(image, call=True, timeout=900, workdir=work / f"{label}-phone",
                       console_log=console_log)  # fmt: skip
    total = time.monotonic() - started
    marks = result.milestones
    for name in ("firstboot", "service", "registered", "call_connected", "audio"):
        print(f"  power-on to {name.replace('_', ' ')}: {marks[name]:.1f} s")
    print(f"  phone on top of the OS: registered - multi-user(peer) = "
          f"{marks['registered'] - os_only:+.1f} s "
          f"(ratio {marks['registered'] / os_only:.2f}x); whole run {total:.0f} s")  # fmt: skip
    if result.call is not None and result.call.audio_stats:
        stats = result.call.audio_stats
        print(f"  call {result.call.codec}: audio since the phone started: xruns recovered "
              f"{stats.get('xruns_recovered')}, ring underruns {stats.get('underruns')}, "
              f"overruns {stats.get('overruns')}, drift corrections "
              f"{stats.get('drift_corrections')}")  # fmt: skip
    startup = _phone_startup_in_guest(console_log.read_text(errors="replace"))
    figures = dict(marks, os_multi_user=os_only)
    if startup is not None:
        figures["phone_startup_guest"] = startup
        print(f"  offhook.service start to READY in the guest: {startup:.1f} s")
    return figures


def pi4_estimate(amd64: dict[str, float]) -> None:
    guest = amd64.get("phone_startup_guest")
    if not guest:
        print("Pi 4 estimate: no start-up timing in the console log")
        return
    host = _phone_startup_on_host()
    slowdown = guest / host  # emulation (TCG) against this host natively
    pi4 = PI4_VS_HOST / slowdown  # a Pi 4 runs natively: scale the guest's times by this
    registered = amd64["registered"] * pi4
    os_part = amd64["os_multi_user"] * pi4
    print(f"Pi 4 estimate: phone start-up natively here {host:.2f} s, in the guest {guest:.1f} s "
          f"-> TCG slowdown {slowdown:.1f}x; Pi 4 assumed {PI4_VS_HOST:.0f}x slower than this "
          f"host natively -> guest times x{pi4:.2f}")  # fmt: skip
    print(f"  Pi 4 (estimate): multi-user without the phone ~{os_part:.0f} s, registered "
          f"~{registered:.0f} s, first call connected ~{amd64['call_connected'] * pi4:.0f} s "
          "(plus the Pi firmware's own ~5-8 s before the kernel, and SD card reads, which the "
          "virtio disk on this host's page cache does not model)")  # fmt: skip


def main() -> int:
    image, tmp = _image()
    try:
        with tempfile.TemporaryDirectory(prefix="offhook-bench-boot-run-", dir="/var/tmp") as run:
            work = Path(run)
            try:
                amd64 = bench_arch("amd64", image, work)
            except BootTestError as exc:
                print(f"amd64 boot failed: {exc}")
                return 1
            rpi = os.environ.get("OFFHOOK_BENCH_RPI_IMAGE", "")
            if rpi:
                try:
                    bench_arch("arm64", Path(rpi), work)
                except BootTestError as exc:
                    print(f"arm64 boot failed: {exc}")
                    return 1
            else:
                print("arm64: skipped (set OFFHOOK_BENCH_RPI_IMAGE to an rpi image)")
            pi4_estimate(amd64)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
