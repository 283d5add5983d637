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

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import subprocess
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

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.image import rootfs
from offhook.image.manifest import sha256_file
from offhook.image.progress import byte_progress

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


class PjprojectError(OffhookError, RuntimeError):
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
    log.warning("pjproject cached tarball digest changed, removing", extra=kv(path=path))
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
        log.info("pjproject tarball from cache", extra=kv(path=found))
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
        "pjproject tarball downloaded",
        extra=kv(url=url, bytes=final.stat().st_size, seconds=round(time.monotonic() - started, 1)),
    )
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
    log.info("pjproject tarball imported", extra=kv(src=path, path=final))
    return final


def source_url(flag: str | None, pin: Pin = PJPROJECT) -> str:
    """--pjproject-url, else $OFFHOOK_PJPROJECT_URL (an internal mirror), else the pin's URL."""
    return flag or os.environ.get(URL_ENV, "") or pin.url


# --- compile plan -------------------------------------------------------------------------------
#
# A cross-compile: Debian's aarch64 toolchain on the host, the builder tree as its sysroot (target
# headers and libraries, no compilers). Compiling under qemu-user instead was measured at a
# multiple of this (docs/image.md). The result is then imported and exercised inside the builder
# tree under qemu-user before it is cached.

# Debian bookworm packages of the builder tree (never installed in the image).
BUILD_DEPS = (
    "libssl-dev", "uuid-dev", "python3-dev", "libopus-dev", "libstdc++-12-dev", "libc6-dev",
)  # fmt: skip
CROSS_TRIPLET = {"arm64": "aarch64-linux-gnu"}
# Host tools (scripts/setup.sh installs them) and the Debian packages that provide them.
HOST_TOOLS = {
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
    "swig": "swig",
    "make": "make",
}
# The firmware plays audio through pjsua2's null device and its own ALSA bridge: no sound or
# video backends. G.711, G.722 and SRTP (bundled libsrtp) stay at pjproject's defaults; TLS
# (OpenSSL) and Opus come from the sysroot. configure turns both off when cross-compiling unless
# given a prefix: an empty one, since --sysroot already finds headers and libraries.
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
)
# What configure must have found (pjproject's generated headers), or the wheel is not built.
REQUIRED_FEATURES = {
    "TLS (OpenSSL)": ("pjlib/include/pj/compat/os_auto.h", "#define PJ_HAS_SSL_SOCK 1"),
    "Opus": ("pjmedia/include/pjmedia-codec/config_auto.h", "#define PJMEDIA_HAS_OPUS_CODEC 1"),
}
# Codecs the self-test must list (the firmware's priority order, then Opus).
REQUIRED_CODECS = ("G722/16000/1", "PCMU/8000/1", "PCMA/8000/1", "opus/48000/2")
# SRTP (RFC 4568 SDES): the suite every SRTP peer offers must be there.
REQUIRED_SRTP = ("AES_CM_128_HMAC_SHA1_80",)
PLAN_VERSION = "2"  # bump when the plan below changes what ends up in the wheel
SWIG_DIR = "pjsip-apps/src/swig/python"
WHEEL_TAG = "cp311-cp311-linux_aarch64"
EXTENSION = "_pjsua2.cpython-311-aarch64-linux-gnu.so"
SELF_TEST_DIR = "/usr/src/pjsua2-selftest"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Command:
    what: str
    cwd: str  # relative to the unpacked source tree
    argv: tuple[str, ...]


def compile_plan(sysroot: Path, prefix: Path, arch: str = "arm64", jobs: int = 2) -> list[Command]:
    """configure, make, SWIG: run in this order on the host in the unpacked source."""
    triplet = CROSS_TRIPLET[arch]
    sysroot_flag = f"--sysroot={sysroot}"
    # -fPIC: the static libraries are linked into the _pjsua2 extension module.
    configure = (
        "./configure", f"--host={triplet}", f"--with-ssl={prefix}", f"--with-opus={prefix}",
        *CONFIGURE_FLAGS, f"CC={triplet}-gcc", f"CXX={triplet}-g++",
        f"CFLAGS={sysroot_flag} -O2 -fPIC", f"CXXFLAGS={sysroot_flag} -O2 -fPIC",
        f"LDFLAGS={sysroot_flag}",
    )  # fmt: skip
    return [
        Command("configure", ".", configure),
        Command("make dep", ".", ("make", "dep")),
        # Libraries only: the sample apps and test programs are not shipped.
        Command("make", ".", ("make", f"-j{max(1, jobs)}", "lib")),
        Command("SWIG binding", SWIG_DIR, ("make", "pjsua2_wrap.cpp")),
    ]


