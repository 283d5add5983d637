"""pjsua2 for arm64: pinned pjproject source (download over loopback, checksum, cache), the order
the build resolves a wheel in, the compile plan and the separate builder recipe.

The real cross-compile (the release tarball, the arm64 builder tree, the self-test under
qemu-user) is opt-in at the end of this file: OFFHOOK_TEST_PJPROJECT_COMPILE=1, run by
``make image-test-rpi``.
"""

from __future__ import annotations

import base64
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

from offhook.image import cli, pjproject
from offhook.image.boards import board
from offhook.image.build import BuildError, BuildOptions, resolve_pjsua2_wheel
from offhook.image.pjproject import (
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


def test_compile_plan_is_a_cross_compile_against_the_builder_sysroot(tmp_path: Path) -> None:
    sysroot, prefix = tmp_path / "builder", tmp_path / "empty-prefix"
    plan = pjproject.compile_plan(sysroot, prefix, "arm64", jobs=4)
    assert [step.what for step in plan] == ["configure", "make dep", "make", "SWIG binding"]
    assert [step.cwd for step in plan] == [".", ".", ".", "pjsip-apps/src/swig/python"]
    configure = plan[0].argv
    assert configure[:2] == ("./configure", "--host=aarch64-linux-gnu")
    for flag in ("--disable-sound", "--disable-video", "--disable-libyuv",
                 "--disable-libwebrtc", "--disable-opencore-amr"):  # fmt: skip
        assert flag in configure
    # configure drops TLS and Opus when cross-compiling unless given a prefix.
    assert f"--with-ssl={prefix}" in configure and f"--with-opus={prefix}" in configure
    assert "CC=aarch64-linux-gnu-gcc" in configure and "CXX=aarch64-linux-gnu-g++" in configure
    for var in ("CFLAGS", "CXXFLAGS"):
        value = next(a for a in configure if a.startswith(f"{var}="))
        assert {f"--sysroot={sysroot}", "-fPIC"} <= set(value.split("=", 1)[1].split())
    assert f"LDFLAGS=--sysroot={sysroot}" in configure
    # What the firmware needs stays in: G.711, G.722, SRTP, TLS, Opus.
    for kept in ("g711", "g722", "srtp", "ssl", "opus"):
        assert not any(kept in a and a.startswith(("--disable", "--without")) for a in configure)
    assert plan[1].argv == ("make", "dep")
    assert plan[2].argv == ("make", "-j4", "lib")
    assert plan[3].argv == ("make", "pjsua2_wrap.cpp")
    argv = pjproject.extension_argv(
        sysroot, "arm64", ["-DPJ_AUTOCONF=1"], ["-L/x"], ["ssl"], "m.so"
    )
    assert argv[:2] == ["aarch64-linux-gnu-g++", f"--sysroot={sysroot}"]
    assert f"-I{sysroot}/usr/include/python3.11" in argv and argv[-2:] == ["-L/x", "-lssl"]


def configured_tree(tmp_path: Path, *, tls: bool, opus: bool) -> Path:
    """The two headers configure generates, as it writes them with and without a feature."""
    src = tmp_path / "src"
    for header, line, on in (
        ("pjlib/include/pj/compat/os_auto.h", "PJ_HAS_SSL_SOCK", tls),
        ("pjmedia/include/pjmedia-codec/config_auto.h", "PJMEDIA_HAS_OPUS_CODEC", opus),
    ):
        path = src / header
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#define {line} 1\n" if on else f"/* #undef {line} */\n")
    return src


def test_configure_without_tls_or_opus_is_refused(tmp_path: Path) -> None:
    pjproject.check_features(configured_tree(tmp_path / "ok", tls=True, opus=True))
    with pytest.raises(CompileError, match=r"did not enable TLS \(OpenSSL\)"):
        pjproject.check_features(configured_tree(tmp_path / "a", tls=False, opus=True))
    with pytest.raises(CompileError, match="did not enable Opus"):
        pjproject.check_features(configured_tree(tmp_path / "b", tls=True, opus=False))


def test_missing_cross_tools_are_named_by_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no tool is found
    assert pjproject.missing_host_tools() == [
        "g++-aarch64-linux-gnu", "gcc-aarch64-linux-gnu", "make", "swig",
    ]  # fmt: skip


def test_self_test_report_must_show_version_codecs_srtp_and_both_transports() -> None:
    good = {
        "version": PJPROJECT.version,
        "codecs": ["G722/16000/1", "PCMA/8000/1", "PCMU/8000/1", "opus/48000/2", "L16/8000/1"],
        "srtp": ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"],
        "transports": {"udp": "127.0.0.1:40000", "tls": "127.0.0.1:40001"},
    }
    pjproject.check_self_test(good)
    with pytest.raises(CompileError, match=r"SRTP crypto AES_CM_128_HMAC_SHA1_80 missing \(SRTP "
                       "suites: none"):  # fmt: skip
        pjproject.check_self_test({**good, "srtp": []})
    with pytest.raises(CompileError, match=r"version '2\.14'"):
        pjproject.check_self_test({**good, "version": "2.14"})
    with pytest.raises(CompileError, match="codecs G722/16000/1 missing"):
        pjproject.check_self_test({**good, "codecs": good["codecs"][1:]})
    with pytest.raises(CompileError, match="no TLS transport"):
        pjproject.check_self_test({**good, "transports": {"udp": "127.0.0.1:40000"}})


def test_written_wheel_is_reproducible_and_installs_with_pip(tmp_path: Path) -> None:
    """The wheel the compile writes: byte-identical for the same inputs, a valid RECORD, and
    accepted by pip for an aarch64 cp311 target."""
    import subprocess
    import sys

    files = {"pjsua2.py": b"ANSWER = 42\n", pjproject.EXTENSION: b"\x7fELF not really"}
    first = pjproject.write_wheel(tmp_path / "a", "2.15.1", files)
    second = pjproject.write_wheel(tmp_path / "b", "2.15.1", dict(reversed(files.items())))
    assert first.name == "pjsua2-2.15.1-cp311-cp311-linux_aarch64.whl"
    assert first.read_bytes() == second.read_bytes()
    pjproject.check_wheel(first, "arm64")
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--only-binary=:all:", "--platform", "linux_aarch64",
         "--python-version", "3.11", "--implementation", "cp", "--target", str(target),
         str(first)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (target / "pjsua2.py").read_bytes() == files["pjsua2.py"]
    assert (target / pjproject.EXTENSION).read_bytes() == files[pjproject.EXTENSION]
    record = (target / "pjsua2-2.15.1.dist-info/RECORD").read_text()
    digest = base64.urlsafe_b64encode(hashlib.sha256(files["pjsua2.py"]).digest()).rstrip(b"=")
    assert f"pjsua2.py,sha256={digest.decode()},{len(files['pjsua2.py'])}" in record.splitlines()


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


# --- opt-in: the real cross-compile (make image-test-rpi) ---------------------------------------


@pytest.mark.image
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    os.environ.get("OFFHOOK_TEST_PJPROJECT_COMPILE") != "1",
    reason="the arm64 builder tree and the pjproject compile take minutes: "
    "OFFHOOK_TEST_PJPROJECT_COMPILE=1 (make image-test-rpi)",
)
def test_pinned_release_cross_compiles_to_a_self_tested_aarch64_wheel(tmp_path: Path) -> None:
    """The build's own path, end to end: the pinned release (from $OFFHOOK_PJPROJECT_URL, e.g. a
    file:// copy, or the release URL), the builder tree, the cross-compile, the self-test of the
    module under qemu-user, the cache. A wheel already cached for this key is self-tested again
    instead of compiled."""
    from offhook.image import build, rootfs
    from offhook.image.build import default_cache

    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    cache = default_cache()
    target = board("rpi", MIRROR)
    options = BuildOptions(board="rpi", out=tmp_path / "out")
    plan = resolve_pjsua2_wheel(options, target, cache, Console(stderr=True))
    assert plan is not None
    steps = build.Steps(Console(stderr=True))
    with open(tmp_path / "compile.log", "w") as log_to:
        if plan.origin == "compile":
            plan = build.compile_pjsua2(plan, target, MIRROR, cache, tmp_path, steps, log_to)
            print("compile steps:", steps.times)
        else:  # cached: the module must still pass the self-test in a fresh builder tree
            builder = tmp_path / "builder"
            recipe = pjproject.builder_recipe("arm64", MIRROR)
            rootfs.cached_bootstrap(recipe, builder, cache / "pjproject-builder", log_to)
            assert plan.wheel is not None
            pjproject.self_test(builder, plan.wheel, log_to)
    assert plan.wheel is not None
    assert plan.wheel == pjproject.cached_wheel(cache / "pjsua2", plan.cache_key)
    assert plan.wheel.name == "pjsua2-2.15.1-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(plan.wheel) as whl:
        elf = whl.read(pjproject.EXTENSION)
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    again = resolve_pjsua2_wheel(options, target, cache)
    assert again is not None and again.origin == "cache" and again.wheel == plan.wheel
