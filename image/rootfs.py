"""Root filesystem from Debian bookworm packages: debootstrap, then apt in a chroot.

The expensive part (debootstrap + kernel + initramfs) is cached as a tarball keyed by everything
that goes into it (architecture, suite, mirror, package lists, initramfs settings), so a rebuild
with the same recipe only unpacks it. The firmware is installed on top of the unpacked tree on
every build. arm64 trees are built on amd64 hosts through qemu-user-static and binfmt_misc.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from offhook.contract.errors import OffhookError

log = logging.getLogger(__name__)

SUITE = "bookworm"
RECIPE_VERSION = "3"  # bump when the steps below change what ends up in the cached tree

BASE_PACKAGES = (
    "systemd", "systemd-sysv", "systemd-timesyncd", "systemd-resolved", "udev", "dbus",
    "kmod", "iproute2", "ca-certificates", "python3", "python3-venv", "libasound2",
    "alsa-utils", "e2fsprogs", "fdisk", "dosfstools", "openssh-server", "initramfs-tools",
    "zstd", "less",
    "libspeexdsp1",  # the speakerphone's echo canceller (firmware/audio, through ctypes)
)  # fmt: skip
BUILD_PACKAGES = ("gcc", "python3-dev", "libasound2-dev", "libc6-dev")  # purged after pip
INITRAMFS_MODULES = {
    "amd64": ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "vfat", "nls_cp437", "nls_ascii"),
    # Raspberry Pi root on SD: bcm2835 (sdhost, Pi 3/Zero 2 W), sdhci_iproc (Pi 4 emmc2), whose
    # supplies come from the "regulator-fixed"/"regulator-gpio" nodes: without those drivers the
    # card never probes. Root on USB: dwc2 + phy_generic (Pi 3/Zero 2 W), xhci_pci behind
    # PCIe with reset_raspberrypi loading the VL805's firmware (Pi 4). virtio for QEMU's virt.
    "arm64": (
        "ext4", "vfat", "nls_cp437", "nls_ascii", "mmc_block", "bcm2835", "sdhci_iproc",
        "fixed", "gpio_regulator", "dwc2", "phy_generic", "reset_raspberrypi", "xhci_pci",
        "usb_storage", "uas", "sd_mod", "virtio_mmio", "virtio_pci", "virtio_blk",
    ),
}  # fmt: skip


class RootfsError(OffhookError, RuntimeError):
    """debootstrap, apt or pip failed while making the root filesystem."""


@dataclass(frozen=True)
class Recipe:
    arch: str  # amd64 | arm64
    kernel_packages: tuple[str, ...]
    extra_packages: tuple[str, ...] = ()
    components: tuple[str, ...] = ("main",)
    mirror: str = "http://deb.debian.org/debian"
    initramfs_modules: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # path -> text, written before apt

    def key(self) -> str:
        data = {
            "v": RECIPE_VERSION,
            "suite": SUITE,
            "arch": self.arch,
            "base": BASE_PACKAGES,
            "build": BUILD_PACKAGES,
            "kernel": self.kernel_packages,
            "extra": self.extra_packages,
            "components": self.components,
            "mirror": self.mirror,
            "modules": self.initramfs_modules,
            "files": self.files,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def run(cmd: list[str], *, env: dict[str, str] | None = None, what: str = "", log_to=None) -> None:
    full_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        cmd, env={**full_env, **(env or {})}, capture_output=True, text=True, check=False
    )
    if log_to is not None:
        log_to.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RootfsError(f"{what or cmd[0]} failed (exit {proc.returncode}):\n{tail}")


def host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def ensure_foreign_arch(arch: str) -> None:
    """Let the kernel run ``arch`` binaries in a chroot through qemu-user-static."""
    if arch == host_arch():
        return
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], what="mount binfmt_misc")
    qemu = {"arm64": "qemu-aarch64"}[arch]
    if not (binfmt / qemu).exists():
        run(["update-binfmts", "--enable", qemu], what=f"update-binfmts --enable {qemu}")
    if not (binfmt / qemu).exists():
        raise RootfsError(f"binfmt_misc has no {qemu} entry: install qemu-user-static")


@contextlib.contextmanager
def chroot_mounts(tree: Path) -> Iterator[None]:
    """/proc, /sys, /dev for apt in the chroot; unmounted on every exit path."""
    mounted: list[Path] = []
    try:
        for fstype, src, dst, opts in (
            ("proc", "proc", "proc", []),
            ("sysfs", "sysfs", "sys", []),
            (None, "/dev", "dev", ["--bind"]),
            ("devpts", "devpts", "dev/pts", []),
        ):
            target = tree / dst
            target.mkdir(parents=True, exist_ok=True)
            cmd = ["mount", *opts] + (["-t", fstype] if fstype else []) + [src, str(target)]
            run(cmd, what=f"mount {dst}")
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def chroot(tree: Path, cmd: list[str], *, what: str = "", log_to=None) -> None:
    run(["chroot", str(tree), *cmd], what=what or " ".join(cmd[:3]), log_to=log_to)


def _write_files(tree: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = tree / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _no_service_starts(tree: Path) -> None:
    policy = tree / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)


def _resolv_conf(tree: Path) -> contextlib.AbstractContextManager[None]:
    """The host's resolver inside the chroot while apt/pip run there; the image's link after."""

    @contextlib.contextmanager
    def manager() -> Iterator[None]:
        target = tree / "etc/resolv.conf"
        saved = os.readlink(target) if target.is_symlink() else None
        target.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", target)
        try:
            yield
        finally:
            target.unlink(missing_ok=True)
            if saved is not None:
                target.symlink_to(saved)

    return manager()


def bootstrap(recipe: Recipe, tree: Path, log_to=None) -> None:
    """debootstrap + kernel + initramfs into ``tree`` (the cached part)."""
    ensure_foreign_arch(recipe.arch)
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    run(
        [
            "debootstrap", "--variant=minbase", f"--arch={recipe.arch}",
            f"--components={','.join(recipe.components)}",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE, str(tree), recipe.mirror,
        ],
        what="debootstrap",
        log_to=log_to,
    )  # fmt: skip
    _write_files(tree, recipe.files)
    modules = tree / "etc/initramfs-tools/modules"
    modules.write_text("".join(m + "\n" for m in recipe.initramfs_modules))
    conf = tree / "etc/initramfs-tools/conf.d/offhook.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    # MODULES=most makes update-initramfs take ~11 min under emulation; a list takes seconds.
    conf.write_text("MODULES=list\nCOMPRESS=zstd\n")
    sources = tree / "etc/apt/sources.list"
    sources.write_text(f"deb {recipe.mirror} {SUITE} {' '.join(recipe.components)}\n")
    _no_service_starts(tree)
    with chroot_mounts(tree), _resolv_conf(tree):
        chroot(tree, ["apt-get", "update", "-q"], what="apt-get update", log_to=log_to)
        packages = [*recipe.kernel_packages, *recipe.extra_packages, *BUILD_PACKAGES]
        chroot(
            tree,
            [
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                # our /etc/default files are written first: keep them at conffile prompts
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                *packages,
            ],
            what="apt-get install (kernel, board packages)",
            log_to=log_to,
        )


def unpack_tree(tarball: Path, tree: Path, what: str) -> None:
    """``tree`` replaced by a cached tree (owners, modes, xattrs and ACLs as saved)."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    run(
        ["tar", "--zstd", "--numeric-owner", "--xattrs", "--acls", "-xpf", str(tarball),
         "-C", str(tree)],
        what=what,
    )  # fmt: skip


