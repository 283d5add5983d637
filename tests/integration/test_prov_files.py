"""The server's data is private to its user: data directory 0700, the SQLite database and its
-wal and -shm files 0600, on the real files of a running ``offhook server``."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sqlite_modes(data_dir: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in sorted(data_dir.glob("provisioning.db*"))}


@pytest.fixture(autouse=True)
def usual_umask():  # type: ignore[no-untyped-def]
    """The common 022: what made SQLite's files world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_running_server_keeps_database_wal_and_shm_private(tmp_path: Path) -> None:
    with ProvisioningServer(tmp_path) as server:
        cred = server.enroll("b8:27:eb:00:00:61")  # writes through the server process
        with cred.client() as client:
            assert client.get("/api/v1/device/config").status_code == 200
        modes = _sqlite_modes(server.data_dir)
        assert set(modes) >= {"provisioning.db", "provisioning.db-wal", "provisioning.db-shm"}
        assert modes == dict.fromkeys(modes, 0o600), {k: oct(v) for k, v in modes.items()}
        assert _mode(server.data_dir) == 0o700
        assert _mode(server.key_file) == 0o600


def test_files_of_an_older_release_are_tightened_on_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "old-release"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    database = data_dir / "provisioning.db"
    with sqlite3.connect(database) as conn:  # 0644 like SQLite makes it, with a WAL
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE leftover (x)")
    assert _mode(database) == 0o644
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFHOOK_")}
    migrated = subprocess.run(
        [
            sys.executable,
            "-m",
            "offhook.firmware.cli",
            "server",
            "migrate",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert _mode(data_dir) == 0o700
    modes = _sqlite_modes(data_dir)
    assert modes and modes == dict.fromkeys(modes, 0o600), {k: oct(v) for k, v in modes.items()}


def test_fleet_init_creates_a_private_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "fleet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFHOOK_")}
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "offhook.firmware.cli",
            "fleet",
            "init",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "provisioning.db") == 0o600
    assert _mode(data_dir / "secret.key") == 0o600
