"""``offhook image boot-test``: boot an image under QEMU and wait until the phone is up.

The image is flashed (sparse, verified, seeded) to a scratch copy one data-partition-growth larger,
so the first boot really grows the data partition and consumes the seed. QEMU boots the kernel and
initramfs taken from the copy's boot partition (direct kernel boot: no bootloader in the image;
a Raspberry Pi card boots the kernel and initramfs its config.txt names, under
``qemu-system-aarch64 -M virt``, the phone on the emulated board),
with the disk on virtio, the serial console captured, and user networking forwarding a loopback
port on the host to the control API in the guest. Milestones, each with a bounded wait:
first-boot script finished -> offhook.service started (sd_notify READY) -> control API answers ->
(with Kamailio) the phone's REGISTER reached a Kamailio on the host (guest sees it as 10.0.2.2)
-> (with ``call``) the phone calls a baresip on the host, audio is checked both ways through the
guest's kernel sound driver, and it hangs up (``image/bootcall.py``). The QEMU machine per card
architecture, sound card included, is ``image/qemu.py``. With ``reboots``, the card then loses
power (QEMU killed) and boots again from the same disk, up to the first-boot marker and the first
DHCP request, as often as asked. Every boot takes cmdline.txt from the boot partition afresh (as
a Pi's firmware does) and records the machine-id the first-boot script reports and the DHCP
client identifier seen on the wire. QEMU, Kamailio and baresip are always stopped on the way out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.control import ControlClient
from offhook.firmware.processes import stop_process
from offhook.image import bootcall, uboot
from offhook.image.build import pi_config_files
from offhook.image.flash import Flasher
from offhook.image.kamailio_cfg import registrar_config
from offhook.image.layout import MIB, boot_partition_offset, read_partition_table
from offhook.image.qemu import (
    AUDIO_RATE,
    DEFAULT_MACHINE,
    GUEST_CONTROL_PORT,
    HOST_FROM_GUEST,
    MACHINES,
    QEMU_ARCH,
    QemuMachineError,
    accelerator_args,
    asoundrc,
    guest_cmdline,
    machine_args,
    machine_for,
    machine_names,
    qemu_command,
)
from offhook.image.seed import Seed, load_seed, parse_seed

log = logging.getLogger(__name__)

# Re-exported: the QEMU machine setup lives in image/qemu.py.
__all__ = [
    "QEMU_ARCH", "BootResult", "BootTestError", "accelerator_args", "boot_test", "guest_cmdline",
    "machine_args", "qemu_command",
]  # fmt: skip
GROW_BY = 256 * MIB
FIRSTBOOT_READY = re.compile(r"offhook-firstboot: ready hostname=(\S+)")
SERVICE_STARTED = re.compile(r"Started .*offhook\.service|Started offhook desk phone")
KERNEL_PANIC = re.compile(r"Kernel panic|end Kernel panic")
MACHINE_ID_REPORT = re.compile(r"offhook-firstboot: machine-id running=(\S*) kept=(\S*)")
KEPT_MACHINE_ID = "/offhook/system/machine-id"  # on the data partition


class BootTestError(OffhookError, RuntimeError):
    """The image did not reach a milestone in time; the message names it and the console tail."""


@dataclass
class BootRecord:
    """One boot of the card: what it booted with and the identity it showed."""

    # cmdline.txt on the boot partition before this boot; under GRUB (which builds the command
    # line itself, from grubenv) the command line the guest kernel reported
    cmdline: str
    hostname: str = ""
    machine_id: str = ""  # the id systemd ran with, as offhook-firstboot reported it
    kept_machine_id: str = ""  # the id kept on /data, as offhook-firstboot reported it
    dhcp_client_id: bytes = b""  # DHCP option 61 of the first request on the wire


@dataclass
class BootResult:
    milestones: dict[str, float] = field(default_factory=dict)  # name -> seconds after start
    state: dict = field(default_factory=dict)
    hostname: str = ""
    registered_contact: str = ""
    boots: list[BootRecord] = field(default_factory=list)
    kept_machine_id_on_disk: str = ""  # read from the data partition after the last boot
    call: bootcall.CallResult | None = None  # with call=True

    def summary(self) -> str:
        marks = ", ".join(f"{name} {secs:.1f}s" for name, secs in self.milestones.items())
        ids = ", ".join(boot.machine_id or "?" for boot in self.boots)
        return (
            f"{marks}; hostname={self.hostname}"
            + (f"; registered {self.registered_contact}" if self.registered_contact else "")
            + (f"; machine-id per boot: {ids}" if ids else "")
            + (self._call_summary() if self.call else "")
        )

    def _call_summary(self) -> str:
        call = self.call
        assert call is not None
        if call.echo_share:
            return (
                f"; call {call.codec}, the peer's tone back at the peer through the phone's "
                f"looped playback and capture {call.echo_share:.0%}"
            )
        return (
            f"; call {call.codec}, phone's tone at the peer {call.phone_tone_share:.0%}, "
            f"peer's tone at the line out {call.peer_tone_share:.0%}"
        )


PORTS_ENV = "OFFHOOK_TEST_PORTS"  # "LOW-HIGH": loopback ports this run may use


def port_range(env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """$OFFHOOK_TEST_PORTS as (low, high), or None (any free port). Parallel runs on one
    machine each get their own range, so none takes another's Kamailio or server port."""
    text = (os.environ if env is None else env).get(PORTS_ENV, "").strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 0 < int(low) <= int(high) < 65536):
        raise BootTestError(f"${PORTS_ENV}={text!r}: expected LOW-HIGH, e.g. 42500-42599")
    return int(low), int(high)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port that binds now: any, or one of $OFFHOOK_TEST_PORTS's range."""
    span = port_range()
    candidates = [0] if span is None else random.sample(range(span[0], span[1] + 1),
                                                         span[1] + 1 - span[0])  # fmt: skip
    for port in candidates:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise BootTestError(f"no free port in ${PORTS_ENV} ({span[0]}-{span[1]})")  # type: ignore[index]


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


