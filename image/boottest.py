"""``offhook image boot-test``: boot a qemu-amd64 image and wait until the phone is up.

The image is flashed (sparse, verified, seeded) to a scratch copy one data-partition-growth larger,
so the first boot really grows the data partition and consumes the seed. QEMU boots the kernel and
initramfs taken from the copy's boot partition (direct kernel boot: no bootloader in the image),
with the disk on virtio, the serial console captured, and user networking forwarding a loopback
port on the host to the control API in the guest. Milestones, each with a bounded wait:
first-boot script finished -> offhook.service started (sd_notify READY) -> control API answers ->
(with Kamailio) the phone's REGISTER reached a Kamailio on the host (guest sees it as 10.0.2.2).
QEMU and Kamailio are always killed on the way out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from image.flash import Flasher
from image.layout import MIB, boot_partition_offset
from image.seed import Seed, load_seed, parse_seed

log = logging.getLogger(__name__)

GUEST_CONTROL_PORT = 8080
HOST_FROM_GUEST = "10.0.2.2"  # QEMU user networking's address for the host
GROW_BY = 256 * MIB
FIRSTBOOT_READY = re.compile(r"offhook-firstboot: ready hostname=(\S+)")
SERVICE_STARTED = re.compile(r"Started .*offhook\.service|Started offhook desk phone")
KERNEL_PANIC = re.compile(r"Kernel panic|end Kernel panic")


class BootTestError(RuntimeError):
    """The image did not reach a milestone in time; the message names it and the console tail."""


@dataclass
class BootResult:
    milestones: dict[str, float] = field(default_factory=dict)  # name -> seconds after start
    state: dict = field(default_factory=dict)
    hostname: str = ""
    registered_contact: str = ""

    def summary(self) -> str:
        marks = ", ".join(f"{name} {secs:.1f}s" for name, secs in self.milestones.items())
        return f"{marks}; hostname={self.hostname}" + (
            f"; registered {self.registered_contact}" if self.registered_contact else ""
        )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OutputWatcher:
    """Collects a process's output in a thread so waits can look for patterns in it."""

    def __init__(self, stream, log_path: Path | None = None) -> None:
        self._text = ""
        self._lock = threading.Lock()
        self._log = (  # closed in close()
            open(log_path, "w", encoding="utf-8", errors="replace") if log_path else None  # noqa: SIM115
        )
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(lambda: stream.read1(4096) if hasattr(stream, "read1") else b"", b""):
            text = raw.decode("utf-8", "replace")
            with self._lock:
                self._text += text
            if self._log:
                self._log.write(text)
                self._log.flush()

    @property
    def text(self) -> str:
        with self._lock:
            return self._text

    def tail(self, lines: int = 25) -> str:
        clean = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", self.text)
        return "\n".join(clean.splitlines()[-lines:])

    def close(self) -> None:
        self._thread.join(timeout=2)
        if self._log:
            self._log.close()


KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
modparam("usrloc", "db_mode", 0)
request_route {{
    if (is_method("REGISTER")) {{
        if (save("location")) {{
            xlog("L_NOTICE", "offhook-registered aor=$tu contact=$ct\\n");
        }}
        exit;
    }}
    sl_send_reply("404", "Not here");
}}
"""


@contextlib.contextmanager
def running_kamailio(workdir: Path) -> Iterator[tuple[int, OutputWatcher]]:
    port = free_port(socket.SOCK_DGRAM)
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port))
    rundir = workdir / "kamailio-run"
    rundir.mkdir()
    proc = subprocess.Popen(
        ["kamailio", "-DD", "-E", "-f", str(cfg), "-Y", str(rundir), "-m", "32", "-M", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    watcher = OutputWatcher(proc.stdout, workdir / "kamailio.log")
    try:
        time.sleep(0.3)
        if proc.poll() is not None:
            raise BootTestError(f"kamailio exited at start:\n{watcher.tail()}")
        yield port, watcher
    finally:
        _stop(proc)
        watcher.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def prepare_seed(seed_path: Path | None, kamailio_port: int | None) -> Seed:
    """The seed to boot with: given or generated; with Kamailio, its SIP account points there."""
    if seed_path is None:
        data: dict = {
            "hostname": "offhook-boottest",
            "control": {"listen": f"0.0.0.0:{GUEST_CONTROL_PORT}", "token": secrets.token_hex(16)},
        }
    else:
        data = load_seed(seed_path).model_dump(mode="json", exclude_none=True)
    if kamailio_port:
        sip = data.get("sip") or {"user": "1001", "password": "boottest"}
        data["sip"] = sip | {"domain": f"{HOST_FROM_GUEST}:{kamailio_port}"}
    seed = parse_seed(data, str(seed_path or "boot-test seed"))
    host, _, port = seed.control.listen.rpartition(":")
    if host in ("127.0.0.1", "localhost", "[::1]") or port != str(GUEST_CONTROL_PORT):
        raise BootTestError(
            f"seed control.listen {seed.control.listen!r}: the boot test reaches the control API "
            f"through QEMU port forwarding to guest port {GUEST_CONTROL_PORT}: use "
            f"0.0.0.0:{GUEST_CONTROL_PORT} and a token"
        )
    return seed


def scratch_copy(image: Path, seed: Seed, workdir: Path) -> Path:
    """Flash (verified) to a file GROW_BY larger than the image and seed it."""
    disk = workdir / "disk.img"
    Flasher(image).flash(disk, seed=seed)
    with open(disk, "r+b") as fh:
        fh.truncate(disk.stat().st_size + GROW_BY)
    return disk


def extract_boot_files(disk: Path, workdir: Path) -> tuple[Path, Path, str]:
    offset = boot_partition_offset(disk)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    out = {}
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        dest = workdir / name
        proc = subprocess.run(
            ["mcopy", "-n", "-i", f"{disk}@@{offset}", f"::/{name}", str(dest)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BootTestError(
                f"{disk}: no {name} on the boot partition (is this a qemu-amd64 image?): "
                f"{proc.stderr.strip()}"
            )
        out[name] = dest
    return out["vmlinuz"], out["initrd.img"], out["cmdline.txt"].read_text().strip()


def accelerator_args() -> list[str]:
    """KVM when usable, else TCG. A kvm_pvm host opens /dev/kvm fine but guests then fail with
    "emulation failure", so that case counts as unusable; OFFHOOK_QEMU_ACCEL overrides."""
    forced = os.environ.get("OFFHOOK_QEMU_ACCEL", "")
    if forced:
        return ["-accel", forced]
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists()
    # With both, QEMU falls back to TCG when KVM cannot start.
    return ["-accel", "kvm", "-accel", "tcg"] if usable else ["-accel", "tcg"]


def qemu_command(
    disk: Path, kernel: Path, initrd: Path, cmdline: str, host_port: int, memory_mb: int
) -> list[str]:
    return [
        "qemu-system-x86_64",
        *accelerator_args(),
        "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-monitor", "none",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_CONTROL_PORT}",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip


def _wait(what: str, deadline: float, check, console: OutputWatcher, proc: subprocess.Popen):
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            raise BootTestError(f"QEMU exited ({proc.returncode}) before {what}:\n{console.tail()}")
        if KERNEL_PANIC.search(console.text):
            raise BootTestError(f"kernel panic before {what}:\n{console.tail()}")
        time.sleep(0.5)
    raise BootTestError(f"timed out waiting for {what}:\n{console.tail()}")


def _control_state(port: int, token: str) -> dict | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/state",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read() or b"{}") or {"ok": True}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def boot_test(
    image: Path,
    *,
    seed_path: Path | None = None,
    kamailio: bool = False,
    timeout: float = 600.0,
    console_log: Path | None = None,
    memory_mb: int = 768,
    workdir: Path | None = None,
) -> BootResult:
    result = BootResult()
    own_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="offhook-boottest-")) if own_workdir else workdir
    try:
        with contextlib.ExitStack() as stack:
            kamailio_port, kamailio_log = None, None
            if kamailio:
                kamailio_port, kamailio_log = stack.enter_context(running_kamailio(workdir))
            seed = prepare_seed(seed_path, kamailio_port)
            disk = scratch_copy(image, seed, workdir)
            kernel, initrd, cmdline = extract_boot_files(disk, workdir)
            host_port = free_port()
            # The journal on the console: a failing service's own messages land in the log.
            cmdline += " systemd.journald.forward_to_console=1"
            cmd = qemu_command(disk, kernel, initrd, cmdline, host_port, memory_mb)
            log.info("boot test starting qemu port=%d image=%s", host_port, image)
            started = time.monotonic()
            deadline = started + timeout
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            console = OutputWatcher(proc.stdout, console_log or workdir / "console.log")
            stack.callback(console.close)
            stack.callback(_stop, proc)

            def mark(name: str) -> None:
                result.milestones[name] = round(time.monotonic() - started, 1)

            match = _wait("first boot to finish", deadline,
                          lambda: FIRSTBOOT_READY.search(console.text), console, proc)  # fmt: skip
            result.hostname = match.group(1)
            mark("firstboot")
            _wait("offhook.service to start (READY)", deadline,
                  lambda: SERVICE_STARTED.search(console.text), console, proc)  # fmt: skip
            mark("service")
            result.state = _wait(
                "the control API to answer",
                deadline,
                lambda: _control_state(host_port, seed.control.token),
                console,
                proc,
            )
            mark("control_api")
            if kamailio_log is not None:
                found = _wait(
                    "REGISTER at Kamailio",
                    deadline,
                    lambda: re.search(r"offhook-registered aor=(\S+) contact=(\S+)",
                                      kamailio_log.text),
                    console,
                    proc,
                )  # fmt: skip
                result.registered_contact = found.group(2)
                mark("registered")
        return result
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
