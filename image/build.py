"""``offhook image build``: Debian packages + our firmware -> .img, .bmap, .img.zst, manifest.

Steps (each shown with rich): pjsua2 wheel (arm64: given, cached or cross-compiled from the
pinned pjproject and self-tested) -> wheel -> root filesystem (cached debootstrap) -> firmware
venv (arm64: pjsua2 self-tested again in it) -> overlay and board configuration -> boot files ->
strip and normalise -> assemble -> block map -> compress -> manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from offhook.contract.errors import OffhookError
from offhook.contract.fault_env import TEST_REGISTRAR_ENV
from offhook.contract.logs import kv
from offhook.contract.signing import (
    SigningKeyError,
    SigningPair,
    common_name,
    development_pair,
    given_pair,
)
from offhook.image import firmware_venv, grub, pjproject, rootfs, uboot
from offhook.image.assemble import (
    Contents,
    assemble,
    ext4_size_for,
    normalise_mtimes,
    source_date_epoch,
)
from offhook.image.bmap import create_bmap, hash_span, write_bmap
from offhook.image.boards import Board, board
from offhook.image.bundle import BundleError, bundle_info, install_rauc_config, write_bundle
from offhook.image.layout import MIB, Layout, plan_layout
from offhook.image.manifest import write_manifest
from offhook.image.phone_dist import copy_phone_sources
from offhook.image.progress import StepBar

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OVERLAY = Path(__file__).resolve().parent / "overlay"
VENV = "/opt/offhook/venv"
DATA_SIZE = 64 * MIB  # grown to the card by the first boot
ENABLED_UNITS = (
    "offhook.service", "offhook-firstboot.service", "systemd-networkd.service",
    "systemd-resolved.service", "systemd-timesyncd.service", "ssh.service",
)  # fmt: skip


def default_cache() -> Path:
    """OFFHOOK_IMAGE_CACHE, else ~/.cache/offhook-image (root filesystem tarballs, .debs)."""
    env = os.environ.get("OFFHOOK_IMAGE_CACHE", "")
    return Path(env) if env else Path.home() / ".cache" / "offhook-image"


class BuildError(OffhookError, RuntimeError):
    """The build cannot start or a step failed; the message says which and why."""


@dataclass(frozen=True)
class BuildOptions:
    board: str
    out: Path
    size: int | None = None
    pjsua2_wheel: Path | None = None
    wheel: Path | None = None
    mirror: str = "http://deb.debian.org/debian"
    cache: Path | None = None
    compress: bool = True
    id_seed: str = "offhook"
    pjproject_tarball: Path | None = None  # the pinned release, copied in by the operator
    pjproject_url: str | None = None  # a mirror of the pinned release (else $OFFHOOK_PJPROJECT_URL)
    signing_key: Path | None = None  # the update bundle's signing pair; none: development keys
    signing_cert: Path | None = None
    firmware_version: str | None = None  # the wheel's (and bundle's) version; none: pyproject's
    # TEST ONLY: a deliberately broken firmware whose accounts register at this HOST:PORT
    # instead of their own registrar (the QEMU rollback test's bundle that fails its health
    # check). Never for a card that goes out; the manifest names it.
    test_registrar: str = ""


def check_pjsua2_wheel(path: Path | None, target: Board) -> None:
    """A given pjsua2 wheel must be a cp311 aarch64 wheel holding the pjsua2 module."""
    if not target.needs_pjsua2_wheel:
        return
    if path is None:
        raise BuildError(
            f"board {target.name} ({target.arch}) needs a pjsua2 wheel: PyPI has none for "
            "aarch64; pass --pjsua2-wheel WHL or let the build compile pjproject"
        )
    if not path.is_file():
        raise BuildError(f"--pjsua2-wheel {path}: file not found")
    if not zipfile.is_zipfile(path) or "aarch64" not in path.name or "cp311" not in path.name:
        raise BuildError(
            f"--pjsua2-wheel {path.name}: need a cp311 aarch64 wheel (name like "
            "pjsua2-2.15.1-cp311-cp311-linux_aarch64.whl)"
        )
    try:
        pjproject.check_wheel(path, target.arch)
    except pjproject.PjprojectError as exc:
        raise BuildError(f"--pjsua2-wheel {exc}") from None


@dataclass(frozen=True)
class Pjsua2Wheel:
    """Where the board's pjsua2 wheel comes from: ready to install, or a source to compile."""

    origin: str  # "--pjsua2-wheel", "cache" or "compile"
    wheel: Path | None = None
    tarball: Path | None = None  # verified pjproject release (origin "compile")
    cache_key: str = ""  # where a compiled wheel is kept
    pin: pjproject.Pin = pjproject.PJPROJECT

    def manifest(self) -> dict[str, str]:
        return {
            "origin": self.origin,
            "wheel": self.wheel.name if self.wheel else "",
            "pjproject_version": self.pin.version,
            "pjproject_sha256": self.pin.sha256,
        }


