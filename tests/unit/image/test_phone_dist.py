"""The phone's distribution (image/phone_dist.py): the wheel an image installs carries the phone and
nothing of the server, the image builder or the developer tools, and is complete on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from offhook.image.build import build_wheel


@pytest.fixture(scope="module")
def phone_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel")))


def _modules(wheel: zipfile.ZipFile) -> dict[str, str]:
    found = {}
    for name in wheel.namelist():
        if name.endswith(".py"):
            dotted = name[:-3].replace("/", ".").removesuffix(".__init__")
            found[dotted] = wheel.read(name).decode()
    return found


def test_the_phone_wheel_carries_only_the_phone(phone_wheel: zipfile.ZipFile) -> None:
    modules = _modules(phone_wheel)
    packages = {m.split(".")[1] for m in modules}
    assert packages == {"contract", "board", "firmware", "image"}
    assert {m for m in modules if m.startswith("offhook.image")} == {
        "offhook.image",
        "offhook.image.firstboot",
        "offhook.image.seed",
    }
    assert not [
        m for m in modules if m.startswith(("offhook.firmware.devtools", "offhook.firmware.demo"))
    ]
    assert "offhook.board.profiles" in modules
    assert any(n.endswith("board/profiles/offhook-v1.toml") for n in phone_wheel.namelist())
    top_level = next(n for n in phone_wheel.namelist() if n.endswith("top_level.txt"))
    assert phone_wheel.read(top_level).decode().split() == ["offhook"]


def test_the_phone_wheel_needs_no_server_stack(phone_wheel: zipfile.ZipFile) -> None:
    meta = phone_wheel.read(next(n for n in phone_wheel.namelist() if n.endswith("METADATA")))
    requires = [line for line in meta.decode().splitlines() if line.startswith("Requires-Dist:")]
    for package in ("fastapi", "uvicorn", "sqlalchemy", "httpx", "alembic", "jinja2"):
        assert not [r for r in requires if package in r.lower()], requires
    assert any("pjsua2" in r for r in requires)


def test_every_import_of_the_phone_wheel_is_inside_it(phone_wheel: zipfile.ZipFile) -> None:
    modules = _modules(phone_wheel)
    missing = []
    for module, source in modules.items():
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            missing += [
                f"{module}: {n}" for n in names if n.startswith("offhook.") and n not in modules
            ]
    assert missing == []


def test_a_host_command_on_a_phone_says_it_is_not_installed(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from offhook.firmware import cli\n"
        "cli.COMMANDS['server'] = ('offhook.provisioning.not_on_this_phone:main', '')\n"
        "sys.exit(cli.main(['server']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "'server' is not part of this installation" in proc.stderr