@contextlib.contextmanager
def running_kamailio(
    workdir: Path, config: Callable[[int], str] | None = None
) -> Iterator[tuple[int, OutputWatcher]]:
    """Kamailio on a free loopback UDP port; ``config(port)`` (default: registrar only)."""
    port = free_port(socket.SOCK_DGRAM)
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(config(port) if config else registrar_config(port))
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
        stop_process(proc)
        watcher.close()


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


def _mcopy(disk: Path, offset: int, name: str, dest: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    return subprocess.run(
        ["mcopy", "-n", "-i", f"{disk}@@{offset}", f"::/{name}", str(dest)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def card_arch(disk: Path) -> str:
    """arm64 for a Raspberry Pi card (config.txt on its boot partition), else amd64."""
    probe = Path(tempfile.mkdtemp(prefix="offhook-probe-"))
    try:
        found = _mcopy(disk, boot_partition_offset(disk), "config.txt", probe / "config.txt")
        return "arm64" if found.returncode == 0 else "amd64"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def extract_dtb(disk: Path, workdir: Path, name: str) -> Path:
    """A device tree from the boot partition (a Pi card carries the upstream DTBs)."""
    dest = workdir / name
    proc = _mcopy(disk, boot_partition_offset(disk), name, dest)
    if proc.returncode != 0:
        raise BootTestError(f"{disk}: no {name} on the boot partition: {proc.stderr.strip()}")
    return dest


def pad_to_power_of_two(disk: Path) -> int:
    """Grow the scratch card (sparse) to the next power of two: QEMU's SD card model refuses
    other sizes. Returns the new size; the partitions are untouched."""
    size = disk.stat().st_size
    padded = 1 << max(size - 1, 1).bit_length()
    if padded != size:
        with open(disk, "r+b") as fh:
            fh.truncate(padded)
    return padded


def pick_machine(disk: Path, machine: str | None) -> str:
    """The QEMU machine for the card: its architecture's default, or the one asked for if it
    boots that architecture."""
    arch = card_arch(disk)
    if machine is None:
        return DEFAULT_MACHINE[arch]
    try:
        chosen = machine_for(machine)
    except QemuMachineError as exc:
        raise BootTestError(str(exc)) from None
    if chosen.card_arch != arch:
        raise BootTestError(
            f"QEMU machine {machine!r} boots {chosen.card_arch} cards; {disk.name} is an {arch} "
            f"card (machines for it: {', '.join(machine_names(arch))})"
        )
    return machine


GRUBENV = "grub/grubenv"


def grub_card(disk: Path) -> bool:
    """A card booted by its own GRUB (qemu-amd64 with A/B slots): grub/grubenv on its boot
    partition. QEMU then boots the disk through SeaBIOS, not a kernel given to it."""
    probe = Path(tempfile.mkdtemp(prefix="offhook-probe-"))
    try:
        return _mcopy(disk, boot_partition_offset(disk), GRUBENV, probe / "g").returncode == 0
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def read_grubenv(disk: Path, workdir: Path) -> dict[str, str]:
    """The card's slot state (ORDER, A_OK, A_TRY, B_OK, B_TRY...) as GRUB and RAUC left it."""
    dest = workdir / "grubenv.read"
    dest.unlink(missing_ok=True)
    proc = _mcopy(disk, boot_partition_offset(disk), GRUBENV, dest)
    if proc.returncode != 0:
        raise BootTestError(f"{disk}: no {GRUBENV} on the boot partition: {proc.stderr.strip()}")
    listed = subprocess.run(["grub-editenv", str(dest), "list"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in listed.splitlines() if "=" in line)


def set_grub_extra_cmdline(disk: Path, workdir: Path, extra: str) -> None:
    """EXTRA_CMDLINE in the card's grubenv: what the test adds to the kernel command line GRUB
    builds (the journal on the console, a masked unit). grub-editenv then mcopy back."""
    env = workdir / "grubenv.edit"
    env.unlink(missing_ok=True)
    offset = boot_partition_offset(disk)
    if _mcopy(disk, offset, GRUBENV, env).returncode != 0:
        raise BootTestError(f"{disk}: no {GRUBENV} on the boot partition")
    subprocess.run(["grub-editenv", str(env), "set", f"EXTRA_CMDLINE={extra}"], check=True)
    proc = subprocess.run(
        ["mcopy", "-o", "-i", f"{disk}@@{offset}", str(env), f"::/{GRUBENV}"],
        capture_output=True, text=True, check=False, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise BootTestError(f"cannot write {GRUBENV} back: {proc.stderr.strip()}")


def uboot_card(disk: Path) -> bool:
    """A Pi card whose U-Boot picks the slot (A/B): its slot state on the boot partition.
    Under -M virt QEMU runs Debian's qemu_arm64 U-Boot as firmware, which finds the card's
    boot.scr as the Pi's U-Boot does; the script boots the slot's own kernel."""
    probe = Path(tempfile.mkdtemp(prefix="offhook-probe-"))
    try:
        found = _mcopy(disk, boot_partition_offset(disk), uboot.ENV_FILE, probe / "e")
        return found.returncode == 0
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def read_uboot_state(disk: Path, workdir: Path) -> dict[str, str]:
    """The U-Boot card's slot state (BOOT_ORDER, BOOT_A_LEFT, ...) as U-Boot and RAUC left it."""
    env, config = workdir / "ab.env", workdir / "fw_env.config"
    env.unlink(missing_ok=True)
    proc = _mcopy(disk, boot_partition_offset(disk), uboot.ENV_FILE, env)
    if proc.returncode != 0:
        raise BootTestError(f"{disk}: no {uboot.ENV_FILE} on the boot partition")
    config.write_text(uboot.fw_env_config(str(env)))
    listed = subprocess.run(["fw_printenv", "-c", str(config)], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in listed.splitlines() if "=" in line)


def set_uboot_extra_cmdline(disk: Path, workdir: Path, extra: str) -> None:
    """EXTRA_CMDLINE in the U-Boot card's slot state (fw_setenv, then mcopy back): what the
    test adds to the command line U-Boot's script builds."""
    read_uboot_state(disk, workdir)  # leaves the card's file in workdir
    subprocess.run(["fw_setenv", "-c", str(workdir / "fw_env.config"), "EXTRA_CMDLINE", extra],
                   check=True)  # fmt: skip
    offset = boot_partition_offset(disk)
    proc = subprocess.run(
        ["mcopy", "-o", "-i", f"{disk}@@{offset}", str(workdir / "ab.env"),
         f"::/{uboot.ENV_FILE}"],
        capture_output=True, text=True, check=False, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise BootTestError(f"cannot write {uboot.ENV_FILE} back: {proc.stderr.strip()}")


def extract_boot_files(disk: Path, workdir: Path) -> tuple[Path, Path, str]:
    """Kernel, initramfs and cmdline.txt from the boot partition. A Pi card's are the files its
    config.txt names (what the Pi firmware would load); a qemu-amd64 card's are fixed names."""
    offset = boot_partition_offset(disk)
    names = {"kernel": "vmlinuz", "initramfs": "initrd.img"}
    config = workdir / "config.txt"
    if _mcopy(disk, offset, "config.txt", config).returncode == 0:
        names = pi_config_files(config.read_text())
    out = {}
    for name in (names.get("kernel", "?"), names.get("initramfs", "?"), "cmdline.txt"):
        dest = workdir / name
        proc = _mcopy(disk, offset, name, dest)
        if proc.returncode != 0:
            raise BootTestError(
                f"{disk}: no {name} on the boot partition (is this an offhook image?): "
                f"{proc.stderr.strip()}"
            )
        out[name] = dest
    kernel, initrd, cmdline = out.values()
    return kernel, initrd, cmdline.read_text().strip()


def read_data_file(disk: Path, path: str) -> str:
    """A file from the card's data partition (the third), as the phone last synced it.

    debugfs reads the filesystem's blocks in place and does not replay ext4's journal: a file
    the phone wrote atomically (new file, fsync, rename) lives in the journal until the next
    checkpoint, and debugfs on the card itself finds the old one (seen with the update agent's
    record while the guest ran). So a sparse copy of the partition has its journal replayed
    (``e2fsck -E journal_only``) and debugfs reads that."""
    data = read_partition_table(disk)[2]
    with tempfile.TemporaryDirectory(prefix="offhook-data-") as scratch:
        copy = Path(scratch) / "data.ext4"
        subprocess.run(
            ["dd", f"if={disk}", f"of={copy}", "bs=1M", "iflag=skip_bytes,count_bytes",
             f"skip={data.start}", f"count={data.size}", "conv=sparse", "status=none"],
            check=True,
        )  # fmt: skip
        replay = subprocess.run(["e2fsck", "-E", "journal_only", "-y", str(copy)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if replay.returncode > 1:  # 1: errors corrected (the journal replayed)
            raise BootTestError(
                f"{disk}: the data partition's journal does not replay: {replay.stdout.strip()}"
            )
        proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(copy)],
                              capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0 or "File not found" in proc.stderr:
        raise BootTestError(f"{disk}: cannot read {path} on the data partition: {proc.stderr}")
    return proc.stdout


# systemd-networkd's DHCP identity (systemd 252, src/libsystemd-network/dhcp-identifier.c): with
# the default DUIDType=vendor (networkd.conf(5)) the DUID is DUID-EN, enterprise number 43793,
# identifier = SipHash-2-4 of the 16 machine-id bytes under a fixed key, little-endian; the DHCPv4
# client identifier (default ClientIdentifier=duid, systemd.network(5)) is 0xff, IAID, DUID
# (RFC 4361). The IAID comes from the interface, not from the machine-id.
NETWORKD_DUID_HASH_KEY = bytes.fromhex("80118cc2fe4a03ee3ed60c6f36391409")
SYSTEMD_ENTERPRISE_NUMBER = 43793
DUID_TYPE_EN = 2
_MASK64 = (1 << 64) - 1


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein), 16-byte key, 64-bit result."""

    def rotl(x: int, bits: int) -> int:
        return ((x << bits) | (x >> (64 - bits))) & _MASK64

    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]  # fmt: skip

    def rounds(count: int) -> None:
        for _ in range(count):
            v[0] = (v[0] + v[1]) & _MASK64
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & _MASK64
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & _MASK64
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & _MASK64
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    whole = len(data) - len(data) % 8
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    for (word,) in [*struct.iter_unpack("<Q", data[:whole]), (last,)]:
        v[3] ^= word
        rounds(2)
        v[0] ^= word
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def networkd_duid(machine_id: str) -> bytes:
    """The DUID systemd-networkd derives from a machine-id with its default DUIDType=vendor."""
    digest = siphash24(NETWORKD_DUID_HASH_KEY, bytes.fromhex(machine_id))
    return struct.pack(">HI", DUID_TYPE_EN, SYSTEMD_ENTERPRISE_NUMBER) + struct.pack("<Q", digest)


def dhcp_client_ids(pcap: Path) -> list[bytes]:
    """Option 61 of every DHCP request (client to server) in a pcap of Ethernet frames."""
    raw = pcap.read_bytes() if pcap.exists() else b""
    if len(raw) < 24:
        return []
    order = "<" if raw[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    found, pos = [], 24
    while pos + 16 <= len(raw):
        (length,) = struct.unpack(order + "I", raw[pos + 8 : pos + 12])
        frame = raw[pos + 16 : pos + 16 + length]
        pos += 16 + length
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        udp = 14 + (frame[14] & 0x0F) * 4
        bootp = frame[udp + 8 :]
        if frame[udp + 2 : udp + 4] != b"\x00\x43" or len(bootp) < 240 or bootp[0] != 1:
            continue
        if bootp[236:240] != b"\x63\x82\x53\x63":
            continue
        options, at = bootp[240:], 0
        while at + 1 < len(options) and options[at] != 0xFF:
            if options[at] == 0:
                at += 1
                continue
            size = options[at + 1]
            if options[at] == 61:
                found.append(bytes(options[at + 2 : at + 2 + size]))
            at += 2 + size
    return found


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


class _Card:
    """The scratch card in QEMU: each power-on takes cmdline.txt from the boot partition afresh.

    The machine has its sound card: QEMU's audio backend plays into ``played`` (raw) and records
    from ``mic`` (raw, written before power-on), through alsa-lib PCMs set up in a private HOME.
    """

    def __init__(
        self, disk: Path, workdir: Path, stack: contextlib.ExitStack, memory_mb: int,
        mic_seconds: float = 60.0, machine: str | None = None,
    ) -> None:  # fmt: skip
        self.disk, self.workdir, self.stack, self.memory_mb = disk, workdir, stack, memory_mb
        self.host_port = free_port()
        self.arch = pick_machine(disk, machine)  # the MACHINES entry this card boots on
        self.machine = MACHINES[self.arch]
        if self.machine.disk_power_of_two:
            pad_to_power_of_two(disk)
        self.monitor = workdir / "qemu-monitor.sock"
        self.played = workdir / "played.raw"
        self.mic = workdir / "mic.raw"
        self.alsa_home = workdir / "alsa-home"
        self.alsa_home.mkdir(exist_ok=True)
        (self.alsa_home / ".asoundrc").write_text(asoundrc(self.played, self.mic))
        # The line in hears the phone's test tone for as long as the test may run.
        self.mic.write_bytes(bootcall.tone_pcm(bootcall.PHONE_TONE_HZ, mic_seconds, AUDIO_RATE))
        self.proc: subprocess.Popen | None = None
        self.grub = grub_card(disk)
        self.uboot = not self.grub and uboot_card(disk)
        self.reboot_in_guest = False

    def power_on(
        self, number: int, console_log: Path, extra_cmdline: str = ""
    ) -> tuple[OutputWatcher, BootRecord, Path]:
        pcap = self.workdir / f"net-boot{number}.pcap"
        pcap.unlink(missing_ok=True)
        self.monitor.unlink(missing_ok=True)
        if self.grub:
            # GRUB on the card chooses the slot and builds the command line; the test's own
            # arguments reach it through grubenv. Reboots stay inside QEMU (an update's).
            extra = f"systemd.journald.forward_to_console=1 {extra_cmdline}".strip()
            set_grub_extra_cmdline(self.disk, self.workdir, extra)
            cmdline = f"(GRUB) {extra}"
            cmd = qemu_command(self.disk, None, None, "", self.host_port, self.memory_mb, pcap,
                               self.arch, monitor=self.monitor,
                               reboot_in_guest=self.reboot_in_guest)  # fmt: skip
        elif self.uboot:
            # U-Boot's script chooses the slot and builds the command line (the Pi's header
            # UART for console); the machine's own console and board go in through the slot
            # state's EXTRA_CMDLINE, after it, so the last console= (QEMU's PL011) is the one.
            args = " ".join(self.machine.add_cmdline)
            extra = f"{args} systemd.journald.forward_to_console=1 {extra_cmdline}".strip()
            set_uboot_extra_cmdline(self.disk, self.workdir, extra)
            cmdline = f"(U-Boot) {extra}"
            firmware, dtb = uboot.QEMU_UBOOT, None
            if self.machine.uboot_as_kernel:
                # the card's own U-Boot (u-boot-rpi) and DTB, as the Pi firmware loads them
                firmware = self.workdir / uboot.UBOOT_KERNEL_NAME
                firmware.unlink(missing_ok=True)
                copied = _mcopy(self.disk, boot_partition_offset(self.disk),
                                uboot.UBOOT_KERNEL_NAME, firmware)  # fmt: skip
                if copied.returncode != 0:
                    raise BootTestError(f"{self.disk}: no {uboot.UBOOT_KERNEL_NAME} on the card")
                if self.machine.dtb:
                    dtb = extract_dtb(self.disk, self.workdir, self.machine.dtb)
            cmd = qemu_command(self.disk, None, None, "", self.host_port, self.memory_mb, pcap,
                               self.arch, monitor=self.monitor,
                               reboot_in_guest=self.reboot_in_guest,
                               firmware=firmware, dtb=dtb)  # fmt: skip
        else:
            kernel, initrd, cmdline = extract_boot_files(self.disk, self.workdir)
            dtb = (
                extract_dtb(self.disk, self.workdir, self.machine.dtb) if self.machine.dtb else None
            )
            # The journal on the console: a failing service's own messages land in the log.
            args = f"{guest_cmdline(cmdline, self.arch)} systemd.journald.forward_to_console=1"
            cmd = qemu_command(self.disk, kernel, initrd, f"{args} {extra_cmdline}".strip(),
                               self.host_port, self.memory_mb, pcap, self.arch,
                               monitor=self.monitor, dtb=dtb)  # fmt: skip
        log.info(
            "boot test starting qemu",
            extra=kv(boot=number, port=self.host_port, disk=self.disk),
        )
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(self.alsa_home)},
        )  # fmt: skip
        console = OutputWatcher(self.proc.stdout, console_log)
        self.stack.callback(console.close)
        self.stack.callback(stop_process, self.proc)
        return console, BootRecord(cmdline=cmdline), pcap

    def power_off(self) -> None:
        """Pull the plug: QEMU is killed, the guest gets no shutdown (a desk phone's power cut)."""
        if self.proc is not None:
            stop_process(self.proc)


def _boot_log(console_log: Path, number: int) -> Path:
    return console_log if number == 1 else console_log.with_suffix(f".boot{number}.log")


KERNEL_CMDLINE = re.compile(r"(?:Kernel command line|Command line): ([^\r\n]*)")  # arm64, x86


def _first_boot_marks(record: BootRecord, console: OutputWatcher, wait) -> None:
    match = wait("first boot to finish", lambda: FIRSTBOOT_READY.search(console.text))
    record.hostname = match.group(1)
    reported = KERNEL_CMDLINE.search(console.text)
    if record.cmdline.startswith(("(GRUB)", "(U-Boot)")) and reported:
        record.cmdline = reported.group(1).strip()
    report = MACHINE_ID_REPORT.search(console.text)
    if report:
        record.machine_id, record.kept_machine_id = report.groups()


MULTI_USER = re.compile(r"Reached target .*Multi-User System|Reached target multi-user\.target")


def boot_test(
    image: Path,
    *,
    seed_path: Path | None = None,
    kamailio: bool = False,
    call: bool = False,
    phone: bool = True,
    timeout: float = 600.0,
    console_log: Path | None = None,
    memory_mb: int = 768,
    workdir: Path | None = None,
    reboots: int = 0,
    on_milestone: Callable[[str, float], None] | None = None,
    machine: str | None = None,
) -> BootResult:
    """Boot to the phone's milestones; then ``reboots`` power cuts and boots of the same card.

    ``machine``: a QEMU machine from ``image.qemu.MACHINES`` for the card's architecture
    (``raspi3b`` for a Pi card); default: the architecture's own (``-M virt`` for a Pi card).

    ``call`` (implies ``kamailio``): once registered, the phone calls a baresip on the host and
    audio is checked both ways (``image.bootcall``). ``phone=False`` boots the same image with
    offhook.service masked, up to multi-user.target: the operating system alone, for comparison.
    ``on_milestone(name, seconds)`` is called as each milestone is reached.
    Console logs: ``console_log`` for the first boot, ``<stem>.bootN.log`` beside it for boot N.
    """
    kamailio = kamailio or call
    result = BootResult()
    own_workdir = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="offhook-boottest-"))
    console_log = console_log or workdir / "console.log"
    try:
        with contextlib.ExitStack() as stack:
            kamailio_port, kamailio_log = None, None
            rtp_host_port = bootcall.free_udp_port()
            if kamailio:
                config = (
                    (lambda port: bootcall.kamailio_config(port, rtp_host_port)) if call else None
                )
                kamailio_port, kamailio_log = stack.enter_context(running_kamailio(workdir, config))
            peer = None
            if call:
                assert kamailio_port is not None and kamailio_log is not None
                peer = stack.enter_context(
                    bootcall.running_baresip(workdir / "baresip", kamailio_port)
                )
            seed = prepare_seed(seed_path, kamailio_port)
            card = _Card(scratch_copy(image, seed, workdir), workdir, stack, memory_mb,
                         mic_seconds=timeout + 60, machine=machine)  # fmt: skip
            started = time.monotonic()
            deadline = started + timeout

            def mark(name: str) -> None:
                result.milestones[name] = round(time.monotonic() - started, 1)
                if on_milestone is not None:
                    on_milestone(name, result.milestones[name])

            console, record, pcap = card.power_on(
                1, console_log, "" if phone else "systemd.mask=offhook.service"
            )
            result.boots.append(record)

            def wait(what: str, check):
                if card.proc is None:
                    raise BootTestError(f"QEMU is not running while waiting for {what}")
                return _wait(what, deadline, check, console, card.proc)

            _first_boot_marks(record, console, wait)
            result.hostname = record.hostname
            mark("firstboot")
            if not phone:
                wait("multi-user.target", lambda: MULTI_USER.search(console.text))
                mark("multi_user")
                card.power_off()
                return result
            wait("offhook.service to start (READY)", lambda: SERVICE_STARTED.search(console.text))
            mark("service")
            result.state = wait(
                "the control API to answer",
                lambda: _control_state(card.host_port, seed.control.token),
            )
            mark("control_api")
            if kamailio_log is not None:
                found = wait(
                    "REGISTER at Kamailio",
                    lambda: re.search(r"offhook-registered aor=sip:1001@\S+ contact=(\S+)",
                                      kamailio_log.text),
                )  # fmt: skip
                result.registered_contact = found.group(1)
                mark("registered")
            if peer is not None and kamailio_log is not None:

                def peer_registered() -> bool:
                    peer.check_running()  # a baresip that died says so, not a timeout
                    return f"aor=sip:{bootcall.PEER_USER}@" in kamailio_log.text

                try:
                    wait("baresip to register", peer_registered)
                except bootcall.CallError as exc:
                    raise BootTestError(str(exc)) from None
                client = ControlClient(f"127.0.0.1:{card.host_port}", seed.control.token)
                setup = bootcall.CallSetup(
                    monitor=card.monitor, rtp_host_port=rtp_host_port, played=card.played,
                    peer=peer, kamailio_text=lambda: kamailio_log.text,
                    echo=card.machine.audio_check == "echo",
                )  # fmt: skip
                try:
                    result.call = bootcall.place_call(client, setup, wait, mark)
                except bootcall.CallError as exc:
                    raise BootTestError(
                        f"{exc}\nbaresip log:\n{peer.log_text()[-1500:]}\n"
                        f"kamailio:\n{kamailio_log.tail(15)}\nconsole:\n{console.tail()}"
                    ) from None
            record.dhcp_client_id = next(iter(dhcp_client_ids(pcap)), b"")
            for number in range(2, reboots + 2):
                card.power_off()
                started = time.monotonic()
                console, record, pcap = card.power_on(number, _boot_log(console_log, number))
                result.boots.append(record)
                _first_boot_marks(record, console, wait)
                mark(f"boot{number}_firstboot")
                ids = wait(f"a DHCP request in boot {number}",
                           lambda pcap=pcap: dhcp_client_ids(pcap))  # fmt: skip
                record.dhcp_client_id = ids[0]
                mark(f"boot{number}_dhcp")
            card.power_off()
            if reboots:
                result.kept_machine_id_on_disk = read_data_file(card.disk, KEPT_MACHINE_ID).strip()
        return result
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