def pjproject_source(
    options: BuildOptions, target: Board, cache: Path, console: Console | None, pin: pjproject.Pin
) -> Path:
    """The verified release tarball: --pjproject-tarball, else the cache, else a download."""
    try:
        if options.pjproject_tarball is not None:
            return pjproject.import_tarball(cache, options.pjproject_tarball, pin.sha256)
        url = pjproject.source_url(options.pjproject_url, pin)
        return pjproject.fetch_source(cache, url, pin.sha256, console)
    except pjproject.SourceUnavailable as exc:
        raise BuildError(
            f"board {target.name} ({target.arch}) needs a pjsua2 wheel: PyPI has none for "
            f"aarch64, none is cached, and the pjproject {pin.version} source cannot be had "
            f"({exc}). Either pass --pjsua2-wheel WHL (a cp311 aarch64 wheel built elsewhere) "
            f"or --pjproject-tarball PATH (pjproject-{pin.version}.tar.gz copied in, "
            f"sha256 {pin.sha256})"
        ) from None
    except pjproject.PjprojectError as exc:
        raise BuildError(f"pjproject {pin.version} source: {exc}") from None


def resolve_pjsua2_wheel(
    options: BuildOptions,
    target: Board,
    cache: Path,
    console: Console | None = None,
    pin: pjproject.Pin = pjproject.PJPROJECT,
) -> Pjsua2Wheel | None:
    """In order: --pjsua2-wheel; a wheel compiled earlier; the source to compile one."""
    if not target.needs_pjsua2_wheel:
        return None  # qemu-amd64: the PyPI wheel comes in with the firmware's dependencies
    if options.pjsua2_wheel is not None:
        check_pjsua2_wheel(options.pjsua2_wheel, target)
        return Pjsua2Wheel("--pjsua2-wheel", wheel=options.pjsua2_wheel, pin=pin)
    recipe = pjproject.builder_recipe(target.arch, options.mirror)
    key = pjproject.wheel_cache_key(pin, target.arch, recipe.key())
    cached = pjproject.cached_wheel(cache / "pjsua2", key)
    if cached is not None:
        try:
            pjproject.check_wheel(cached, target.arch)
        except pjproject.PjprojectError as exc:
            raise BuildError(f"cached pjsua2 wheel {cached}: {exc}; remove it") from None
        return Pjsua2Wheel("cache", wheel=cached, cache_key=key, pin=pin)
    tarball = pjproject_source(options, target, cache / "pjproject", console, pin)
    return Pjsua2Wheel("compile", tarball=tarball, cache_key=key, pin=pin)


