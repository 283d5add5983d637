"""pjsua2 for arm64: pinned pjproject source (download over loopback, checksum, cache), the order
the build resolves a wheel in, the compile plan and the separate builder recipe.

The compile itself needs the real pjproject release (github.com) and an arm64 builder tree under
qemu-user: it is not run here; these tests stop where a real pjproject tree would be needed.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from image import cli, pjproject
from image.boards import board
from image.build import BuildError, BuildOptions, resolve_pjsua2_wheel
from image.pjproject import (
    PJPROJECT,
    ChecksumMismatch,
    CompileError,
    DownloadIncomplete,
    Pin,
    SourceUnavailable,
)

MIRROR = "http://deb.debian.org/debian"
VERSION = "9.9.9"


@dataclass
class Release:
    """A small tarball laid out like a pjproject release, and a pin for it."""

    path: Path
    data: bytes
    pin: Pin


def make_release(tmp: Path, top: str = f"pjproject-{VERSION}", *, size: int = 600_000) -> Release:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in (("configure", b"#!/bin/sh\nexit 0\n"), ("filler", os.urandom(size))):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(body)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(body))
    data = buf.getvalue()
    path = tmp / f"{top}.tar.gz"
    path.write_bytes(data)
    pin = Pin(version=VERSION, url="", sha256=hashlib.sha256(data).hexdigest())
    return Release(path, data, pin)


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return make_release(tmp_path)


@dataclass
class Server:
    """Loopback HTTP server: path -> (body, mode); counts every request."""

    base: str
    routes: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body, mode = state.routes.get(self.path, (b"", "missing"))
            if mode == "missing":
                self.send_error(404, "no such release")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # "short": the connection closes after half of the announced body.
            self.wfile.write(body if mode == "ok" else body[: len(body) // 2])

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_url() -> str:
    """A loopback URL nothing listens on: the port was free a moment ago and is closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/pjproject.tar.gz"


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def rpi_options(tmp_path: Path, **kwargs) -> BuildOptions:
    return BuildOptions(board="rpi", out=tmp_path / "out", **kwargs)


def pjsua2_wheel(directory: Path, *, with_module: bool = True) -> Path:
    """A wheel-shaped zip as an operator would pass it (input data for validation)."""
    path = directory / "pjsua2-2.15.1-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("pjsua2-2.15.1.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        if with_module:
            whl.writestr("pjsua2.py", "# SWIG generated\n")
            whl.writestr("_pjsua2.cpython-311-aarch64-linux-gnu.so", b"\x7fELF")
    return path


# --- the pin ------------------------------------------------------------------------------------


def test_real_pin_is_well_formed() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", PJPROJECT.sha256)
    assert PJPROJECT.version == "2.15.1"
    assert PJPROJECT.url == (
        f"https://github.com/pjsip/pjproject/archive/refs/tags/{PJPROJECT.version}.tar.gz"
    )
    assert PJPROJECT.top_dir == "pjproject-2.15.1"
    with pytest.raises(ValueError, match="64 lowercase hex"):
        Pin(version="2.15.1", url=PJPROJECT.url, sha256=PJPROJECT.sha256.upper())
    with pytest.raises(ValueError, match="64 lowercase hex"):
        Pin(version="2.15.1", url=PJPROJECT.url, sha256=PJPROJECT.sha256[:-1])


# --- fetching the source ------------------------------------------------------------------------


def test_download_is_verified_cached_and_reused_without_network(
    tmp_path: Path, release: Release, server: Server
) -> None:
    server.routes["/pj.tar.gz"] = (release.data, "ok")
    cache = tmp_path / "cache"
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    first = pjproject.fetch_source(
        cache, server.url("/pj.tar.gz"), release.pin.sha256, console, timeout=10
    )
    assert first.read_bytes() == release.data
    assert first == pjproject.cached_tarball_path(cache, release.pin.sha256)
    assert files_in(cache) == [first.name]  # no temp file left
    assert server.requests == ["/pj.tar.gz"]
    # The second call finds the verified tarball: no request, whatever the URL.
    again = pjproject.fetch_source(cache, server.url("/other"), release.pin.sha256, timeout=10)
    assert again == first
    assert server.requests == ["/pj.tar.gz"]