def extension_argv(
    sysroot: Path, arch: str, cflags: list[str], ldflags: list[str], libs: list[str], out: str
) -> list[str]:
    """The _pjsua2 extension: SWIG's C++ against the target's Python headers and the static
    pjproject libraries (flags as pjproject's helper.mak gives them to its own setup.py)."""
    triplet = CROSS_TRIPLET[arch]
    return [
        f"{triplet}-g++", f"--sysroot={sysroot}", "-shared", "-fPIC", "-O2",
        f"-I{sysroot}/usr/include/python3.11", *cflags, "pjsua2_wrap.cpp", "-o", out,
        *ldflags, *(f"-l{lib}" for lib in libs),
    ]  # fmt: skip


def check_features(src: Path) -> None:
    """configure silently drops TLS or Opus when it cannot find them: refuse such a tree."""
    for feature, (header, line) in REQUIRED_FEATURES.items():
        path = src / header
        text = path.read_text(errors="replace") if path.is_file() else ""
        if line not in text.splitlines():
            raise CompileError(
                f"configure did not enable {feature} ({header} lacks {line!r}): are its -dev "
                "packages in the builder tree?"
            )


def missing_host_tools() -> list[str]:
    """Debian packages to install for the cross-compile, empty when all tools are present."""
    return sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})


def builder_recipe(arch: str, mirror: str) -> rootfs.Recipe:
    """The builder tree: base system plus target libraries, no kernel; cached like a rootfs."""
    return rootfs.Recipe(arch=arch, kernel_packages=(), extra_packages=BUILD_DEPS, mirror=mirror)


def wheel_cache_key(pin: Pin, arch: str, recipe_key: str) -> str:
    data = {
        "version": pin.version,
        "sha256": pin.sha256,
        "arch": arch,
        "recipe": recipe_key,
        "plan": PLAN_VERSION,
        "configure": CONFIGURE_FLAGS,
        "codecs": REQUIRED_CODECS,
        "srtp": REQUIRED_SRTP,
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


# --- wheel --------------------------------------------------------------------------------------

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed: the same inputs give the same wheel bytes


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_wheel(dist: Path, version: str, files: dict[str, bytes], tag: str = WHEEL_TAG) -> Path:
    """A wheel (PEP 427) of ``files`` (name in the wheel -> bytes), with its dist-info."""
    info = f"pjsua2-{version}.dist-info"
    members = dict(sorted(files.items()))
    members[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: pjsua2\nVersion: {version}\n"
        "Summary: pjproject's pjsua2 SWIG binding (cross-compiled by offhook image)\n"
        "Home-page: https://www.pjsip.org\nLicense: GPL-2.0-or-later\n"
    ).encode()
    members[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: offhook-image\nRoot-Is-Purelib: false\nTag: {tag}\n"
    ).encode()
    members[f"{info}/top_level.txt"] = b"_pjsua2\npjsua2\n"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in members.items())
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    dist.mkdir(parents=True, exist_ok=True)
    path = dist / f"pjsua2-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in members.items():
            entry = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            entry.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    return path


# --- self-test in the target tree ---------------------------------------------------------------

