"""Build preconditions and the manifest (the build itself runs in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offhook.image.boards import board
from offhook.image.build import BuildError, BuildOptions, build, check_pjsua2_wheel
from offhook.image.manifest import ManifestError, verify_manifest, write_manifest
from offhook.image.rootfs import Recipe


def test_rpi_without_pjsua2_wheel_or_source_fails_before_any_work(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on: the download is refused
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}/pjproject.tar.gz"
    out = tmp_path / "out"
    options = BuildOptions(board="rpi", out=out, cache=tmp_path / "cache", pjproject_url=refused)
    with pytest.raises(BuildError, match=r"(?s)--pjsua2-wheel.*--pjproject-tarball"):
        build(options)
    assert not out.exists()


def test_pjsua2_wheel_must_be_an_aarch64_cp311_wheel(tmp_path: Path) -> None:
    rpi = board("rpi", "http://deb.debian.org/debian")
    with pytest.raises(BuildError, match="not found"):
        check_pjsua2_wheel(tmp_path / "missing.whl", rpi)
    wrong = tmp_path / "pjsua2-2.15.1-cp311-cp311-linux_x86_64.whl"
    wrong.write_bytes(b"not a zip")
    with pytest.raises(BuildError, match="cp311 aarch64"):
        check_pjsua2_wheel(wrong, rpi)
    check_pjsua2_wheel(None, board("qemu-amd64", "http://deb.debian.org/debian"))


def test_unknown_board_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown board 'pi5'"):
        build(BuildOptions(board="pi5", out=tmp_path))


def test_cache_key_changes_with_what_goes_into_the_tree() -> None:
    base = Recipe(arch="amd64", kernel_packages=("linux-image-cloud-amd64",))
    same = Recipe(arch="amd64", kernel_packages=("linux-image-cloud-amd64",))
    assert base.key() == same.key()
    assert base.key() != Recipe(arch="amd64", kernel_packages=("linux-image-amd64",)).key()
    assert base.key() != Recipe(arch="amd64", kernel_packages=base.kernel_packages,
                                mirror="http://mirror.example/debian").key()  # fmt: skip


def test_manifest_lists_and_verifies_outputs(tmp_path: Path) -> None:
    a, b = tmp_path / "x.img", tmp_path / "x.img.bmap"
    a.write_bytes(b"image")
    b.write_text("bmap")
    write_manifest(tmp_path / "m.json", outputs=[a, b], board="qemu-amd64")
    manifest = verify_manifest(tmp_path / "m.json")
    assert manifest["board"] == "qemu-amd64"
    assert manifest["outputs"]["x.img"]["bytes"] == 5
    assert json.loads((tmp_path / "m.json").read_text())["manifest_version"] == 1
    a.write_bytes(b"changed")
    with pytest.raises(ManifestError, match="checksum differs"):
        verify_manifest(tmp_path / "m.json")


def test_overlay_ships_in_the_wheel_data_and_scripts_stay_executable(tmp_path) -> None:
    from offhook.image.boards import board
    from offhook.image.build import OVERLAY, copy_overlay

    script = OVERLAY / "common/usr/local/sbin/offhook-firstboot"
    assert script.is_file()
    original = script.stat().st_mode
    tree = tmp_path / "root"
    tree.mkdir()
    try:
        script.chmod(0o644)  # as a wheel install without modes would leave it
        copy_overlay(tree, board("qemu-amd64", "http://deb.debian.org/debian"))
    finally:
        script.chmod(original)
    copied = tree / "usr/local/sbin/offhook-firstboot"
    assert copied.stat().st_mode & 0o777 == 0o755
    assert (tree / "etc/systemd/system/offhook.service").is_file()


def test_boot_test_reboots_flag_is_a_small_count() -> None:
    from offhook.image.cli import _image_parser

    parser = _image_parser()
    assert parser.parse_args(["boot-test", "x.img"]).reboots == 0
    assert parser.parse_args(["boot-test", "x.img", "--reboots", "2"]).reboots == 2
    for bad in ("-1", "11", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["boot-test", "x.img", "--reboots", bad])