def test_damaged_cached_tarball_is_fetched_again(
    tmp_path: Path, release: Release, server: Server
) -> None:
    server.routes["/pj.tar.gz"] = (release.data, "ok")
    cache = tmp_path / "cache"
    url = server.url("/pj.tar.gz")
    cached = pjproject.fetch_source(cache, url, release.pin.sha256, timeout=10)
    cached.write_bytes(release.data[:-1] + bytes([release.data[-1] ^ 0xFF]))
    assert pjproject.fetch_source(cache, url, release.pin.sha256, timeout=10) == cached
    assert cached.read_bytes() == release.data
    assert len(server.requests) == 2


def test_wrong_digest_is_rejected_with_both_digests_and_nothing_kept(
    tmp_path: Path, release: Release, server: Server
) -> None:
    server.routes["/pj.tar.gz"] = (release.data, "ok")
    cache = tmp_path / "cache"
    pinned = hashlib.sha256(b"another release").hexdigest()
    with pytest.raises(ChecksumMismatch) as caught:
        pjproject.fetch_source(cache, server.url("/pj.tar.gz"), pinned, timeout=10)
    assert pinned in str(caught.value)
    assert release.pin.sha256 in str(caught.value)
    assert files_in(cache) == []


def test_body_cut_short_is_an_error_and_nothing_kept(
    tmp_path: Path, release: Release, server: Server
) -> None:
    server.routes["/pj.tar.gz"] = (release.data, "short")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadIncomplete, match=rf"cut short: got {len(release.data) // 2} of"):
        pjproject.fetch_source(cache, server.url("/pj.tar.gz"), release.pin.sha256, timeout=10)
    assert files_in(cache) == []


def test_http_error_and_refused_connection_mean_source_unavailable(
    tmp_path: Path, release: Release, server: Server, refused_url: str
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(SourceUnavailable, match="HTTP 404"):
        pjproject.fetch_source(cache, server.url("/gone.tar.gz"), release.pin.sha256, timeout=10)
    with pytest.raises(SourceUnavailable, match="refused"):
        pjproject.fetch_source(cache, refused_url, release.pin.sha256, timeout=10)
    with pytest.raises(SourceUnavailable, match="http, https or file"):
        pjproject.fetch_source(cache, "ftp://127.0.0.1/x.tar.gz", release.pin.sha256)
    assert files_in(cache) == []


def test_mirror_url_flag_then_environment_then_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pjproject.URL_ENV, raising=False)
    assert pjproject.source_url(None) == PJPROJECT.url
    monkeypatch.setenv(pjproject.URL_ENV, "http://mirror.internal/pj.tar.gz")
    assert pjproject.source_url(None) == "http://mirror.internal/pj.tar.gz"
    assert pjproject.source_url("http://other/pj.tar.gz") == "http://other/pj.tar.gz"


# --- the order the build resolves a pjsua2 wheel in ----------------------------------------------


def test_no_source_is_a_build_error_naming_both_ways_out(
    tmp_path: Path, release: Release, refused_url: str
) -> None:
    cache = tmp_path / "cache"
    options = rpi_options(tmp_path, pjproject_url=refused_url)
    with pytest.raises(BuildError) as caught:
        resolve_pjsua2_wheel(options, board("rpi", MIRROR), cache, pin=release.pin)
    message = str(caught.value)
    assert "cannot be had" in message and "refused" in message
    assert "--pjsua2-wheel WHL" in message
    assert f"--pjproject-tarball PATH (pjproject-{VERSION}.tar.gz" in message
    assert release.pin.sha256 in message
    assert files_in(cache) == []
    assert not (tmp_path / "out").exists()