# Run by the target's python3 (under qemu-user off arm64): what the firmware relies on at start.
SELF_TEST = """
import json, sys
import pjsua2 as pj
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True
cfg.logConfig.level = 1
cfg.logConfig.consoleLevel = 1
ep.libInit(cfg)
ep.audDevManager().setNullDev()
codecs = sorted(c.codecId for c in ep.codecEnum2())
srtp = sorted(ep.srtpCryptoEnum())
transports = {}
for name, kind in (("udp", pj.PJSIP_TRANSPORT_UDP), ("tls", pj.PJSIP_TRANSPORT_TLS)):
    tc = pj.TransportConfig()
    tc.port = 0
    tc.boundAddress = "127.0.0.1"
    tid = ep.transportCreate(kind, tc)
    transports[name] = ep.transportGetInfo(tid).localName
ep.libStart()
version = ep.libVersion().full
ep.libDestroy()
with open(sys.argv[1], "w") as out:
    json.dump({"version": version, "codecs": codecs, "srtp": srtp, "transports": transports}, out)
"""


def check_self_test(result: dict, pin: Pin = PJPROJECT) -> None:
    """The self-test's report: the pinned version, the required codecs, SRTP, both transports."""
    if result.get("version") != pin.version:
        raise CompileError(f"self-test: pjsua2 reports version {result.get('version')!r}, "
                           f"not {pin.version}")  # fmt: skip
    missing = [c for c in REQUIRED_CODECS if c not in result.get("codecs", [])]
    if missing:
        raise CompileError(f"self-test: codecs {', '.join(missing)} missing from "
                           f"{', '.join(result.get('codecs', [])) or 'an empty list'}")  # fmt: skip
    srtp = [s for s in REQUIRED_SRTP if s not in result.get("srtp", [])]
    if srtp:
        raise CompileError(f"self-test: SRTP crypto {', '.join(srtp)} missing (SRTP suites: "
                           f"{', '.join(result.get('srtp', [])) or 'none'})")  # fmt: skip
    for kind in ("udp", "tls"):
        if not result.get("transports", {}).get(kind):
            raise CompileError(f"self-test: no {kind.upper()} transport was created")


def run_self_test(
    tree: Path, python: str = "python3", pythonpath: str = "", log_to: TextIO | None = None
) -> dict:
    """SELF_TEST by ``python`` of ``tree`` (chroot; qemu-user off arm64), its report checked."""
    rootfs.ensure_foreign_arch("arm64")
    where = tree / SELF_TEST_DIR.lstrip("/")
    where.mkdir(parents=True, exist_ok=True)
    (where / "selftest.py").write_text(SELF_TEST)
    env = [f"PYTHONPATH={pythonpath}"] if pythonpath else []
    argv = ["env", "-i", f"PATH={CHROOT_PATH}", "LC_ALL=C.UTF-8", *env,
            python, f"{SELF_TEST_DIR}/selftest.py", f"{SELF_TEST_DIR}/result.json"]  # fmt: skip
    try:
        with rootfs.chroot_mounts(tree):
            rootfs.chroot(tree, argv, what="pjsua2 self-test", log_to=log_to)
        result = json.loads((where / "result.json").read_text())
    except (rootfs.RootfsError, OSError, ValueError) as exc:
        raise CompileError(f"pjsua2 self-test in {tree.name} failed: {exc}") from None
    finally:
        shutil.rmtree(where, ignore_errors=True)
    log.info(
        "pjsua2 self-test passed",
        extra=kv(
            tree=tree.name,
            codecs=len(result.get("codecs", [])),
            transports=result.get("transports"),
        ),
    )
    check_self_test(result)
    return result


def self_test(builder: Path, wheel: Path, log_to: TextIO | None = None) -> dict:
    """Import the wheel's module in the builder tree (the target's python3) and exercise it:
    null audio device, codec list, SRTP suites, a UDP and a TLS transport, libDestroy."""
    modules = builder / SELF_TEST_DIR.lstrip("/") / "modules"
    shutil.rmtree(modules.parent, ignore_errors=True)
    modules.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            if "/" not in name:  # the modules, not the dist-info
                whl.extract(name, modules)
    return run_self_test(builder, pythonpath=f"{SELF_TEST_DIR}/modules", log_to=log_to)


# --- the compile --------------------------------------------------------------------------------


