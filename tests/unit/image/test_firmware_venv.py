"""The firmware venv's dependency cache (image/firmware_venv.py): what its key depends on, which
tree a build starts from, and how many cached trees are kept. The install itself runs in the image
builds (tests/integration/test_image_full.py, test_image_rpi.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from offhook.image import firmware_venv, rootfs

OWN = "offhook-1.0-py3-none-any.whl"
PJSUA2 = "pjsua2-2.15.1-cp311-cp311-linux_aarch64.whl"


def wheelhouse(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, list[Path]]:
    stage = tmp_path / "stage"
    stage.mkdir(exist_ok=True)
    for name, body in files.items():
        (stage / name).write_bytes(body)
    return stage, [stage / OWN] + ([stage / PJSUA2] if PJSUA2 in files else [])


def key(stage: Path, wheels: list[Path], **changes) -> str:
    args = {"base_key": "rootfs-key", "arch": "arm64", "venv": "/opt/offhook/venv",
            "extras": ("pi",)} | changes  # fmt: skip
    return firmware_venv.dependency_key(stage, wheels, **args)


def test_key_ignores_offhooks_own_wheel_and_follows_the_dependencies(tmp_path: Path) -> None:
    files = {OWN: b"v1", PJSUA2: b"compiled", "fastapi-0.115.0-py3-none-any.whl": b"x",
             "pyalsaaudio-0.11.0.tar.gz": b"sdist"}  # fmt: skip
    stage, wheels = wheelhouse(tmp_path, files)
    first = key(stage, wheels)
    (stage / OWN).write_bytes(b"v2: offhook changed, its dependencies did not")
    assert key(stage, wheels) == first
    (stage / "fastapi-0.115.0-py3-none-any.whl").write_bytes(b"rebuilt, same version")
    assert key(stage, wheels) == first
    (stage / "fastapi-0.115.0-py3-none-any.whl").rename(stage / "fastapi-0.116.0-py3-none-any.whl")
    assert key(stage, wheels) != first  # another version resolved
    (stage / "fastapi-0.116.0-py3-none-any.whl").rename(stage / "fastapi-0.115.0-py3-none-any.whl")
    assert key(stage, wheels) == first
    (stage / PJSUA2).write_bytes(b"compiled with another plan")
    assert key(stage, wheels) != first  # a given wheel counts by its content
    (stage / PJSUA2).write_bytes(b"compiled")
    for changed in ({"base_key": "other"}, {"extras": ()}, {"venv": "/opt/x"}, {"arch": "amd64"}):
        assert key(stage, wheels, **changed) != first, changed
    (stage / "new_dependency-1.0-py3-none-any.whl").write_bytes(b"")
    assert key(stage, wheels) != first


def test_prune_keeps_the_newest_trees_per_architecture(tmp_path: Path) -> None:
    entries = []
    for age, name in enumerate(["rootfs-arm64-a", "rootfs-arm64-b", "rootfs-arm64-c",
                                "rootfs-amd64-a"]):  # fmt: skip
        path = tmp_path / f"{name}.tar.zst"
        path.write_bytes(b"")
        os.utime(path, (1_000_000 - age * 10, 1_000_000 - age * 10))
        entries.append(path)
    newest = entries[0]
    firmware_venv.prune(newest, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rootfs-amd64-a.tar.zst", "rootfs-arm64-a.tar.zst", "rootfs-arm64-b.tar.zst",
    ]  # fmt: skip


def test_a_cached_dependency_tree_is_used_instead_of_the_root_filesystem(tmp_path: Path) -> None:
    """A real tar.zst as save_tree writes it: unpacked as the tree, no bootstrap attempted (the
    recipe's mirror does not exist)."""
    saved = tmp_path / "saved"
    (saved / "opt/offhook/venv/bin").mkdir(parents=True)
    (saved / "opt/offhook/venv/bin/python").write_text("venv\n")
    deps = firmware_venv.Dependencies(tmp_path, (tmp_path / OWN,), "k",
                                      tmp_path / "cache" / "rootfs-arm64-k.tar.zst")  # fmt: skip
    rootfs.save_tree(saved, deps.tarball, "test")
    assert not deps.tarball.with_suffix(".partial").exists()
    recipe = rootfs.Recipe(arch="arm64", kernel_packages=(), mirror="http://127.0.0.1:9/none")
    tree = tmp_path / "tree"
    (tree / "stale").mkdir(parents=True)
    assert firmware_venv.base_tree(recipe, deps, tree, tmp_path / "rootfs-cache") == "dependencies"
    assert (tree / "opt/offhook/venv/bin/python").read_text() == "venv\n"
    assert not (tree / "stale").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap needs root")
def test_without_a_cached_tree_the_root_filesystem_is_made(tmp_path: Path) -> None:
    """No dependency tree: the root filesystem path runs (here it fails at once, the mirror is a
    closed port, which shows it was attempted)."""
    deps = firmware_venv.Dependencies(tmp_path, (tmp_path / OWN,), "k", tmp_path / "none.tar.zst")
    recipe = rootfs.Recipe(arch="amd64", kernel_packages=(), mirror="http://127.0.0.1:9/none")
    with pytest.raises((rootfs.RootfsError, subprocess.CalledProcessError)):
        firmware_venv.base_tree(recipe, deps, tmp_path / "tree", tmp_path / "rootfs-cache")
