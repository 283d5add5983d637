"""The firmware venv (``/opt/offhook/venv``) in the image tree, with its dependencies cached.

Installing the dependencies is the slow part of a warm build: for an arm64 tree, pip, the sdist
builds of pyalsaaudio and RPi.GPIO and the purge of the compilers all run under qemu-user
(5-6 min here). So the tree with every dependency installed and the compilers purged, but
without offhook's own distribution, is cached as a tarball keyed by what went into it: the root
filesystem recipe, the wheelhouse (the name of every file pip resolved and fetched, which names
the version; the SHA-256 of the wheels given, such as the compiled pjsua2), the extras, the venv
path and the venv recipe version. A build whose dependency set is unchanged unpacks that tree
instead of the root filesystem and installs only offhook's wheel (``pip install --no-deps``).

Cold path: venv, ``pip install`` of everything, ``pip uninstall offhook``, purge, the tree
saved, then offhook's wheel installed as on the warm path, so both give the same tree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from offhook.image import rootfs

VENV_RECIPE_VERSION = "1"  # bump when install() changes what ends up in the cached tree
STAGE = "tmp/offhook-wheels"  # the wheelhouse inside the tree while pip runs
KEEP_PER_ARCH = 2  # cached dependency trees kept per architecture (each is ~0.5 GiB)


@dataclass(frozen=True)
class Dependencies:
    """The wheelhouse prepared on the host and the cache entry of the tree that installs it."""

    stage: Path  # wheelhouse on the host
    wheels: tuple[Path, ...]  # the wheels given: offhook's (never in the cached tree), pjsua2's
    key: str
    tarball: Path

    @property
    def own_wheel(self) -> Path:
        return self.wheels[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dependency_key(
    stage: Path, wheels: list[Path], base_key: str, arch: str, venv: str, extras: tuple[str, ...]
) -> str:
    """What the cached tree depends on. Files pip resolved and fetched are named by name,
    version and tags (a rebuilt pure-Python wheel of the same version counts as the same);
    the wheels given (pjsua2) by their content."""
    own = wheels[0].name
    data = {
        "v": VENV_RECIPE_VERSION,
        "base": base_key,
        "arch": arch,
        "venv": venv,
        "extras": sorted(extras),
        "build_packages": rootfs.BUILD_PACKAGES,
        "files": sorted(p.name for p in stage.iterdir() if p.name != own),
        "given": {w.name: _sha256(w) for w in wheels[1:]},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    wheels: list[Path], arch: str, workdir: Path, cache: Path, base_key: str, venv: str,
    extras: tuple[str, ...] = (),
) -> Dependencies:  # fmt: skip
    """The wheelhouse (host side: resolution and downloads) and the cache entry it maps to."""
    stage = rootfs.wheelhouse(wheels, arch, workdir / "wheelhouse")
    key = dependency_key(stage, wheels, base_key, arch, venv, extras)
    return Dependencies(stage, tuple(wheels), key, cache / f"rootfs-{arch}-{key}.tar.zst")


def base_tree(recipe: rootfs.Recipe, deps: Dependencies, tree: Path, rootfs_cache: Path,
              log_to=None) -> str:  # fmt: skip
    """Fill ``tree``: the cached dependency tree if there is one, else the root filesystem
    (cached or bootstrapped). Returns which: "dependencies", "rootfs" or "bootstrap"."""
    if deps.tarball.exists():
        rootfs.unpack_tree(deps.tarball, tree, "unpacking cached firmware dependencies")
        return "dependencies"
    return "rootfs" if rootfs.cached_bootstrap(recipe, tree, rootfs_cache, log_to) else "bootstrap"


def _pip_install(tree: Path, venv: str, args: list[str], what: str, log_to) -> None:
    rootfs.chroot(
        tree,
        ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"{venv}/bin/pip", *args,
         "--disable-pip-version-check"],
        what=what, log_to=log_to,
    )  # fmt: skip


def _install_dependencies(
    tree: Path, deps: Dependencies, venv: str, extras: tuple[str, ...], log_to
) -> None:
    """Cold path: everything installed, offhook removed again, compilers purged, tree cached."""
    inside = [f"/{STAGE}/{wheel.name}" for wheel in deps.wheels]
    if extras:  # e.g. offhook[pi] for RPi.GPIO on the Raspberry Pi
        inside[0] += f"[{','.join(extras)}]"
    with rootfs.chroot_mounts(tree):
        rootfs.chroot(tree, ["python3", "-m", "venv", venv], what="python3 -m venv",
                      log_to=log_to)  # fmt: skip
        _pip_install(tree, venv, ["install", "--no-index", "--find-links", f"/{STAGE}",
                                  "--no-cache-dir", "--no-compile", *inside],
                     "pip install offhook and its dependencies", log_to)  # fmt: skip
        _pip_install(tree, venv, ["uninstall", "-y", "-q", "offhook"],
                     "pip uninstall offhook (the cached tree holds its dependencies only)",
                     log_to)  # fmt: skip
        rootfs.chroot(
            tree, ["apt-get", "purge", "-y", "-q", "--autoremove", *rootfs.BUILD_PACKAGES],
            what="apt-get purge build packages", log_to=log_to,
        )  # fmt: skip
    shutil.rmtree(tree / STAGE)
    rootfs.save_tree(tree, deps.tarball, "caching firmware dependencies")
    prune(deps.tarball)


def prune(kept: Path, keep: int = KEEP_PER_ARCH) -> None:
    """Older dependency trees of the same architecture beyond the newest ``keep`` go."""
    arch = kept.name.split("-")[1]
    entries = sorted(kept.parent.glob(f"rootfs-{arch}-*.tar.zst"),
                     key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    for old in entries[keep:]:
        if old != kept:
            old.unlink(missing_ok=True)


def install(
    tree: Path, deps: Dependencies, venv: str, log_to=None, extras: tuple[str, ...] = ()
) -> bool:
    """The venv at ``venv`` with offhook and its dependencies; True when the dependencies came
    from the cache. Byte code is compiled afterwards (hash-based, for a read-only root)."""
    # A root filesystem tree has no venv; the cached dependency tree has it.
    cached = (tree / venv.lstrip("/") / "bin/python").exists()
    if not cached:
        shutil.rmtree(tree / STAGE, ignore_errors=True)
        shutil.copytree(deps.stage, tree / STAGE)
        _install_dependencies(tree, deps, venv, extras, log_to)
    (tree / STAGE).mkdir(parents=True, exist_ok=True)
    shutil.copy(deps.own_wheel, tree / STAGE / deps.own_wheel.name)
    with rootfs.chroot_mounts(tree):
        _pip_install(tree, venv, ["install", "--no-index", "--no-deps", "--no-cache-dir",
                                  "--no-compile", f"/{STAGE}/{deps.own_wheel.name}"],
                     "pip install offhook (its dependencies installed)", log_to)  # fmt: skip
        if not rootfs.host_can_compile_for(tree):
            rootfs.chroot(tree, [*rootfs.COMPILEALL, venv], what="compileall", log_to=log_to)
    if rootfs.host_can_compile_for(tree):
        # Same byte code as the tree's own interpreter writes (same Python minor version, hash
        # based: no mtimes), without emulating it: 9 s instead of 96 s for the rpi venv.
        rootfs.run([sys.executable, "-m", *rootfs.COMPILEALL[2:], "-s", str(tree), "-p", "/",
                    str(tree / venv.lstrip("/"))], what="compileall (host)",
                   log_to=log_to)  # fmt: skip
    shutil.rmtree(tree / STAGE)
    return cached