def save_tree(tree: Path, tarball: Path, what: str) -> None:
    """``tree`` cached as ``tarball``, written under a temporary name and renamed when complete."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    run(
        ["tar", "--zstd", "--numeric-owner", "--xattrs", "--acls", "--sort=name",
         "-cpf", str(partial), "-C", str(tree), "."],
        what=what,
    )  # fmt: skip
    partial.rename(tarball)


def cached_bootstrap(recipe: Recipe, tree: Path, cache: Path, log_to=None) -> bool:
    """Fill ``tree`` from the cache, or bootstrap it and store it. True when the cache was used."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"rootfs-{recipe.arch}-{recipe.key()}.tar.zst"
    if tarball.exists():
        unpack_tree(tarball, tree, "unpacking cached root filesystem")
        return True
    bootstrap(recipe, tree, log_to=log_to)
    save_tree(tree, tarball, "caching root filesystem")
    return False


SDIST_ONLY = ("pyalsaaudio", "rpi.gpio")  # no wheels on PyPI: built in the chroot
# Extras' requirements the host cannot resolve (their markers exclude x86_64).
FOREIGN_EXTRA_SOURCES = {"arm64": ("RPi.GPIO>=0.7.1",)}
FOREIGN_PLATFORMS = {
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"),
}


def _pip(args: list[str], what: str) -> None:
    run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"], what=what)


