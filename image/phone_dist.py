"""The phone's own distribution: what an image installs, derived from the project's pyproject.toml.

A phone runs the shared contract, the board and the firmware, plus the first-boot step that reads
the card's seed. It carries neither the provisioning server, the image builder nor the developer
tools (Kamailio configs, the demo), and only the base dependencies: the server's stack (FastAPI,
SQLAlchemy, httpx...) lives in extras the image never asks for. Same name and version as the
development distribution, so ``offhook --version`` and the manifests agree.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import tomli_w

# Folders copied whole, and the single modules a phone needs from otherwise host-side packages.
PHONE_PACKAGES = ("contract", "board", "firmware")
PHONE_MODULES = ("image/__init__.py", "image/firstboot.py", "image/seed.py")
# Host-side parts of the phone's folders: developer tools and the PC demo.
LEFT_OUT = ("firmware/devtools", "firmware/demo.py")
KEPT_EXTRAS = ("pi",)  # RPi.GPIO on the Raspberry Pi


def copy_phone_sources(root: Path, dest: Path) -> None:
    """Copy the phone's sources from the checkout ``root`` into ``dest`` (a fresh folder)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in PHONE_PACKAGES:
        shutil.copytree(root / package, dest / package, ignore=ignore)
    for module in PHONE_MODULES:
        (dest / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / module, dest / module)
    for part in LEFT_OUT:
        path = dest / part
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    shutil.copy2(root / "README.md", dest / "README.md")
    (dest / "pyproject.toml").write_text(
        phone_pyproject((root / "pyproject.toml").read_text(), dest)
    )


def phone_pyproject(project_toml: str, tree: Path) -> str:
    """The phone's pyproject.toml: the project's metadata and base dependencies, the packages
    present in ``tree``, the same ``offhook.<folder>`` mapping."""
    project = tomllib.loads(project_toml)
    meta = project["project"]
    setuptools = project["tool"]["setuptools"]
    packages = sorted(
        "offhook." + ".".join(init.parent.relative_to(tree).parts)
        for init in tree.rglob("__init__.py")
    )
    top = {name.split(".")[1] for name in packages}
    phone = {
        "build-system": project["build-system"],
        "project": {
            "name": meta["name"],
            "version": meta["version"],
            "description": meta["description"] + " (the phone)",
            "readme": meta["readme"],
            "requires-python": meta["requires-python"],
            "license": meta["license"],
            "dependencies": meta["dependencies"],
            "optional-dependencies": {
                extra: meta["optional-dependencies"][extra] for extra in KEPT_EXTRAS
            },
            "scripts": meta["scripts"],
        },
        "tool": {
            "setuptools": {
                "packages": packages,
                "package-dir": {
                    name: path
                    for name, path in setuptools["package-dir"].items()
                    if name.split(".")[1] in top
                },
                "package-data": {"*": ["*.toml"]},  # board profiles
            }
        },
    }
    return tomli_w.dumps(phone)
