"""offhook.firmware.devtools: product code that must not need the tests, and a Kamailio config that
Kamailio itself accepts (``kamailio -c``) with every option turned on."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offhook.firmware.devtools.certs import make_certificates
from offhook.firmware.devtools.kamailio import KamailioServer

ROOT = Path(__file__).resolve().parents[3]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_firmware_module_imports_the_tests() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] == "tests"
        )
        for path in (ROOT / "firmware").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_demo_and_devtools_import_with_the_tests_unavailable() -> None:
    code = (
        "import sys; sys.modules['tests'] = None\n"  # any `import tests...` now fails
        "import firmware.demo, firmware.devtools.kamailio, firmware.devtools.provisioning_server"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None, reason="kamailio")
def test_generated_config_passes_kamailios_own_check(tmp_path: Path) -> None:
    kam = KamailioServer(
        tmp_path / "kam",
        make_certificates(tmp_path / "tls"),
        redirects={"1990": "1002", "*97": "1003"},
        mwi_server=("127.0.0.1", 5999),
    )
    kam.add_user("1001", "pw1001")
    kam.udp_port = kam.tcp_port = 5998  # only checked, never bound
    kam.tls_port = 5997
    config = kam.render_config()
    assert 'append_to_reply("Contact: <sip:1002@127.0.0.1:5998>\\r\\n");' in config
    assert '$du = "sip:127.0.0.1:5999";' in config
    path = tmp_path / "kamailio.cfg"
    path.write_text(config)
    (tmp_path / "kam").mkdir()
    (tmp_path / "kam" / "tls.cfg").write_text("")
    check = subprocess.run(
        [shutil.which("kamailio", path="/usr/sbin:/usr/bin") or "kamailio", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr[-2000:]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redirects": {"19 90": "1002"}}, "redirect '19 90'"),
        ({"redirects": {"1990": 'x";exit;"'}}, "redirect"),
        ({"mwi_server": ("10.0.0.1", 5060)}, "only 127.0.0.1"),
    ],
)
def test_unsafe_options_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KamailioServer(tmp_path, make_certificates(tmp_path / "tls"), **kwargs)


def test_users_with_config_syntax_are_refused(tmp_path: Path) -> None:
    kam = KamailioServer(tmp_path, make_certificates(tmp_path / "tls"))
    with pytest.raises(ValueError, match="user/password"):
        kam.add_user("1001", 'pw";exit;"')