def compile_pjsua2(
    plan: Pjsua2Wheel,
    target: Board,
    mirror: str,
    cache: Path,
    work: Path,
    steps: Steps,
    log_to,
) -> Pjsua2Wheel:
    """Cross-compile against a builder tree of its own (the target's headers and libraries; the
    image tree never sees them), self-test the module there, then cache the wheel."""
    assert plan.tarball is not None
    recipe = pjproject.builder_recipe(target.arch, mirror)
    builder = work / "pjproject-builder"
    steps.run(
        "pjproject builder tree (debootstrap, target libraries)",
        rootfs.cached_bootstrap, recipe, builder, cache / "pjproject-builder", log_to,
    )  # fmt: skip
    compile_times: dict[str, float] = {}
    with steps.timed(f"compile pjproject {plan.pin.version} and the pjsua2 wheel"):
        built = pjproject.compile_wheel(
            plan.tarball, builder, work / "pjsua2-wheel", pin=plan.pin, arch=target.arch,
            work=work / "pjproject-src", log_to=log_to, console=steps.console,
            times=compile_times,
        )  # fmt: skip
    for what, seconds in compile_times.items():
        steps.times[f"pjproject: {what}"] = seconds
    wheel = pjproject.store_wheel(cache / "pjsua2", plan.cache_key, built)
    shutil.rmtree(builder, ignore_errors=True)
    log.info("pjsua2 wheel compiled", extra=kv(wheel=wheel.name, key=plan.cache_key))
    return Pjsua2Wheel("compile", wheel=wheel, tarball=plan.tarball, cache_key=plan.cache_key,
                       pin=plan.pin)  # fmt: skip


def set_project_version(pyproject: Path, version: str) -> None:
    """Give a copied pyproject.toml another version (a test build, a release candidate)."""
    text = pyproject.read_text()
    head, sep, rest = text.partition("[project]")
    lines = rest.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("version"):
            lines[index] = f'version = "{version}"\n'
            break
        if line.startswith("["):
            raise BuildError(f"{pyproject}: no version in [project]")
    pyproject.write_text(head + sep + "".join(lines))