def _helper_flags(swig: Path, target: str, log_to: TextIO | None) -> list[str]:
    """cflags / ldflags / libs exactly as pjproject's helper.mak hands them to its setup.py."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-f", "helper.mak", target],
        cwd=swig, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if log_to is not None:
        log_to.write(f"$ make -f helper.mak {target}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise CompileError(f"helper.mak {target} failed: {proc.stderr.strip()[-500:]}")
    return [line for line in proc.stdout.splitlines() if line.strip()]


def _run(argv: list[str] | tuple[str, ...], cwd: Path, what: str, log_to: TextIO | None) -> None:
    proc = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    if log_to is not None:
        log_to.write(f"$ (cd {cwd}) {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise CompileError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def compile_wheel(
    tarball: Path,
    builder: Path,
    out: Path,
    *,
    pin: Pin = PJPROJECT,
    arch: str = "arm64",
    jobs: int | None = None,
    work: Path | None = None,
    log_to: TextIO | None = None,
    console: Console | None = None,
    times: dict[str, float] | None = None,
) -> Path:
    """Unpack ``tarball`` on the host, cross-compile it against the (already bootstrapped)
    ``builder`` tree, build the wheel into ``out`` and self-test it in ``builder``.

    Needs the host tools of HOST_TOOLS and, off arm64, qemu-user for the self-test (root: chroot).
    """
    jobs = jobs or os.cpu_count() or 1
    work = work or out.parent / "pjproject-src"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        rootfs.run(["tar", "-xzf", str(tarball), "-C", str(work), "--no-same-owner"],
                   what="unpacking pjproject", log_to=log_to)  # fmt: skip
    except rootfs.RootfsError as exc:
        raise CompileError(str(exc)) from None
    src = work / pin.top_dir
    if not (src / "configure").is_file():
        raise CompileError(f"{tarball.name} did not unpack to {pin.top_dir}/ with a configure")
    missing = missing_host_tools()
    if missing:
        raise CompileError(f"cross-compiling pjproject needs {', '.join(missing)} "
                           "(Debian packages; scripts/setup.sh installs them)")  # fmt: skip
    sysroot = builder.resolve()
    prefix = work / "empty-prefix"
    for sub in ("include", "lib"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    times = times if times is not None else {}
    status = console.status("pjproject ...") if console else contextlib.nullcontext()

    @contextlib.contextmanager
    def step(what: str, number: int, total: int) -> Iterator[None]:
        if shown is not None:
            shown.update(f"[bold]pjproject {pin.version}[/]: {what} ({number}/{total})")
        started = time.monotonic()
        yield
        times[what] = round(time.monotonic() - started, 1)
        log.info("pjproject step done", extra=kv(step=what, seconds=round(times[what], 1)))

    plan = compile_plan(sysroot, prefix, arch, jobs)
    total = len(plan) + 3
    swig = src / SWIG_DIR
    with status as shown:
        for number, command in enumerate(plan, 1):
            with step(command.what, number, total):
                _run(command.argv, src / command.cwd, f"pjproject {command.what}", log_to)
            if command.what == "configure":
                check_features(src)
        with step("extension", len(plan) + 1, total):
            flags = {t: _helper_flags(swig, t, log_to) for t in ("cflags", "ldflags", "libs")}
            argv = extension_argv(sysroot, arch, flags["cflags"], flags["ldflags"],
                                  flags["libs"], EXTENSION)  # fmt: skip
            _run(argv, swig, "compiling the _pjsua2 extension", log_to)
            _run([f"{CROSS_TRIPLET[arch]}-strip", "--strip-unneeded", EXTENSION], swig,
                 "strip", log_to)  # fmt: skip
        with step("wheel", len(plan) + 2, total):
            files = {
                "pjsua2.py": (swig / "pjsua2.py").read_bytes(),
                EXTENSION: (swig / EXTENSION).read_bytes(),
            }
            shutil.rmtree(out, ignore_errors=True)
            wheel = write_wheel(out, pin.version, files)
            check_wheel(wheel, arch)
        with step("self-test in the target tree", len(plan) + 3, total):
            self_test(builder, wheel, log_to)
    shutil.rmtree(work, ignore_errors=True)
    return wheel
