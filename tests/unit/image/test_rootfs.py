"""Byte code for the image's venv written on the host: only when the host's CPython has the
tree's Python minor version, and then as the tree's interpreter would write it."""

from __future__ import annotations

import importlib.util
import marshal
import os
import subprocess
import sys
from pathlib import Path

from offhook.image import rootfs

HOST_PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"


def tree_with_python(tmp_path: Path, target: str | None) -> Path:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    if target is not None:
        (tree / "usr/bin/python3").symlink_to(target)
    return tree


def test_host_compiles_only_for_its_own_python_minor_version(tmp_path: Path) -> None:
    assert rootfs.host_can_compile_for(tree_with_python(tmp_path / "same", HOST_PYTHON))
    other = f"python{sys.version_info.major}.{sys.version_info.minor + 1}"
    assert not rootfs.host_can_compile_for(tree_with_python(tmp_path / "other", other))
    assert not rootfs.host_can_compile_for(tree_with_python(tmp_path / "none", None))


def test_host_byte_code_is_hash_based_and_names_the_path_inside_the_image(tmp_path: Path) -> None:
    tree = tree_with_python(tmp_path, HOST_PYTHON)
    package = tree / "opt/offhook/venv/lib/demo"
    package.mkdir(parents=True)
    (package / "mod.py").write_text("def where():\n    return __file__\n")
    subprocess.run(
        [sys.executable, "-m", *rootfs.COMPILEALL[2:], "-s", str(tree), "-p", "/",
         str(tree / "opt/offhook/venv")],
        check=True,
    )  # fmt: skip
    pyc = package / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    data = pyc.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b01  # hash based, never checked: no mtimes
    code = marshal.loads(data[16:])
    assert code.co_filename == "/opt/offhook/venv/lib/demo/mod.py"
    assert os.fspath(tree) not in repr(code.co_consts)


def test_manifest_lists_packages_pip_installed_with_setup_py_too(tmp_path: Path) -> None:
    """sdist-only packages without a wheel step (RPi.GPIO, pyalsaaudio in the rpi venv) are
    installed by 'setup.py install' and leave an .egg-info, not a .dist-info: the manifest
    missed them."""
    site = tmp_path / "opt/offhook/venv/lib/python3.11/site-packages"
    (site / "pydantic-2.14.4.dist-info").mkdir(parents=True)
    (site / "RPi.GPIO-0.7.1-py3.11.egg-info").mkdir()
    (site / "pyalsaaudio-0.11.0-py3.11.egg-info").write_text("Metadata-Version: 1.0\n")
    assert rootfs.python_packages(tmp_path) == {
        "pydantic": "2.14.4", "RPi.GPIO": "0.7.1", "pyalsaaudio": "0.11.0",
    }  # fmt: skip