def build_wheel(out: Path, version: str | None = None) -> Path:
    """The phone's wheel (image/phone_dist.py), built from a copy of its sources so the checkout
    gets no build/ droppings."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("offhook-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="offhook-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        copy_phone_sources(PROJECT_ROOT, src)  # the phone's distribution, not the server's
        if version is not None:
            set_project_version(src / "pyproject.toml", version)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    wheels = list(out.glob("offhook-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise BuildError(f"pip wheel failed: {proc.stderr.strip()[-2000:]}")
    return wheels[0]


def overlay_layers(target: Board) -> tuple[str, ...]:
    """The overlay's layers in order: every card, cards with A/B slots, then the board's own."""
    return ("common", *(("ab",) if target.ab_slots else ()), target.name)


def copy_overlay(tree: Path, target: Board) -> None:
    for layer in overlay_layers(target):
        src = OVERLAY / layer
        if src.is_dir():
            shutil.copytree(src, tree, dirs_exist_ok=True, symlinks=True)
    # From an installed wheel the overlay's file modes are not guaranteed: set what must run.
    for script in (tree / "usr/local/sbin").glob("offhook-*"):
        script.chmod(0o755)


TEST_REGISTRAR_RE = re.compile(r"[0-9A-Za-z.-]{1,253}:[0-9]{1,5}")


def check_test_registrar(value: str) -> None:
    if value and not TEST_REGISTRAR_RE.fullmatch(value):
        raise BuildError(f"--test-registrar {value!r}: expected HOST:PORT, e.g. 192.0.2.1:5060")


def configure(tree: Path, target: Board, test_registrar: str = "") -> None:
    """fstab, default hostname, the firmware's board setting and enabled units; a test-only
    registrar override goes into the phone's environment file."""
    # With two root slots both carry the label OFFHOOK-ROOT: the root is the one GRUB named on
    # the kernel command line (mounted read-only there), not looked up by label.
    root_line = (
        ""
        if target.ab_slots
        else "LABEL=OFFHOOK-ROOT  /               ext4   ro,noatime,errors=remount-ro        0 1\n"
    )
    (tree / "etc/fstab").write_text(
        "# <device>          <mount point>   <type> <options>                           <pass>\n"
        + root_line
        + "LABEL=OFFHOOKBOOT   /boot/firmware  vfat   rw,noatime,fmask=0077,dmask=0077    0 2\n"
        "LABEL=OFFHOOK-DATA  /data           ext4   rw,noatime,commit=30                0 2\n"
        "tmpfs               /tmp            tmpfs  mode=1777,nosuid,nodev              0 0\n"
        "tmpfs               /var/tmp        tmpfs  mode=1777,nosuid,nodev              0 0\n"
        "tmpfs               /var/log        tmpfs  mode=0755,nosuid,nodev              0 0\n"
        "tmpfs               /var/lib/systemd tmpfs mode=0755,nosuid,nodev              0 0\n"
    )
    (tree / "etc/hostname").write_text("offhook\n")
    (tree / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 offhook\n::1 localhost\n")
    firmware_board = "rpi" if target.name == "rpi" else "emulated"
    extra = "" if target.name == "rpi" else "--headless"
    broken = (
        f"# TEST ONLY (offhook image build --test-registrar): a broken build\n"
        f"{TEST_REGISTRAR_ENV}={test_registrar}\n"
        if test_registrar
        else ""
    )
    (tree / "etc/default/offhook").write_text(
        f"OFFHOOK_BOARD={firmware_board}\nOFFHOOK_ARGS={extra}\n{broken}"
    )
    for mountpoint in ("data", "boot/firmware"):
        (tree / mountpoint).mkdir(parents=True, exist_ok=True)
    resolv = tree / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    # Empty root password is not allowed; lock it (access is by SSH key from the seed).
    subprocess.run(["chroot", str(tree), "passwd", "-l", "root"], capture_output=True, check=False)
    rootfs.run(["systemctl", f"--root={tree}", "enable", *ENABLED_UNITS], what="systemctl enable")
    if target.name == "rpi":
        wifi_units(tree)
    if target.ab_slots:
        # The phone's update agent marks a slot good after its health check, not a unit that
        # marks every boot good (which would defeat the fallback).
        rootfs.run(["systemctl", f"--root={tree}", "mask", "rauc-mark-good.service"],
                   what="systemctl mask rauc-mark-good")  # fmt: skip
        # ...and a slot whose phone never gets that far is marked bad and left by this one
        rootfs.run(["systemctl", f"--root={tree}", "enable", "offhook-slot-watchdog.service"],
                   what="systemctl enable offhook-slot-watchdog")  # fmt: skip
    if target.bootloader == "uboot":
        # RAUC's slot devices are links to the booted card's partitions, made at each boot
        rootfs.run(["systemctl", f"--root={tree}", "enable", "offhook-rauc-slots.service"],
                   what="systemctl enable offhook-rauc-slots")  # fmt: skip


WIFI_DEVICE = "sys-subsystem-net-devices-wlan0.device"


def wifi_units(tree: Path) -> None:
    """wpa_supplicant for wlan0, started by the interface's appearance.

    Wanted by multi-user.target it would hold boot, and the phone (ordered after
    network-online.target), for systemd's 90 s device timeout on a card whose Wi-Fi never shows
    up (no NVRAM file for the chip, QEMU). Debian's D-Bus wpa_supplicant.service manages no
    interface here: disabled.
    """
    rootfs.run(["systemctl", f"--root={tree}", "disable", "wpa_supplicant.service"],
               what="systemctl disable wpa_supplicant")  # fmt: skip
    wants = tree / "etc/systemd/system" / f"{WIFI_DEVICE}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "wpa_supplicant@wlan0.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/lib/systemd/system/wpa_supplicant@.service")


def pi_config_files(config_txt: str) -> dict[str, str]:
    """The kernel= and initramfs file names a Raspberry Pi config.txt points at."""
    named = {}
    for line in config_txt.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("kernel="):
            named["kernel"] = line.removeprefix("kernel=").strip()
        elif line.startswith("initramfs "):
            named["initramfs"] = line.split()[1]
    return named


def check_pi_config(boot: Path, initramfs: bool = True) -> None:
    """config.txt from raspi-firmware's hook must exist and name a kernel and initramfs that are
    in the boot tree: the firmware boots nothing otherwise, with no message on the card. With
    U-Boot as the firmware's kernel (``initramfs=False``) only the kernel is named."""
    config = boot / "config.txt"
    if not config.is_file():
        raise BuildError("raspi-firmware's hook wrote no config.txt to /boot/firmware")
    named = pi_config_files(config.read_text())
    for what in ("kernel", "initramfs") if initramfs else ("kernel",):
        if what not in named:
            raise BuildError(f"config.txt from raspi-firmware names no {what}")
        if not (boot / named[what]).is_file():
            raise BuildError(f"config.txt names {what} {named[what]!r}, not in /boot/firmware")


def boot_files(
    tree: Path, target: Board, layout_root_partuuid: str, boot: Path, disk_id: str = ""
) -> None:
    """Fill the FAT boot partition's tree."""
    if boot.exists():
        shutil.rmtree(boot)
    boot.mkdir(parents=True)
    firmware = tree / "boot/firmware"
    if target.name == "rpi":
        # raspi-firmware's hooks filled /boot/firmware (start*.elf, DTBs, kernel, initrd and a
        # config.txt naming the last two); the card boots from these, not from /boot.
        for item in sorted(firmware.iterdir()):
            shutil.move(str(item), boot / item.name)
        check_pi_config(boot)
        # net.ifnames=0 keeps wlan0 the name wpa_supplicant@wlan0 is bound to.
        (boot / "cmdline.txt").write_text(
            f"{target.console} root={layout_root_partuuid} rootfstype=ext4 ro fsck.repair=yes "
            "net.ifnames=0 rootwait quiet\n"
        )
        config = boot / "config.txt"
        # The upstream DTBs already enable I2C1 on GPIO 2/3; the dtparam covers downstream ones.
        config.write_text(config.read_text() + "\n[all]\n# offhook: I2C for the OLED, UART "
                          "console\ndtparam=i2c_arm=on\nenable_uart=1\n")  # fmt: skip
        if target.bootloader == "uboot":
            uboot_boot_files(tree, target, boot)
        return
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BuildError("no kernel or initramfs in /boot of the root filesystem")
    if target.ab_slots:
        # GRUB loads the kernel of the slot it boots (/vmlinuz, /initrd.img in that slot), so an
        # update brings its own kernel. cmdline.txt stays for the first boot's machine-id step.
        for link in ("vmlinuz", "initrd.img"):
            if not (tree / link).exists():
                raise BuildError(f"/{link} missing in the root filesystem: GRUB boots it")
        grub.boot_tree(boot, disk_id, target.console)
        (boot / "cmdline.txt").write_text(
            f"{target.console} root={layout_root_partuuid} rootfstype=ext4 ro panic=-1\n"
        )
        return
    # QEMU boots this kernel directly (-kernel/-initrd, taken from the boot partition).
    shutil.copy(kernels[-1], boot / "vmlinuz")
    shutil.copy(initrds[-1], boot / "initrd.img")
    (boot / "cmdline.txt").write_text(
        f"{target.console} root={layout_root_partuuid} rootfstype=ext4 ro panic=-1\n"
    )


def uboot_boot_files(tree: Path, target: Board, boot: Path) -> None:
    """A Pi card with A/B slots: the firmware loads U-Boot in place of the kernel, and U-Boot's
    boot script (image/uboot.py) boots the kernel and initramfs of the slot it picks, from that
    slot. raspi-firmware's copies of them on the boot partition would go stale at the first
    update, so they are left out; its DTBs and overlays stay (the firmware hands U-Boot the
    board's device tree)."""
    for link in ("vmlinuz", "initrd.img"):
        if not (tree / link).exists():
            raise BuildError(f"/{link} missing in the root filesystem: U-Boot boots it")
    binary = tree / uboot.RPI_UBOOT
    if not binary.is_file():
        raise BuildError(f"/{uboot.RPI_UBOOT} missing in the root filesystem: install u-boot-rpi")
    config = boot / "config.txt"
    named = pi_config_files(config.read_text())
    for what in ("kernel", "initramfs"):
        (boot / named[what]).unlink()
    shutil.copyfile(binary, boot / uboot.UBOOT_KERNEL_NAME)
    lines = []
    for line in config.read_text().splitlines():
        bare = line.split("#", 1)[0].strip()
        if bare.startswith("initramfs "):
            continue
        lines.append(f"kernel={uboot.UBOOT_KERNEL_NAME}" if bare.startswith("kernel=") else line)
    if not any(line.strip() == "arm_64bit=1" for line in lines):
        lines.append("arm_64bit=1")  # U-Boot's rpi_arm64 build runs in 64-bit mode only
    config.write_text("\n".join(lines) + "\n")
    check_pi_config(boot, initramfs=False)
    # The script builds the kernel command line; the first boot pins the machine-id into its
    # slot state (MACHINE_ID, through fw_setenv), as into grubenv on a GRUB card.
    uboot.boot_tree(boot, target.console)


def hash_range(path: Path, start: int, size: int) -> str:
    """SHA-256 of one partition: equal across builds from the same inputs (reproducibility)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return hash_span(fd, start, size)
    finally:
        os.close(fd)


class Steps:
    """Step display: an overall bar (step N of ``total``, elapsed time) while a step runs, and a
    line with its time when done."""

    def __init__(self, console: Console, total: int | None = None) -> None:
        self.console = console
        self.times: dict[str, float] = {}
        self.bar = StepBar(console, total)

    def run(self, name: str, func, *args, **kwargs):
        with self.bar.live(name), self.timed(name):
            return func(*args, **kwargs)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time and report a step that shows its own progress."""
        started = time.monotonic()
        yield
        self.times[name] = round(time.monotonic() - started, 1)
        self.bar.done(name, self.times[name])


def step_count(options: BuildOptions, pjsua2: Pjsua2Wheel | None, bundle: bool = False) -> int:
    """How many steps build() shows, for the overall bar."""
    # wheelhouse, root filesystem, venv, overlay, boot files, strip, assemble, block map
    count = 9 + bundle
    count -= options.wheel is not None
    count += options.compress
    if pjsua2 is not None:
        count += 1 + (2 if pjsua2.wheel is None else 0)  # self-test; builder tree and compile
    return count


def root_partuuid(target: Board, id_seed: str) -> str:
    """cmdline.txt's root=: the MBR disk id is derived from the seed alone, not from sizes."""
    probe = plan_layout(boot_size=target.boot_size, root_size=MIB, data_size=MIB, id_seed=id_seed)
    return f"PARTUUID={probe.disk_id[2:]}-02"


def image_from_tree(
    tree: Path,
    boot: Path,
    target: Board,
    image: Path,
    *,
    size: int | None,
    id_seed: str,
    epoch: int,
    workdir: Path,
    steps: Steps,
    signing: SigningPair | None = None,
    test_registrar: str = "",
) -> Layout:
    """Every step after the firmware venv up to the image file: overlay and configuration, boot
    files, strip and normalise, assemble (root from ``tree``, an empty data partition)."""
    partuuid = root_partuuid(target, id_seed)
    disk_id = partuuid.removeprefix("PARTUUID=").rsplit("-", 1)[0]

    def overlay_and_configuration() -> None:
        copy_overlay(tree, target)
        configure(tree, target, test_registrar)
        if target.ab_slots:
            if signing is None:
                raise BuildError(f"board {target.name} has A/B slots: a signing pair is needed")
            install_rauc_config(tree, target, signing)

    def strip_and_normalise() -> None:
        rootfs.strip_tree(tree)
        normalise_mtimes(tree, epoch)
        normalise_mtimes(boot, epoch)

    steps.run("overlay and configuration", overlay_and_configuration)
    steps.run("boot files", boot_files, tree, target, partuuid, boot, f"0x{disk_id}")
    steps.run("strip and normalise", strip_and_normalise)
    root_size = ext4_size_for(tree, slack=0.10)
    if target.ab_slots:
        if root_size > target.slot_size:
            raise BuildError(
                f"root filesystem needs {root_size // MIB} MiB, more than the board's "
                f"{target.slot_size // MIB} MiB slot (cards in the field have that slot size)"
            )
        root_size = target.slot_size
    layout = plan_layout(
        boot_size=target.boot_size,
        root_size=root_size,
        data_size=DATA_SIZE,
        disk_size=size,
        id_seed=id_seed,
        slot_b=target.ab_slots,
    )
    contents = Contents(boot=boot, root=tree, data=None)

    def assemble_with_bootloader() -> None:
        assemble(image, layout, contents, workdir, epoch=epoch)
        if target.bootloader == "grub":
            core = grub.core_image(workdir.parent / "core.img")
            grub.install_mbr(image, layout, core)

    steps.run("assemble image", assemble_with_bootloader)
    return layout


def signing_pair(options: BuildOptions, cache: Path) -> SigningPair:
    """--signing-key/--signing-cert, else the development pair (made on first use)."""
    try:
        given = given_pair(options.signing_key, options.signing_cert)
    except SigningKeyError as exc:
        raise BuildError(str(exc)) from None
    return given or development_pair(cache / "dev-keys")


def root_partition_file(image: Path, layout: Layout, dest: Path) -> Path:
    """The root partition of ``image`` as a file of its own (sparse), for the bundle."""
    root = layout.partition("root")
    rootfs.run(
        ["dd", f"if={image}", f"of={dest}", "bs=1M", f"skip={root.start // MIB}",
         f"count={root.size // MIB}", "conv=sparse", "status=none"],
        what="dd root partition",
    )  # fmt: skip
    return dest


def make_bundle(
    image: Path, layout: Layout, target: Board, version: str, pair: SigningPair, work: Path
) -> tuple[Path, dict]:
    """``<image stem>.raucb`` beside the image, checked with ``rauc info`` against the keyring."""
    bundle = image.with_suffix(".raucb")
    rootfs_file = root_partition_file(image, layout, work / "rootfs.ext4")
    try:
        write_bundle(rootfs_file, bundle, compatible=target.compatible, version=version,
                     pair=pair, workdir=work)  # fmt: skip
        info = bundle_info(bundle, pair.cert)
    except BundleError as exc:
        raise BuildError(str(exc)) from None
    return bundle, info


def build(options: BuildOptions, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    try:
        target = board(options.board, options.mirror)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    cache = options.cache or default_cache()
    signing = signing_pair(options, cache) if target.ab_slots else None
    check_test_registrar(options.test_registrar)
    pjsua2 = resolve_pjsua2_wheel(options, target, cache, console)
    if os.geteuid() != 0:
        raise BuildError("the root filesystem step needs root (debootstrap and chroot)")
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / f".work-{target.name}"
    tree, boot = work / "root", work / "boot"
    epoch = source_date_epoch()
    steps = Steps(console, step_count(options, pjsua2, bundle=signing is not None))
    started = time.monotonic()
    build_log = out / f"offhook-{target.name}.build.log"
    with open(build_log, "w", encoding="utf-8") as log_to:
        try:
            if pjsua2 is not None and pjsua2.wheel is None:
                pjsua2 = compile_pjsua2(pjsua2, target, options.mirror, cache, work, steps, log_to)
            wheel = options.wheel or steps.run(
                "offhook wheel", build_wheel, work / "wheels", options.firmware_version
            )
            if pjsua2 is not None and pjsua2.wheel is not None:
                wheels = [wheel, pjsua2.wheel]
            else:  # qemu-amd64 (PyPI wheel), or a wheel given for a board that needs none
                wheels = [wheel] + ([options.pjsua2_wheel] if options.pjsua2_wheel else [])
            deps = steps.run(
                "firmware wheelhouse (host)",
                firmware_venv.prepare,
                wheels, target.arch, work, cache / "firmware-deps", target.recipe.key(), VENV,
                target.firmware_extras,
            )  # fmt: skip
            tree_from = steps.run(
                "root filesystem (debootstrap, kernel)",
                firmware_venv.base_tree, target.recipe, deps, tree, cache / "rootfs", log_to,
            )  # fmt: skip
            used_cache = tree_from != "bootstrap"
            deps_cached = steps.run(
                "firmware venv",
                firmware_venv.install, tree, deps, VENV, log_to, target.firmware_extras,
            )  # fmt: skip
            if pjsua2 is not None:
                # The same self-test as before caching, now with the image's own libraries
                # (libssl3, libopus0) and the firmware venv's interpreter.
                steps.run(
                    "pjsua2 self-test in the image (qemu-user)",
                    pjproject.run_self_test, tree, f"{VENV}/bin/python", "", log_to,
                )  # fmt: skip
        except (rootfs.RootfsError, pjproject.PjprojectError) as exc:
            raise BuildError(f"{exc}\n(full log: {build_log})") from None
    packages = rootfs.package_versions(tree)
    python_packages = rootfs.python_packages(tree, VENV)
    image = out / f"offhook-{target.name}.img"
    layout = image_from_tree(
        tree, boot, target, image, size=options.size, id_seed=options.id_seed, epoch=epoch,
        workdir=work / "parts", steps=steps, signing=signing,
        test_registrar=options.test_registrar,
    )  # fmt: skip
    root = layout.partition("root")
    root_sha256 = hash_range(image, root.start, root.size)
    bmap_file = image.with_name(image.name + ".bmap")
    block_map = steps.run("block map", create_bmap, image)
    write_bmap(block_map, bmap_file)
    outputs = [image, bmap_file]
    firmware_version = wheel.name.split("-")[1]
    bundle_manifest: dict = {}
    if signing is not None:
        bundle, info = steps.run(
            "update bundle (rauc bundle, signed)",
            make_bundle, image, layout, target, firmware_version, signing, work,
        )  # fmt: skip
        outputs.append(bundle)
        bundle_manifest = {
            "bundle": {
                "file": bundle.name, "compatible": info.get("compatible", ""),
                "version": info.get("version", ""), "format": info.get("format", ""),
                "signing_cert_cn": common_name(signing.cert),
                "development_keys": signing.development,
            }
        }  # fmt: skip
    if options.compress:
        compressed = image.with_name(image.name + ".zst")
        steps.run(
            "compress",
            rootfs.run,
            ["zstd", "-q", "-f", "-T0", "-10", "--sparse", str(image), "-o", str(compressed)],
            what="zstd",
        )  # fmt: skip
        outputs.append(compressed)
    manifest = write_manifest(
        out / f"offhook-{target.name}.manifest.json",
        outputs=outputs,
        board=target.name,
        arch=target.arch,
        offhook_version=firmware_version,
        test_registrar=options.test_registrar,  # "" for every real build
        suite=rootfs.SUITE,
        mirror=options.mirror,
        source_date_epoch=epoch,
        rootfs_cache_key=target.recipe.key(),
        rootfs_cache_used=used_cache,
        firmware_dependencies_cached=deps_cached,
        layout=layout.to_dict(),
        root_filesystem_sha256=root_sha256,
        mapped_bytes=block_map.mapped_bytes,
        debian_packages=packages,
        python_packages=python_packages,
        step_seconds=steps.times,
        build_seconds=round(time.monotonic() - started, 1),
        **({"pjsua2": pjsua2.manifest()} if pjsua2 is not None else {}),
        **bundle_manifest,
    )
    shutil.rmtree(work, ignore_errors=True)
    console.print(
        f"[green]built[/] {image} ({layout.disk_size // MIB} MiB, "
        f"{block_map.mapped_bytes // MIB} MiB mapped) in {manifest['build_seconds']} s"
    )
    console.print(next_command(target, image, outputs))
    return manifest


def next_command(target: Board, image: Path, outputs: list[Path]) -> str:
    """What to run next with the image just built."""
    card = outputs[-1] if outputs[-1].suffix == ".zst" else image
    if target.name == "qemu-amd64":
        return (
            f"next: offhook image boot-test {image} --call   "
            "(boots it under QEMU and places a call)"
        )
    return f"next: offhook flash {card} /dev/sdX --seed seed.toml   (write it to an SD card)"