def test_mirror_from_environment_is_used_and_checked(
    tmp_path: Path, release: Release, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/mirror/pj.tar.gz"] = (release.data, "ok")
    monkeypatch.setenv(pjproject.URL_ENV, server.url("/mirror/pj.tar.gz"))
    cache = tmp_path / "cache"
    resolved = resolve_pjsua2_wheel(rpi_options(tmp_path), board("rpi", MIRROR), cache,
                                    pin=release.pin)  # fmt: skip
    assert resolved is not None and resolved.origin == "compile" and resolved.wheel is None
    assert resolved.tarball is not None and resolved.tarball.read_bytes() == release.data
    assert server.requests == ["/mirror/pj.tar.gz"]
    # Same mirror, a pin the file does not match: refused, with both digests.
    (tmp_path / "other").mkdir()
    other = make_release(tmp_path / "other")
    with pytest.raises(BuildError, match=f"expected {other.pin.sha256}.*got {release.pin.sha256}"):
        resolve_pjsua2_wheel(rpi_options(tmp_path), board("rpi", MIRROR), cache, pin=other.pin)


def test_tarball_flag_good_is_cached_and_bad_is_refused(
    tmp_path: Path, release: Release, refused_url: str
) -> None:
    cache = tmp_path / "cache"
    target = board("rpi", MIRROR)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(release.data[:-10])
    options = rpi_options(tmp_path, pjproject_tarball=bad, pjproject_url=refused_url)
    with pytest.raises(BuildError) as caught:
        resolve_pjsua2_wheel(options, target, cache, pin=release.pin)
    assert release.pin.sha256 in str(caught.value)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() in str(caught.value)
    assert files_in(cache) == []
    missing = rpi_options(tmp_path, pjproject_tarball=tmp_path / "nope.tar.gz")
    with pytest.raises(BuildError, match=r"nope\.tar\.gz: file not found"):
        resolve_pjsua2_wheel(missing, target, cache, pin=release.pin)
    # The good tarball: no network needed (the URL refuses), kept in the cache for next time.
    options = rpi_options(tmp_path, pjproject_tarball=release.path, pjproject_url=refused_url)
    resolved = resolve_pjsua2_wheel(options, target, cache, pin=release.pin)
    assert resolved is not None and resolved.origin == "compile"
    assert resolved.tarball == pjproject.cached_tarball_path(
        cache / "pjproject", release.pin.sha256
    )
    assert resolved.tarball.read_bytes() == release.data
    # Next build: the cached tarball, still without network.
    again = resolve_pjsua2_wheel(rpi_options(tmp_path, pjproject_url=refused_url), target, cache,
                                 pin=release.pin)  # fmt: skip
    assert again is not None and again.tarball == resolved.tarball


def test_given_wheel_then_cached_wheel_come_before_any_source(
    tmp_path: Path, release: Release, refused_url: str
) -> None:
    cache = tmp_path / "cache"
    target = board("rpi", MIRROR)
    given = pjsua2_wheel(tmp_path)
    options = rpi_options(tmp_path, pjsua2_wheel=given, pjproject_url=refused_url)
    resolved = resolve_pjsua2_wheel(options, target, cache, pin=release.pin)
    assert resolved is not None and (resolved.origin, resolved.wheel) == ("--pjsua2-wheel", given)
    # A wheel compiled by an earlier build, under its key: used with no source at all.
    key = pjproject.wheel_cache_key(
        release.pin, "arm64", pjproject.builder_recipe("arm64", MIRROR).key()
    )
    stored = pjproject.store_wheel(cache / "pjsua2", key, given)
    assert files_in(cache / "pjsua2") == [given.name]
    options = rpi_options(tmp_path, pjproject_url=refused_url)
    resolved = resolve_pjsua2_wheel(options, target, cache, pin=release.pin)
    assert resolved is not None and (resolved.origin, resolved.wheel) == ("cache", stored)
    assert resolved.manifest()["origin"] == "cache"
    # A different pin (another release) does not reuse it: back to the source, which is absent.
    other = Pin(version="9.9.10", url="", sha256=hashlib.sha256(b"x").hexdigest())
    with pytest.raises(BuildError, match="cannot be had"):
        resolve_pjsua2_wheel(options, target, cache, pin=other)


def test_qemu_amd64_resolves_nothing_and_touches_no_network(
    tmp_path: Path, refused_url: str
) -> None:
    options = BuildOptions(board="qemu-amd64", out=tmp_path / "out", pjproject_url=refused_url)
    assert resolve_pjsua2_wheel(options, board("qemu-amd64", MIRROR), tmp_path / "cache") is None
    assert not (tmp_path / "cache").exists()


def test_given_wheel_without_the_pjsua2_module_is_refused(tmp_path: Path) -> None:
    empty = pjsua2_wheel(tmp_path, with_module=False)
    options = rpi_options(tmp_path, pjsua2_wheel=empty)
    with pytest.raises(BuildError, match=r"no pjsua2\.py and _pjsua2 extension"):
        resolve_pjsua2_wheel(options, board("rpi", MIRROR), tmp_path / "cache")


# --- compile plan and builder tree --------------------------------------------------------------


def test_compile_plan_order_and_flags() -> None:
    plan = pjproject.compile_plan(PJPROJECT, jobs=4)
    assert [step.what for step in plan] == [
        "configure",
        "make dep",
        "make",
        "SWIG binding",
        "wheel",
    ]
    src = "/usr/src/pjproject-2.15.1"
    assert [step.cwd for step in plan[:3]] == [src] * 3
    assert plan[3].cwd == plan[4].cwd == f"{src}/pjsip-apps/src/swig/python"
    configure = plan[0].argv
    assert configure[0] == "./configure"
    for flag in ("--disable-sound", "--disable-video", "--disable-libyuv",
                 "--disable-libwebrtc", "--disable-opencore-amr"):  # fmt: skip
        assert flag in configure
    assert any(a.startswith("CFLAGS=") and "-fPIC" in a.split() for a in configure)
    # What the firmware needs stays in: G.711, G.722, SRTP, TLS.
    for kept in ("g711", "g722", "srtp", "ssl"):
        assert not any(kept in a and a.startswith(("--disable", "--without")) for a in configure)
    assert plan[1].argv == ("make", "dep")
    assert plan[2].argv == ("make", "-j4", "lib")
    assert plan[3].argv == ("make",)
    assert plan[4].argv[0] == "python3" and "bdist_wheel" in plan[4].argv[2]
    assert plan[4].argv[-1] == pjproject.WHEEL_DIR
    inside = pjproject.chroot_argv(plan[0])
    assert inside[:4] == ["env", "-i", "-C", src]  # options before the NAME=VALUE assignments
    assert inside[-len(configure) :] == list(configure)


def test_builder_recipe_is_separate_from_the_image_recipe() -> None:
    image = board("rpi", MIRROR).recipe
    builder = pjproject.builder_recipe("arm64", MIRROR)
    assert builder.key() != image.key()
    assert builder.arch == image.arch == "arm64"
    assert builder.kernel_packages == ()
    assert set(pjproject.BUILD_DEPS) <= set(builder.extra_packages)
    image_packages = set(image.kernel_packages) | set(image.extra_packages)
    assert not image_packages & {"build-essential", "swig", "libssl-dev", "uuid-dev"}
    # The wheel's cache key follows the source, the architecture and the builder recipe.
    key = pjproject.wheel_cache_key(PJPROJECT, "arm64", builder.key())
    assert key == pjproject.wheel_cache_key(PJPROJECT, "arm64", builder.key())
    other_pin = Pin(version="2.15.1", url=PJPROJECT.url, sha256="0" * 64)
    assert key != pjproject.wheel_cache_key(other_pin, "arm64", builder.key())
    assert key != pjproject.wheel_cache_key(PJPROJECT, "armhf", builder.key())
    other_mirror = pjproject.builder_recipe("arm64", "http://mirror.example/debian")
    assert key != pjproject.wheel_cache_key(PJPROJECT, "arm64", other_mirror.key())


def test_compile_refuses_a_tarball_that_is_not_the_release_layout(tmp_path: Path) -> None:
    wrong = make_release(tmp_path, top="something-else", size=10)
    builder = tmp_path / "builder"
    builder.mkdir()
    with pytest.raises(CompileError, match=f"did not unpack to pjproject-{VERSION}/"):
        pjproject.compile_wheel(wrong.path, builder, tmp_path / "wheel", pin=wrong.pin)
    assert not (tmp_path / "wheel").exists()


# --- command line -------------------------------------------------------------------------------


def test_cli_passes_the_pjproject_flags_and_reports_no_source(
    tmp_path: Path, release: Release, refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli._image_parser().parse_args(
        ["build", "--board", "rpi", "--out", str(tmp_path / "out"),
         "--pjproject-tarball", str(release.path), "--pjproject-url", refused_url]
    )  # fmt: skip
    assert args.pjproject_tarball == release.path and args.pjproject_url == refused_url
    code = cli.image_main(
        ["build", "--board", "rpi", "--out", str(tmp_path / "out"), "--cache",
         str(tmp_path / "cache"), "--pjproject-url", refused_url]
    )  # fmt: skip
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "build failed" in err and "--pjsua2-wheel WHL" in err
    assert "--pjproject-tarball PATH" in err and PJPROJECT.sha256 in err
    assert not (tmp_path / "out").exists()


# --- opt-in: the real arm64 builder tree ---------------------------------------------------------

PROBE_C = "int probe_add(int a, int b) { return a + b; }\n"
PROBE_I = "%module probe\n%{\nint probe_add(int a, int b);\n%}\nint probe_add(int a, int b);\n"
# Shaped like pjproject's SWIG setup.py: plain distutils, an extension and a SWIG module.
PROBE_SETUP = """from distutils.core import setup, Extension
setup(name="probe", version="1.0",
      ext_modules=[Extension("_probe", ["probe_wrap.c", "probe.c"])], py_modules=["probe"])
"""


@pytest.mark.image
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    os.environ.get("OFFHOOK_TEST_PJPROJECT_BUILDER") != "1",
    reason="arm64 debootstrap under qemu-user takes many minutes: OFFHOOK_TEST_PJPROJECT_BUILDER=1",
)
def test_builder_tree_makes_an_aarch64_swig_wheel(tmp_path: Path) -> None:
    """The builder recipe installs, and its toolchain turns a SWIG module into a cp311 aarch64
    wheel through the same chroot environment and wheel command as the pjproject plan."""
    from image import rootfs
    from image.build import default_cache

    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    tree = tmp_path / "builder"
    recipe = pjproject.builder_recipe("arm64", MIRROR)
    rootfs.cached_bootstrap(recipe, tree, default_cache() / "pjproject-builder")
    for header in ("usr/include/openssl/ssl.h", "usr/include/uuid/uuid.h",
                   "usr/include/python3.11/Python.h"):  # fmt: skip
        assert (tree / header).is_file(), header
    probe = tree / "usr/src/probe"
    probe.mkdir(parents=True)
    (probe / "probe.c").write_text(PROBE_C)
    (probe / "probe.i").write_text(PROBE_I)
    (probe / "setup.py").write_text(PROBE_SETUP)
    dist = "/usr/src/probe-dist"
    swig = ("swig", "-python", "-o", "probe_wrap.c", "probe.i")
    wheel = ("python3", "-c", pjproject.BDIST_WHEEL, dist)
    steps = [
        pjproject.Command("swig", "/usr/src/probe", swig),
        pjproject.Command("wheel", "/usr/src/probe", wheel),
    ]
    with rootfs.chroot_mounts(tree):
        for step in steps:
            rootfs.chroot(tree, pjproject.chroot_argv(step), what=step.what)
    wheels = list((tree / "usr/src/probe-dist").glob("*.whl"))
    assert [w.name for w in wheels] == ["probe-1.0-cp311-cp311-linux_aarch64.whl"]
    with zipfile.ZipFile(wheels[0]) as whl:
        so = [n for n in whl.namelist() if n.startswith("_probe") and n.endswith(".so")]
        assert "probe.py" in whl.namelist() and len(so) == 1
        elf = whl.read(so[0])
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
