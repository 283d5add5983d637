"""pjsua2 for boards PyPI has no wheel for: the pinned pjproject release, fetched and compiled.

Three jobs, kept apart so each can be tested on its own:

- the source: a release tarball pinned by version, URL and SHA-256. It is streamed into the
  cache under a temporary name and only gets its final name once its digest matches the pin, so
  the cache never holds a partial or foreign tarball. A mirror URL or a tarball copied in by hand
  is checked against the same pin.
- the compile plan: configure, make, SWIG and a wheel, as data (flags and order are reviewable).
- the compile: the plan run in a separate builder tree (its own debootstrap recipe with the
  compilers), never in the image tree; the wheel is copied out and cached under a key of
  everything that went into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from rich.console import Console

from image import rootfs
from image.manifest import sha256_file
from image.progress import byte_progress

log = logging.getLogger(__name__)

URL_ENV = "OFFHOOK_PJPROJECT_URL"
CHUNK = 256 << 10
SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    """One pjproject release: what to fetch and the digest it must have."""

    version: str
    url: str
    sha256: str

    def __post_init__(self) -> None:
        if not SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"pjproject pin {self.version}: sha256 must be 64 lowercase hex")

    @property
    def top_dir(self) -> str:
        """The directory the release tarball unpacks to."""
        return f"pjproject-{self.version}"


# Cross-checked against two independent public records of this release's tarball digest.
PJPROJECT = Pin(
    version="2.15.1",
    url="https://github.com/pjsip/pjproject/archive/refs/tags/2.15.1.tar.gz",
    sha256="8f3bd99caf003f96ed8038b8a36031eb9d8cd9eaea1eaff7e01c2eef6bd55706",
)


class PjprojectError(RuntimeError):
    """The pjproject source or its compile failed; the message says which and why."""


class SourceUnavailable(PjprojectError):
    """The tarball could not be fetched at all (no route, refused, HTTP error)."""


class DownloadIncomplete(PjprojectError):
    """The transfer started but ended before the announced length (or broke off)."""


class ChecksumMismatch(PjprojectError):
    """A complete file whose SHA-256 is not the pinned one."""

    def __init__(self, source: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{source}: SHA-256 mismatch: expected {expected} (the pin), got {actual}; "
            "the file was not kept"
        )
        self.expected = expected
        self.actual = actual


class CompileError(PjprojectError):
    """A step of the compile plan failed in the builder tree."""


def cached_tarball_path(cache: Path, sha256: str) -> Path:
    """Named by digest: a verified tarball is found again whatever URL it came from."""
    return cache / f"pjproject-{sha256}.tar.gz"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingSink:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)


@contextlib.contextmanager
def _verified_file(final: Path, sha256: str, source: str) -> Iterator[_HashingSink]:
    """Write through a temp file in ``final``'s directory; rename only when the digest matches.

    Any exception (including a mismatch or Ctrl-C) removes the temp file: nothing is left behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            sink = _HashingSink(fh)
            yield sink
            fh.flush()
            os.fsync(fh.fileno())
        actual = sink.digest.hexdigest()
        if actual != sha256:
            raise ChecksumMismatch(source, sha256, actual)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def _cached(cache: Path, sha256: str) -> Path | None:
    path = cached_tarball_path(cache, sha256)
    if not path.is_file():
        return None
    if sha256_file(path) == sha256:
        return path
    # Disk corruption or a hand-edited cache: never build from it, fetch again.
    log.warning("pjproject cached tarball digest changed, removing path=%s", path)
    path.unlink()
    return None


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise SourceUnavailable(f"pjproject URL {url!r}: need an http, https or file URL")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def fetch_source(
    cache: Path,
    url: str,
    sha256: str,
    console: Console | None = None,
    *,
    timeout: float = 30.0,
) -> Path:
    """The verified tarball in ``cache``: reused when present, else streamed from ``url``.

    Raises SourceUnavailable (no connection, HTTP error), DownloadIncomplete (the body ended
    early or broke off) or ChecksumMismatch; in every case nothing is left in the cache.
    """
    found = _cached(cache, sha256)
    if found is not None:
        log.info("pjproject tarball from cache path=%s", found)
        return found
    _check_url(url)
    final = cached_tarball_path(cache, sha256)
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "offhook-image"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise SourceUnavailable(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise SourceUnavailable(f"cannot download {url}: {_reason(exc)}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        name = Path(urllib.parse.urlsplit(url).path).name or "pjproject"
        try:
            with (
                _verified_file(final, sha256, url) as sink,
                byte_progress(console, f"downloading {name}", total, transient=True) as advance,
            ):
                while chunk := response.read(CHUNK):
                    sink.write(chunk)
                    advance(len(chunk))
                if total is not None and sink.size != total:
                    raise DownloadIncomplete(
                        f"download of {url} cut short: got {sink.size} of {total} bytes; "
                        "nothing was kept"
                    )
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadIncomplete(
                f"download of {url} broke off: {_reason(exc)}; nothing was kept"
            ) from None
    log.info(
        "pjproject tarball downloaded url=%s bytes=%d seconds=%.1f",
        url, final.stat().st_size, time.monotonic() - started,
    )  # fmt: skip
    return final


def import_tarball(cache: Path, path: Path, sha256: str) -> Path:
    """A tarball the operator copied in: verified against the pin, then kept in the cache.

    Always checked, even when the cache already holds the pinned tarball: a wrong file given on
    the command line is an error the operator must hear about.
    """
    if not path.is_file():
        raise PjprojectError(f"--pjproject-tarball {path}: file not found")
    final = cached_tarball_path(cache, sha256)
    with open(path, "rb") as src, _verified_file(final, sha256, str(path)) as sink:
        while block := src.read(CHUNK):
            sink.write(block)
    log.info("pjproject tarball imported src=%s path=%s", path, final)
    return final


def source_url(flag: str | None, pin: Pin = PJPROJECT) -> str:
    """--pjproject-url, else $OFFHOOK_PJPROJECT_URL (an internal mirror), else the pin's URL."""
    return flag or os.environ.get(URL_ENV, "") or pin.url


# --- compile plan -------------------------------------------------------------------------------

# Debian bookworm packages of the builder tree (never installed in the image).
BUILD_DEPS = (
    "build-essential", "swig", "python3-dev", "python3-setuptools", "python3-wheel",
    "libssl-dev", "uuid-dev", "pkg-config",
)  # fmt: skip
# The firmware plays audio through pjsua2's null device and its own ALSA bridge: no sound or
# video backends. G.711, G.722, SRTP (bundled libsrtp) and TLS (OpenSSL, found by configure)
# stay at pjproject's defaults.
CONFIGURE_FLAGS = (
    "--disable-sound",
    "--disable-video",
    "--disable-libyuv",
    "--disable-libwebrtc",
    "--disable-opencore-amr",
    "--disable-v4l2",
    "--disable-sdl",
    "--disable-ffmpeg",
    "--disable-openh264",
    "--disable-vpx",
    # -fPIC: the static libraries are linked into the _pjsua2 extension module.
    "CFLAGS=-O2 -fPIC",
    "CXXFLAGS=-O2 -fPIC",
)
PLAN_VERSION = "1"  # bump when the plan below changes what ends up in the wheel
SRC_ROOT = "/usr/src"
WHEEL_DIR = "/usr/src/pjsua2-dist"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# bdist_wheel through setuptools even though pjproject's setup.py imports distutils.
BDIST_WHEEL = (
    "import runpy, sys, setuptools; "
    "sys.argv = ['setup.py', 'bdist_wheel', '--dist-dir', sys.argv[1]]; "
    "runpy.run_path('setup.py', run_name='__main__')"
)


@dataclass(frozen=True)
class Command:
    what: str
    cwd: str  # inside the builder tree
    argv: tuple[str, ...]


def compile_plan(pin: Pin = PJPROJECT, jobs: int = 2) -> list[Command]:
    """configure, make, SWIG binding, wheel: run in this order inside the builder tree."""
    src = f"{SRC_ROOT}/{pin.top_dir}"
    swig = f"{src}/pjsip-apps/src/swig/python"
    return [
        Command("configure", src, ("./configure", *CONFIGURE_FLAGS)),
        Command("make dep", src, ("make", "dep")),
        # Libraries only: the sample apps and test programs would double the emulated compile.
        Command("make", src, ("make", f"-j{max(1, jobs)}", "lib")),
        Command("SWIG binding", swig, ("make",)),
        Command("wheel", swig, ("python3", "-c", BDIST_WHEEL, WHEEL_DIR)),
    ]


def builder_recipe(arch: str, mirror: str) -> rootfs.Recipe:
    """The builder tree: base system plus compilers, no kernel; cached like an image rootfs."""
    return rootfs.Recipe(arch=arch, kernel_packages=(), extra_packages=BUILD_DEPS, mirror=mirror)


def wheel_cache_key(pin: Pin, arch: str, recipe_key: str) -> str:
    data = {
        "version": pin.version,
        "sha256": pin.sha256,
        "arch": arch,
        "recipe": recipe_key,
        "plan": PLAN_VERSION,
        "configure": CONFIGURE_FLAGS,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


WHEEL_ARCH = {"arm64": "aarch64", "amd64": "x86_64"}


def check_wheel(path: Path, arch: str) -> None:
    """A cp311 wheel for ``arch`` that holds the pjsua2 module and its extension."""
    tag = WHEEL_ARCH.get(arch, arch)
    if not zipfile.is_zipfile(path) or tag not in path.name or "cp311" not in path.name:
        raise PjprojectError(
            f"{path.name}: need a cp311 {tag} wheel (name like "
            f"pjsua2-{PJPROJECT.version}-cp311-cp311-linux_{tag}.whl)"
        )
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
    if "pjsua2.py" not in names or not any(
        n.startswith("_pjsua2") and n.endswith(".so") for n in names
    ):
        raise PjprojectError(f"{path.name}: no pjsua2.py and _pjsua2 extension inside")


def cached_wheel(cache: Path, key: str) -> Path | None:
    wheels = sorted((cache / key).glob("pjsua2-*.whl")) if (cache / key).is_dir() else []
    return wheels[0] if len(wheels) == 1 else None


def store_wheel(cache: Path, key: str, wheel: Path) -> Path:
    """Copy a built wheel into the cache (temp name, fsync, rename) and return its cached path."""
    final = cache / key / wheel.name
    with open(wheel, "rb") as src, _verified_file(final, sha256_file(wheel), str(wheel)) as sink:
        while block := src.read(CHUNK):
            sink.write(block)
    return final


def chroot_argv(step: Command) -> list[str]:
    """The step as run by chroot: a clean environment (no host venv, PYTHONPATH or locale)."""
    return [
        # env's options (-i, -C) must precede the assignments, or "-C" is taken as the command
        "env", "-i", "-C", step.cwd, f"PATH={CHROOT_PATH}", "HOME=/root", "LC_ALL=C.UTF-8",
        *step.argv,
    ]  # fmt: skip


def compile_wheel(
    tarball: Path,
    builder: Path,
    out: Path,
    *,
    pin: Pin = PJPROJECT,
    arch: str = "arm64",
    jobs: int | None = None,
    log_to: TextIO | None = None,
    console: Console | None = None,
) -> Path:
    """Unpack ``tarball`` in the (already bootstrapped) ``builder`` tree, run the plan there and
    copy the resulting wheel into ``out``. Needs root (chroot) and, off arm64, qemu-user."""
    jobs = jobs or os.cpu_count() or 1
    src_root = builder / SRC_ROOT.lstrip("/")
    shutil.rmtree(src_root / pin.top_dir, ignore_errors=True)
    shutil.rmtree(builder / WHEEL_DIR.lstrip("/"), ignore_errors=True)
    src_root.mkdir(parents=True, exist_ok=True)
    try:
        rootfs.run(
            ["tar", "-xzf", str(tarball), "-C", str(src_root), "--no-same-owner"],
            what="unpacking pjproject",
            log_to=log_to,
        )
    except rootfs.RootfsError as exc:
        raise CompileError(str(exc)) from None
    if not (src_root / pin.top_dir / "configure").is_file():
        raise CompileError(f"{tarball.name} did not unpack to {pin.top_dir}/ with a configure")
    plan = compile_plan(pin, jobs)
    status = console.status("pjproject ...") if console else contextlib.nullcontext()
    with status as shown, rootfs.chroot_mounts(builder):
        for number, step in enumerate(plan, 1):
            if shown is not None:
                shown.update(
                    f"[bold]pjproject {pin.version}[/]: {step.what} ({number}/{len(plan)})"
                )
            started = time.monotonic()
            try:
                rootfs.chroot(builder, chroot_argv(step), what=step.what, log_to=log_to)
            except rootfs.RootfsError as exc:
                raise CompileError(f"pjproject {pin.version}: {exc}") from None
            log.info(
                "pjproject step done step=%r seconds=%.1f", step.what, time.monotonic() - started
            )
    wheels = sorted((builder / WHEEL_DIR.lstrip("/")).glob("pjsua2-*.whl"))
    if len(wheels) != 1:
        raise CompileError(f"pjproject {pin.version}: expected one wheel, found {len(wheels)}")
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / wheels[0].name
    shutil.copy(wheels[0], wheel)
    check_wheel(wheel, arch)
    return wheel