def wheelhouse(wheels: list[Path], arch: str, dest: Path) -> Path:
    """All wheels the firmware venv needs, fetched on the host (the chroot has no PyPI access).

    Same architecture: ``pip wheel`` resolves and builds everything. Foreign architecture: the
    host's resolution pins the versions, then each is fetched as a binary for the target, and the
    few sdist-only packages are fetched as sources to be built inside the chroot.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    resolved = dest.parent / "host-resolution"
    shutil.rmtree(resolved, ignore_errors=True)
    if arch == host_arch():
        _pip(["wheel", "-w", str(dest), *map(str, wheels)], "pip wheel (firmware dependencies)")
        return dest
    # Only our own (pure Python) wheel resolves on the host; the others are for the target.
    _pip(["wheel", "-w", str(resolved), str(wheels[0])], "pip wheel (resolving dependencies)")
    binaries, sources = [], list(FOREIGN_EXTRA_SOURCES.get(arch, ()))
    for wheel in sorted(resolved.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if name.lower() in ("offhook", "pjsua2_python", "pjsua2"):
            continue
        if wheel.name.endswith("-none-any.whl"):
            shutil.copy(wheel, dest / wheel.name)  # pure Python: fits any architecture
        elif "manylinux" in wheel.name and name.lower() not in SDIST_ONLY:
            binaries.append(f"{name}=={version}")
        else:  # built on the host from an sdist: build it again in the chroot
            sources.append(f"{name}=={version}")
    for wheel in wheels:
        shutil.copy(wheel, dest / wheel.name)
    platform_args = [a for p in FOREIGN_PLATFORMS[arch] for a in ("--platform", p)]
    _pip(["download", "--no-deps", "--only-binary=:all:", *platform_args, "--python-version",
          "3.11", "--implementation", "cp", "-d", str(dest), *binaries],
         f"pip download ({arch} wheels)")  # fmt: skip
    _pip(["download", "--no-deps", "--no-binary=:all:", "-d", str(dest), *sources],
         "pip download (sources)")  # fmt: skip
    _pip(["download", "--no-deps", "--only-binary=:all:", "-d", str(dest), "setuptools",
          "wheel"], "pip download (build tools)")  # fmt: skip
    shutil.rmtree(resolved, ignore_errors=True)
    return dest


# Byte code with hash-based invalidation: reproducible, and valid on a read-only root.
# -f: venv creation already left timestamp-based .pyc files for pip and setuptools.
COMPILEALL = ("python3", "-m", "compileall", "-q", "-f", "-j", "0",
              "--invalidation-mode", "unchecked-hash")  # fmt: skip


def host_can_compile_for(tree: Path) -> bool:
    """True when the host's CPython writes the byte code the tree's python3 reads: .pyc files
    depend on the Python minor version (magic number, marshal format), not on the CPU."""
    target = tree / "usr/bin/python3"
    if sys.implementation.name != "cpython" or not target.is_symlink():
        return False
    return os.readlink(target) == f"python{sys.version_info.major}.{sys.version_info.minor}"


def package_versions(tree: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\n"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split(" ", 1) for line in sorted(out.splitlines()) if " " in line)


def python_packages(tree: Path, venv: str = "/opt/offhook/venv") -> dict[str, str]:
    """Name -> version of every distribution in the venv: NAME-VERSION.dist-info (wheels), and
    NAME-VERSION-pyX.Y.egg-info left by pip's 'setup.py install' of an sdist without a wheel
    step (RPi.GPIO and pyalsaaudio in the rpi venv)."""
    versions = {}
    site = tree / venv.lstrip("/")
    for pattern, suffix in (("*.dist-info", ".dist-info"), ("*.egg-info", ".egg-info")):
        for dist in sorted(site.glob(f"lib/python3*/site-packages/{pattern}")):
            name, _, rest = dist.name.removesuffix(suffix).partition("-")
            versions[name] = rest.split("-py", 1)[0]
    return dict(sorted(versions.items()))


STRIP = (
    "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
    "var/log/*", "tmp/*", "var/tmp/*", "root/.cache", "etc/ssh/ssh_host_*",
    "etc/.pwd.lock", "etc/*-", "var/cache/ldconfig/aux-cache", "usr/sbin/policy-rc.d",
    "var/lib/systemd/random-seed", "var/lib/dbus/machine-id", "boot/*.old",
)  # fmt: skip


def strip_tree(tree: Path) -> None:
    """Remove caches, logs, host keys and per-machine ids: they must not be shared by cards."""
    for pattern in STRIP:
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    for keep in ("var/cache/apt", "var/lib/apt/lists/partial", "tmp", "var/tmp", "var/log"):
        (tree / keep).mkdir(parents=True, exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    (tree / "var/tmp").chmod(0o1777)
    # Empty machine-id (never shared by cards): systemd makes a transient one at boot on the
    # read-only root; offhook-firstboot keeps the first one on /data and pins it with
    # systemd.machine_id= in cmdline.txt. Empty, not "uninitialized": no first-boot presets.
    (tree / "etc/machine-id").write_text("")
    # dbus's tmpfiles.d entry makes this link at boot, which the read-only root refuses.
    if (tree / "var/lib/dbus").is_dir():
        (tree / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
